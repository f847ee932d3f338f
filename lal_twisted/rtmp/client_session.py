"""RTMP client session (push or pull) as a sans-IO state machine.

The same engine drives the push/pull tools and, later, relays.  ``start()``
queues the handshake; ``receive(data)`` returns events (:class:`Ready` once
publishing/playing is accepted, :class:`Status` for every onStatus, and
:class:`AVPacket` for media while playing); ``send_packet`` queues media while
publishing; ``data_to_send()`` hands over the bytes to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lal_twisted.media import amf0
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import ChunkReader, ChunkWriter
from lal_twisted.rtmp.handshake import ClientHandshake
from lal_twisted.rtmp.message import RtmpProtocolError

_MEDIA_CSID = {AUDIO: m.CSID_AUDIO, VIDEO: m.CSID_VIDEO, DATA: m.CSID_DATA}
_SET_DATA_FRAME = amf0.encode("@setDataFrame")
_SAMPLE_ACCESS = amf0.encode("|RtmpSampleAccess")
_FAILURE_CODES = ("NetStream.Publish.BadName", "NetStream.Play.StreamNotFound",
                  "NetStream.Play.Failed", "NetStream.Publish.Denied",
                  "NetConnection.Connect.Rejected")


class RtmpUrlError(ValueError):
    """An rtmp:// URL that cannot be used."""


class ClientError(RtmpProtocolError):
    """The server refused or broke the session."""


@dataclass(frozen=True)
class RtmpUrl:
    host: str
    port: int
    app: str
    stream: str
    tc_url: str

    @classmethod
    def parse(cls, url: str) -> RtmpUrl:
        """``rtmp://host[:port]/app[/more]/stream[?query]``; the last path
        element (with the query) is the stream name, the rest is the app."""
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise RtmpUrlError(f"bad URL {url!r}: {e}") from None
        if parts.scheme != "rtmp":
            raise RtmpUrlError(f"not an rtmp:// URL: {url!r}")
        if not parts.hostname:
            raise RtmpUrlError(f"no host in {url!r}")
        try:
            port = parts.port or 1935
        except ValueError:
            raise RtmpUrlError(f"bad port in {url!r}") from None
        path = parts.path.strip("/")
        app, _, stream = path.rpartition("/")
        if not app or not stream:
            raise RtmpUrlError(f"{url!r} needs an app and a stream name, "
                               "e.g. rtmp://127.0.0.1:1935/live/test")
        if parts.query:
            stream = f"{stream}?{parts.query}"
        host = parts.hostname
        netloc = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        return cls(host, port, app, stream, f"rtmp://{netloc}/{app}")


@dataclass
class Ready:
    """The server accepted publish (or play); media may flow."""

    code: str


@dataclass
class Status:
    level: str
    code: str
    description: str


