"""lal pull: play rtmp:// or http(s)://....flv and write what arrives to an FLV file.

With -n N it opens N connections from one process (``{i}`` in the URL pulls
N different streams): a player load generator.  Per connection it measures the
received bitrate, the time to the first video frame and stalls (gaps longer
than ``--stall`` seconds); ``--json`` writes them for the bench.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import statistics
import sys
from typing import IO, Any

from twisted.internet import defer

from lal_twisted.httpflv.client import HttpFlvPull
from lal_twisted.media import flv
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp.client import RTMPClientProtocol, connect
from lal_twisted.rtmp.client_session import RtmpUrl, RtmpUrlError
from lal_twisted.tools.common import (
    Ending,
    StatusLine,
    ToolError,
    add_tls_options,
    expand_urls,
    mbit,
    now,
    open_in_batches,
    run_reactor,
    tls_options,
)

# Packets held back before the FLV header is written, so its audio/video flags
# describe what the stream really carries.
_HEADER_WAIT_PACKETS = 64


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pull", help="play an RTMP or HTTP-FLV stream and write it to an FLV file",
        description="Pull URL (rtmp://... or http(s)://....flv) and write the tags the server "
                    "sends to OUT (an FLV file). With -n N, open N connections; {i} in the URL "
                    "(or in OUT) numbers them. Without OUT nothing is written (load testing).")
    p.add_argument("url", help="rtmp://host[:port]/app/stream or http://host:port/app/stream.flv")
    p.add_argument("out", nargs="?", default=None,
                   help="output FLV file ({i} is replaced by the connection number); "
                        "with -n and no {i}, only connection 0 writes it")
    p.add_argument("-n", type=int, default=1, metavar="N", help="number of connections")
    p.add_argument("--duration", type=float, default=0, metavar="S",
                   help="stop after S seconds (default: when the stream ends)")
    p.add_argument("--stall", type=float, default=1.0, metavar="S",
                   help="a gap between packets longer than S seconds counts as a stall (1.0)")
    p.add_argument("--json", metavar="PATH", help="write per-connection figures as JSON")
    p.add_argument("--connect-rate", type=float, default=200, metavar="R",
                   help="open at most R connections per second (200)")
    p.add_argument("--low-water", type=int, default=0, metavar="BYTES",
                   help="once playing, wake up only when BYTES are waiting "
                        "(SO_RCVLOWAT); fewer, larger reads for load tests (default 0: off)")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line")
    add_tls_options(p)
    p.set_defaults(func=run)


class FlvFileWriter:
    """Writes received packets as FLV, the header once the tracks are known."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise ToolError(f"{path}: cannot write: {e.strerror}") from None
        self.pending: list[AVPacket] | None = []
        self.tags = 0

    def write(self, packet: AVPacket) -> None:
        pending = self.pending
        if pending is not None:
            pending.append(packet)
            if len(pending) >= _HEADER_WAIT_PACKETS:
                self._flush_pending()
            return
        self.file.write(flv.encode_tag(packet.kind, packet.dts, packet.payload))
        self.tags += 1

    def _flush_pending(self) -> None:
        pending, self.pending = self.pending or [], None
        has_audio = any(p.kind == AUDIO for p in pending)
        has_video = any(p.kind == VIDEO for p in pending)
        self.file.write(flv.file_header(has_audio or not has_video, has_video or not has_audio))
        for p in pending:
            self.write(p)

    def close(self) -> None:
        if self.pending is not None:
            self._flush_pending()
        self.file.close()


