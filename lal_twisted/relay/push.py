"""Relay push: one published stream forwarded to one other server over RTMP(S).

A :class:`RelayPush` is a sink of the stream (a ``relay_push`` session,
``RTMPPUSH`` id) and an ``IPushProducer`` on its own connection.  It never
slows the stream: while the target does not read, what it cannot send is
kept, up to ``max_backlog_bytes``; past that it drops the connection,
reconnects and starts again at the stream's latest keyframe.  A connection
that fails or ends is retried with exponential backoff and jitter
(``retry_min`` doubling up to ``retry_max``, each delay drawn between half
and all of it) as long as the stream is published; a target whose TLS
certificate is refused, or that refuses the stream as a relay loop (a ring of
pushes closing on itself, :mod:`lal_twisted.relay.upstream`), is not retried.

A push writes what the stream gave it every ``WRITE_INTERVAL`` (50 ms) in one
send, not one send per packet as a player does: a relay does not need a
player's last milliseconds of latency, and ~3 packets to a send instead of
one takes most of the kernel time out of a push (the target, reading bigger
pieces, pays less too).  The start (metadata, sequence headers, the cached
GOP) and what waited while the target held us back go out at once.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from lal_twisted.dial import dial
from lal_twisted.hub.ports import IFlowCounts
from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.relay.address import is_loop_refusal
from lal_twisted.rtmp.session import MEDIA_STREAM_ID, media_encoder
from lal_twisted.tls import verification_error

if TYPE_CHECKING:
    from lal_twisted.hub.ports import StreamView
    from lal_twisted.hub.session import Session
    from lal_twisted.rtmp.client import RTMPClientProtocol

log = Logger("lal_twisted.relay.push")

# A connection live at least this long resets the backoff to retry_min.
_STABLE_AFTER = 10.0
# Seconds between two writes of a push (see the module docstring).
WRITE_INTERVAL = 0.05


class _Writer:
    """Every ``WRITE_INTERVAL``, the pushes with something to send send it: one
    timer for all the pushes of a reactor, running only while one waits."""

    _by_reactor: dict[int, _Writer] = {}

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.waiting: list[RelayPush] = []
        self.call: IDelayedCall | None = None

    @classmethod
    def of(cls, reactor: Any) -> _Writer:
        writer = cls._by_reactor.get(id(reactor))
        if writer is None or writer.reactor is not reactor:
            writer = cls._by_reactor[id(reactor)] = cls(reactor)
        return writer

    def add(self, push: RelayPush) -> None:
        self.waiting.append(push)
        if self.call is None:
            self.call = self.reactor.callLater(WRITE_INTERVAL, self.run)

    def run(self) -> None:
        self.call = None
        waiting, self.waiting = self.waiting, []
        for push in waiting:
            if push._queued:
                push._flush()


@implementer(IFlowCounts, IPushProducer)
class RelayPush:
    """Pushes one stream to ``url``; see the module docstring."""

    protocol_name = "relay_push"
    stalled = False  # a slow target is reconnected (max_backlog_bytes), never stalled out

    def __init__(self, reactor: Any, session: Session, url: str, *, tls: Any = None,
                 max_backlog_bytes: int = 4 * 1024 * 1024, retry_min: float = 0.5,
                 retry_max: float = 30.0, timeout: float = 10.0,
                 rng: random.Random | None = None, on_close: Any = None) -> None:
        self.reactor = reactor
        self.session = session
        self.url = url
        self.tls = tls
        self.max_backlog_bytes = max_backlog_bytes
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.timeout = timeout
        self.rng = rng or random.Random()
        self.on_close = on_close  # called once with this push when it stops
        self.stream: StreamView | None = None
        self.proto: RTMPClientProtocol | None = None
        self.closed = False
        self.paused = False
        self.waiting_keyframe = True
        self.failures = 0
        self.connects = 0
        self.delays: list[float] = []  # every reconnect delay, for the stats and tests
        self.bytes_out = 0
        self.packets_out = 0
        self.packets_dropped = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._retry: IDelayedCall | None = None
        self._queued = False  # waiting for the writer's next round
        self._live_since: float | None = None
        self._dialling: Any = None  # the connection attempt under way
        self._connecting: RTMPClientProtocol | None = None
        # The RTMP players' shared encoder, when this connection's stream id and
        # chunk size make its bytes the same as ours (the usual case).
        self._shared: Any = None
        self._attempt = 0  # tells the callbacks of an abandoned attempt apart

    # -- ISink --------------------------------------------------------------------
    def start(self, stream: StreamView) -> None:
        self.stream = stream
        if self.proto is None and self._retry is None and not self.closed:
            self._connect()

    def publish_started(self, stream: StreamView) -> None:
        self.waiting_keyframe = True

    def publish_stopped(self, stream: StreamView) -> None:
        pass  # the relay manager closes the push

    def send(self, packet: AVPacket) -> None:
        proto = self.proto
        if proto is None or self.closed:
            return  # not connected: the next connection starts from the GOP cache
        if self.waiting_keyframe:
            kind = packet.kind
            if packet.is_keyframe and kind == VIDEO and not packet.is_sequence_header:
                self.waiting_keyframe = False
            elif packet.is_sequence_header or kind == DATA:
                pass
            elif (kind == AUDIO and self.stream is not None
                  and self.stream.tracks.video is None):
                self.waiting_keyframe = False
            else:
                self.packets_dropped += 1
                return
        shared = self._shared
        if shared is not None and packet.kind != DATA:
            data = packet.encoded(shared)  # the same bytes the RTMP players write
        else:
            data = proto.session.encode_packet(packet)
        self.packets_out += 1
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self.paused:
            if self._pending_bytes > self.max_backlog_bytes:
                self._restart(f"target too slow: over {self.max_backlog_bytes} bytes "
                              "waiting (relay_push.max_backlog_bytes); reconnecting to "
                              "restart at a keyframe")
        elif not self._queued:
            self._queued = True
            _Writer.of(self.reactor).add(self)

    def _flush(self) -> None:
        """Send what waits, in one write (unless the target holds us back)."""
        self._queued = False
        if self.paused or not self._pending or self.proto is None:
            return
        pending, size = self._pending, self._pending_bytes
        self._drop_pending()
        self.bytes_out += size
        self.proto.transport.writeSequence(pending)  # type: ignore[union-attr]

    def close(self, reason: str, quiet: bool = False) -> None:
        """Stop for good (the publisher left, the server stops, a kick);
        ``quiet``: the caller logged why already."""
        if self.closed:
            return
        self.closed = True
        self._attempt += 1
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        proto, self.proto = self.proto, None
        if proto is not None and proto.transport is not None:
            proto.stop()
        elif self._dialling is not None:
            dialling, self._dialling = self._dialling, None
            dialling.cancel()  # abandons the connection attempt
        self._drop_pending()
        if not quiet:
            log.info("relay push {id} {key} to {url} stopped: {why} (bytes_out={b})",
                     id=self.session.id, key=self.session.key, url=self.url, why=reason,
                     b=self.bytes_out)
        if self.on_close is not None:
            self.on_close(self)

    # -- IPushProducer (the target's connection) --------------------------------------------
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted interface
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted interface
        self.paused = False
        self._flush()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted interface
        pass

    # -- connection ----------------------------------------------------------------------
    def _connect(self) -> None:
        from lal_twisted.rtmp.client import RTMPClientFactory, RTMPClientProtocol
        from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl

        self._retry = None
        self._attempt += 1
        attempt = self._attempt
        self.connects += 1
        parsed = RtmpUrl.parse(self.url)
        factory = RTMPClientFactory(lambda: RTMPClientProtocol(ClientSession(parsed, "publish")))
        try:
            d: Any = dial(self.reactor, parsed.target, factory, timeout=self.timeout,
                          tls=self.tls, eager=True)
        except Exception as e:  # a TLS setup problem (bad CA file) is not retried
            self.close(f"cannot connect: {e}")
            return
        self._dialling = d
        d.addCallback(self._connected, attempt)
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(self._ready, self._failed, callbackArgs=(attempt,),
                       errbackArgs=(attempt,))

    def _connected(self, proto: RTMPClientProtocol, attempt: int) -> Any:
        self._dialling = None
        proto.done.addBoth(self._lost, proto, attempt)
        self._connecting = proto
        return proto.ready

    def _ready(self, proto: RTMPClientProtocol, attempt: int) -> None:
        if attempt != self._attempt or self.closed:
            proto.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.proto = proto
        session = proto.session
        self._shared = (media_encoder(session.writer.chunk_size)
                        if session.stream_id == MEDIA_STREAM_ID else None)
        self._live_since = self.reactor.seconds()
        self.paused = False
        proto.transport.registerProducer(self, True)  # type: ignore[union-attr]
        log.info("relay push {id} {key} to {url} publishing", id=self.session.id,
                 key=self.session.key, url=self.url)
        self._replay()

    def _replay(self) -> None:
        """Metadata, sequence headers and the cached GOP, so the target starts
        at a keyframe and decodes at once."""
        stream = self.stream
        self.waiting_keyframe = True
        if stream is None or not stream.publishing:
            return
        for packet in stream.headers():
            self.send(packet)
        for packet in stream.cached_packets():
            self.send(packet)
        self._flush()  # the target gets its start at once

    def _failed(self, failure: Failure, attempt: int) -> None:
        if attempt != self._attempt or self.closed:
            return
        self._dialling = None
        proto, self._connecting = self._connecting, None
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()  # type: ignore[attr-defined]
        self._retry_later(failure.getErrorMessage() or type(failure.value).__name__)

    def _lost(self, result: Any, proto: RTMPClientProtocol, attempt: int) -> None:
        if attempt != self._attempt or self.closed or proto is not self.proto:
            return None
        self.proto = None
        self._drop_pending()
        cause = proto.error or (result.getErrorMessage() if isinstance(result, Failure)
                                else "the target closed the connection")
        live = self.reactor.seconds() - (self._live_since or 0)
        if live >= _STABLE_AFTER:
            self.failures = 0
        self._retry_later(cause)
        return None

    def _restart(self, why: str) -> None:
        proto, self.proto = self.proto, None
        self._drop_pending()
        self._attempt += 1
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()  # type: ignore[union-attr,attr-defined]
        log.warn("relay push {id} {key} to {url}: {why}", id=self.session.id,
                 key=self.session.key, url=self.url, why=why)
        self._connect()

    def _retry_later(self, cause: str) -> None:
        tls_problem = verification_error(cause)
        if tls_problem is not None:
            log.error("relay push {id} {key} to {url} refused: {why}; not retried "
                      "(check the certificate, tls_client.ca_file or tls_client.verify)",
                      id=self.session.id, key=self.session.key, url=self.url, why=tls_problem)
            self.close("refused by TLS verification", quiet=True)
            return
        if is_loop_refusal(cause):
            log.warn("relay push {id} {key} to {url} stopped for good: the target refused "
                     "it as a relay loop ({why}); not retried", id=self.session.id,
                     key=self.session.key, url=self.url, why=cause)
            self.close("refused as a relay loop", quiet=True)
            return
        self.failures += 1
        ceiling = min(self.retry_max, self.retry_min * 2 ** (self.failures - 1))
        delay = ceiling * self.rng.uniform(0.5, 1.0)
        self.delays.append(delay)
        log.warn("relay push {id} {key} to {url}: {why}; retry {n} in {d:.1f}s",
                 id=self.session.id, key=self.session.key, url=self.url, why=cause,
                 n=self.failures, d=delay)
        self._retry = self.reactor.callLater(delay, self._connect)

    def _drop_pending(self) -> None:
        self._pending = []
        self._pending_bytes = 0
