"""WebSocket-FLV: the HTTP-FLV stream over a WebSocket (``ws://HOST/APP/STREAM.flv``).

Browsers play it with mpegts.js or flv.js when HTTP streaming does not suit
them.  A GET with ``Upgrade: websocket`` on an HTTP-FLV path goes through the
same session, access chain and :class:`~lal_twisted.httpflv.server.FlvSink`
machinery as HTTP-FLV (GOP cache, backlog, waiting for keyframes, stall
timeout); refusals are plain HTTP answers given before the upgrade.  Each FLV
tag then travels as one binary WebSocket message.

Twisted's own ``twisted.web.websocket`` (on wsproto) does the handshake and
reads what the player sends (ping -> pong, close -> close).  Outbound frames
are built here instead: a server's frames are not masked, so the frame of a
packet is the same bytes for every player and is encoded once per packet and
shared, like the FLV tag it wraps (``sendBytesMessage`` would copy every tag
into a new frame per player).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import BAD_REQUEST
from twisted.web.websocket import WebSocketResource

from lal_twisted.httpflv.sink import FlvSink
from lal_twisted.log import Logger
from lal_twisted.media import flv
from lal_twisted.media.packet import AVPacket
from lal_twisted.web.router import plain_error

if TYPE_CHECKING:
    from lal_twisted.httpflv.server import HttpFlvResource
    from lal_twisted.hub.session import Session

log = Logger("lal_twisted.httpflv.websocket")

__all__ = ["WsFlvEncoder", "WsFlvSink", "is_upgrade", "upgrade_error", "ws_frame"]

_OP_BINARY = 0x82  # FIN + binary opcode
_U16 = struct.Struct(">BBH")
_U64 = struct.Struct(">BBQ")

# What a player may send: only control frames (pings, a close) are expected,
# a few bytes now and then.  Incoming bytes are metered with a bucket of
# INBOUND_BURST bytes refilled at INBOUND_RATE bytes/s; a client past it is
# disconnected, so what the WebSocket layer buffers from one stays bounded.
INBOUND_BURST = 16 * 1024
INBOUND_RATE = 64.0

CLOSE_GOING_AWAY = 1001


def ws_frame(payload: bytes) -> bytes:
    """One unmasked binary WebSocket frame (a whole message) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return b"".join((bytes((_OP_BINARY, size)), payload))
    if size < 0x10000:
        return b"".join((_U16.pack(_OP_BINARY, 126, size), payload))
    return b"".join((_U64.pack(_OP_BINARY, 127, size), payload))


class WsFlvEncoder:
    """A packet's FLV tag in a WebSocket frame; use :data:`WS_FLV_ENCODER`."""

    def encode(self, packet: AVPacket) -> bytes:
        return ws_frame(packet.encoded(flv.TAG_ENCODER))


WS_FLV_ENCODER = WsFlvEncoder()


def is_upgrade(request: server.Request) -> bool:
    """True for a request that asks for a WebSocket (``Upgrade: websocket``)."""
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and b"websocket" in upgrade.lower()


def upgrade_error(request: server.Request) -> str:
    """Why this WebSocket upgrade request is invalid (RFC 6455 4.2.1), or ''."""
    if request.method != b"GET":
        return "a WebSocket upgrade must be a GET"
    if request.clientproto != b"HTTP/1.1":
        return "a WebSocket upgrade needs HTTP/1.1"
    connection = (request.getHeader(b"connection") or b"").lower()
    if b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        return "a WebSocket upgrade needs 'Connection: Upgrade'"
    if request.getHeader(b"sec-websocket-version") != b"13":
        request.setHeader(b"Sec-WebSocket-Version", b"13")
        return "unsupported Sec-WebSocket-Version (this server speaks 13)"
    key = request.getHeader(b"sec-websocket-key") or b""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        return "missing or malformed Sec-WebSocket-Key"
    return ""


