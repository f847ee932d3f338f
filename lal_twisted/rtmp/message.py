"""RTMP messages: type ids, the Message value object and protocol-control payloads.

Everything here is pure and does no I/O; the chunk layer (``chunk.py``) turns
:class:`Message` objects into chunk-stream bytes and back.
"""

from __future__ import annotations

import struct
from typing import Final

from lal_twisted.media import amf0
from lal_twisted.media.tags import TagType

__all__ = [
    "ABORT",
    "ACK",
    "AGGREGATE",
    "AUDIO",
    "COMMAND_AMF0",
    "COMMAND_AMF3",
    "CONTROL_TYPES",
    "CSID_AUDIO",
    "CSID_COMMAND",
    "CSID_DATA",
    "CSID_PROTOCOL",
    "CSID_VIDEO",
    "DATA_AMF0",
    "DATA_AMF3",
    "LIMIT_DYNAMIC",
    "LIMIT_HARD",
    "LIMIT_SOFT",
    "MAX_COMMAND_SIZE",
    "MAX_DATA_SIZE",
    "MEDIA_CSID",
    "MESSAGE_SIZE_LIMITS",
    "PING_REQUEST",
    "PING_RESPONSE",
    "SET_BUFFER_LENGTH",
    "SET_CHUNK_SIZE",
    "SET_DATA_FRAME",
    "SET_PEER_BANDWIDTH",
    "SHARED_OBJECT_AMF0",
    "SHARED_OBJECT_AMF3",
    "STREAM_BEGIN",
    "STREAM_DRY",
    "STREAM_EOF",
    "STREAM_IS_RECORDED",
    "USER_CONTROL",
    "VIDEO",
    "WINDOW_ACK_SIZE",
    "Message",
    "RtmpProtocolError",
    "ack_payload",
    "parse_u32",
    "parse_user_control",
    "set_chunk_size_payload",
    "set_peer_bandwidth_payload",
    "user_control_payload",
    "window_ack_size_payload",
]

# Message type ids.
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO: Final[int] = TagType.AUDIO
VIDEO: Final[int] = TagType.VIDEO
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0: Final[int] = TagType.SCRIPT
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# The protocol-control messages, handled by the connection layer, never by commands.
CONTROL_TYPES: Final = frozenset(
    (SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH)
)

# The longest command message (types 20 and 17) a peer may send.  A command is a
# name, a transaction id and a few small objects: connect from ffmpeg, OBS or a
# Flash player is under 1 KiB.  64 KiB leaves room for long URLs and tokens,
# and bounds what one command costs to buffer and to decode.
MAX_COMMAND_SIZE = 64 * 1024
# The longest data message (types 18 and 15): onMetaData and other script data.
# Live metadata is under 1 KiB; a keyframe index copied from a file is ~18 bytes
# per keyframe, so 1 MiB still holds ~58000 keyframes (16 hours at one a
# second) while keeping a hostile one from costing more than a moment of CPU.
MAX_DATA_SIZE = 1024 * 1024
# Per-type limits the chunk reader applies below its overall maximum.
MESSAGE_SIZE_LIMITS: Final = {
    COMMAND_AMF0: MAX_COMMAND_SIZE,
    COMMAND_AMF3: MAX_COMMAND_SIZE,
    DATA_AMF0: MAX_DATA_SIZE,
    DATA_AMF3: MAX_DATA_SIZE,
}

# User control event types.
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types.
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

# Chunk stream ids this server uses for the messages it sends.
CSID_PROTOCOL = 2
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_DATA = 5
CSID_VIDEO = 6

# The chunk stream each kind of media message is sent on.
MEDIA_CSID: Final = {AUDIO: CSID_AUDIO, VIDEO: CSID_VIDEO, DATA_AMF0: CSID_DATA}

# Publishers wrap onMetaData in "@setDataFrame"; players get it without.
SET_DATA_FRAME: Final = amf0.encode("@setDataFrame")

