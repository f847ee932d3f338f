"""lal bench: the original lal's three load scenarios against a server, and HLS.

1. N publishers, no players;  2. one publisher, N players;  3. N publishers
and N players, one to one;  4. one publisher, N HLS players polling its
playlist every second and fetching each new segment once.  ``--hls memory`` or
``--hls disk`` runs the server with HLS on (scenario 4 always has it, in memory)
and checks every stream's playlist at the end of the window.

The bench starts the project's own server (or uses one given by URL), runs
``lal push`` / ``lal pull`` as separate load processes, and over a steady window
measures the server's CPU (% of one core, from /proc) and RSS, the load processes'
own CPU (to tell when the load generator was the bottleneck), and each player's
health from ``lal pull --json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lal_twisted.media.flv import TAG_AUDIO, TAG_HEADER_SIZE, TAG_VIDEO, FlvError
from lal_twisted.tools.bench_servers import (
    NginxHlsServer,
    NginxServer,
    OwnServer,
    ProcStat,
    stop_process,
)
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import iter_file

# The stream the bench publishes when no --file is given: H.264 about 200 kbit/s
# plus AAC 64 kbit/s, 25 fps, a keyframe every 2 s, 60 s long.
MEDIA_COMMAND = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "60",
    "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-b:v", "200k",
    "-maxrate", "200k", "-bufsize", "400k", "-g", "50", "-keyint_min", "50",
    "-sc_threshold", "0", "-bf", "2", "-pix_fmt", "yuv420p",
    "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "flv",
]
SATURATED = 90.0  # % of one core: above this a load process limits the result


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="run lal's load scenarios against a server and measure it",
        description="Scenarios: 1 = N publishers; 2 = one publisher, N players; 3 = N "
                    "publishers each with one player. Starts the project's server on free "
                    "loopback ports unless --rtmp is given.")
    p.add_argument("-s", "--scenario", default="1,2,3",
                   help="comma-separated scenarios to run (default 1,2,3; 4 = HLS players)")
    p.add_argument("-n", type=int, default=200, metavar="N",
                   help="publishers or players per scenario (default 200)")
    p.add_argument("--window", type=float, default=20.0, metavar="S",
                   help="steady measuring window in seconds (default 20)")
    p.add_argument("--warmup", type=float, default=5.0, metavar="S",
                   help="seconds after all connections are open before measuring (default 5)")
    p.add_argument("--file", help="FLV to publish (default: generate a 200+64 kbit/s stream "
                                  "with ffmpeg)")
    p.add_argument("--protocol", choices=("rtmp", "httpflv"), default="rtmp",
                   help="what players use (default rtmp)")
    p.add_argument("--rtmp", metavar="URL", help="use this server: rtmp://host:port/app")
    p.add_argument("--http", metavar="URL", help="with --rtmp: http://host:port/app for "
                                                 "HTTP-FLV players")
    p.add_argument("--server-pid", type=int, help="with --rtmp: measure this process")
    p.add_argument("--compare", choices=("nginx",),
                   help="also run every scenario against nginx with the RTMP module "
                        "(Debian's nginx + libnginx-mod-rtmp), started by the bench with "
                        "lal_twisted/tools/nginx-rtmp.conf, and print ours/nginx ratios; "
                        "scenario 4: nginx serving the segments lals writes as static files "
                        "(lal_twisted/tools/nginx-hls.conf)")
    p.add_argument("--hls", choices=("memory", "disk"),
                   help="turn HLS on in the bench's server (hls.use_memory_as_disk_flag or "
                        "files under the bench's directory) and check the playlists; "
                        "with --compare, nginx-rtmp makes HLS too (on /dev/shm or disk)")
    p.add_argument("--fragment-ms", type=int, default=3000, metavar="MS",
                   help="with --hls or scenario 4: hls.fragment_duration_ms (default 3000)")
    p.add_argument("--record", metavar="FORMATS",
                   help="the project's server records every publish: flv, mpegts or "
                        "flv,mpegts (files under the bench's work directory)")
    p.add_argument("--json", metavar="PATH", help="write all figures as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep logs and player figures in DIR")
    p.set_defaults(func=run)


def make_media(path: str) -> None:
    """Write the bench stream (``MEDIA_COMMAND``) to ``path`` with ffmpeg."""
    if shutil.which("ffmpeg") is None:
        raise ToolError("ffmpeg is needed to make the bench stream; install it or pass --file")
    subprocess.run([*MEDIA_COMMAND, path], check=True)


def stream_kbit(path: str) -> float:
    """The file's audio+video bitrate as a player receives it (tag bodies + headers)."""
    total, first, last = 0, None, 0
    for tag in iter_file(path):
        if tag.tag_type in (TAG_AUDIO, TAG_VIDEO):
            total += len(tag.payload) + TAG_HEADER_SIZE
            first = tag.timestamp if first is None else first
            last = tag.timestamp
    seconds = (last - (first or 0)) / 1000
    return total * 8 / 1000 / seconds if seconds > 0 else 0.0


