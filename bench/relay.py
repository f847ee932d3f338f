"""Relay benchmarks on loopback: what an edge pays to relay a stream, and what
relay pushes cost the origin.

Modes (CPU of each server process over a steady window, from /proc):

- ``origin N``: one publisher, N RTMP players on the same server;
- ``edge N``: one publisher on an origin, N RTMP players on an edge that pulls
  the stream from the origin on demand (static_relay_pull);
- ``base K`` / ``push K`` / ``players K``: K publishers on an origin, with no
  output, with a relay push of every stream to a second server, or with one
  extra RTMP player per stream.

The players are ``lal pull -n N --low-water 4096`` and the publishers ``lal push
--loop`` of FILE (the bench stream of ``lal bench``, e.g. from its ``--keep``).
Usage: ``python bench/relay.py FILE MODE N``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
WINDOW = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(work: Path, name: str, **extra: Any) -> tuple[subprocess.Popen[bytes], int]:
    d = work / name
    d.mkdir()
    port = free_port()
    conf = {"rtmp": {"addr": f"127.0.0.1:{port}"},
            "default_http": {"http_listen_addr": f"127.0.0.1:{free_port()}"},
            "log": {"level": "warn", "filename": "", "is_to_stdout": True}, **extra}
    (d / "lals.json").write_text(json.dumps(conf))
    proc = subprocess.Popen([str(BIN / "twistd"), "-n", "--pidfile=", "lals", "--config",
                             str(d / "lals.json")], cwd=ROOT,
                            stdout=open(d / "log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not start: {(d / 'log').read_text()}")


def ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu(pids: list[int]) -> list[float]:
    before, t0 = [ticks(p) for p in pids], time.monotonic()
    time.sleep(WINDOW)
    elapsed = time.monotonic() - t0
    return [round(100 * (ticks(p) - b) / TICK / elapsed, 1) for p, b in zip(pids, before,
                                                                            strict=True)]


def lal(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "lal"), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main() -> None:
    media, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    work = Path(tempfile.mkdtemp(prefix="lal-relay-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if mode in ("origin", "edge"):
            origin, oport = start(work, "origin")
            procs.append(origin)
            play_port, measured = oport, origin
            if mode == "edge":
                edge, eport = start(work, "edge", static_relay_pull={
                    "enable": True, "addr": f"127.0.0.1:{oport}"})
                procs.append(edge)
                play_port, measured = eport, edge
            procs.append(lal("push", "-q", "--loop", media, f"rtmp://127.0.0.1:{oport}/live/s"))
            time.sleep(2)
            procs.append(lal("pull", "-q", f"rtmp://127.0.0.1:{play_port}/live/s", "-n", str(n),
                             "--duration", "120", "--low-water", "4096"))
            time.sleep(n / 200 + 6)
            served, origin_cpu = cpu([measured.pid, origin.pid])
            print(f"{mode}: {n} players: serving server {served}% of a core"
                  + (f", origin {origin_cpu}%" if mode == "edge" else ""))
        else:
            target, tport = start(work, "target")
            extra = ({"relay_push": {"enable": True, "addr_list": [f"127.0.0.1:{tport}"]}}
                     if mode == "push" else {})
            origin, oport = start(work, "origin", **extra)
            procs += [target, origin]
            procs.append(lal("push", "-q", "--loop", "-n", str(n), media,
                             f"rtmp://127.0.0.1:{oport}/live/s{{i}}"))
            time.sleep(n / 100 + 3)
            if mode == "players":
                procs.append(lal("pull", "-q", f"rtmp://127.0.0.1:{oport}/live/s{{i}}", "-n",
                                 str(n), "--duration", "120", "--low-water", "4096"))
            time.sleep(8)
            origin_cpu, target_cpu = cpu([origin.pid, target.pid])
            print(f"{mode}: {n} streams: origin {origin_cpu}% of a core (push target "
                  f"{target_cpu}%)")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