class ClientSession:
    """One RTMP client connection that publishes or plays one stream."""

    def __init__(self, url: RtmpUrl, mode: str, chunk_size: int = 4096,
                 complex_handshake: bool = True,
                 max_message_size: int = 16 * 1024 * 1024) -> None:
        if mode not in ("publish", "play"):
            raise ValueError(f"mode must be 'publish' or 'play', not {mode!r}")
        self.url = url
        self.mode = mode
        self.handshake: ClientHandshake | None = ClientHandshake(complex=complex_handshake)
        self.reader = ChunkReader(max_message_size=max_message_size)
        self.writer = ChunkWriter(128)
        self.out_chunk_size = chunk_size
        self.stream_id = 0
        self.ready = False
        self._txn = 0.0
        self._pending: dict[float, str] = {}
        self._out: list[bytes] = []
        self._peer_ack_window = 0
        self._last_ack = 0

    def start(self) -> None:
        assert self.handshake is not None
        self._out.append(self.handshake.start())

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes) -> list[Any]:
        events: list[Any] = []
        if self.handshake is not None:
            reply = self.handshake.receive(data)
            if reply:
                self._out.append(reply)
            if not self.handshake.done:
                return events
            data = self.handshake.leftover()
            self.handshake = None
            self._connect()
            if not data:
                return events
        for msg in self.reader.feed(data):
            type_id = msg.type_id
            if type_id == AUDIO or type_id == VIDEO or type_id == m.DATA_AMF0:
                if self.ready and self.mode == "play" and not (
                        type_id == m.DATA_AMF0 and msg.payload.startswith(_SAMPLE_ACCESS)):
                    events.append(AVPacket(type_id, msg.timestamp, msg.payload))
            elif type_id == m.COMMAND_AMF0 or type_id == m.COMMAND_AMF3:
                payload = msg.payload
                if type_id == m.COMMAND_AMF3 and payload[:1] == b"\x00":
                    payload = payload[1:]
                self._command(payload, events)
            elif type_id == m.WINDOW_ACK_SIZE:
                self._peer_ack_window = m.parse_u32(msg.payload)
            elif type_id == m.USER_CONTROL:
                event, value, _ = m.parse_user_control(msg.payload)
                if event == m.PING_REQUEST:
                    self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0,
                               m.user_control_payload(m.PING_RESPONSE, value))
        window = self._peer_ack_window
        if window and self.reader.bytes_received - self._last_ack >= window:
            self._last_ack = self.reader.bytes_received
            self._send(m.CSID_PROTOCOL, m.ACK, 0,
                       m.ack_payload(self.reader.bytes_received & 0xFFFFFFFF))
        return events

    # -- publishing -----------------------------------------------------------------
    def send_packet(self, packet: AVPacket) -> None:
        """Queue one media packet (publish mode, once ready)."""
        payload = packet.payload
        if packet.kind == DATA and payload.startswith(b"\x02\x00\x0aonMetaData"):
            payload = _SET_DATA_FRAME + payload
        self._out.append(self.writer.encode(_MEDIA_CSID.get(packet.kind, m.CSID_DATA),
                                            packet.kind, self.stream_id,
                                            packet.dts, payload))

    def encode_packet(self, packet: AVPacket) -> bytes:
        """The bytes of one media packet, without queueing them."""
        self.send_packet(packet)
        return self._out.pop()

    def close_stream(self) -> None:
        """Queue FCUnpublish/deleteStream so the server ends the stream cleanly."""
        if self.mode == "publish":
            self._call("FCUnpublish", None, self.url.stream, expect_reply=False)
        if self.stream_id:
            self._call("deleteStream", None, float(self.stream_id), expect_reply=False)

    # -- command flow -----------------------------------------------------------------
    def _connect(self) -> None:
        self._send(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0,
                   m.set_chunk_size_payload(self.out_chunk_size))
        self.writer.chunk_size = self.out_chunk_size
        props: dict[str, Any] = {
            "app": self.url.app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; lal)",
            "tcUrl": self.url.tc_url,
        }
        if self.mode == "play":
            props.update({"fpad": False, "capabilities": 15.0, "audioCodecs": 4071.0,
                          "videoCodecs": 252.0, "videoFunction": 1.0})
        self._call("connect", props)

    def _call(self, name: str, *args: Any, expect_reply: bool = True) -> None:
        txn = 0.0
        if expect_reply:
            self._txn += 1
            txn = self._txn
            self._pending[txn] = name
        stream_id = self.stream_id if name in ("publish", "play", "deleteStream") else 0
        self._send(m.CSID_COMMAND, m.COMMAND_AMF0, stream_id, amf0.encode(name, txn, *args))

    def _command(self, payload: bytes, events: list[Any]) -> None:
        values = amf0.decode(payload)
        if not values or not isinstance(values[0], str):
            raise ClientError("command message without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        if name in ("_result", "_error"):
            call = self._pending.pop(txn, None)
            if name == "_error":
                info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
                raise ClientError(f"server refused {call}: "
                                  f"{info.get('code', '')} {info.get('description', '')}".strip())
            if call == "connect":
                if self.mode == "publish":
                    self._call("releaseStream", None, self.url.stream, expect_reply=False)
                    self._call("FCPublish", None, self.url.stream, expect_reply=False)
                self._call("createStream", None)
            elif call == "createStream":
                sid = values[3] if len(values) > 3 and isinstance(values[3], float) else 1.0
                self.stream_id = int(sid)
                if self.mode == "publish":
                    self._call("publish", None, self.url.stream, "live", expect_reply=False)
                else:
                    self._call("play", None, self.url.stream, -2.0, -1.0, expect_reply=False)
                    self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0,
                               m.user_control_payload(m.SET_BUFFER_LENGTH, self.stream_id, 3000))
        elif name == "onStatus":
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            status = Status(str(info.get("level", "")), str(info.get("code", "")),
                            str(info.get("description", "")))
            events.append(status)
            if status.code in _FAILURE_CODES or status.level == "error":
                raise ClientError(f"server refused {self.mode}: {status.code} "
                                  f"{status.description}".strip())
            if not self.ready and status.code in ("NetStream.Publish.Start",
                                                  "NetStream.Play.Start"):
                self.ready = True
                events.append(Ready(status.code))

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        self._out.append(self.writer.encode(csid, type_id, stream_id, 0, payload))
