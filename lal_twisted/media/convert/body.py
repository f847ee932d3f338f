"""The FLV body side: where a packet's coded frame lies in its tag body
(legacy tags, enhanced RTMP with or without ModEx and multitrack wrappers),
and tag bodies made around coded data.

A coded frame is located, never copied: :func:`coded_frame` gives offsets
into ``packet.payload``, so the TS muxer can read the NAL units in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from lal_twisted.media import enhanced
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.media.tags import (
    AudioPacketType,
    AvcPacketType,
    Codec,
    FrameType,
    SoundFormat,
    VideoCodecId,
    VideoPacketType,
    audio_codec_of,
    video_codec_of,
)

__all__ = ["MAIN_TRACK", "FlvBody", "audio_body", "audio_sequence_start", "coded_frame",
           "video_body", "video_sequence_start"]

MAIN_TRACK = 0  # the track an elementary-stream output carries from a multitrack stream

_LEGACY_VIDEO_IDS = {Codec.H264: int(VideoCodecId.AVC), Codec.H265: int(VideoCodecId.HEVC)}
_VIDEO_FOURCCS = {Codec.H264: b"avc1", Codec.H265: b"hvc1", Codec.AV1: b"av01",
                  Codec.VP9: b"vp09", Codec.VP8: b"vp08"}
_AUDIO_FOURCCS = {Codec.AAC: b"mp4a", Codec.OPUS: b"Opus", Codec.FLAC: b"fLaC",
                  Codec.AC3: b"ac-3", Codec.EAC3: b"ec-3", Codec.MP3: b".mp3"}
_WITH_CTS = (Codec.H264, Codec.H265)  # enhanced CodedFrames of these carry a composition time
_CODED_FRAMES = int(VideoPacketType.CODED_FRAMES)
_CODED_FRAMES_X = int(VideoPacketType.CODED_FRAMES_X)
_VIDEO_WRAPPED = (int(VideoPacketType.MULTITRACK), int(VideoPacketType.MOD_EX))
_AUDIO_WRAPPED = (int(AudioPacketType.MULTITRACK), int(AudioPacketType.MOD_EX))
_AUDIO_CODED_FRAMES = int(AudioPacketType.CODED_FRAMES)
_AVC_NALU = int(AvcPacketType.NALU)
_SOUND_AAC = int(SoundFormat.AAC)
_SOUND_EX = int(SoundFormat.EX_HEADER)
_LEGACY_NALU_START = 5  # [FrameType|CodecId][AVCPacketType][CompositionTime:SI24]
_LEGACY_AAC_START = 2  # [SoundFormat...][AACPacketType]
_ENHANCED_START = 5  # [first byte][FourCC]
# Legacy AAC's first byte: SoundFormat 10, and the rate, size and channel bits
# the FLV spec fixes for AAC (44 kHz, 16 bit, stereo) whatever the stream is.
_LEGACY_AAC = 0xAF


def coded_frame(packet: AVPacket, codec: Codec) -> tuple[int, int, int] | None:
    """Where the coded frame of ``codec`` in the main track lies in
    ``packet.payload``, and its composition time: ``(start, end, cts)``.

    None for anything else: headers, sequence ends, command frames, other
    codecs or tracks, an empty or malformed body.
    """
    payload = packet.payload
    if not payload or packet.is_sequence_header:
        return None
    first = payload[0]
    end = len(payload)
    if packet.kind == VIDEO:
        if first & 0x80:
            packet_type = first & 0x0F
            if packet_type in _VIDEO_WRAPPED:
                return _main_track(payload, True, codec)
            if packet.codec != codec:
                return None
            if packet_type == _CODED_FRAMES_X:
                start = _ENHANCED_START
            elif packet_type == _CODED_FRAMES:
                start = _ENHANCED_START + 3 if codec in _WITH_CTS else _ENHANCED_START
            else:
                return None
        elif (first & 0x0F != _LEGACY_VIDEO_IDS.get(codec) or end <= _LEGACY_NALU_START
              or payload[1] != _AVC_NALU):
            return None
        else:
            start = _LEGACY_NALU_START
        return (start, end, packet.cts) if start < end else None
    if packet.kind != AUDIO:
        return None
    sound_format = first >> 4
    if sound_format == _SOUND_AAC:
        if codec != Codec.AAC or end <= _LEGACY_AAC_START or payload[1] != 1:
            return None
        return _LEGACY_AAC_START, end, 0
    if sound_format != _SOUND_EX:
        return None
    packet_type = first & 0x0F
    if packet_type in _AUDIO_WRAPPED:
        return _main_track(payload, False, codec)
    if packet_type != _AUDIO_CODED_FRAMES or packet.codec != codec or end <= _ENHANCED_START:
        return None
    return _ENHANCED_START, end, 0


def _main_track(payload: bytes, video: bool, codec: Codec) -> tuple[int, int, int] | None:
    """:func:`coded_frame` for a tag with ModEx or multitrack wrappers."""
    try:
        header = enhanced.parse(payload, video)
    except enhanced.EnhancedError:
        return None
    packet_type = header.packet_type
    if video:
        if packet_type == _CODED_FRAMES:
            before = 3 if codec in _WITH_CTS else 0
        elif packet_type == _CODED_FRAMES_X:
            before = 0
        else:
            return None
    elif packet_type == _AUDIO_CODED_FRAMES:
        before = 0
    else:
        return None
    codec_of, prefix = (video_codec_of, b"\x80") if video else (audio_codec_of, b"\x90")
    for track in header.tracks:
        if track.track_id == MAIN_TRACK:
            if codec_of(prefix + track.fourcc) != codec:
                return None
            start = track.start + before
            if start >= track.end:
                return None
            cts = 0
            if before:
                cts = int.from_bytes(payload[track.start:start], "big")
                if cts & 0x800000:
                    cts -= 0x1000000
            return start, track.end, cts
    return None


# -- tag bodies made around coded data ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FlvBody:
    """One tag body made from an elementary stream: a sequence header
    (``header``) or a coded frame; ``duration`` is how long an audio frame
    plays in ms (0 for video, whose frame rate the stream does not say)."""

    kind: int  # VIDEO or AUDIO
    body: bytes
    header: bool = False
    keyframe: bool = False
    duration: float = 0.0


def _legacy_video(codec: Codec, enhanced_rtmp: bool) -> int | None:
    """The legacy codec id to write ``codec`` with, None for an enhanced header."""
    if enhanced_rtmp:
        return None
    return _LEGACY_VIDEO_IDS.get(codec)


def video_sequence_start(codec: Codec, record: bytes, enhanced_rtmp: bool = False) -> bytes:
    """A video sequence header body around a decoder configuration record
    (avcC, hvcC, av1C...): legacy for H.264 and H.265 unless
    ``enhanced_rtmp``, enhanced RTMP for the others."""
    legacy = _legacy_video(codec, enhanced_rtmp)
    key = int(FrameType.KEY) << 4
    if legacy is not None:
        return bytes((key | legacy, int(AvcPacketType.SEQUENCE_HEADER), 0, 0, 0)) + record
    return bytes((0x80 | key | int(VideoPacketType.SEQUENCE_START),)) + _VIDEO_FOURCCS[
        codec] + record


def video_body(codec: Codec, keyframe: bool, data: bytes, cts: int = 0,
               enhanced_rtmp: bool = False) -> bytes:
    """A coded video frame's body: ``data`` (AVCC NAL units, AV1 OBUs...) with
    its composition time ``cts`` (H.264 and H.265 only)."""
    frame_type = int(FrameType.KEY if keyframe else FrameType.INTER) << 4
    cts_bytes = (cts & 0xFFFFFF).to_bytes(3, "big")
    legacy = _legacy_video(codec, enhanced_rtmp)
    if legacy is not None:
        return bytes((frame_type | legacy, _AVC_NALU)) + cts_bytes + data
    fourcc = _VIDEO_FOURCCS[codec]
    if codec in _WITH_CTS and cts:
        return bytes((0x80 | frame_type | _CODED_FRAMES,)) + fourcc + cts_bytes + data
    packet_type = _CODED_FRAMES_X if codec in _WITH_CTS else _CODED_FRAMES
    return bytes((0x80 | frame_type | packet_type,)) + fourcc + data


def audio_sequence_start(codec: Codec, config: bytes, enhanced_rtmp: bool = False) -> bytes:
    """An audio sequence header body: legacy for AAC (its AudioSpecificConfig)
    unless ``enhanced_rtmp``, enhanced RTMP for the others."""
    if codec == Codec.AAC and not enhanced_rtmp:
        return bytes((_LEGACY_AAC, 0)) + config
    return bytes((_SOUND_EX << 4 | int(AudioPacketType.SEQUENCE_START),)) + _AUDIO_FOURCCS[
        codec] + config


def audio_body(codec: Codec, data: bytes, enhanced_rtmp: bool = False) -> bytes:
    """A coded audio frame's body (a raw AAC frame, an Opus packet...)."""
    if codec == Codec.AAC and not enhanced_rtmp:
        return bytes((_LEGACY_AAC, 1)) + data
    return bytes((_SOUND_EX << 4 | _AUDIO_CODED_FRAMES,)) + _AUDIO_FOURCCS[codec] + data
