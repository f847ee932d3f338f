"""Soak test: a long run of mixed, churning, partly hostile load against the
server, watching whether its memory and file descriptors stay flat.

It starts the project's server (``twistd -n lals`` on free loopback ports, as
``lal bench`` does) or uses one given by URL, then for ``--duration`` seconds:

- publishers: ``lal push --loop`` of the bench stream, most of them in one
  process with ``-n``; a few others each in a process of their own, which is
  stopped (SIGTERM or SIGKILL, in turn) every ``--restart-every`` seconds and
  started again ``--restart-pause`` seconds later, so streams unpublish and
  republish while their players wait;
- players: half RTMP, half HTTP-FLV, in this process (``lal pull``'s
  ``Puller``); every ``--churn-every`` seconds a random ``--churn`` fraction of
  them leaves and as many new ones join, on random streams;
- hostile clients, one every ``--hostile-every`` seconds in turn, each closed by
  this tool after at most ``--hostile-hold`` seconds: garbage bytes on the RTMP
  port, a garbage or oversized HTTP request, a slowloris HTTP request (one byte
  per second), a client that says nothing, an HTTP-FLV player that stops
  reading, an RTMP play or publish with a 100,000-character stream name.

Every ``--interval`` seconds it records the server's RSS, open fds, sockets and
CPU and how many players are receiving.  At the end it stops the load, lets the
server settle, and judges: RSS flat within 10% over the steady part (after
``--warmup``) and no leaked fds (fds after the load minus fds before it).  Exit
status 0 when both hold, 1 otherwise.  Everything it starts it stops, also on
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, endpoints, protocol, task
from twisted.python.failure import Failure

from lal_twisted.dial import dial
from lal_twisted.rtmp.client import RTMPClientFactory, RTMPClientProtocol
from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl, RtmpUrlError
from lal_twisted.tools.bench import bench_media, lal_command
from lal_twisted.tools.bench_servers import TICK, OwnServer, ProcStat
from lal_twisted.tools.common import (
    ToolError,
    install_stop_handler,
    now,
    open_in_batches,
    run_reactor,
)
from lal_twisted.tools.pull import Puller

RSS_GOAL_PERCENT = 10.0  # the steady part's RSS may change by at most this much
RECEIVING_WINDOW = 2.0  # a player is receiving if a packet came in the last 2 s
LOW_WATER = 4096  # RTMP players read in 4 KiB steps, as in lal bench
MAX_RESTARTING = 5  # publisher processes that get restarted
SATURATED = 90.0  # % of one core: above this the load generator may be the limit
HOSTILE_KINDS = ("garbage-rtmp", "garbage-http", "slowloris", "silent", "non-reader",
                 "long-name")
LONG_NAME = 100_000  # characters: beyond AMF0's short string


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soak.py",
        description="Run publishers, churning players and hostile clients against the server "
                    "for a long time and check that its RSS stays flat and it leaks no fds. "
                    "Starts the project's server on free loopback ports unless --rtmp is given.")
    p.add_argument("--duration", type=float, default=1800.0, metavar="S",
                   help="seconds of load, warm-up included (default 1800)")
    p.add_argument("--warmup", type=float, default=60.0, metavar="S",
                   help="seconds of load before the steady part begins (default 60)")
    p.add_argument("--interval", type=float, default=10.0, metavar="S",
                   help="seconds between samples (default 10)")
    p.add_argument("--publishers", type=int, default=50, metavar="N",
                   help="streams published (default 50)")
    p.add_argument("--players", type=int, default=150, metavar="M",
                   help="players, half RTMP, half HTTP-FLV (default 150)")
    p.add_argument("--churn", type=float, default=0.1, metavar="F",
                   help="fraction of the players replaced at each churn step (default 0.1)")
    p.add_argument("--churn-every", type=float, default=5.0, metavar="S",
                   help="seconds between churn steps (default 5; 0: no churn)")
    p.add_argument("--restart-every", type=float, default=30.0, metavar="S",
                   help="seconds between publisher restarts (default 30; 0: none)")
    p.add_argument("--restart-pause", type=float, default=3.0, metavar="S",
                   help="seconds a restarted publisher stays away (default 3)")
    p.add_argument("--hostile-every", type=float, default=15.0, metavar="S",
                   help="seconds between hostile clients (default 15; 0: none)")
    p.add_argument("--hostile-hold", type=float, default=60.0, metavar="S",
                   help="a hostile client is closed after at most S seconds (default 60)")
    p.add_argument("--settle", type=float, default=10.0, metavar="S",
                   help="after the load, wait up to S seconds for the server's fds to "
                        "come back (default 10)")
    p.add_argument("--file", help="FLV to publish (default: generate lal bench's "
                                  "200+64 kbit/s stream with ffmpeg)")
    p.add_argument("--rtmp", metavar="URL", help="use this server: rtmp://host:port/app")
    p.add_argument("--http", metavar="URL", help="with --rtmp: http://host:port/app")
    p.add_argument("--server-pid", type=int, metavar="PID",
                   help="with --rtmp: the server's process id (its /proc is read)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", metavar="PATH", help="write every sample and the summary as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep the server and publisher logs in DIR")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.publishers < 1:
        raise ToolError(f"--publishers must be at least 1, got {args.publishers}")
    if args.players < 0:
        raise ToolError(f"--players must not be negative, got {args.players}")
    if args.interval <= 0:
        raise ToolError("--interval must be positive")
    if not 0 <= args.warmup < args.duration:
        raise ToolError("--warmup must be at least 0 and shorter than --duration")
    if not 0 <= args.churn <= 1:
        raise ToolError("--churn is a fraction between 0 and 1")
    for name in ("churn_every", "restart_every", "restart_pause", "hostile_every",
                 "hostile_hold", "settle"):
        if getattr(args, name) < 0:
            raise ToolError(f"--{name.replace('_', '-')} must not be negative")
    given = [args.rtmp, args.http, args.server_pid]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ToolError("a server of your own needs all three: --rtmp URL --http URL "
                        "--server-pid PID")
    if args.rtmp:
        try:
            RtmpUrl.parse(args.rtmp.rstrip("/") + "/x")
        except RtmpUrlError as e:
            raise ToolError(f"--rtmp: {e}") from None
        parts = urlsplit(args.http)
        if parts.scheme != "http" or not parts.hostname:
            raise ToolError(f"--http takes http://host:port/app, got {args.http!r}")
        if not os.path.isdir(f"/proc/{args.server_pid}/fd"):
            raise ToolError(f"--server-pid {args.server_pid}: no such process")
        try:
            os.listdir(f"/proc/{args.server_pid}/fd")
        except OSError as e:
            raise ToolError(f"--server-pid {args.server_pid}: cannot read its fds: "
                            f"{e.strerror}") from None


# -- the server's figures -----------------------------------------------------------------

class ServerGone(Exception):
    """The server process is no longer there."""


class ServerProbe:
    """RSS, fds, sockets and CPU of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = self._ticks()
        self.time = now()

    def _ticks(self) -> int:
        try:
            return ProcStat.ticks(self.pid)
        except (OSError, IndexError) as e:
            raise ServerGone(str(e)) from None

    def fds(self) -> tuple[int, int]:
        """Open fds and how many of them are sockets."""
        path = f"/proc/{self.pid}/fd"
        try:
            names = os.listdir(path)
        except OSError as e:
            raise ServerGone(str(e)) from None
        sockets = 0
        for name in names:
            try:
                if os.readlink(f"{path}/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:  # closed since the listing
                pass
        return len(names), sockets

    def sample(self) -> dict[str, Any]:
        """The figures now; CPU is % of one core since the previous sample."""
        ticks, t = self._ticks(), now()
        cpu = 100.0 * (ticks - self.ticks) / TICK / (t - self.time) if t > self.time else 0.0
        self.ticks, self.time = ticks, t
        try:
            rss = ProcStat.rss_mb(self.pid)
        except OSError as e:
            raise ServerGone(str(e)) from None
        fds, sockets = self.fds()
        return {"rss_mib": round(rss, 2), "fds": fds, "sockets": sockets,
                "cpu_percent": round(cpu, 1)}


# -- publishers -------------------------------------------------------------------------

class PushProcess:
    """One ``lal push --loop`` process publishing ``count`` streams."""

    def __init__(self, media: str, url: str, count: int, log_path: Path) -> None:
        self.media = media
        self.url = url
        self.count = count
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.away = False  # stopped on purpose, to be started again

    def start(self, seconds: float) -> None:
        """Start it, bounded to ``seconds`` even if this tool dies."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                lal_command("push", "-q", "--loop", "--reconnect", "1", "-n", str(self.count),
                            "--duration", f"{seconds:.0f}", self.media, self.url),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pids.append(self.proc.pid)
        self.away = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reap(self) -> None:
        """Make sure the last incarnation is gone (kill it if it lingers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def reconnects(self) -> int:
        """Reconnections its streams reported at exit (the server closed them)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(int(n) - 1 for n in re.findall(r"(\d+) connect\(s\)", text))


# -- players ----------------------------------------------------------------------------

class Player(Puller):
    """A ``lal pull`` connection that can be asked to leave at any moment,
    even before the server has accepted it."""

    def __init__(self, index: int, url: str, kind: str) -> None:
        super().__init__(index, url, None, 1.0, LOW_WATER if kind == "rtmp" else 0)
        self.kind = kind
        self.leaving = False

    def leave(self) -> None:
        self.leaving = True
        self.stop()

    def _rtmp_ready(self, proto: RTMPClientProtocol) -> None:
        super()._rtmp_ready(proto)
        if self.leaving:
            self.stop()

    def _http_ready(self, pull: Any) -> None:
        super()._http_ready(pull)
        if self.leaving:
            self.stop()

    def receiving(self, t: float) -> bool:
        return self.ended is None and self.last is not None and t - self.last <= RECEIVING_WINDOW


@dataclass
class PlayerTally:
    started: int = 0
    received: int = 0  # got at least one packet
    failed: int = 0  # ended by the server (or a connection error) before any packet
    dropped: int = 0  # ended by the server after receiving
    errors: Counter[str] = field(default_factory=Counter)


# -- hostile clients ----------------------------------------------------------------------

@dataclass
class HostileRecord:
    kind: str
    variant: str
    t: float  # seconds into the load when it was started
    started: float = 0.0
    connected: float | None = None
    ended: float | None = None
    closed_by: str | None = None  # "server" or "soak"; None while open
    outcome: str = ""
    bytes_in: int = 0

    def as_dict(self) -> dict[str, Any]:
        open_s = None if self.connected is None or self.ended is None else \
            round(self.ended - self.connected, 1)
        return {"kind": self.kind, "variant": self.variant, "t": round(self.t, 1),
                "closed_by": self.closed_by, "open_s": open_s, "outcome": self.outcome,
                "bytes_in": self.bytes_in}


class RawHostile(protocol.Protocol):
    """A misbehaving TCP client: ``begin`` does the misdeed once connected; the
    soak closes it after ``hold`` seconds if the server has not."""

    def __init__(self, owner: Hostiles, record: HostileRecord) -> None:
        self.owner = owner
        self.record = record
        self.timer: Any = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted interface
        self.record.connected = now()
        self.timer = self.owner.reactor.callLater(self.owner.hold, self.abort)
        self.begin()

    def begin(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        self.record.bytes_in += len(data)

    def abort(self) -> None:
        if self.transport is not None and self.record.ended is None:
            if self.record.closed_by is None:
                self.record.closed_by = "soak"
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        record = self.record
        record.ended = now()
        if record.closed_by is None:
            record.closed_by = "server"
            record.outcome = reason.getErrorMessage()[:120]
        self.owner.closed(self)


class GarbageRtmp(RawHostile):
    def begin(self) -> None:
        if self.record.variant == "random":
            self.transport.write(os.urandom(4096))  # type: ignore[union-attr]
        else:  # a version byte, then C1, C2 and chunks of noise
            self.transport.write(b"\x03" + os.urandom(1536 * 2 + 8192))  # type: ignore[union-attr]


class GarbageHttp(RawHostile):
    def begin(self) -> None:
        variant, path = self.record.variant, self.owner.http_path
        if variant == "random":
            data = os.urandom(2048) + b"\r\n\r\n"
        elif variant == "long-line":  # a 1 MiB request line
            data = b"GET " + path + b"/" + b"a" * (1 << 20) + b".flv HTTP/1.1\r\nHost: x\r\n\r\n"
        else:  # 2000 headers of 1 KiB
            pad = b"p" * 1024
            data = (b"GET " + path + b"/soak0.flv HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(b"X-Pad-%d: %s\r\n" % (i, pad) for i in range(2000)) + b"\r\n")
        self.transport.write(data)  # type: ignore[union-attr]


class Slowloris(RawHostile):
    """Sends an HTTP-FLV request's headers one byte per second, never ending them."""

    def begin(self) -> None:
        self.drip = self._bytes()
        self.loop = task.LoopingCall(self._send)
        self.loop.clock = self.owner.reactor
        self.loop.start(1.0)

    def _bytes(self) -> Iterator[bytes]:
        head = b"GET " + self.owner.http_path + b"/soak0.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        yield from (head[i:i + 1] for i in range(len(head)))
        n = 0
        while True:
            line = b"X-Slow-%d: y\r\n" % n
            yield from (line[i:i + 1] for i in range(len(line)))
            n += 1

    def _send(self) -> None:
        if self.transport is not None:
            self.transport.write(next(self.drip))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if self.loop.running:
            self.loop.stop()
        super().connectionLost(reason)


class NonReader(RawHostile):
    """An HTTP-FLV player that stops reading: its TCP window fills up.  (Whether
    the server dropped it cannot be seen from here: its FIN would wait behind the
    data queued for the closed window.)"""

    def begin(self) -> None:
        transport: Any = self.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream = self.owner.rng.randrange(self.owner.streams)
        transport.write(b"GET " + self.owner.http_path + b"/soak%d.flv HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\n\r\n" % stream)
        transport.pauseProducing()


class LongName:
    """An RTMP play or publish of a stream with a very long name."""

    def __init__(self, owner: Hostiles, record: HostileRecord, url: RtmpUrl) -> None:
        self.owner = owner
        self.record = record
        self.proto: RTMPClientProtocol | None = None
        self.timer: Any = None
        factory = RTMPClientFactory(lambda: RTMPClientProtocol(
            ClientSession(url, record.variant)))
        self.dialling = dial(owner.reactor, url.target, factory, timeout=5)
        self.dialling.addCallbacks(self._connected, self._failed)

    def _connected(self, proto: RTMPClientProtocol) -> None:
        self.proto = proto
        self.record.connected = now()
        self.timer = self.owner.reactor.callLater(self.owner.hold, self.abort)
        proto.ready.addCallbacks(self._accepted, self._refused)
        proto.done.addBoth(self._lost)

    def _accepted(self, proto: RTMPClientProtocol) -> None:
        self.record.outcome = "accepted"

    def _refused(self, failure: Failure) -> None:
        self.record.outcome = failure.getErrorMessage()[:120]

    def _failed(self, failure: Failure) -> None:
        self.record.outcome = f"connect failed: {failure.getErrorMessage()}"[:120]
        self.record.ended = now()
        self.record.closed_by = "server"
        self.owner.closed(self)

    def _lost(self, result: Any) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.record.ended = now()
        if self.record.closed_by is None:
            self.record.closed_by = "server"
        self.owner.closed(self)

    def abort(self) -> None:
        if self.record.ended is not None:
            return
        if self.record.closed_by is None:
            self.record.closed_by = "soak"
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.abortConnection()  # type: ignore[attr-defined]
        else:
            self.dialling.cancel()


class Hostiles:
    """Starts one hostile client at a time, each kind in turn, all on loopback."""

    def __init__(self, reactor: Any, rtmp: str, http: str, hold: float, streams: int,
                 rng: random.Random, t0: float) -> None:
        self.reactor = reactor
        self.rtmp_url = RtmpUrl.parse(rtmp + "/x")
        parts = urlsplit(http)
        self.http_addr = (parts.hostname or "", parts.port or 80)
        self.http_path = parts.path.rstrip("/").encode()
        self.hold = hold
        self.streams = streams
        self.rng = rng
        self.t0 = t0
        self.records: list[HostileRecord] = []
        self.open: set[Any] = set()
        self.count = 0
        self.all_closed: defer.Deferred[None] | None = None

    def launch(self) -> None:
        kind = HOSTILE_KINDS[self.count % len(HOSTILE_KINDS)]
        turn = self.count // len(HOSTILE_KINDS)
        self.count += 1
        variants = {
            "garbage-rtmp": ("random", "after-version"),
            "garbage-http": ("random", "long-line", "many-headers"),
            "silent": ("rtmp", "http"),
            "long-name": ("play", "publish"),
        }.get(kind, ("",))
        record = HostileRecord(kind, variants[turn % len(variants)], now() - self.t0, now())
        self.records.append(record)
        if kind == "long-name":
            url = dataclasses.replace(self.rtmp_url, stream="soak-" + "x" * LONG_NAME)
            self.open.add(LongName(self, record, url))
            return
        make: type[RawHostile] = {"garbage-rtmp": GarbageRtmp, "garbage-http": GarbageHttp,
                                  "slowloris": Slowloris, "non-reader": NonReader}.get(
                                      kind, RawHostile)
        on_rtmp = kind == "garbage-rtmp" or (kind == "silent" and record.variant == "rtmp")
        host, port = ((self.rtmp_url.host, self.rtmp_url.port) if on_rtmp else self.http_addr)
        client = make(self, record)
        self.open.add(client)
        endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=5)
        d = endpoints.connectProtocol(endpoint, client)
        d.addErrback(self._connect_failed, client)

    def _connect_failed(self, failure: Failure, client: RawHostile) -> None:
        client.record.ended = now()
        client.record.closed_by = "server"
        client.record.outcome = f"connect failed: {failure.getErrorMessage()}"[:120]
        self.closed(client)

    def closed(self, client: Any) -> None:
        self.open.discard(client)
        if not self.open and self.all_closed is not None and not self.all_closed.called:
            self.all_closed.callback(None)

    def close_all(self) -> defer.Deferred[None]:
        self.all_closed = defer.Deferred()
        if not self.open:
            self.all_closed.callback(None)
        for client in list(self.open):
            client.abort()
        return self.all_closed

    def tally(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.records:
            entry = out.setdefault(r.kind, {"started": 0, "closed_by_server": 0,
                                            "closed_by_soak": 0, "max_open_s": 0.0})
            entry["started"] += 1
            if r.closed_by == "server":
                entry["closed_by_server"] += 1
            elif r.closed_by == "soak":
                entry["closed_by_soak"] += 1
            if r.connected is not None and r.ended is not None:
                entry["max_open_s"] = round(max(entry["max_open_s"], r.ended - r.connected), 1)
        return out


def check_loopback(*urls: str) -> None:
    """Hostile clients only ever go to this machine."""
    for url in urls:
        host = urlsplit(url).hostname or ""
        try:
            addrs = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except OSError as e:
            raise ToolError(f"{url}: cannot resolve {host!r}: {e}") from None
        if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
            raise ToolError(f"{url}: hostile clients only go to a loopback address; use "
                            "--hostile-every 0 for a server elsewhere")


# -- the run ------------------------------------------------------------------------------

class Soak:
    def __init__(self, args: argparse.Namespace, rtmp: str, http: str, pid: int, media: str,
                 workdir: Path, server_log: Path | None) -> None:
        self.args = args
        self.rtmp = rtmp
        self.http = http
        self.pid = pid
        self.media = media
        self.workdir = workdir
        self.server_log = server_log
        self.rng = random.Random(args.seed)
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.players: list[Player] = []
        self.tally = PlayerTally()
        self.stopping = False
        self.restarts = 0
        self.unexpected_exits = 0
        self.server_gone: str | None = None
        self.t0 = 0.0
        n = args.publishers
        restarting = max(1, min(MAX_RESTARTING, n // 2)) if args.restart_every else 0
        stable = n - restarting
        self.pushes: list[PushProcess] = []
        if stable:
            self.pushes.append(PushProcess(media, f"{rtmp}/soak{{i}}", stable,
                                           workdir / "push-main.log"))
        self.restartable = [PushProcess(media, f"{rtmp}/soak{stable + j}", 1,
                                        workdir / f"push-soak{stable + j}.log")
                            for j in range(restarting)]
        self.pushes += self.restartable

    # the whole run, in the reactor
    async def run(self, reactor: Any) -> int:
        self.reactor = reactor
        ending: defer.Deferred[str] = defer.Deferred()

        def end(reason: str) -> None:
            if not ending.called:
                ending.callback(reason)

        self.end = end
        install_stop_handler(reactor, lambda: end("interrupted"))
        try:
            probe = ServerProbe(self.pid)
            before = probe.sample()
        except ServerGone:
            raise ToolError(f"the server (pid {self.pid}) is not running") from None
        self.before = dict(before, t=None, phase="before")
        self.samples.append(self.before)
        self.print_sample(self.before)
        self.probe = probe
        self.hostiles = Hostiles(reactor, self.rtmp, self.http, self.args.hostile_hold,
                                 self.args.publishers, self.rng, now())
        self.t0 = now()
        self.self_ticks = _own_ticks()
        bound = self.args.duration + 60  # a push process ends by itself after this
        for push in self.pushes:
            push.start(bound)
        self.main_push_ticks = self._push_ticks()
        loops = [self._loop(self.sample, self.args.interval, now=True),
                 self._loop(self.watch, 1.0)]
        if self.args.players:
            reactor.callLater(1.0, self._open_players)
            if self.args.churn_every and self.args.churn:
                loops.append(self._loop(self.churn, self.args.churn_every))
        if self.args.restart_every and self.restartable:
            loops.append(self._loop(self.restart_one, self.args.restart_every))
        if self.args.hostile_every:
            loops.append(self._loop(self.hostiles.launch, self.args.hostile_every))
        timer = reactor.callLater(self.args.duration, end, "done")
        reason = await ending
        self.stopping = True
        if timer.active():
            timer.cancel()
        for loop in loops:
            if loop.running:
                loop.stop()
        last = self.samples[-1]["t"] or 0.0
        if reason != "server exited" and now() - self.t0 - last >= 1.0:
            self.sample(final=True)  # the end of the load, unless a sample was just taken
        self.load_cpu = self._load_cpu()
        await self.stop_load()
        after = await self.settle() if self.server_gone is None else None
        summary = self.summarize(reason, after)
        self.print_summary(summary)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({
                "args": vars(self.args), "rtmp": self.rtmp, "http": self.http,
                "server_pid": self.pid, "pids": self.pids(), "samples": self.samples,
                "events": self.events,
                "hostile_clients": [r.as_dict() for r in self.hostiles.records],
                "summary": summary}, indent=1))
        return 0 if summary["ok"] else 1

    def _loop(self, fn: Callable[[], None], interval: float,
              now: bool = False) -> task.LoopingCall:
        loop = task.LoopingCall(fn)
        loop.clock = self.reactor
        loop.start(interval, now=now).addErrback(self._loop_failed)
        return loop

    def _loop_failed(self, failure: Failure) -> None:
        """A bug in this tool: report it and end the run (everything is still stopped)."""
        self.event("error", failure.getTraceback())
        print(f"soak: internal error, ending the run:\n{failure.getTraceback()}",
              file=sys.stderr)
        self.end("error")

    def event(self, what: str, detail: str = "") -> None:
        self.events.append({"t": round(now() - self.t0, 1), "event": what, "detail": detail})

    def pids(self) -> list[int]:
        own = [] if self.args.rtmp else [self.pid]
        return own + [pid for push in self.pushes for pid in push.pids]

    # -- load ------------------------------------------------------------------------
    def _open_players(self) -> None:
        if self.stopping:
            return
        kinds = ["rtmp" if i % 2 == 0 else "httpflv" for i in range(self.args.players)]
        open_in_batches(self.reactor, [functools.partial(self.new_player, k) for k in kinds],
                        200, lambda: self.stopping)

    def new_player(self, kind: str) -> None:
        stream = self.rng.randrange(self.args.publishers)
        url = (f"{self.rtmp}/soak{stream}" if kind == "rtmp"
               else f"{self.http}/soak{stream}.flv")
        player = Player(self.tally.started, url, kind)
        self.tally.started += 1
        self.players.append(player)
        player.done.addCallback(lambda _: self.player_ended(player))
        player.start(self.reactor)

    def player_ended(self, player: Player) -> None:
        if player not in self.players:  # counted already
            return
        self.players.remove(player)
        tally = self.tally
        if player.bytes:
            tally.received += 1
        if not player.leaving:
            if player.bytes:
                tally.dropped += 1
            else:
                tally.failed += 1
            tally.errors[player.error or "closed by the server"] += 1

    def churn(self) -> None:
        staying = [p for p in self.players if not p.leaving]
        count = round(len(staying) * self.args.churn)
        leaving = self.rng.sample(staying, count) if count else []
        for player in leaving:
            player.leave()
        self.top_up()

    def top_up(self) -> None:
        """Start players until each protocol has its share again."""
        staying = Counter(p.kind for p in self.players if not p.leaving)
        want = {"rtmp": (self.args.players + 1) // 2, "httpflv": self.args.players // 2}
        for kind, n in want.items():
            for _ in range(n - staying[kind]):
                self.new_player(kind)

    def restart_one(self) -> None:
        """Stop one restartable publisher (SIGTERM and SIGKILL in turn); it
        comes back after --restart-pause seconds."""
        up = [p for p in self.restartable if p.running and not p.away]
        if not up:
            return
        push = up[self.restarts % len(up)]
        sig = signal.SIGTERM if self.restarts % 2 == 0 else signal.SIGKILL
        self.restarts += 1
        push.away = True
        push.signal(sig)
        self.event("publisher stopped", f"{push.url} ({signal.Signals(sig).name})")
        self.reactor.callLater(self.args.restart_pause, self._come_back, push)

    def _come_back(self, push: PushProcess) -> None:
        if self.stopping:
            return
        push.reap()
        push.start(self.args.duration - (now() - self.t0) + 60)

    def watch(self) -> None:
        """Every second: a publisher process that died on its own comes back."""
        for push in self.pushes:
            if push.away or push.running or self.stopping or push.proc is None:
                continue
            code = push.proc.returncode
            self.unexpected_exits += 1
            self.event("publisher exited", f"{push.url} with status {code}")
            print(f"soak: the push process for {push.url} exited with status {code}; "
                  "starting it again", file=sys.stderr)
            push.start(self.args.duration - (now() - self.t0) + 60)

    # -- sampling --------------------------------------------------------------------
    def sample(self, final: bool = False) -> None:
        t = now() - self.t0
        try:
            figures = self.probe.sample()
        except ServerGone:
            if self.server_gone is None:
                self.server_gone = f"the server exited at t={t:.0f}s"
                print(f"soak: {self.server_gone}", file=sys.stderr)
                self.event("server exited")
            self.end("server exited")
            return
        active = [p for p in self.players if not p.leaving]
        clock = now()
        sample = dict(figures, t=round(t, 1),
                      phase="warmup" if t < self.args.warmup else "steady",
                      players=len(active), receiving=sum(1 for p in active if p.receiving(clock)),
                      publishers_up=sum(p.count for p in self.pushes if p.running),
                      hostile_open=len(self.hostiles.open))
        if final:
            sample["final"] = True
        self.samples.append(sample)
        self.print_sample(sample)

    def print_sample(self, s: dict[str, Any]) -> None:
        t = "     -" if s["t"] is None else f"{s['t']:5.0f}s"
        line = (f"t={t} {s['phase']:<7} rss {s['rss_mib']:6.1f} MiB  fds {s['fds']:4d}  "
                f"sockets {s['sockets']:4d}  cpu {s['cpu_percent']:5.1f}%")
        if "players" in s:
            line += (f"  receiving {s['receiving']:3d}/{s['players']:<3d}  "
                     f"publishers {s['publishers_up']}/{self.args.publishers}  "
                     f"hostile {s['hostile_open']}")
        print(line, flush=True)

    def _push_ticks(self) -> int | None:
        proc = self.pushes[0].proc if self.pushes else None
        if proc is None or proc.poll() is not None:
            return None
        try:
            return ProcStat.ticks(proc.pid)
        except OSError:
            return None

    def _load_cpu(self) -> dict[str, float | None]:
        elapsed = now() - self.t0
        soak = 100.0 * (_own_ticks() - self.self_ticks) / TICK / elapsed
        push = None
        end_ticks = self._push_ticks()
        if self.main_push_ticks is not None and end_ticks is not None:
            push = 100.0 * (end_ticks - self.main_push_ticks) / TICK / elapsed
        return {"soak_process": round(soak, 1),
                "push_process": None if push is None else round(push, 1)}

    # -- the end ---------------------------------------------------------------------
    async def stop_load(self) -> None:
        reactor = self.reactor
        for player in list(self.players):
            player.leave()
        waiting = [p.done for p in self.players]
        if waiting:
            await _bounded(reactor, defer.DeferredList(waiting), 10.0)
        for player in list(self.players):  # never ended: count them anyway
            self.player_ended(player)
        await _bounded(reactor, self.hostiles.close_all(), 5.0)
        for push in self.pushes:
            push.signal(signal.SIGTERM)
        deadline = now() + 10.0
        while any(p.running for p in self.pushes) and now() < deadline:
            await task.deferLater(reactor, 0.2, lambda: None)
        for push in self.pushes:
            push.reap()

    async def settle(self) -> dict[str, Any] | None:
        """Wait until the server's fds are back to where they were before the load
        (at least 2 s, at most --settle s); the last reading is the verdict."""
        started = now()
        while True:
            await task.deferLater(self.reactor, 0.5, lambda: None)
            try:
                fds, _ = self.probe.fds()
            except ServerGone:
                return None
            waited = now() - started
            if waited >= self.args.settle or (waited >= 2.0 and fds <= self.before["fds"]):
                break
        try:
            after = dict(self.probe.sample(), t=round(now() - self.t0, 1), phase="after",
                         settled_s=round(now() - started, 1))
        except ServerGone:
            return None
        self.samples.append(after)
        self.print_sample(after)
        return after

    def summarize(self, reason: str, after: dict[str, Any] | None) -> dict[str, Any]:
        args = self.args
        load = [s for s in self.samples if s["phase"] in ("warmup", "steady")]
        steady = [s for s in load if s["phase"] == "steady"]
        start, end = (steady[0], steady[-1]) if steady else (None, None)
        slope = fit_change = change = None
        if start is not None and end is not None:
            change = 100.0 * (end["rss_mib"] - start["rss_mib"]) / start["rss_mib"]
            if len(steady) >= 2 and end["t"] > start["t"]:
                slope, intercept = least_squares([s["t"] / 3600 for s in steady],
                                                 [s["rss_mib"] for s in steady])
                fitted_start = intercept + slope * start["t"] / 3600
                fit_change = 100.0 * slope * (end["t"] - start["t"]) / 3600 / fitted_start
        leaked = None if after is None else after["fds"] - self.before["fds"]
        tally = self.tally
        receiving = [s["receiving"] for s in steady]
        rss_flat = (change is not None and fit_change is not None
                    and abs(change) <= RSS_GOAL_PERCENT and abs(fit_change) <= RSS_GOAL_PERCENT)
        load_ran = tally.received > 0 or args.players == 0
        goals = {"rss_flat": rss_flat, "no_leaked_fds": leaked is not None and leaked <= 0,
                 "load_ran": load_ran}
        return {
            "reason": reason,
            "duration_s": round(load[-1]["t"], 1) if load else 0.0,
            "warmup_s": args.warmup,
            "publishers": args.publishers,
            "players": args.players,
            "samples": len(self.samples),
            "rss_start_mib": start["rss_mib"] if start else None,
            "rss_start_t": start["t"] if start else None,
            "rss_end_mib": end["rss_mib"] if end else None,
            "rss_end_t": end["t"] if end else None,
            "rss_max_mib": max((s["rss_mib"] for s in load), default=None),
            "rss_change_percent": _round(change),
            "rss_slope_mib_per_hour": _round(slope),
            "rss_fit_change_percent": _round(fit_change),
            "fds_before": self.before["fds"],
            "fds_after": None if after is None else after["fds"],
            "fds_leaked": leaked,
            "sockets_before": self.before["sockets"],
            "sockets_after": None if after is None else after["sockets"],
            "settled_s": None if after is None else after["settled_s"],
            "server_cpu_percent_mean": _round(statistics.fmean(
                [s["cpu_percent"] for s in steady]) if steady else None, 1),
            "players_started": tally.started,
            "players_received": tally.received,
            "players_failed": tally.failed,
            "players_dropped": tally.dropped,
            "player_errors": dict(tally.errors.most_common(5)),
            "receiving_min": min(receiving, default=None),
            "receiving_median": statistics.median(receiving) if receiving else None,
            "publisher_restarts": self.restarts,
            "publisher_reconnects": sum(p.reconnects() for p in self.pushes),
            "publisher_unexpected_exits": self.unexpected_exits,
            "hostile": self.hostiles.tally(),
            "server_tracebacks": self._tracebacks(),
            "server_exited": self.server_gone is not None,
            "load_cpu_percent": self.load_cpu,
            "goals": goals,
            "ok": reason == "done" and all(goals.values()) and self.server_gone is None,
        }

    def _tracebacks(self) -> int | None:
        if self.server_log is None:
            return None
        try:
            return self.server_log.read_text(errors="replace").count("Traceback")
        except OSError:
            return None

    def print_summary(self, s: dict[str, Any]) -> None:
        def mib(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} MiB"

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:+.1f}%"

        print()
        print(f"summary: {s['duration_s']:.0f}s of load ({s['reason']}), {s['publishers']} "
              f"publishers, {s['players']} players, {s['samples']} samples")
        slope = s["rss_slope_mib_per_hour"]
        print(f"  RSS: {mib(s['rss_start_mib'])} at the start of the steady part "
              f"(t={s['rss_start_t']}s), {mib(s['rss_end_mib'])} at the end "
              f"(t={s['rss_end_t']}s): {pct(s['rss_change_percent'])}; least-squares slope "
              f"{'-' if slope is None else f'{slope:+.2f}'} MiB/h, fitted change "
              f"{pct(s['rss_fit_change_percent'])}; max {mib(s['rss_max_mib'])}")
        print(f"  fds: {s['fds_before']} before the load, {s['fds_after']} after it "
              f"(settled {s['settled_s']}s): leaked {s['fds_leaked']}; sockets "
              f"{s['sockets_before']} -> {s['sockets_after']}")
        load = s["load_cpu_percent"]
        print(f"  CPU: server {s['server_cpu_percent_mean']}% of a core (steady mean); "
              f"load generators: this process {load['soak_process']}%, push "
              f"{load['push_process']}%")
        if max(v or 0.0 for v in load.values()) > SATURATED:
            print(f"  a load generator used more than {SATURATED:g}% of a core: "
                  "the load may have been lighter than asked")
        print(f"  players: {s['players_started']} started, {s['players_received']} received "
              f"media, {s['players_failed']} failed, {s['players_dropped']} dropped by the "
              f"server; receiving in the steady part: min {s['receiving_min']}, median "
              f"{s['receiving_median']} of {s['players']}")
        for error, n in s["player_errors"].items():
            print(f"    {n} x {error}")
        print(f"  publishers: {s['publisher_restarts']} restarts, "
              f"{s['publisher_reconnects']} reconnects, {s['publisher_unexpected_exits']} "
              "unexpected exits")
        hostile = s["hostile"]
        if hostile:
            print(f"  hostile clients: {sum(h['started'] for h in hostile.values())}")
        for kind, h in hostile.items():
            print(f"    {kind:<13} {h['started']:4d}: {h['closed_by_server']} closed by the "
                  f"server, {h['closed_by_soak']} by the soak; longest open {h['max_open_s']}s")
        if s["server_tracebacks"] is not None:
            print(f"  server log: {s['server_tracebacks']} tracebacks")
        goals = s["goals"]
        flat = _yes(goals["rss_flat"]) if s["rss_fit_change_percent"] is not None else \
            "NO (fewer than 2 samples in the steady part)"
        print(f"goals: RSS flat within {RSS_GOAL_PERCENT:g}%: {flat}; "
              f"0 leaked fds: {_yes(goals['no_leaked_fds'])}; players received media: "
              f"{_yes(goals['load_ran'])} -> {'PASS' if s['ok'] else 'FAIL'}"
              f"{'' if s['reason'] == 'done' else ' (' + s['reason'] + ')'}", flush=True)


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through the points."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return slope, my - slope * mx


def _own_ticks() -> int:
    t = os.times()
    return round((t.user + t.system) * TICK)


async def _bounded(reactor: Any, d: defer.Deferred[Any], seconds: float) -> None:
    """Wait for ``d``, at most ``seconds``."""
    timer = reactor.callLater(seconds, d.cancel)
    try:
        await d
    except defer.CancelledError:
        pass
    finally:
        if timer.active():
            timer.cancel()


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM outside the reactor (while the server starts, while it stops) unwinds
    # like Ctrl-C, so the cleanup below still runs.
    signal.signal(signal.SIGTERM, _interrupt)
    server: OwnServer | None = None
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lal-soak-"))
    try:
        check_args(args)
        if args.hostile_every:
            check_loopback(*(u for u in (args.rtmp, args.http) if u))
        media, kbit = bench_media(args.file, workdir)
        if args.rtmp:
            rtmp, http, pid, log = (args.rtmp.rstrip("/"), args.http.rstrip("/"),
                                    args.server_pid, None)
        else:
            server = OwnServer(workdir)
            rtmp, http, pid, log = server.rtmp, server.http, server.pid, workdir / "server.log"
            time.sleep(2.0)  # the start-up probes' connections are closed
        print(f"soak: {args.duration:g}s against {rtmp} and {http} (pid {pid}): "
              f"{args.publishers} publishers of {media} ({kbit:.0f} kbit/s), {args.players} "
              f"players, warm-up {args.warmup:g}s, a sample every {args.interval:g}s",
              flush=True)
        soak = Soak(args, rtmp, http, pid, media, workdir, log)
        return run_reactor(lambda reactor: defer.ensureDeferred(soak.run(reactor)))
    except ToolError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