def bench_media(file: str | None, workdir: Path) -> tuple[str, float]:
    """The stream to publish (``file``, or the bench stream made in ``workdir``) and
    its bitrate in kbit/s; a file that is not a readable FLV is a ToolError."""
    workdir.mkdir(parents=True, exist_ok=True)
    media = file or str(workdir / "bench.flv")
    if not file:
        make_media(media)
    try:
        return media, stream_kbit(media)
    except (OSError, FlvError, ValueError) as e:
        raise ToolError(f"{media}: {e}") from None


def lal_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lal_twisted.tools.cli", *args]


def run_scenario(number: int, args: argparse.Namespace, media: str, rtmp: str, http: str,
                 server_pid: int | None, workdir: Path, kbit: float,
                 hls: str = "") -> dict[str, Any]:
    n = args.n
    publishers = n if number in (1, 3) else 1
    players = 0 if number == 1 else n
    name = f"s{number}_{{i}}" if publishers > 1 else f"s{number}"
    ramp = max(publishers, players) / 200 + 1.0  # connections open at 200 per second
    total = ramp + args.warmup + args.window + 2.0
    push = subprocess.Popen(
        lal_command("push", "-q", "--loop", "-n", str(publishers), "--duration",
                    f"{total + 3:.1f}", media, f"{rtmp}/{name}"),
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"push{number}.log", "wb"))
    time.sleep(min(2.0, 0.5 + publishers / 200))
    pull: subprocess.Popen[bytes] | None = None
    figures_path = workdir / f"players{number}.json"
    if players and number == 4:
        figures_path = workdir / f"players4-{urllib.parse.urlsplit(hls).port}.json"
        wait_playlist(f"{hls}/s4/playlist.m3u8")
        pull = subprocess.Popen(
            [sys.executable, "-m", "lal_twisted.tools.hlsload", f"{hls}/s4/playlist.m3u8",
             "-n", str(players), "--duration", f"{total:.1f}", "--json", str(figures_path)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / f"pull{number}.log", "wb"))
    elif players:
        base = http if args.protocol == "httpflv" else rtmp
        url = f"{base}/{name}.flv" if args.protocol == "httpflv" else f"{base}/{name}"
        # --low-water: fewer, larger reads, so one pull process keeps up with N players
        pull = subprocess.Popen(
            lal_command("pull", "-q", url, "-n", str(players), "--duration", f"{total:.1f}",
                        "--json", str(figures_path), "--low-water", "4096"),
            stdout=subprocess.DEVNULL, stderr=open(workdir / f"pull{number}.log", "wb"))
    time.sleep(ramp + args.warmup)
    push_stat = ProcStat(push.pid)
    server_stat = ProcStat(server_pid) if server_pid else None
    pull_stat = ProcStat(pull.pid) if pull else None
    live = [s for s in (server_stat, push_stat, pull_stat) if s is not None]
    for s in live:
        s.begin()
    deadline = time.monotonic() + args.window
    while time.monotonic() < deadline:
        for s in live:
            s.sample()
        time.sleep(0.5)
    for s in live:
        s.end()
    hls_figures = (check_playlists(hls, name, publishers, args.fragment_ms)
                   if hls and number != 4 else {})
    # The window is measured: the load stops.  ``lal pull`` ends on SIGTERM as at
    # the end of its --duration (its figures written); the HLS players of
    # scenario 4 play to the end of theirs.  Then the publishers go.
    if pull is not None and number == 4:
        try:
            pull.wait(total + 30)
        except subprocess.TimeoutExpired:
            pull.kill()
            pull.wait()
    elif pull is not None:
        stop_process(pull, signal.SIGTERM)
    stop_process(push, signal.SIGTERM)
    result: dict[str, Any] = {
        "scenario": number, "publishers": publishers, "players": players,
        "protocol": args.protocol if players else None, "window_s": args.window,
        "stream_kbit": round(kbit, 1),
        "server_cpu_percent": round(server_stat.cpu_percent, 1) if server_stat else None,
        "server_rss_mb": round(server_stat.rss_max_mb, 1) if server_stat else None,
        "push_cpu_percent": round(push_stat.cpu_percent, 1),
        "pull_cpu_percent": round(pull_stat.cpu_percent, 1) if pull_stat else None,
    }
    if number == 4:
        result.update(hls_player_health(figures_path, players))
    else:
        result.update(player_health(figures_path if players else None, kbit, players))
    result.update(hls_figures)
    generators = [result["push_cpu_percent"], result["pull_cpu_percent"] or 0.0]
    result["load_generator_saturated"] = max(generators) > SATURATED
    return result


