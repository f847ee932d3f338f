"""lal push: publish an FLV file over RTMP in real time (one stream or many).

The file is read once; every stream sends its tags when their timestamps come
due on a shared ticker.  Each publisher is a push producer on its own
connection: while the socket is backed up it sends nothing and catches up
afterwards, so no tag is dropped and the server sees the file as it is.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from lal_twisted.media.clock import WideClock
from lal_twisted.media.flv import FlvError, FlvTag
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.tags import (
    AUDIO,
    DATA,
    VIDEO,
    AvcPacketType,
    VideoCodecId,
    VideoPacketType,
)
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
from lal_twisted.tools.flvfile import iter_file

TICK = 0.01  # seconds between pacing checks


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "push", help="publish an FLV file over RTMP in real time",
        description="Publish FILE to URL over RTMP, paced by the tags' timestamps. "
                    "With -n N, publish N streams at once; {i} in the URL numbers them "
                    "(rtmp://127.0.0.1/live/test{i}).")
    p.add_argument("file", help="FLV file to publish")
    p.add_argument("url", help="rtmp://host[:port]/app/stream")
    p.add_argument("--loop", action="store_true",
                   help="push the file again and again (timestamps keep increasing)")
    p.add_argument("-n", type=int, default=1, metavar="N", help="number of streams (default 1)")
    p.add_argument("--duration", type=float, default=0, metavar="S",
                   help="stop after S seconds (default: at the end of the file)")
    p.add_argument("--reconnect", type=float, default=0, metavar="S",
                   help="after a failure, reconnect after S seconds (default: give up)")
    p.add_argument("--connect-rate", type=float, default=200, metavar="R",
                   help="open at most R connections per second (200)")
    p.add_argument("--quiet", "-q", action="store_true", help="no status line")
    add_tls_options(p)
    p.set_defaults(func=run)


def load_tags(path: str) -> list[FlvTag]:
    """All tags of an FLV file, rebased so the first media tag is at 0 (the
    file's 32-bit times read as wide ones: a file that wraps runs on)."""
    try:
        tags = list(iter_file(path))
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ToolError(f"{path}: is a directory") from None
    except FlvError as e:
        raise ToolError(f"{path}: {e}") from None
    media = [t for t in tags if t.tag_type in (AUDIO, VIDEO, DATA)]
    if not any(t.tag_type in (AUDIO, VIDEO) for t in media):
        raise ToolError(f"{path}: no audio or video tags")
    clock = WideClock()
    media = [FlvTag(t.tag_type, clock.widen(t.timestamp), t.payload) for t in media]
    base = min(t.timestamp for t in media if t.tag_type in (AUDIO, VIDEO))
    return [FlvTag(t.tag_type, max(0, t.timestamp - base), t.payload) for t in media]


def is_end_of_sequence(tag: FlvTag) -> bool:
    """An AVC/HEVC end-of-sequence tag (ffmpeg writes one at the end of a file)."""
    p = tag.payload
    if tag.tag_type != VIDEO or len(p) < 2:
        return False
    if p[0] & 0x80:  # enhanced RTMP
        return p[0] & 0x0F == VideoPacketType.SEQUENCE_END
    return (p[0] & 0x0F in (VideoCodecId.AVC, VideoCodecId.HEVC)
            and p[1] == AvcPacketType.END_OF_SEQUENCE)


def loop_length(tags: list[FlvTag]) -> int:
    """Duration of one pass: the last timestamp plus one typical frame interval."""
    frames = [t for t in tags if t.tag_type in (AUDIO, VIDEO) and not is_header(t)
              and not is_end_of_sequence(t)]
    video = [t.timestamp for t in frames if t.tag_type == VIDEO]
    stamps = video if len(video) > 1 else [t.timestamp for t in frames]
    deltas = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a)
    step = deltas[len(deltas) // 2] if deltas else 40
    return max(t.timestamp for t in frames) + step


def is_header(tag: FlvTag) -> bool:
    """Metadata and sequence headers: sent on the first pass only."""
    if tag.tag_type == DATA:
        return True
    packet = AVPacket(tag.tag_type, 0, tag.payload)
    return packet.is_sequence_header


@dataclass(frozen=True)
class Plan:
    """What every stream sends, prepared once: the tags, which of them go on the
    first pass only, and the length of one pass."""

    tags: list[FlvTag]
    first_pass_only: list[bool]
    length: int

    @classmethod
    def make(cls, tags: list[FlvTag], loop: bool) -> Plan:
        if loop:  # an end of sequence in mid-stream would reset players' decoders
            tags = [t for t in tags if not is_end_of_sequence(t)]
        return cls(tags, [is_header(t) for t in tags], loop_length(tags))


@implementer(IPushProducer)
class FilePublisher:
    """One stream: connects, publishes, sends due tags, reconnects if asked."""

    def __init__(self, index: int, url: str, plan: Plan, options: argparse.Namespace,
                 reactor: Any, on_done: Any) -> None:
        self.index = index
        self.url = url
        self.tags = plan.tags
        self.first_pass_only = plan.first_pass_only
        self.length = plan.length
        self.loop = options.loop
        self.reconnect = options.reconnect
        self.reactor = reactor
        self.on_done = on_done
        self.tls = getattr(options, "tls_by_url", {}).get(url)
        self.proto: RTMPClientProtocol | None = None
        self.paused = False
        self.finished = False
        self.error: str | None = None
        self.pos = 0
        self.offset = 0
        self.passes = 0
        self.started = 0.0
        self.bytes_sent = 0
        self.tags_sent = 0
        self.connects = 0

    def start(self) -> None:
        self.connects += 1
        d = connect(self.reactor, self.url, "publish", tls=self.tls)
        d.addCallbacks(self._ready, self._failed)

    def _ready(self, proto: RTMPClientProtocol) -> None:
        self.proto = proto
        self.error = None
        self.pos = self.offset = self.passes = 0
        self.started = now()
        proto.transport.registerProducer(self, True)  # type: ignore[union-attr]
        proto.done.addBoth(self._closed)

    def _failed(self, failure: Any) -> None:
        self.error = failure.getErrorMessage()
        self._retry_or_finish()

    def _closed(self, result: Any) -> None:
        proto, self.proto = self.proto, None
        if proto is not None and proto.error:
            self.error = proto.error
        elif not self.finished and self.error is None:
            self.error = "server closed the connection"
        if not self.finished:
            self._retry_or_finish()

    def _retry_or_finish(self) -> None:
        if self.reconnect and not self.finished:
            self.reactor.callLater(self.reconnect, self.start)
        else:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.proto is not None:
            self.proto.stop()
        self.on_done(self)

    def stop(self) -> None:
        self.reconnect = 0
        self._finish()

    def tick(self, t: float) -> None:
        """Send every tag whose time has come."""
        proto = self.proto
        if proto is None or self.paused or self.finished:
            return
        due = (t - self.started) * 1000
        tags = self.tags
        while True:
            if self.pos == len(tags):
                if not self.loop:
                    self.error = None
                    self._finish()
                    return
                self.pos = 0
                self.passes += 1
                self.offset += self.length
            tag = tags[self.pos]
            ts = tag.timestamp + self.offset
            if ts > due:
                return
            skip = self.passes and self.first_pass_only[self.pos]
            self.pos += 1
            if skip:
                continue
            before = proto.bytes_out
            proto.send_packet(AVPacket(tag.tag_type, ts, tag.payload))  # the writer wraps it
            self.bytes_sent += proto.bytes_out - before
            self.tags_sent += 1
            if self.paused:
                return

    # IPushProducer: the transport says when its buffer is too full.
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = True


def run(args: argparse.Namespace) -> int:
    tags = load_tags(args.file)
    urls = expand_urls(args.url, args.n)
    if args.n > 1 and "{i}" not in args.url:
        raise ToolError("with -n above 1 the URL needs {i} so each stream has its own name "
                        "(a server refuses a second publisher on the same stream)")
    if args.connect_rate <= 0:
        raise ToolError("--connect-rate must be positive")
    for url in set(urls):
        try:
            RtmpUrl.parse(url)
        except RtmpUrlError as e:
            raise ToolError(str(e)) from None
    args.tls_by_url = {url: tls_options(url, args) for url in set(urls)}
    return run_reactor(lambda reactor: _push(reactor, args, tags, urls))


def _push(reactor: Any, args: argparse.Namespace, tags: list[FlvTag],
          urls: list[str]) -> defer.Deferred[int]:
    started = now()
    remaining = len(urls)
    elapsed: list[float] = []

    def on_done(publisher: FilePublisher) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            ending.finish()

    plan = Plan.make(tags, args.loop)
    publishers = [FilePublisher(i, url, plan, args, reactor, on_done)
                  for i, url in enumerate(urls)]

    def status() -> str:
        seconds = now() - started
        live = sum(1 for p in publishers if p.proto is not None and not p.finished)
        sent = sum(p.bytes_sent for p in publishers)
        return (f"push {seconds:6.1f}s  live {live}/{len(publishers)}  "
                f"{mbit(sent, seconds):7.2f} Mbit/s  {sent / 1e6:8.1f} MB sent")

    line = StatusLine(reactor, status, quiet=args.quiet)

    def tick_all() -> None:
        t = now()
        for p in publishers:
            p.tick(t)

    ticker = task.LoopingCall(tick_all)
    ticker.clock = reactor

    def stop() -> None:
        elapsed.append(now() - started)
        for p in publishers:
            p.stop()
        if ticker.running:
            ticker.stop()
        line.stop()

    ending = Ending(reactor, stop, lambda: report(publishers, elapsed[0]), args.duration)
    open_in_batches(reactor, [p.start for p in publishers], args.connect_rate,
                    lambda: ending.over)
    ticker.start(TICK)
    line.start()
    return ending.done


def report(publishers: list[FilePublisher], elapsed: float) -> int:
    failed = [p for p in publishers if p.error]
    for p in publishers:
        print(f"stream {p.index} {p.url}: {p.tags_sent} tags, {p.bytes_sent} bytes, "
              f"{mbit(p.bytes_sent, elapsed):.3f} Mbit/s, {p.passes + 1} pass(es), "
              f"{p.connects} connect(s), {'failed' if p.error else 'ok'}")
    total = sum(p.bytes_sent for p in publishers)
    print(f"total: {len(publishers)} stream(s), {total} bytes in {elapsed:.1f}s "
          f"({mbit(total, elapsed):.3f} Mbit/s), {len(failed)} failed")
    sys.stdout.flush()
    for p in failed[:10]:
        print(f"lal push: stream {p.index} {p.url}: {p.error}", file=sys.stderr)
    if len(failed) > 10:
        print(f"lal push: ... and {len(failed) - 10} more failed streams", file=sys.stderr)
    return 1 if failed else 0