class WsFlvSink(FlvSink):
    """An FLV player over a WebSocket: frames written straight to the connection."""

    protocol_name = "wsflv"
    encoder = WS_FLV_ENCODER

    def __init__(self, request: server.Request, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.transport: Any = None  # the connection, once upgraded
        self.wire: Any = None  # Twisted's WebSocket transport, once upgraded

    def container_header(self, has_audio: bool, has_video: bool) -> bytes:
        return ws_frame(flv.file_header(has_audio, has_video))

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def disconnect(self, reason: str) -> None:
        self.request.close_reason = reason  # type: ignore[attr-defined]
        if self.transport is None:
            super().disconnect(reason)  # not upgraded yet: a plain HTTP answer
        elif self.paused:
            self.transport.abortConnection()  # a stalled player reads no close frame
        else:
            self.wire.loseConnection(CLOSE_GOING_AWAY)


class WsFlvPlayer:
    """The ``WebSocketProtocol`` of one WebSocket-FLV player (Twisted calls it)."""

    def __init__(self, sink: WsFlvSink, reactor: IReactorTime) -> None:
        self.sink = sink
        self.reactor = reactor
        self.on_lost: Any = None
        self._tokens = float(INBOUND_BURST)
        self._last = reactor.seconds()

    def negotiationStarted(self, transport: Any) -> None:  # noqa: N802 - Twisted interface
        self.sink.wire = transport

    def negotiationFinished(self) -> None:  # noqa: N802 - Twisted interface
        pass

    def pongReceived(self, payload: bytes) -> None:  # noqa: N802 - Twisted interface
        pass

    def textMessageReceived(self, message: str) -> None:  # noqa: N802 - Twisted interface
        pass  # a player has nothing to say; its bytes were metered on arrival

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:  # noqa: N802
        pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted interface
        if self.on_lost is not None:
            self.on_lost(reason)

    def metered(self, data_received: Any) -> Any:
        """Wrap the connection's ``dataReceived`` with the inbound bucket."""
        def receive(data: bytes) -> None:
            now = self.reactor.seconds()
            self._tokens = min(INBOUND_BURST, self._tokens + (now - self._last) * INBOUND_RATE)
            self._last = now
            self._tokens -= len(data)
            if self._tokens < 0:
                self.sink.close(f"player sent more than {INBOUND_BURST} bytes "
                                f"(+{INBOUND_RATE:g}/s); a player only sends control frames")
                if self.sink.transport is not None:
                    self.sink.transport.abortConnection()
                return
            data_received(data)
        return receive


class _Factory:
    def __init__(self, player: WsFlvPlayer) -> None:
        self.player = player

    def buildProtocol(self, request: server.Request) -> WsFlvPlayer:  # noqa: N802
        return self.player


def render_upgrade(flv_resource: HttpFlvResource, request: server.Request) -> Any:
    """Answer a WebSocket-FLV request: 400 when the upgrade request is bad, the
    access chain's answer when refused, else the upgrade and the stream."""
    error = upgrade_error(request)
    if error:
        log.info("wsflv {peer}: bad upgrade request: {why}", peer=_peer(request), why=error)
        return plain_error(request, BAD_REQUEST, f"bad request: {error}")
    return flv_resource.play(request, WsFlvSink, "ws")


def upgrade(request: server.Request, sink: WsFlvSink, reactor: IReactorTime,
            session: Session, on_lost: Any) -> None:
    """Switch an accepted request's connection to WebSocket and start the sink."""
    channel: Any = request.channel
    if channel is None or channel.transport is None:
        return  # the player left while its access was checked (its session ended)
    player = WsFlvPlayer(sink, reactor)
    player.on_lost = on_lost
    answer = WebSocketResource(_Factory(player)).render_GET(request)  # the 101 answer
    if answer != server.NOT_DONE_YET:  # wsproto refused what upgrade_error accepted
        sink.stopProducing()  # the 400 below ends the request and the session
        request.write(answer)  # type: ignore[arg-type]
        request.finish()
        return
    channel.setTimeout(None)  # the stream's own timers watch the connection now
    channel.dataReceived = player.metered(channel.dataReceived)
    sink.transport = channel.transport
    request.registerProducer(sink, True)
    sink.end_burst()
    log.info("wsflv session {id} {peer} playing {key} started", id=session.id,
             peer=session.remote_addr, key=session.key)


def _peer(request: server.Request) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
