"""The numbers FLV tags and RTMP media messages share, named once.

An FLV tag type is the RTMP message type id of the same media (8 audio, 9 video,
18 AMF0 data), and the first bytes of a tag body (the legacy codec ids, or the
enhanced-RTMP header with its FourCC) are the same in both containers.  Every
module that needs one of these numbers imports it from here.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "AUDIO",
    "DATA",
    "VIDEO",
    "AudioPacketType",
    "AvcPacketType",
    "Codec",
    "FrameType",
    "SoundFormat",
    "TagType",
    "VideoCodecId",
    "VideoPacketType",
    "audio_codec_of",
    "lal_codec_name",
    "video_codec_of",
]


class TagType(IntEnum):
    """FLV tag type, equal to the RTMP message type id of the same media."""

    AUDIO = 8
    VIDEO = 9
    SCRIPT = 18  # AMF0 data (onMetaData); RTMP's "data message, AMF0"


# Plain-int aliases for the hot paths and for dicts keyed by wire values.
AUDIO: Final[int] = TagType.AUDIO
VIDEO: Final[int] = TagType.VIDEO
DATA: Final[int] = TagType.SCRIPT


class VideoCodecId(IntEnum):
    """Low nibble of a legacy FLV video tag's first byte."""

    SORENSON_H263 = 2
    SCREEN = 3
    VP6 = 4
    VP6_ALPHA = 5
    SCREEN_V2 = 6
    AVC = 7
    HEVC = 12  # not in the FLV spec; the common Chinese-CDN extension lal reads


class FrameType(IntEnum):
    """FLV video frame type (bits 4-6 of the first byte, legacy and enhanced)."""

    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    COMMAND = 5


class AvcPacketType(IntEnum):
    """Second byte of a legacy H.264 or H.265 video tag (AVCPacketType)."""

    SEQUENCE_HEADER = 0
    NALU = 1  # followed by a composition time
    END_OF_SEQUENCE = 2


class VideoPacketType(IntEnum):
    """Enhanced-RTMP video packet type (low nibble when the top bit is set)."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1  # carries a composition time for avc1 / hvc1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3  # composition time 0, not sent
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6
    MOD_EX = 7


class SoundFormat(IntEnum):
    """High nibble of an FLV audio tag's first byte."""

    PCM = 0
    ADPCM = 1
    MP3 = 2
    PCM_LE = 3
    NELLYMOSER_16K = 4
    NELLYMOSER_8K = 5
    NELLYMOSER = 6
    G711A = 7
    G711U = 8
    EX_HEADER = 9  # enhanced RTMP: packet type in the low nibble, FourCC follows
    AAC = 10
    SPEEX = 11
    OPUS = 13  # not in the FLV spec; an extension some servers use
    MP3_8K = 14


