"""lal push / lal pull against the real server, checked with ffmpeg/ffprobe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FPS, Media, Server
from mediatools import finish, probe, pull, push, read_tags

LAL = [sys.executable, "-m", "lal_twisted.tools.cli"]

# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


def lal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAL, *args], capture_output=True, text=True, timeout=timeout)


def lal_bg(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*LAL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def media_tags(path: Path) -> list[tuple[int, int, bytes]]:
    tags = [t for t in read_tags(path) if t.tag_type in (8, 9)]
    base = tags[0].timestamp
    return [(t.tag_type, t.timestamp - base, t.payload) for t in tags]


def test_push_then_ffmpeg_plays(server: Server, media: Media, tmp_path: Path) -> None:
    pusher = lal_bg("push", "-q", str(media.long_av), server.rtmp_url("pushed"))
    out = tmp_path / "played.flv"
    try:
        server.wait_live("pushed")
        code, err = finish(pull(server.rtmp_url("pushed"), out, 3.0))
        assert code == 0, err
    finally:
        pusher.terminate()
        stdout, _ = pusher.communicate(timeout=10)
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}
    assert abs(info.video_frames - 3 * FPS) <= 0.1 * 3 * FPS and info.decode_errors == ""
    assert "stream 0" in stdout and "total: 1 stream(s)" in stdout


def test_pull_writes_what_the_server_sent(server: Server, media: Media, tmp_path: Path) -> None:
    rtmp_out, http_out = tmp_path / "rtmp.flv", tmp_path / "http.flv"
    pullers = [lal_bg("pull", "-q", server.rtmp_url("exact"), str(rtmp_out), "--duration", "12"),
               lal_bg("pull", "-q", server.flv_url("exact"), str(http_out), "--duration", "12")]
    server.wait_players("exact", 2)
    assert server.log().count("waiting for publisher") >= 2
    done = lal("push", "-q", str(media.av), server.rtmp_url("exact"))
    assert done.returncode == 0, done.stderr
    for p in pullers:
        p.terminate()  # the stream ended; stop waiting for a next publisher
        p.communicate(timeout=15)
    source = media_tags(media.av)
    for out in (rtmp_out, http_out):
        assert media_tags(out) == source
        info = probe(out)
        assert info.decode_errors == "" and info.video_frames == 6 * FPS


def test_push_loop_keeps_timestamps_increasing(server: Server, media: Media,
                                               tmp_path: Path) -> None:
    out = tmp_path / "loop.flv"
    pusher = lal_bg("push", "-q", "--loop", "--duration", "12", str(media.video_only),
                    server.rtmp_url("loop"))
    try:
        server.wait_live("loop")
        # the 6 s file is pushed twice within this 8 s window
        done = lal("pull", "-q", server.rtmp_url("loop"), str(out), "--duration", "8")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        pusher.terminate()
        pusher.communicate(timeout=10)
    dts = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts",
         "-of", "csv=p=0", str(out)], capture_output=True, text=True, check=True).stdout.split()
    stamps = [int(x) for x in dts if x.strip().lstrip("-").isdigit()]
    assert len(stamps) >= 7 * FPS
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), "dts must increase"
    assert stamps[-1] - stamps[0] >= 7000  # crossed the 6 s file end
    assert probe(out).decode_errors == ""


@pytest.mark.serial  # first video within 1 s, no stalls
def test_many_streams_push_and_pull(server: Server, media: Media, tmp_path: Path) -> None:
    pusher = lal_bg("push", "-q", "-n", "3", "--duration", "8", str(media.long_av),
                    server.rtmp_url("multi{i}"))
    for i in range(3):
        server.wait_live(f"multi{i}")
    stats = tmp_path / "stats.json"
    done = lal("pull", "-q", server.rtmp_url("multi{i}"), str(tmp_path / "out{i}.flv"),
               "-n", "3", "--duration", "4", "--json", str(stats), "--low-water", "2048")
    assert done.returncode == 0, done.stdout + done.stderr
    fan = lal("pull", "-q", server.flv_url("multi1"), "-n", "4", "--duration", "3")
    assert fan.returncode == 0, fan.stdout + fan.stderr
    assert "4 connection(s), 4 received, 0 failed" in fan.stdout
    stdout, _ = pusher.communicate(timeout=20)
    assert pusher.returncode == 0 and "3 stream(s)" in stdout and "0 failed" in stdout
    figures = json.loads(stats.read_text())["connections"]
    assert [f["url"] for f in figures] == [server.rtmp_url(f"multi{i}") for i in range(3)]
    for i, fig in enumerate(figures):
        assert fig["error"] is None and fig["stalls"] == 0
        assert fig["first_video_ms"] is not None and fig["first_video_ms"] < 1000
        assert 150 < fig["kbit_per_s"] < 600
        info = probe(tmp_path / f"out{i}.flv")
        # 4 s of wall clock, plus up to one cached GOP (1 s) sent at once on joining
        assert 0.9 * 4 * FPS <= info.video_frames <= 5 * FPS + 5, info
        assert info.decode_errors == ""


def test_bad_input_gives_one_line_and_nonzero_exit(server: Server, media: Media,
                                                   tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a video\n")
    truncated = tmp_path / "cut.flv"
    truncated.write_bytes(media.av.read_bytes()[:30000])
    cases = [
        (("push", str(tmp_path / "missing.flv"), server.rtmp_url("x")), "no such file"),
        (("push", str(text), server.rtmp_url("x")), "not an FLV"),
        (("push", str(truncated), server.rtmp_url("x")), "truncated"),
        (("push", str(media.av), "http://127.0.0.1/live/x"), "not an rtmp:// or rtmps:// URL"),
        (("push", str(media.av), "rtmp://127.0.0.1:1/live/x"), "refused"),
        (("pull", "rtmp://127.0.0.1:1/live/x", str(tmp_path / "o.flv")), "refused"),
        (("pull", f"http://127.0.0.1:{server.http_port}/nothing", str(tmp_path / "o.flv")),
         "404"),
        (("pull", "ftp://127.0.0.1/x.flv", str(tmp_path / "o.flv")), "not an rtmp(s)://"),
    ]
    for args, message in cases:
        done = lal(*args)
        assert done.returncode != 0, args
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # a stream that is already being published is refused by the server
    first = push(media.long_av, server.rtmp_url("taken"))
    try:
        server.wait_live("taken")
        done = lal("push", str(media.av), server.rtmp_url("taken"))
        assert done.returncode != 0 and "BadName" in done.stderr
    finally:
        first.kill()
        finish(first)
