"""RTMP client session (push or pull) as a sans-IO state machine, on the shared
connection core (:mod:`.connection`).

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
from lal_twisted.media.packet import DATA, AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.connection import RtmpConnection, command_payload
from lal_twisted.rtmp.handshake import ClientHandshake
from lal_twisted.rtmp.message import MEDIA_CSID, SET_DATA_FRAME, Message, RtmpProtocolError
from lal_twisted.target import DEFAULT_PORTS, LOCALHOST, Target, TargetError, split_unix

_ON_METADATA = amf0.encode("onMetaData")
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
    secure: bool = False  # rtmps://: RTMP inside TLS
    unix: str = ""  # the unix socket dialled instead of host:port (lal_twisted.target)

    @classmethod
    def parse(cls, url: str) -> RtmpUrl:
        """``rtmp://host[:port]/app[/more]/stream[?query]`` (or ``rtmps://``,
        port 443 by default, or a unix socket: ``rtmp://unix:/PATH:/app/stream``);
        the last path element (with the query) is the stream name, the rest is
        the app."""
        try:
            plain, unix = split_unix(url)
        except TargetError as e:
            raise RtmpUrlError(str(e)) from None
        try:
            parts = urlsplit(plain)
        except ValueError as e:
            raise RtmpUrlError(f"bad URL {url!r}: {e}") from None
        if parts.scheme not in ("rtmp", "rtmps"):
            raise RtmpUrlError(f"not an rtmp:// or rtmps:// URL: {url!r}")
        secure = parts.scheme == "rtmps"
        if not parts.hostname:
            raise RtmpUrlError(f"no host in {url!r}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise RtmpUrlError(f"bad port in {url!r}") from None
        path = parts.path.strip("/")
        app, _, stream = path.rpartition("/")
        if not app or not stream:
            example = ("rtmp://unix:/run/lals.sock:/live/test (the socket's path ends at "
                       "a colon)" if unix else "rtmp://127.0.0.1:1935/live/test")
            raise RtmpUrlError(f"{url!r} needs an app and a stream name, e.g. {example}")
        if parts.query:
            stream = f"{stream}?{parts.query}"
        host = parts.hostname
        netloc = (LOCALHOST if unix else
                  f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
        return cls(host, port, app, stream, f"{parts.scheme}://{netloc}/{app}", secure, unix)

    @property
    def target(self) -> Target:
        """Where the connection goes."""
        return Target(self.host, self.port, self.secure, self.unix)


@dataclass
class Ready:
    """The server accepted publish (or play); media may flow."""

    code: str


@dataclass
class Status:
    level: str
    code: str
    description: str


class ClientSession(RtmpConnection):
    """One RTMP client connection that publishes or plays one stream."""

    handshake: ClientHandshake | None

    def __init__(self, url: RtmpUrl, mode: str, chunk_size: int = 4096,
                 complex_handshake: bool = True,
                 max_message_size: int = 16 * 1024 * 1024) -> None:
        if mode not in ("publish", "play"):
            raise ValueError(f"mode must be 'publish' or 'play', not {mode!r}")
        super().__init__(ClientHandshake(complex=complex_handshake), chunk_size,
                         max_message_size)
        self.url = url
        self.mode = mode
        self.stream_id = 0
        self.ready = False
        self._txn = 0.0
        self._pending: dict[float, str] = {}

    def start(self) -> None:
        """Queue C0+C1; ``connect`` follows once the handshake completes."""
        assert self.handshake is not None
        self._out.append(self.handshake.start())

    def _on_message(self, msg: Message, events: list[Any]) -> None:
        type_id = msg.type_id
        if type_id == m.COMMAND_AMF0 or type_id == m.COMMAND_AMF3:
            self._command(command_payload(msg), events)
        elif type_id == m.DATA_AMF0:
            # Audio and video are reported by the connection once _media_in is set.
            if self._media_in and not msg.payload.startswith(_SAMPLE_ACCESS):
                events.append(AVPacket(type_id, self._wide_time(msg), msg.payload))

    # -- publishing -----------------------------------------------------------------
    def send_packet(self, packet: AVPacket) -> None:
        """Queue one media packet (publish mode, once ready)."""
        payload = packet.payload
        if packet.kind == DATA and payload.startswith(_ON_METADATA):
            payload = SET_DATA_FRAME + payload
        self._out.append(self.writer.encode(MEDIA_CSID.get(packet.kind, m.CSID_DATA),
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
    def _on_handshake_done(self) -> None:
        """Announce the chunk size and send connect."""
        self._send_chunk_size()
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
        self._send_command(name, txn, *args, stream_id=stream_id)

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
                    self._send_user_control(m.SET_BUFFER_LENGTH, self.stream_id, 3000)
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
                self._media_in = self.mode == "play"
                events.append(Ready(status.code))