class AudioPacketType(IntEnum):
    """Enhanced-RTMP audio packet type (low nibble when SoundFormat is EX_HEADER)."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    MULTICHANNEL_CONFIG = 4
    MULTITRACK = 5
    MOD_EX = 7


class Codec(StrEnum):
    """A codec, whichever header (legacy id or FourCC) named it."""

    H264 = "h264"
    H265 = "h265"
    AV1 = "av1"
    VP9 = "vp9"
    VP8 = "vp8"
    H263 = "h263"
    VP6 = "vp6"
    VP6A = "vp6a"
    SCREEN = "screen"
    SCREEN2 = "screen2"
    AAC = "aac"
    MP3 = "mp3"
    OPUS = "opus"
    AC3 = "ac3"
    EAC3 = "eac3"
    FLAC = "flac"
    PCM = "pcm"
    PCM_LE = "pcm_le"
    ADPCM = "adpcm"
    G711A = "g711a"
    G711U = "g711u"
    SPEEX = "speex"
    NELLYMOSER = "nellymoser"
    UNKNOWN = "unknown"


_VIDEO_LEGACY = {
    VideoCodecId.SORENSON_H263: Codec.H263, VideoCodecId.SCREEN: Codec.SCREEN,
    VideoCodecId.VP6: Codec.VP6, VideoCodecId.VP6_ALPHA: Codec.VP6A,
    VideoCodecId.SCREEN_V2: Codec.SCREEN2, VideoCodecId.AVC: Codec.H264,
    VideoCodecId.HEVC: Codec.H265,
}
_VIDEO_FOURCC = {b"avc1": Codec.H264, b"hvc1": Codec.H265, b"av01": Codec.AV1,
                 b"vp09": Codec.VP9, b"vp08": Codec.VP8}
_AUDIO_LEGACY = {
    SoundFormat.PCM: Codec.PCM, SoundFormat.ADPCM: Codec.ADPCM, SoundFormat.MP3: Codec.MP3,
    SoundFormat.PCM_LE: Codec.PCM_LE, SoundFormat.NELLYMOSER_16K: Codec.NELLYMOSER,
    SoundFormat.NELLYMOSER_8K: Codec.NELLYMOSER, SoundFormat.NELLYMOSER: Codec.NELLYMOSER,
    SoundFormat.G711A: Codec.G711A, SoundFormat.G711U: Codec.G711U, SoundFormat.AAC: Codec.AAC,
    SoundFormat.SPEEX: Codec.SPEEX, SoundFormat.OPUS: Codec.OPUS, SoundFormat.MP3_8K: Codec.MP3,
}
_AUDIO_FOURCC = {b"Opus": Codec.OPUS, b"mp4a": Codec.AAC, b"ac-3": Codec.AC3,
                 b"ec-3": Codec.EAC3, b"fLaC": Codec.FLAC, b".mp3": Codec.MP3}

# The same tables by number, for onMetaData's videocodecid/audiocodecid (which
# enhanced RTMP sets to the FourCC read as a big-endian number).
VIDEO_CODEC_BY_NUMBER: dict[int, Codec] = {
    **{int(k): v for k, v in _VIDEO_LEGACY.items()},
    **{int.from_bytes(k, "big"): v for k, v in _VIDEO_FOURCC.items()},
}
AUDIO_CODEC_BY_NUMBER: dict[int, Codec] = {
    **{int(k): v for k, v in _AUDIO_LEGACY.items()},
    **{int.from_bytes(k, "big"): v for k, v in _AUDIO_FOURCC.items()},
}


def video_codec_of(payload: bytes) -> Codec:
    """The codec a video tag body names (legacy codec id or enhanced FourCC)."""
    if not payload:
        return Codec.UNKNOWN
    first = payload[0]
    if first & 0x80:
        return _VIDEO_FOURCC.get(payload[1:5], Codec.UNKNOWN)
    return _VIDEO_LEGACY.get(first & 0x0F, Codec.UNKNOWN)  # type: ignore[call-overload]


def audio_codec_of(payload: bytes) -> Codec:
    """The codec an audio tag body names (SoundFormat or enhanced FourCC)."""
    if not payload:
        return Codec.UNKNOWN
    fmt = payload[0] >> 4
    if fmt == SoundFormat.EX_HEADER:
        return _AUDIO_FOURCC.get(payload[1:5], Codec.UNKNOWN)
    return _AUDIO_LEGACY.get(fmt, Codec.UNKNOWN)  # type: ignore[call-overload]


# The names lal shows in its stats and logs (base.VideoCodec* / AudioCodec*); others
# upper-cased.
_LAL_NAMES = {Codec.H264: "H264", Codec.H265: "H265", Codec.AV1: "AV1", Codec.VP9: "VP9",
              Codec.AAC: "AAC", Codec.OPUS: "OPUS", Codec.FLAC: "FLAC", Codec.AC3: "AC3",
              Codec.EAC3: "EAC3", Codec.MP3: "MP3", Codec.G711A: "PCMA",
              Codec.G711U: "PCMU"}


def lal_codec_name(codec: Codec) -> str:
    """``Codec.H265`` -> ``"H265"``, the way lal names codecs in its stats."""
    return _LAL_NAMES.get(codec) or str(codec).upper()