def wait_playlist(url: str, timeout: float = 30.0) -> None:
    """Wait until the first segment is listed (players poll from then on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise ToolError(f"{url}: no playlist within {timeout:g}s")


def check_playlists(hls: str, name: str, streams: int, fragment_ms: int) -> dict[str, Any]:
    """Every stream's live playlist, read once: is its newest segment current, and
    did segments come late?  A segment's name holds the wall-clock time its first
    packet was taken (ms); over a playlist, how far those times drift behind the
    media time the durations add up to is how late the server made segments."""
    current = 0
    drifts: list[float] = []
    ages: list[float] = []
    missing = 0
    for i in range(streams):
        key = name.format(i=i) if "{i}" in name else name
        try:
            with urllib.request.urlopen(f"{hls}/{key}/playlist.m3u8", timeout=5) as resp:
                text = resp.read().decode()
        except (OSError, ValueError):
            missing += 1
            continue
        now = time.time()
        entries: list[tuple[float, float]] = []  # (start wall time s, duration s)
        duration = 0.0
        for line in text.splitlines():
            if line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",")[0])
            elif line and not line.startswith("#"):
                entries.append((int(line.rsplit("-", 2)[1]) / 1000, duration))
        if not entries:
            missing += 1
            continue
        start0 = entries[0][0]
        media = 0.0
        for start, length in entries:
            drifts.append((start - start0 - media) * 1000)
            media += length
        last_start, last_length = entries[-1]
        age = now - (last_start + last_length)
        ages.append(age)
        # The next segment is due one GOP or so after the fragment duration.
        if age <= fragment_ms / 1000 + 3.0:
            current += 1
    return {
        "hls_playlists_current": current, "hls_playlists_missing": missing,
        "hls_segment_drift_ms_max": round(max(drifts), 1) if drifts else None,
        "hls_newest_segment_age_s_max": round(max(ages), 2) if ages else None,
    }


def hls_player_health(path: Path, expected: int) -> dict[str, Any]:
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"players_ok": 0, "players_failed": expected,
                "error": "the HLS load process wrote no figures"}
    ok = expected if figures["errors"] == 0 and figures["not_found"] == 0 else 0
    return {"players_ok": ok, "players_failed": expected - ok, **{
        f"hls_{k}": v for k, v in figures.items() if k != "players"}}


def player_health(path: Path | None, kbit: float, expected: int) -> dict[str, Any]:
    if path is None:
        return {"players_ok": None}
    try:
        conns = json.loads(path.read_text())["connections"]
    except (OSError, ValueError, KeyError):
        return {"players_ok": 0, "players_failed": expected,
                "error": "the pull process wrote no figures"}
    received = [c for c in conns if c["bytes"] > 0]
    # the steady rate leaves out the cached GOP burst a player gets on joining
    rates = [c["steady_kbit_per_s"] or c["kbit_per_s"] for c in received] or [0.0]
    firsts = [c["first_video_ms"] for c in received if c["first_video_ms"] is not None]
    healthy = [c for c in received
               if abs((c["steady_kbit_per_s"] or c["kbit_per_s"]) - kbit) <= 0.1 * kbit
               and c["max_gap_ms"] <= 1000]
    return {
        "players_ok": len(healthy),
        "players_failed": expected - len(received),
        "player_kbit_min": min(rates),
        "player_kbit_median": statistics.median(rates),
        "player_fps_median": statistics.median([c["fps"] for c in received] or [0.0]),
        "players_with_gap_over_1s": sum(1 for c in received if c["max_gap_ms"] > 1000),
        "first_video_ms_median": statistics.median(firsts) if firsts else None,
        "first_video_ms_max": max(firsts) if firsts else None,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    head = ("scen", "server", "pubs", "players", "server CPU%", "RSS MB", "push CPU%", "pull CPU%",
            "healthy", "kbit/s med", "gaps>1s", "1st frame ms")
    rows = [head]
    for r in results:
        rows.append((
            str(r["scenario"]), r["server"], str(r["publishers"]), str(r["players"]),
            _fmt(r["server_cpu_percent"]), _fmt(r["server_rss_mb"]),
            _fmt(r["push_cpu_percent"]), _fmt(r["pull_cpu_percent"]),
            "-" if r["players_ok"] is None else f"{r['players_ok']}/{r['players']}",
            _fmt(r.get("player_kbit_median")), _fmt(r.get("players_with_gap_over_1s")),
            _fmt(r.get("first_video_ms_median"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for r in results:
        if r["load_generator_saturated"]:
            print(f"scenario {r['scenario']} on {r['server']}: a load process used more than "
                  f"{SATURATED:g}% of a core: it may have been the bottleneck, not the server")
    for ratio in ratios(results):
        print(f"scenario {ratio['scenario']}: lals/nginx-rtmp CPU {_fmt(ratio['cpu_ratio'])}x, "
              f"RSS {_fmt(ratio['rss_ratio'])}x")


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ours/nginx per scenario, where both ran."""
    out = []
    for number in sorted({r["scenario"] for r in results}):
        ours = next((r for r in results if r["scenario"] == number and r["server"] == "lals"),
                    None)
        peer = next((r for r in results
                     if r["scenario"] == number and r["server"] == "nginx-rtmp"), None)
        if ours is None or peer is None:
            continue
        out.append({
            "scenario": number,
            "cpu_ratio": _ratio(ours["server_cpu_percent"], peer["server_cpu_percent"]),
            "rss_ratio": _ratio(ours["server_rss_mb"], peer["server_rss_mb"]),
        })
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))


