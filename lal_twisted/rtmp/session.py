"""RTMP server session: the NetConnection/NetStream commands of a server as a
sans-IO state machine, on the shared connection core (:mod:`.connection`).

``receive(data)`` returns events for the logic layer (:class:`PublishRequest`,
:class:`PlayRequest`, :class:`StreamClosed`, and media as :class:`AVPacket`
objects); everything the protocol itself answers (acknowledgements, pings,
``_result`` replies) is queued for ``data_to_send()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lal_twisted.media import amf0
from lal_twisted.media.clock import signed_step
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import encode_message
from lal_twisted.rtmp.connection import RtmpConnection, command_payload
from lal_twisted.rtmp.handshake import ServerHandshake
from lal_twisted.rtmp.message import MEDIA_CSID, SET_DATA_FRAME, Message, RtmpProtocolError

# The message stream id handed out by createStream.  Always 1, so an encoded
# media message is the same bytes for every player (encode once, share).
MEDIA_STREAM_ID = 1


# Enhanced-RTMP capability negotiation (E-RTMP v2, "Enhancing NetConnection
# connect"): a client names in connect the codecs it handles (fourCcList, or per
# codec masks in video/audioFourCcInfoMap) and its extended capabilities
# (capsEx); the server answers with its own in the _result properties.  This
# server forwards every listed codec untouched, multitrack and ModEx included.
FOURCC_CAN_FORWARD = 4.0  # FourCcInfoMask: CanDecode 1, CanEncode 2, CanForward 4
CAPS_EX = float(2 | 4 | 8)  # CapsExMask: Multitrack 2, ModEx 4, TimestampNanoOffset 8
VIDEO_FOURCCS = ("avc1", "hvc1", "av01", "vp09")
AUDIO_FOURCCS = ("mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3")
_NEGOTIATION_KEYS = ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx")


def enhanced_capabilities(props: dict[str, Any]) -> dict[str, Any]:
    """The properties to add to the connect reply for a client that negotiates
    enhanced RTMP (empty for a client that does not ask)."""
    if not any(key in props for key in _NEGOTIATION_KEYS):
        return {}
    known = VIDEO_FOURCCS + AUDIO_FOURCCS
    asked = props.get("fourCcList")
    if isinstance(asked, list):
        wildcard = "*" in asked
        fourccs = [f for f in known if wildcard or f in asked]
    else:
        fourccs = list(known)
    return {
        "fourCcList": fourccs,
        "videoFourCcInfoMap": {f: FOURCC_CAN_FORWARD for f in VIDEO_FOURCCS},
        "audioFourCcInfoMap": {f: FOURCC_CAN_FORWARD for f in AUDIO_FOURCCS},
        "capsEx": CAPS_EX,
    }


class SessionError(RtmpProtocolError):
    """A peer broke the command protocol (e.g. publish before connect)."""


@dataclass
class ConnectRequest:
    app: str
    tc_url: str
    query: str
    # Informational (on_rtmp_connect); not part of what the request asks for.
    flash_ver: str = field(default="", compare=False)


@dataclass
class PublishRequest:
    app: str
    name: str
    query: str
    publish_type: str


@dataclass
class PlayRequest:
    app: str
    name: str
    query: str
    start: float
    duration: float
    reset: bool


@dataclass
class StreamClosed:
    """deleteStream / closeStream / FCUnpublish: the peer ends its publish or play."""

    command: str


def split_query(value: str) -> tuple[str, str]:
    """``"test?token=x"`` -> ``("test", "token=x")``."""
    name, _, query = value.partition("?")
    return name, query


class MediaEncoder:
    """RTMP chunks of a media packet at one outbound chunk size, on message
    stream 1, so the bytes are the same for every player: one instance per
    chunk size (:func:`media_encoder`)."""

    __slots__ = ("chunk_size",)

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size

    def encode(self, packet: AVPacket) -> bytes:
        return encode_message(self.chunk_size, MEDIA_CSID[packet.kind], packet.kind,
                              MEDIA_STREAM_ID, packet.dts, packet.payload)


_ENCODERS: dict[int, MediaEncoder] = {}


def media_encoder(chunk_size: int) -> MediaEncoder:
    """The shared encoder for ``chunk_size`` (the packet cache is keyed by it)."""
    encoder = _ENCODERS.get(chunk_size)
    if encoder is None:
        encoder = _ENCODERS[chunk_size] = MediaEncoder(chunk_size)
    return encoder


def encode_media(packet: AVPacket, chunk_size: int) -> bytes:
    """RTMP chunks for one media packet; cached on the packet, shared by all players."""
    return packet.encoded(media_encoder(chunk_size))


class ServerSession(RtmpConnection):
    """One RTMP connection seen from the server."""

    handshake: ServerHandshake | None

    def __init__(
        self,
        chunk_size: int = 4096,
        max_message_size: int = 16 * 1024 * 1024,
        window_ack_size: int = 2500000,
    ) -> None:
        super().__init__(ServerHandshake(), chunk_size, max_message_size)
        self.window_ack_size = window_ack_size
        self.app = ""
        self.tc_url = ""
        self.query = ""
        self.stream_name = ""
        self._role: str | None = None
        self.connected = False
        # What the connect reply offered of enhanced RTMP ({} if not asked).
        self.enhanced: dict[str, Any] = {}

    @property
    def role(self) -> str | None:
        """``"publish"`` or ``"play"`` once accepted; media becomes events while publishing."""
        return self._role

    @role.setter
    def role(self, role: str | None) -> None:
        self._role = role
        self._media_in = role == "publish"

    # -- input ------------------------------------------------------------------------
    def _on_message(self, msg: Message, events: list[Any]) -> None:
        type_id = msg.type_id
        if type_id == m.COMMAND_AMF0 or type_id == m.COMMAND_AMF3:
            self._command(command_payload(msg), events)
        elif type_id == m.DATA_AMF0 or type_id == m.DATA_AMF3:
            self._data(msg, type_id, events)
        elif type_id == m.AGGREGATE:
            if self._role == "publish":
                self._aggregate(msg.payload, self._wide_time(msg), events)

    # -- commands --------------------------------------------------------------------
    def _command(self, payload: bytes, events: list[Any]) -> None:
        values = amf0.decode(payload)
        if len(values) < 2 or not isinstance(values[0], str):
            raise SessionError("command message without a command name")
        name, txn = values[0], values[1]
        if not isinstance(txn, float):
            txn = 0.0
        args = values[3:]
        if name == "connect":
            self._connect(txn, values[2] if len(values) > 2 else None, events)
            return
        if not self.connected:
            raise SessionError(f"command {name!r} before connect")
        if name == "createStream":
            self._result(txn, None, float(MEDIA_STREAM_ID))
        elif name == "publish":
            stream = args[0] if args and isinstance(args[0], str) else ""
            kind = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
            if not stream:
                self._status("error", "NetStream.Publish.BadName", "publish without a stream name")
                return
            self.stream_name, query = split_query(stream)
            self.query = query or self.query
            events.append(PublishRequest(self.app, self.stream_name, self.query, kind))
        elif name == "play":
            stream = args[0] if args and isinstance(args[0], str) else ""
            if not stream:
                self._status("error", "NetStream.Play.StreamNotFound", "play without a stream name")
                return
            start = args[1] if len(args) > 1 and isinstance(args[1], float) else -2.0
            duration = args[2] if len(args) > 2 and isinstance(args[2], float) else -1.0
            reset = args[3] if len(args) > 3 and isinstance(args[3], bool) else True
            self.stream_name, query = split_query(stream)
            self.query = query or self.query
            events.append(PlayRequest(self.app, self.stream_name, self.query, start, duration,
                                      reset))
        elif name in ("deleteStream", "closeStream", "FCUnpublish"):
            if name == "FCUnpublish" and txn:
                self._result(txn, None, None)
            events.append(StreamClosed(name))
        elif name in ("releaseStream", "FCPublish", "FCSubscribe", "_checkbw"):
            if txn:
                self._result(txn, None, amf0.UNDEFINED)
        elif name == "getStreamLength":
            self._result(txn, None, 0.0)
        elif name in ("receiveAudio", "receiveVideo", "pause", "seek", "_result", "_error",
                      "onBWDone", "onStatus"):
            pass  # nothing to do for a live stream
        elif txn:
            self._send_command("_error", txn, None, {
                "level": "error", "code": "NetConnection.Call.Failed",
                "description": f"unknown command {name[:100]!r}"})

    def _connect(self, txn: float, props: Any, events: list[Any]) -> None:
        if self.connected:
            raise SessionError("connect sent twice")
        if not isinstance(props, dict):
            raise SessionError("connect without a command object")
        app = props.get("app")
        tc_url = props.get("tcUrl")
        self.tc_url = tc_url if isinstance(tc_url, str) else ""
        if not isinstance(app, str) or not app:
            try:
                app = urlsplit(self.tc_url).path if self.tc_url else ""
            except ValueError as e:
                raise SessionError(f"connect with a malformed tcUrl: {e}") from None
        app, self.query = split_query(app)
        self.app = app.strip("/")
        if not self.query and "?" in self.tc_url:
            self.query = self.tc_url.split("?", 1)[1]
        encoding = props.get("objectEncoding", 0.0)
        self.connected = True
        self._send_window_ack_size(self.window_ack_size)
        self._send_peer_bandwidth(self.window_ack_size, m.LIMIT_DYNAMIC)
        self._send_chunk_size()
        properties: dict[str, Any] = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
        self.enhanced = enhanced_capabilities(props)
        properties.update(self.enhanced)
        self._result(txn, properties, {
            "level": "status", "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": encoding if isinstance(encoding, float) else 0.0})
        flash_ver = props.get("flashVer")
        events.append(ConnectRequest(self.app, self.tc_url, self.query,
                                     flash_ver if isinstance(flash_ver, str) else ""))

    def _data(self, msg: Message, type_id: int, events: list[Any]) -> None:
        if self._role != "publish":
            return
        payload = msg.payload
        if type_id == m.DATA_AMF3:
            if payload[:1] != b"\x00":
                return
            payload = payload[1:]
        if payload.startswith(SET_DATA_FRAME):
            payload = payload[len(SET_DATA_FRAME):]
        events.append(AVPacket(DATA, self._wide_time(msg), payload))

    def _aggregate(self, payload: bytes, timestamp: int, events: list[Any]) -> None:
        """Split an aggregate message (a run of FLV tags) into packets, timed
        from the message's (wide) ``timestamp`` by their 32-bit steps from the first."""
        view = memoryview(payload)
        offset, end = 0, len(payload)
        first_ts: int | None = None
        while offset + 11 <= end:
            tag_type = view[offset]
            size = int.from_bytes(view[offset + 1:offset + 4], "big")
            ts = int.from_bytes(view[offset + 4:offset + 7], "big") | (view[offset + 7] << 24)
            body_end = offset + 11 + size
            if body_end > end:
                raise SessionError("aggregate message with a truncated sub-message")
            if first_ts is None:
                first_ts = ts
            if tag_type in (AUDIO, VIDEO, DATA):
                events.append(AVPacket(tag_type, timestamp + signed_step(ts - first_ts),
                                       bytes(view[offset + 11:body_end])))
            offset = body_end + 4

    # -- replies --------------------------------------------------------------------
    def accept_publish(self) -> None:
        self.role = "publish"
        self._send_user_control(m.STREAM_BEGIN, MEDIA_STREAM_ID)
        self._status("status", "NetStream.Publish.Start", f"{self.stream_name} is now published.")

    def reject_publish(self, description: str, code: str = "NetStream.Publish.BadName") -> None:
        """Refuse a publish: ``BadName`` (stream already live) or ``Unauthorized``."""
        self._status("error", code, description)

    def reject_play(self, description: str, not_found: bool = False) -> None:
        """Refuse a play: ``NetStream.Play.StreamNotFound`` or ``NetStream.Play.Failed``."""
        code = "NetStream.Play.StreamNotFound" if not_found else "NetStream.Play.Failed"
        self._status("error", code, description)

    def accept_play(self, reset: bool = True) -> None:
        self.role = "play"
        self._send_user_control(m.STREAM_BEGIN, MEDIA_STREAM_ID)
        if reset:
            self._status("status", "NetStream.Play.Reset", f"Playing and resetting "
                         f"{self.stream_name}.")
        self._status("status", "NetStream.Play.Start", f"Started playing {self.stream_name}.")
        self._send(m.CSID_DATA, m.DATA_AMF0, MEDIA_STREAM_ID,
                   amf0.encode("|RtmpSampleAccess", True, True))

    def play_publish_notify(self) -> None:
        """Tell a waiting player that a publisher started."""
        self._send_user_control(m.STREAM_BEGIN, MEDIA_STREAM_ID)
        self._status("status", "NetStream.Play.PublishNotify",
                     f"{self.stream_name} is now published.")

    def play_unpublish_notify(self) -> None:
        """Tell a player that the publisher left (it stays connected and waits)."""
        self._status("status", "NetStream.Play.UnpublishNotify",
                     f"{self.stream_name} is now unpublished.")
        self._send_user_control(m.STREAM_EOF, MEDIA_STREAM_ID)

    def _result(self, txn: float, *values: Any) -> None:
        self._send_command("_result", txn, *values)

    def _status(self, level: str, code: str, description: str) -> None:
        # A stream name may be almost as long as a message; the text must not be.
        info = {"level": level, "code": code, "description": description[:1024]}
        self._send_command("onStatus", 0.0, None, info, stream_id=MEDIA_STREAM_ID)