_U32 = struct.Struct(">I")
_U32_U8 = struct.Struct(">IB")
_U16_U32 = struct.Struct(">HI")
_U16_U32_U32 = struct.Struct(">HII")

_MAX_CHUNK_SIZE = 0x7FFFFFFF
_U32_MASK = 0xFFFFFFFF


class RtmpProtocolError(Exception):
    """The peer sent something that violates the RTMP protocol; drop the connection."""


class Message:
    """One complete RTMP message, as read from or written to a chunk stream.

    ``csid`` is the chunk stream it travelled on, ``stream_id`` the message
    stream id, ``timestamp`` a 32-bit millisecond value and ``payload`` the body.
    """

    __slots__ = ("csid", "type_id", "stream_id", "timestamp", "payload")

    def __init__(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> None:
        self.csid = csid
        self.type_id = type_id
        self.stream_id = stream_id
        self.timestamp = timestamp
        self.payload = payload

    def __repr__(self) -> str:
        head = self.payload[:16].hex()
        more = "..." if len(self.payload) > 16 else ""
        return (
            f"Message(csid={self.csid}, type_id={self.type_id}, stream_id={self.stream_id}, "
            f"timestamp={self.timestamp}, payload[{len(self.payload)}]={head}{more})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.csid == other.csid
            and self.type_id == other.type_id
            and self.stream_id == other.stream_id
            and self.timestamp == other.timestamp
            and self.payload == other.payload
        )

    __hash__ = None  # type: ignore[assignment]  # mutable value object


def set_chunk_size_payload(n: int) -> bytes:
    """Payload of a Set Chunk Size message; ``n`` must be 1..0x7FFFFFFF."""
    if not 1 <= n <= _MAX_CHUNK_SIZE:
        raise ValueError(f"invalid chunk size {n}")
    return _U32.pack(n)


def window_ack_size_payload(n: int) -> bytes:
    """Payload of a Window Acknowledgement Size message."""
    return _U32.pack(n)


def ack_payload(sequence_number: int) -> bytes:
    """Payload of an Acknowledgement; the byte count wraps at 2**32."""
    return _U32.pack(sequence_number & _U32_MASK)


def set_peer_bandwidth_payload(n: int, limit_type: int = LIMIT_DYNAMIC) -> bytes:
    """Payload of a Set Peer Bandwidth message (limit type hard, soft or dynamic)."""
    return _U32_U8.pack(n, limit_type)


def user_control_payload(event: int, value: int, extra: int | None = None) -> bytes:
    """Payload of a User Control message: u16 event, u32 value and, for
    SetBufferLength, the u32 buffer length in ``extra``."""
    if extra is None:
        if event == SET_BUFFER_LENGTH:
            raise ValueError("SetBufferLength needs the buffer length in 'extra'")
        return _U16_U32.pack(event, value)
    return _U16_U32_U32.pack(event, value, extra)


def parse_u32(payload: bytes) -> int:
    """Read the big-endian u32 that starts a protocol-control payload."""
    if len(payload) < 4:
        raise RtmpProtocolError(f"protocol control payload too short ({len(payload)} bytes)")
    value: int = _U32.unpack_from(payload)[0]
    return value


def parse_user_control(payload: bytes) -> tuple[int, int, int | None]:
    """Split a User Control payload into (event, value, extra).

    ``extra`` is the buffer length for SetBufferLength and None otherwise.
    """
    if len(payload) < 6:
        raise RtmpProtocolError(f"user control payload too short ({len(payload)} bytes)")
    if payload[0] == 0 and payload[1] == SET_BUFFER_LENGTH:
        if len(payload) < 10:
            raise RtmpProtocolError(
                f"SetBufferLength payload too short ({len(payload)} bytes)"
            )
        event, value, extra = _U16_U32_U32.unpack_from(payload)
        return event, value, extra
    event, value = _U16_U32.unpack_from(payload)
    return event, value, None