def run(args: argparse.Namespace) -> int:
    try:
        scenarios = sorted({int(s) for s in args.scenario.split(",") if s.strip()})
    except ValueError:
        raise ToolError(f"--scenario takes numbers 1, 2, 3 separated by commas, "
                        f"got {args.scenario!r}") from None
    if not scenarios or any(s not in (1, 2, 3, 4) for s in scenarios):
        raise ToolError(f"--scenario takes 1, 2, 3 and/or 4, got {args.scenario!r}")
    if (args.hls or 4 in scenarios) and args.rtmp:
        raise ToolError("--hls and scenario 4 run the bench's own server (no --rtmp)")
    if args.n < 1:
        raise ToolError(f"-n must be at least 1, got {args.n}")
    if args.http and not args.rtmp:
        raise ToolError("--http goes with --rtmp (a server given by URL)")
    formats: set[str] = set()
    if args.record:
        if args.rtmp:
            raise ToolError("--record configures the project's own server: not with --rtmp")
        formats = {f.strip() for f in args.record.split(",") if f.strip()}
        if not formats or formats - {"flv", "mpegts"}:
            raise ToolError(f"--record takes flv, mpegts or flv,mpegts, got {args.record!r}")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lal-bench-"))
    media, kbit = bench_media(args.file, workdir)
    if args.compare and args.protocol == "httpflv":
        raise ToolError("nginx-rtmp has no HTTP-FLV: --compare nginx needs --protocol rtmp")
    extra: dict[str, Any] = {}
    if formats:
        extra["record"] = {"enable_flv": "flv" in formats, "flv_out_path": str(workdir / "rec"),
                           "enable_mpegts": "mpegts" in formats,
                           "mpegts_out_path": str(workdir / "rec")}
    targets: list[tuple[str, Any]] = []
    if args.rtmp:
        if args.protocol == "httpflv" and not args.http:
            raise ToolError("--protocol httpflv with --rtmp needs --http")
        targets.append(("given", None))
    else:
        targets.append(("lals", OwnServer))
    if args.compare == "nginx":
        targets.append(("nginx-rtmp", NginxServer))
    results = []
    for number in scenarios:
        for name, make in targets:
            hls_mode = args.hls
            if number == 4:
                hls_mode = "memory"
                if make is NginxServer:
                    name, make = "nginx-static", NginxHlsServer
            server: Any
            if make is OwnServer:
                server = OwnServer(workdir, hls_mode, args.fragment_ms, extra)
            elif make is NginxHlsServer:
                server = NginxHlsServer(workdir, args.fragment_ms)
            elif make is NginxServer:
                server = NginxServer(workdir, hls_mode, args.fragment_ms)
            else:
                server = make(workdir) if make is not None else None
            try:
                if server is None:
                    rtmp, http, pid = (args.rtmp.rstrip("/"), (args.http or "").rstrip("/"),
                                       args.server_pid)
                else:
                    rtmp, http, pid = server.rtmp, server.http, server.pid
                print(f"scenario {number} on {name}: running ({args.n} connections, "
                      f"{args.window:g}s window)...", file=sys.stderr, flush=True)
                hls_url = getattr(server, "hls", "") if (hls_mode or number == 4) else ""
                result = run_scenario(number, args, media, rtmp, http, pid, workdir, kbit,
                                      hls_url)
                result["server"] = name
                result["hls"] = hls_mode
                result["record"] = ",".join(sorted(formats)) or None
                results.append(result)
            finally:
                if server is not None:
                    server.stop()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"stream": media, "results": results, "ratios": ratios(results)}, indent=1))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