class Puller:
    """One player connection and its figures."""

    # Seconds after the first packet before the steady bitrate is measured: the
    # cached GOP a player gets on joining arrives as a burst.
    settle = 3.0

    def __init__(self, index: int, url: str, writer: FlvFileWriter | None, stall: float,
                 low_water: int = 0, tls: Any = None) -> None:
        self.index = index
        self.low_water = low_water
        self.tls = tls
        self.url = url
        self.writer = writer
        self.stall = stall
        self.rtmp: RTMPClientProtocol | None = None
        self.http: HttpFlvPull | None = None
        self.started = 0.0
        self.first_packet: float | None = None
        self.first_video: float | None = None
        self.last: float | None = None
        self.bytes = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.stalls = 0
        self.max_gap = 0.0
        self.first_ts: int | None = None
        self.last_ts = 0
        self.error: str | None = None
        self.ended: float | None = None
        self.settled_at: float | None = None
        self.settled_bytes = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self, reactor: Any) -> None:
        self.started = now()
        if self.url.startswith(("rtmp://", "rtmps://")):
            d = connect(reactor, self.url, "play", on_packet=self.on_packet, tls=self.tls)
            d.addCallbacks(self._rtmp_ready, self._failed)
        else:
            self.http = HttpFlvPull(reactor, self.url, self.on_packet, tls=self.tls)
            self.http.start().addCallbacks(self._http_ready, self._failed)

    def _rtmp_ready(self, proto: RTMPClientProtocol) -> None:
        self.rtmp = proto
        proto.done.addBoth(self._ended)
        sock = getattr(proto.transport, "socket", None)
        if self.low_water and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.low_water)

    def _http_ready(self, pull: HttpFlvPull) -> None:
        pull.done.addBoth(self._ended)
        transport = pull.protocol.transport if pull.protocol is not None else None
        sock = getattr(transport, "socket", None)
        if self.low_water and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.low_water)

    def _failed(self, failure: Any) -> None:
        self.error = failure.getErrorMessage()
        self._ended(None)

    def _ended(self, result: Any) -> None:
        if self.ended is not None:
            return
        self.ended = now()
        if self.error is None:
            if self.rtmp is not None and self.rtmp.error:
                self.error = self.rtmp.error
            elif self.http is not None and self.http.error:
                self.error = self.http.error
        self.done.callback(None)

    def on_packet(self, packet: AVPacket) -> None:
        t = now()
        last = self.last
        if last is None:
            self.first_packet = t
        else:
            if self.settled_at is None and t - self.first_packet >= self.settle:  # type: ignore[operator]
                self.settled_at = t
                self.settled_bytes = self.bytes
            gap = t - last
            if gap > self.max_gap:
                self.max_gap = gap
                if gap > self.stall:
                    self.stalls += 1
            elif gap > self.stall:
                self.stalls += 1
        self.last = t
        self.bytes += len(packet.payload) + flv.TAG_HEADER_SIZE
        kind = packet.kind
        if kind == VIDEO:
            if not packet.is_sequence_header:
                self.video_frames += 1
                if self.first_video is None:
                    self.first_video = t
        elif kind == AUDIO and not packet.is_sequence_header:
            self.audio_frames += 1
        if kind != DATA:
            if self.first_ts is None:
                self.first_ts = packet.dts
            self.last_ts = packet.dts
        if self.writer is not None:
            self.writer.write(packet)

    def stop(self) -> None:
        if self.rtmp is not None and self.rtmp.transport is not None:
            self.rtmp.stop()
        if self.http is not None:
            self.http.stop()

    def figures(self, until: float) -> dict[str, Any]:
        end = self.ended or until
        receiving = end - (self.first_packet or end)
        steady = None
        if self.settled_at is not None and end - self.settled_at >= 1.0:
            steady = round((self.bytes - self.settled_bytes) * 8 / 1000 / (end - self.settled_at),
                           1)
        return {
            "index": self.index,
            "url": self.url,
            "bytes": self.bytes,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "kbit_per_s": round(self.bytes * 8 / 1000 / receiving, 1) if receiving > 0 else 0.0,
            "steady_kbit_per_s": steady,
            "fps": round(self.video_frames / receiving, 2) if receiving > 0 else 0.0,
            "first_packet_ms": _ms(self.first_packet, self.started),
            "first_video_ms": _ms(self.first_video, self.started),
            "media_seconds": round((self.last_ts - self.first_ts) / 1000, 3)
            if self.first_ts is not None else 0.0,
            "stalls": self.stalls,
            "max_gap_ms": round(self.max_gap * 1000, 1),
            "error": self.error,
        }


def _ms(t: float | None, start: float) -> float | None:
    return None if t is None else round((t - start) * 1000, 1)


