"""AVPacket: the one in-memory media unit every protocol speaks.

A packet is an FLV tag body (equally, an RTMP audio/video/data message payload)
with its timestamp.  Output formats encode a packet at most once and cache the
bytes on the packet itself, so every subscriber of a format writes the same
``bytes`` object.
"""

from __future__ import annotations

AUDIO = 8
VIDEO = 9
DATA = 18

# FLV video codec ids (legacy header) that carry an AVCPacketType byte.
_VIDEO_CODEC_AVC = 7
_VIDEO_CODEC_HEVC = 12
# FLV sound format ids.
_SOUND_AAC = 10
_SOUND_EX_HEADER = 9


class AVPacket:
    """One audio, video or script-data message.

    ``kind`` is the FLV tag type / RTMP message type id (8, 9 or 18),
    ``timestamp`` is in milliseconds (32-bit), ``payload`` the tag body.
    ``rtmp_cache`` and ``flv_cache`` hold the encoded forms once computed.
    """

    __slots__ = (
        "kind",
        "timestamp",
        "payload",
        "is_keyframe",
        "is_sequence_header",
        "rtmp_cache",
        "flv_cache",
    )

    def __init__(self, kind: int, timestamp: int, payload: bytes) -> None:
        self.kind = kind
        self.timestamp = timestamp
        self.payload = payload
        self.rtmp_cache: bytes | None = None
        self.flv_cache: bytes | None = None
        self.is_keyframe = False
        self.is_sequence_header = False
        if not payload:
            return
        first = payload[0]
        if kind == VIDEO:
            if first & 0x80:
                # Enhanced RTMP: [IsExHeader:1][FrameType:3][PacketType:4]
                self.is_keyframe = (first >> 4) & 0x07 == 1
                self.is_sequence_header = first & 0x0F == 0
            else:
                self.is_keyframe = first >> 4 == 1
                codec = first & 0x0F
                self.is_sequence_header = (
                    codec in (_VIDEO_CODEC_AVC, _VIDEO_CODEC_HEVC)
                    and len(payload) > 1
                    and payload[1] == 0
                )
        elif kind == AUDIO:
            fmt = first >> 4
            if fmt == _SOUND_AAC:
                self.is_sequence_header = len(payload) > 1 and payload[1] == 0
            elif fmt == _SOUND_EX_HEADER:
                # Enhanced RTMP audio: packet type in the low nibble, 0 = start.
                self.is_sequence_header = first & 0x0F == 0

    def __repr__(self) -> str:
        return (
            f"AVPacket(kind={self.kind}, ts={self.timestamp}, "
            f"len={len(self.payload)}, key={self.is_keyframe}, "
            f"seq={self.is_sequence_header})"
        )
