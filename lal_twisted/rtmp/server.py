"""RTMP server: the Twisted Protocol/Factory adapter around :class:`ServerSession`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from lal_twisted.hub.access import RefusalKind
from lal_twisted.hub.events import SessionEvent
from lal_twisted.hub.ports import IPublisher
from lal_twisted.hub.registry import Refused, SessionGone, StreamRegistry
from lal_twisted.hub.session import RTMP_SERVER
from lal_twisted.hub.stream import Stream
from lal_twisted.log import Logger
from lal_twisted.media.amf0 import AMF0Error
from lal_twisted.media.packet import AVPacket
from lal_twisted.protocols import ProtocolName
from lal_twisted.rtmp.handshake import HandshakeError
from lal_twisted.rtmp.message import RtmpProtocolError
from lal_twisted.rtmp.read_batch import BATCH_MIN, BATCH_WINDOW, CAN_BATCH, ReadBatcher
from lal_twisted.rtmp.session import (
    ConnectRequest,
    PlayRequest,
    PublishRequest,
    ServerSession,
    StreamClosed,
)
from lal_twisted.rtmp.sink import RtmpSink

log = Logger("lal_twisted.rtmp.server")

_PEER_ERRORS = (HandshakeError, RtmpProtocolError, AMF0Error)

_CONNECTION_DONE = Failure(ConnectionDone())


@dataclass(frozen=True)
class RtmpConnected(SessionEvent):
    """An RTMP client sent ``connect`` (before it publishes or plays; the
    session is not in the session table yet)."""

    app: str
    flash_ver: str
    tc_url: str
    observer_method: ClassVar[str] = "rtmp_connected"


def describe_peer(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


@implementer(IPublisher)
class RTMPServerProtocol(Protocol):
    """Feeds bytes to the session and hands its events to the registry.

    ``session`` is the sans-IO RTMP engine; ``info`` the hub
    :class:`~lal_twisted.hub.session.Session` (id, stream, byte counters) that
    the registry, access checks and events see.
    """

    factory: RTMPServerFactory

    def __init__(self) -> None:
        self.stream: Stream | None = None
        self.key: str | None = None
        self.sink: RtmpSink | None = None
        self.close_reason: str | None = None
        self.started = 0.0
        self.description = ""
        self._request: object | None = None  # the publish/play in flight or active
        # One deadline at a time: connect within handshake_timeout, then publish or
        # play within idle_timeout (again after a deleteStream).
        self._handshake_timer: IDelayedCall | None = None
        self._batch_timer: IDelayedCall | None = None
        self._media_timer: IDelayedCall | None = None
        self._stall_timer: IDelayedCall | None = None
        self.reading_paused = False  # by pauseProducing: the peer does not read

    def connectionMade(self) -> None:  # noqa: N802 - Twisted interface
        config = self.factory
        self.session = ServerSession(chunk_size=config.chunk_size,
                                     max_message_size=config.max_message_size)
        self.description = describe_peer(self.transport.getPeer())  # type: ignore[union-attr]
        self.info = config.registry.new_session(RTMP_SERVER, ProtocolName.RTMP, self.description,
                                                closer=self.close)
        self.started = time.monotonic()
        self._deadline(config.handshake_timeout, "no RTMP connect within {:g}s")
        # Until it plays, the connection is its own producer: a peer that does not
        # read what it is sent (replies to pings, unknown commands) is not read from
        # either, and is closed after the stall timeout (its sink takes over when
        # it plays).
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        log.debug("rtmp {id} connection from {peer}", id=self.info.id, peer=self.description)

    def _deadline(self, seconds: float, why: str) -> None:
        """Close the connection unless it publishes or plays within ``seconds``."""
        timer = self._handshake_timer
        if timer is not None and timer.active():
            timer.cancel()
        self._handshake_timer = None
        if seconds > 0:
            self._handshake_timer = self.factory.reactor.callLater(
                seconds, self._idle_timed_out, why.format(seconds))

    def _idle_timed_out(self, why: str) -> None:
        self._handshake_timer = None
        if self.stream is None:
            self._protocol_error(why)

    def is_waiting(self) -> bool:
        """Neither publishing nor playing a live stream (see lal_twisted.limits)."""
        stream = self.stream
        return stream is None or (self.sink is not None and stream.publisher is None)

    # -- IPushProducer: flow control of what the server answers -------------------------
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted interface
        self.reading_paused = True  # the read batcher leaves it alone too
        self.transport.pauseProducing()  # type: ignore[union-attr]  # stop reading
        if self._stall_timer is None:
            self._stall_timer = self.factory.reactor.callLater(
                self.factory.stall_timeout, self._protocol_error,
                f"not reading what it is sent for {self.factory.stall_timeout:g}s")

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted interface
        self.reading_paused = False
        self._cancel(self._stall_timer)
        self._stall_timer = None
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:  # noqa: N802 - Twisted interface
        pass

    @staticmethod
    def _cancel(timer: IDelayedCall | None) -> None:
        if timer is not None and timer.active():
            timer.cancel()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        self.info.bytes_in += len(data)
        try:
            events = self.session.receive(data)
        except _PEER_ERRORS as e:
            self._protocol_error(str(e) or type(e).__name__)
            return
        self.flush()
        stream = self.stream
        batch: list[AVPacket] = []
        for event in events:
            if type(event) is AVPacket:
                if stream is not None:
                    batch.append(event)
            else:
                if batch:
                    stream.feed_many(batch)  # type: ignore[union-attr]
                    batch = []
                self._handle(event)
                stream = self.stream
        if batch:
            stream.feed_many(batch)  # type: ignore[union-attr]

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.info.bytes_out += len(out)
            self.transport.write(out)  # type: ignore[union-attr]

    def _handle(self, event: Any) -> None:
        if isinstance(event, PublishRequest):
            self._publish(event)
        elif isinstance(event, PlayRequest):
            self._play(event)
        elif isinstance(event, StreamClosed):
            self._leave()
        elif isinstance(event, ConnectRequest):
            self._deadline(self.factory.idle_timeout, "no publish or play within {:g}s of connect")
            log.debug("rtmp {id} {peer} connect app={app} tcUrl={tc}", id=self.info.id,
                      peer=self.description, app=event.app, tc=event.tc_url)
            self.factory.registry.events.emit(RtmpConnected(self.info, event.app,
                                                            event.flash_ver, event.tc_url))

    def _begin(self, event: PublishRequest | PlayRequest) -> object | None:
        """Fill the hub session from a publish/play request; None if one is active."""
        if self._request is not None:
            self._protocol_error("publish or play on a connection that already publishes "
                                 "or plays")
            return None
        info = self.info
        info.app, info.stream, info.query = event.app, event.name, event.query
        tc_url = self.session.tc_url.split("?", 1)[0].rstrip("/")
        info.url = f"{tc_url}/{event.name}" + (f"?{event.query}" if event.query else "")
        self.key = info.key
        self._request = request = object()
        return request

    # -- publish ------------------------------------------------------------------------
    def _publish(self, event: PublishRequest) -> None:
        request = self._begin(event)
        if request is None:
            return
        d = self.factory.registry.publish(self.info, self)
        d.addCallbacks(self._publish_accepted, self._refused,
                       callbackArgs=(request,), errbackArgs=(request, "publish"))

    def _publish_accepted(self, stream: Stream, request: object) -> None:
        if request is not self._request:  # deleteStream arrived during the checks
            self.factory.registry.unpublish(self.info, self)
            return
        self.stream = stream
        self._deadline(0, "")
        self.session.accept_publish()
        self.flush()
        log.info("rtmp session {id} {peer} publishing {key} started", id=self.info.id,
                 peer=self.description, key=self.key)
        if self.factory.pub_timeout:
            self._media_timer = self.factory.reactor.callLater(
                self.factory.pub_timeout, self._check_media, stream, stream.packets_in)
        if self.factory.batcher is not None:
            self._batch_timer = self.factory.reactor.callLater(
                BATCH_WINDOW, self._batch_reads, self.info.bytes_in)

    def _batch_reads(self, bytes_at_start: int) -> None:
        """Every window: batch this publisher's reads if its bitrate is worth it."""
        factory = self.factory
        assert factory.batcher is not None
        bytes_in = self.info.bytes_in
        self._batch_timer = factory.reactor.callLater(BATCH_WINDOW, self._batch_reads,
                                                      bytes_in)
        per_batch = (bytes_in - bytes_at_start) / BATCH_WINDOW * factory.read_batch_ms / 1000
        if per_batch >= BATCH_MIN:
            factory.batcher.add(self)
        else:
            factory.batcher.discard(self)

    def _stop_batching(self) -> None:
        """The publish ended: no timer, and the reactor reads every message again."""
        if self._batch_timer is not None:
            if self._batch_timer.active():
                self._batch_timer.cancel()
            self._batch_timer = None
        if self.factory.batcher is not None:
            self.factory.batcher.discard(self)

    def _check_media(self, stream: Stream, packets_before: int) -> None:
        """rtmp.pub_timeout_sec: a publisher that sends no media gives the key back."""
        self._media_timer = None
        if self.stream is not stream:
            return
        if stream.packets_in == packets_before:
            self._protocol_error(f"no media for {self.factory.pub_timeout:g}s")
            return
        self._media_timer = self.factory.reactor.callLater(
            self.factory.pub_timeout, self._check_media, stream, stream.packets_in)

    # -- play ---------------------------------------------------------------------------
    def _play(self, event: PlayRequest) -> None:
        request = self._begin(event)
        if request is None:
            return
        factory = self.factory
        sink = RtmpSink(self, reactor=factory.reactor, stall_timeout=factory.stall_timeout,
                        max_backlog_bytes=factory.max_backlog_bytes,
                        wait_timeout=factory.wait_timeout)
        # The play replies and the cached GOP leave in one write, so the first
        # picture is not held back by Nagle's algorithm behind the replies.
        sink.begin_burst()
        d = factory.registry.play(self.info, sink, factory.gop_num)
        d.addCallbacks(self._play_accepted, self._refused,
                       callbackArgs=(request, sink, event.reset), errbackArgs=(request, "play"))

    def _play_accepted(self, stream: Stream, request: object, sink: RtmpSink,
                       reset: bool) -> None:
        if request is not self._request:
            self.factory.registry.stop_play(self.info, sink)
            return
        self.stream = stream
        self.sink = sink
        self._deadline(0, "")
        self._use_producer(sink)
        self.session.accept_play(reset)
        replies = self.session.data_to_send()
        self.info.bytes_out += len(replies)
        sink.end_burst(replies)
        log.info("rtmp session {id} {peer} playing {key} started ({state})", id=self.info.id,
                 peer=self.description, key=self.key,
                 state="live" if stream.publisher else "waiting for publisher")

    def _refused(self, failure: Failure, request: object, what: str) -> None:
        if failure.check(SessionGone) or request is not self._request:
            return
        self._request = None
        self.info.sink = None
        if not failure.check(Refused):
            log.failure("rtmp {id}: {what} failed", failure, id=self.info.id, what=what)
            self._protocol_error(f"{what} failed: {failure.getErrorMessage()}")
            return
        refusal: Refused = failure.value  # type: ignore[assignment]
        log.warn("rtmp session {id} {peer} {what} {key} refused: {why}", id=self.info.id,
                 peer=self.description, what=what, key=self.key, why=refusal.reason)
        # RTMP answers each kind of refusal here: a play that is not found or
        # badly named gets StreamNotFound, any other Play.Failed; a publish that
        # is busy or badly named gets BadName, any other Unauthorized.
        if what == "play":
            self.session.reject_play(refusal.reason, refusal.kind in (RefusalKind.NOT_FOUND,
                                                                       RefusalKind.BAD_NAME))
        elif refusal.kind in (RefusalKind.BUSY, RefusalKind.BAD_NAME):
            self.session.reject_publish(refusal.reason)
        else:
            self.session.reject_publish(refusal.reason, "NetStream.Publish.Unauthorized")
        self.flush()
        self.close_reason = f"{what} refused: {refusal.reason}"
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _leave(self, closing: bool = False) -> None:
        """Stop publishing/playing (the connection may stay open)."""
        self._request = None
        self._cancel(self._media_timer)
        self._media_timer = None
        registry = self.factory.registry
        if self.sink is not None:
            sink, self.sink = self.sink, None
            registry.stop_play(self.info, sink)
            sink.stopProducing()
            self.info.bytes_out += sink.bytes_out
            self.info.sink = None
            if not closing:
                self._use_producer(self)
        elif self.stream is not None:
            registry.unpublish(self.info, self)
        self._stop_batching()
        if self.stream is not None and not closing:
            self._deadline(self.factory.idle_timeout,
                           "no publish or play within {:g}s of the last one")
        self.stream = None

    def _use_producer(self, producer: Any) -> None:
        """Make ``producer`` the one the transport pauses when the peer stops reading."""
        transport = self.transport
        transport.unregisterProducer()  # type: ignore[union-attr]
        self._cancel(self._stall_timer)
        self._stall_timer = None
        self.reading_paused = False
        transport.resumeProducing()  # type: ignore[union-attr]
        transport.registerProducer(producer, True)  # type: ignore[union-attr]

    def _protocol_error(self, cause: str) -> None:
        log.warn("rtmp {peer}: closing connection: {cause}", peer=self.description, cause=cause)
        self.close_reason = f"protocol error: {cause}"
        self.transport.abortConnection()  # type: ignore[union-attr]

    # IPublisher
    def close(self, reason: str) -> None:
        self.close_reason = reason
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:  # noqa: N802
        for timer in (self._handshake_timer, self._batch_timer, self._media_timer,
                      self._stall_timer):
            self._cancel(timer)
        self.info.ended = True
        self._leave(closing=True)
        why = self.close_reason or reason.getErrorMessage()
        log.info("rtmp session {id} {peer} ended: role={role} stream={key} bytes_in={bin} "
                 "bytes_out={bout} duration={dur:.1f}s reason={why}", id=self.info.id,
                 peer=self.description, role=self.session.role or "none", key=self.key or "-",
                 bin=self.info.bytes_in, bout=self.info.bytes_out,
                 dur=time.monotonic() - self.started, why=why)


class RTMPServerFactory(Factory):
    """Builds RTMP server protocols sharing one registry and one configuration."""

    protocol = RTMPServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        registry: StreamRegistry,
        reactor: IReactorTime | None = None,
        chunk_size: int = 4096,
        max_message_size: int = 16 * 1024 * 1024,
        gop_num: int | None = None,
        stall_timeout: float = 10.0,
        max_backlog_bytes: int = 2 * 1024 * 1024,
        handshake_timeout: float = 10.0,
        read_batch_ms: int = 0,
        idle_timeout: float = 30.0,
        pub_timeout: float = 30.0,
        wait_timeout: float = 0.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.registry = registry
        self.reactor = reactor
        self.chunk_size = chunk_size
        self.max_message_size = max_message_size
        self.gop_num = gop_num
        self.stall_timeout = stall_timeout
        self.max_backlog_bytes = max_backlog_bytes
        self.handshake_timeout = handshake_timeout
        self.read_batch_ms = read_batch_ms
        self.idle_timeout = idle_timeout
        self.pub_timeout = pub_timeout
        self.wait_timeout = wait_timeout
        self.batcher = ReadBatcher(reactor, read_batch_ms) if (
            read_batch_ms and CAN_BATCH) else None
