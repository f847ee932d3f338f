"""WebSocket-FLV: the HTTP-FLV stream over a WebSocket (``ws://HOST/APP/STREAM.flv``).

Browsers play it with mpegts.js or flv.js when HTTP streaming does not suit
them.  A GET with ``Upgrade: websocket`` on an HTTP-FLV path goes through the
same session, access chain and :class:`~lal_twisted.httpflv.server.FlvSink`
machinery as HTTP-FLV (GOP cache, backlog, waiting for keyframes, stall
timeout); refusals are plain HTTP answers given before the upgrade.  Each FLV
tag then travels as one binary WebSocket message.

Twisted's own ``twisted.web.websocket`` (on wsproto) does the handshake;
what the player sends is read here, with wsproto's connection (ping -> pong,
close -> close), after a meter and a frame-length check: a player may only send
control frames, and one that breaks RFC 6455 gets a close frame naming why
(1002, 1007, 1008, 1009) and a session that ends with that reason.  Outbound
frames are built here too: a server's frames are not masked, so the frame of a
packet is the same bytes for every player and is encoded once per packet and
shared, like the FLV tag it wraps (``sendBytesMessage`` would copy every tag
into a new frame per player).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import BAD_REQUEST
from twisted.web.websocket import WebSocketResource
from wsproto import Connection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping
from wsproto.frame_protocol import CloseReason

from lal_twisted.httpflv.sink import FlvSink
from lal_twisted.log import Logger
from lal_twisted.media import flv
from lal_twisted.media.packet import AVPacket
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.router import plain_error

if TYPE_CHECKING:
    from lal_twisted.hub.session import Session
    from lal_twisted.web.player import LiveStreamResource

log = Logger("lal_twisted.httpflv.websocket")

__all__ = ["FrameLengths", "WsFlvEncoder", "WsFlvSink", "is_upgrade", "upgrade_error",
           "ws_frame"]

_OP_BINARY = 0x82  # FIN + binary opcode
_U16 = struct.Struct(">BBH")
_U64 = struct.Struct(">BBQ")

# What a player may send: only control frames (pings, a close) are expected,
# a few bytes now and then.  Incoming bytes are metered with a bucket of
# INBOUND_BURST bytes refilled at INBOUND_RATE bytes/s; a client past it is
# disconnected, so what the WebSocket layer buffers from one stays bounded.
INBOUND_BURST = 16 * 1024
INBOUND_RATE = 64.0
# A frame declaring a longer payload could never pass the meter in one burst:
# it is refused (1009) as soon as its header is in, before any of it is read.
MAX_INBOUND_FRAME = INBOUND_BURST
# After the server's close frame the player has this long to take it (it comes
# after what is already buffered, up to subscriber.max_backlog_bytes) and end
# the connection; then the connection is reset.  Go's net/http waits 500 ms
# (rstAvoidanceDelay) after an answer alone; a backlog of tags takes longer.
CLOSE_GRACE = 2.0


def ws_frame(payload: bytes) -> bytes:
    """One unmasked binary WebSocket frame (a whole message) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return b"".join((bytes((_OP_BINARY, size)), payload))
    if size < 0x10000:
        return b"".join((_U16.pack(_OP_BINARY, 126, size), payload))
    return b"".join((_U64.pack(_OP_BINARY, 127, size), payload))


class FrameLengths:
    """Follows the frames a player sends, to learn each one's declared payload
    length as soon as its header is in (wsproto hands a data frame's payload
    on as it arrives and never says how long the frame will be)."""

    def __init__(self) -> None:
        self._head = bytearray()  # the frame header being read (14 bytes at most)
        self._skip = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> int:
        """Follow ``data``; the largest payload length a header in it declared."""
        largest = 0
        pos, end = 0, len(data)
        head = self._head
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = _header_size(head)
            take = min(need - len(head), end - pos)
            head += data[pos:pos + take]
            pos += take
            if len(head) < _header_size(head):
                continue
            size = head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack_from(">H", head, 2)
            elif size == 127:
                (size,) = struct.unpack_from(">Q", head, 2)
            self._skip = size
            largest = max(largest, size)
            head.clear()
        return largest