def run(args: argparse.Namespace) -> int:
    urls = expand_urls(args.url, args.n)
    for url in set(urls):
        if url.startswith(("rtmp://", "rtmps://")):
            try:
                RtmpUrl.parse(url)
            except RtmpUrlError as e:
                raise ToolError(str(e)) from None
        elif not url.startswith(("http://", "https://")):
            raise ToolError(f"not an rtmp(s):// or http(s):// URL: {url!r}")
    if args.connect_rate <= 0:
        raise ToolError("--connect-rate must be positive")
    args.tls_by_url = {url: tls_options(url, args) for url in set(urls)}
    writers: list[FlvFileWriter | None] = []
    for i in range(args.n):
        if args.out is None or (i > 0 and "{i}" not in args.out):
            writers.append(None)
        else:
            writers.append(FlvFileWriter(args.out.replace("{i}", str(i))))
    return run_reactor(lambda reactor: _pull(reactor, args, urls, writers))


def _pull(reactor: Any, args: argparse.Namespace, urls: list[str],
          writers: list[FlvFileWriter | None]) -> defer.Deferred[int]:
    tls = args.tls_by_url
    pullers = [Puller(i, url, writers[i], args.stall, args.low_water, tls[url])
               for i, url in enumerate(urls)]
    started = now()

    def status() -> str:
        elapsed = now() - started
        playing = sum(1 for p in pullers if p.first_packet is not None and p.ended is None)
        total = sum(p.bytes for p in pullers)
        stalls = sum(p.stalls for p in pullers)
        return (f"pull {elapsed:6.1f}s  playing {playing}/{len(pullers)}  "
                f"{mbit(total, elapsed):7.2f} Mbit/s  stalls {stalls}")

    line = StatusLine(reactor, status, quiet=args.quiet)

    def stop() -> None:
        for p in pullers:
            p.stop()
        line.stop()

    ending = Ending(reactor, stop, lambda: report(pullers, writers, args), args.duration)
    defer.DeferredList([p.done for p in pullers]).addCallback(lambda _: ending.finish())

    open_in_batches(reactor, [functools.partial(p.start, reactor) for p in pullers],
                    args.connect_rate, lambda: ending.over)
    line.start()
    return ending.done


def report(pullers: list[Puller], writers: list[FlvFileWriter | None],
           args: argparse.Namespace) -> int:
    for w in writers:
        if w is not None:
            w.close()
    until = now()
    figures = [p.figures(until) for p in pullers]
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"connections": figures}, out, indent=1)
    shown = figures if len(figures) <= 10 else []
    for fig in shown:
        state = "failed" if fig["error"] else "ok"
        print(f"conn {fig['index']} {fig['url']}: {fig['bytes']} bytes, "
              f"{fig['kbit_per_s']} kbit/s, {fig['video_frames']} video / "
              f"{fig['audio_frames']} audio frames, first video {fig['first_video_ms']} ms, "
              f"stalls {fig['stalls']} (max gap {fig['max_gap_ms']} ms), {state}")
    ok = [f for f in figures if f["bytes"] > 0]
    failed = [f for f in figures if f["error"] and f["bytes"] == 0]
    if ok:
        rates = [f["kbit_per_s"] for f in ok]
        firsts = [f["first_video_ms"] for f in ok if f["first_video_ms"] is not None]
        print(f"total: {len(figures)} connection(s), {len(ok)} received, {len(failed)} failed; "
              f"kbit/s min {min(rates)} median {statistics.median(rates)} max {max(rates)}; "
              f"first video ms median {statistics.median(firsts) if firsts else '-'}; "
              f"stalls {sum(f['stalls'] for f in ok)}")
    else:
        print(f"total: {len(figures)} connection(s), none received anything")
    sys.stdout.flush()
    for f in failed[:10]:
        print(f"lal pull: connection {f['index']} {f['url']}: {f['error']}", file=sys.stderr)
    if len(failed) > 10:
        print(f"lal pull: ... and {len(failed) - 10} more failed connections", file=sys.stderr)
    return 0 if ok and not failed else 1