def _header_size(head: bytearray) -> int:
    """The size of the frame header that starts with ``head`` (2 until known)."""
    if len(head) < 2:
        return 2
    second = head[1]
    extended = {126: 2, 127: 8}.get(second & 0x7F, 0)
    return 2 + extended + (4 if second & 0x80 else 0)


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

    protocol_name = ProtocolName.WS_FLV
    encoder = WS_FLV_ENCODER

    def __init__(self, request: server.Request, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.transport: Any = None  # the connection, once upgraded
        self.player: WsFlvPlayer | None = None  # once upgraded
        # The close code disconnect() sends: the stream ended or the server stops,
        # unless the player broke the rules (WsFlvPlayer.receive).
        self.close_code = int(CloseReason.GOING_AWAY)

    def container_header(self, has_audio: bool, has_video: bool) -> bytes:
        return ws_frame(flv.file_header(has_audio, has_video))

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def disconnect(self, reason: str) -> None:
        self.request.close_reason = reason  # type: ignore[attr-defined]
        if self.player is None:
            super().disconnect(reason)  # not upgraded yet: a plain HTTP answer
        elif self.paused:
            self.transport.abortConnection()  # a stalled player reads no close frame
        else:
            self.player.close(self.close_code, reason)


class WsFlvPlayer:
    """The ``WebSocketProtocol`` of one WebSocket-FLV player (Twisted calls it)
    and the reader of what that player sends (:meth:`receive`)."""

    def __init__(self, sink: WsFlvSink, reactor: IReactorTime) -> None:
        self.sink = sink
        self.reactor = reactor
        self.on_lost: Any = None
        self.transport: Any = None
        self.conn: Connection | None = None
        self._frames = FrameLengths()
        self._tokens = float(INBOUND_BURST)
        self._last = reactor.seconds()
        self._abort_call: IDelayedCall | None = None  # set once closing

    def negotiationStarted(self, transport: Any) -> None:  # noqa: N802 - Twisted interface
        self.transport = transport.transport
        # wsproto's connection, which Twisted's WebSocket transport keeps but
        # does not expose: receive() reads with it instead of Twisted.
        self.conn = transport._wsconn

    def negotiationFinished(self) -> None:  # noqa: N802 - Twisted interface
        pass

    def pongReceived(self, payload: bytes) -> None:  # noqa: N802 - Twisted interface
        pass

    def textMessageReceived(self, message: str) -> None:  # noqa: N802 - Twisted interface
        pass

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:  # noqa: N802
        pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted interface
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self.on_lost is not None:
            self.on_lost(reason)

    def receive(self, data: bytes) -> None:
        """The connection's ``dataReceived``: meter, check frame lengths, then
        read with wsproto; a ping is answered, a close or an error closes.
        Messages are dropped as they come (a player has nothing to say), so
        nothing the player sends is buffered past a frame header."""
        conn = self.conn
        if self._abort_call is not None or conn is None:
            return  # closing: nothing more is read
        now = self.reactor.seconds()
        self._tokens = min(INBOUND_BURST, self._tokens + (now - self._last) * INBOUND_RATE)
        self._last = now
        self._tokens -= len(data)
        if self._tokens < 0:
            self._fail(CloseReason.POLICY_VIOLATION,
                       f"player sent more than {INBOUND_BURST} bytes "
                       f"(+{INBOUND_RATE:g}/s); a player only sends control frames")
            return
        length = self._frames.feed(data)
        if length > MAX_INBOUND_FRAME:
            self._fail(CloseReason.MESSAGE_TOO_BIG,
                       f"websocket message too big: a frame of {length} bytes "
                       f"(a player may send {MAX_INBOUND_FRAME})")
            return
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, Ping):
                self.transport.write(conn.send(event.response()))
            elif isinstance(event, CloseConnection):
                if conn.state is ConnectionState.REMOTE_CLOSING:  # the player's close
                    self.transport.write(conn.send(event.response()))
                    self._fail(event.code, "player closed")
                else:  # wsproto's ParseFailed: the bytes break RFC 6455
                    self._fail(event.code, f"websocket protocol error: {event.reason}")
                return

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (unless one was), then end the connection: a FIN
        once what is buffered has gone, a reset after CLOSE_GRACE if the player
        has not ended it by then."""
        if self._abort_call is not None:
            return
        transport, conn = self.transport, self.conn
        if conn is not None and conn.state in (ConnectionState.OPEN,
                                               ConnectionState.REMOTE_CLOSING):
            transport.write(conn.send(CloseConnection(code, reason)))
        # Unregistered, the channel is not resumed when the buffer drains
        # (which would come instead of the FIN).
        transport.unregisterProducer()
        transport.loseWriteConnection()
        self._abort_call = self.reactor.callLater(CLOSE_GRACE, transport.abortConnection)

    def _fail(self, code: int, reason: str) -> None:
        """End the session with ``reason``, telling the player with ``code``."""
        if self.sink.closed:  # its session is ending already
            self.close(code, reason)
            return
        self.sink.close_code = code
        self.sink.close(reason)


class _Factory:
    def __init__(self, player: WsFlvPlayer) -> None:
        self.player = player

    def buildProtocol(self, request: server.Request) -> WsFlvPlayer:  # noqa: N802
        return self.player


def render_upgrade(flv_resource: LiveStreamResource, request: server.Request) -> Any:
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
    channel.dataReceived = player.receive
    sink.transport = channel.transport
    sink.player = player
    request.registerProducer(sink, True)
    sink.end_burst()
    log.info("wsflv session {id} {peer} playing {key} started", id=session.id,
             peer=session.remote_addr, key=session.key)


def _peer(request: server.Request) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
