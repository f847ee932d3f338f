"""Codec-neutral descriptions of a stream's tracks.

A muxer or session description (MPEG-TS, SDP, fMP4) needs the codec, the
parameter sets or AudioSpecificConfig, the picture size and the sample rate;
it should not parse FLV tag headers for them.  :func:`video_track` and
:func:`audio_track` read them once from a sequence-header packet, and
:func:`announced_tracks` reads what an ``onMetaData`` announces before any
header arrives.  Parse failures give what could be read plus ``error``; they
never raise, since payloads pass through the server untouched either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lal_twisted.media import aac, amf0, audio_config, av1, avc, enhanced, hevc, vp9
from lal_twisted.media.tags import (
    AUDIO_CODEC_BY_NUMBER,
    VIDEO_CODEC_BY_NUMBER,
    Codec,
    SoundFormat,
    audio_codec_of,
    lal_codec_name,
    video_codec_of,
)

__all__ = ["AudioTrack", "Tracks", "VideoTrack", "announced_tracks", "audio_track",
           "audio_frame_config", "describe", "video_track", "vp9_frame_size"]

_LEGACY_VIDEO_BODY = 5  # first byte + AVCPacketType + CompositionTime
_LEGACY_AAC_BODY = 2  # first byte + AACPacketType


@dataclass
class VideoTrack:
    """A video track: ``config`` is the decoder configuration record as sent
    (AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord, av1C,
    vpcC); ``vps``/``sps``/``pps`` are its parameter sets (H.264 / H.265)."""

    codec: Codec
    width: int = 0
    height: int = 0
    profile: str = ""
    level: float = 0.0
    config: bytes = b""
    nal_length_size: int = 4
    vps: list[bytes] = field(default_factory=list)
    sps: list[bytes] = field(default_factory=list)
    pps: list[bytes] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"codec": str(self.codec), "codec_name": lal_codec_name(self.codec)}
        if self.profile:
            out.update(profile=self.profile, level=self.level)
        if self.width:
            out.update(width=self.width, height=self.height)
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class AudioTrack:
    """An audio track: ``config`` is the AudioSpecificConfig for AAC (the
    codec's configuration record for enhanced-RTMP codecs such as Opus)."""

    codec: Codec
    sample_rate: int = 0
    channels: int = 0
    profile: str = ""
    config: bytes = b""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"codec": str(self.codec), "codec_name": lal_codec_name(self.codec)}
        if self.profile:
            out["profile"] = self.profile
        if self.sample_rate:
            out.update(sample_rate=self.sample_rate, channels=self.channels)
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Tracks:
    """What a stream carries.  A track is known from its sequence header, or
    announced by ``onMetaData`` (codec only) until the header arrives."""

    video: VideoTrack | None = None
    audio: AudioTrack | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"video": self.video.as_dict() if self.video else {},
                "audio": self.audio.as_dict() if self.audio else {}}


def _enhanced_record(payload: bytes, video: bool) -> tuple[Codec, bytes]:
    """The codec and configuration record of an enhanced sequence start's
    first track (multitrack and ModEx headers included)."""
    header = enhanced.parse(payload, video)
    if not header.tracks:
        raise enhanced.EnhancedError("no track in the sequence start")
    first = header.tracks[0]
    prefix = b"\x80" if video else b"\x90"
    codec = (video_codec_of if video else audio_codec_of)(prefix + first.fourcc)
    return codec, payload[first.start:first.end]


def video_track(payload: bytes) -> VideoTrack:
    """The track a video sequence-header tag body describes."""
    if payload[:1] and payload[0] & 0x80:
        try:
            codec, record = _enhanced_record(payload, video=True)
        except enhanced.EnhancedError as e:
            return VideoTrack(Codec.UNKNOWN, error=str(e))
    else:
        codec, record = video_codec_of(payload), payload[_LEGACY_VIDEO_BODY:]
    track = VideoTrack(codec)
    track.config = record
    try:
        if codec == Codec.H264:
            config = avc.parse_decoder_config(record)
            track.sps, track.pps = config.sps, config.pps
            track.nal_length_size = config.nal_length_size
            if config.sps:
                sps = avc.parse_sps(config.sps[0])
                track.profile, track.level = sps.profile_name, sps.level_idc / 10
                track.width, track.height = sps.width, sps.height
        elif codec == Codec.H265:
            hconfig = hevc.parse_decoder_config(record)
            track.vps, track.sps, track.pps = hconfig.vps, hconfig.sps, hconfig.pps
            track.nal_length_size = hconfig.nal_length_size
            if hconfig.sps:
                hsps = hevc.parse_sps(hconfig.sps[0])
                track.profile, track.level = hsps.profile_name, hsps.level
                track.width, track.height = hsps.width, hsps.height
        elif codec == Codec.AV1:
            aconfig = av1.parse_config(record)
            track.profile, track.level = aconfig.profile_name, aconfig.level
            track.width, track.height = aconfig.width, aconfig.height
        elif codec == Codec.VP9:
            vconfig = vp9.parse_config(record)
            track.profile, track.level = vconfig.profile_name, vconfig.level / 10
    except (avc.AvcError, hevc.HevcError, av1.Av1Error, vp9.Vp9Error) as e:
        track.error = str(e)
    return track


def audio_track(payload: bytes) -> AudioTrack:
    """The track an audio sequence-header tag body describes."""
    enhanced_header = bool(payload) and payload[0] >> 4 == SoundFormat.EX_HEADER
    if enhanced_header:
        try:
            codec, record = _enhanced_record(payload, video=False)
        except enhanced.EnhancedError as e:
            return AudioTrack(Codec.UNKNOWN, error=str(e))
    else:
        codec, record = audio_codec_of(payload), payload[_LEGACY_AAC_BODY:]
    track = AudioTrack(codec)
    track.config = record
    try:
        if codec == Codec.AAC:
            asc = aac.parse_audio_specific_config(record)
            track.profile = asc.profile_name
            track.sample_rate, track.channels = asc.sample_rate, asc.channels
        elif enhanced_header and codec in (Codec.OPUS, Codec.FLAC) and record:
            parse = (audio_config.parse_opus_head if codec == Codec.OPUS
                     else audio_config.parse_flac_streaminfo)
            info = parse(record)
            track.sample_rate, track.channels = info.sample_rate, info.channels
        elif not enhanced_header and payload:
            # Legacy non-AAC formats state rate and channels in the first byte.
            track.sample_rate = (5512, 11025, 22050, 44100)[(payload[0] >> 2) & 0x03]
            track.channels = 2 if payload[0] & 0x01 else 1
    except (aac.AacError, audio_config.AudioConfigError) as e:
        track.error = str(e)
    return track


def vp9_frame_size(payload: bytes) -> tuple[int, int] | None:
    """The picture size of an enhanced-RTMP VP9 keyframe tag body, or None."""
    try:
        header = enhanced.parse(payload, video=True)
    except enhanced.EnhancedError:
        return None
    if not header.tracks:
        return None
    first = header.tracks[0]
    return vp9.keyframe_size(payload[first.start:first.end])


def audio_frame_config(payload: bytes) -> audio_config.AudioConfig | None:
    """Rate and channels from an enhanced-RTMP AC-3 / E-AC-3 frame tag body, or None."""
    try:
        header = enhanced.parse(payload, video=False)
        if not header.tracks:
            return None
        first = header.tracks[0]
        return audio_config.parse_ac3_frame(payload[first.start:first.end])
    except (enhanced.EnhancedError, audio_config.AudioConfigError):
        return None


def announced_tracks(metadata: bytes) -> Tracks:
    """The tracks an AMF0 ``onMetaData`` body announces (codec ids, size, rate).

    Returns empty Tracks when it names no codec or cannot be decoded."""
    try:
        values = amf0.decode(metadata)
    except amf0.AMF0Error:
        return Tracks()
    meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
    tracks = Tracks()
    if "videocodecid" in meta:
        codec = VIDEO_CODEC_BY_NUMBER.get(_whole(meta["videocodecid"]), Codec.UNKNOWN)
        tracks.video = VideoTrack(codec, width=_whole(meta.get("width"), 0),
                                  height=_whole(meta.get("height"), 0))
    if "audiocodecid" in meta:
        codec = AUDIO_CODEC_BY_NUMBER.get(_whole(meta["audiocodecid"]), Codec.UNKNOWN)
        tracks.audio = AudioTrack(codec, sample_rate=_whole(meta.get("audiosamplerate"), 0))
        stereo = meta.get("stereo")
        if isinstance(stereo, bool):
            tracks.audio.channels = 2 if stereo else 1
    return tracks


def _whole(value: Any, default: int = -1) -> int:
    """An AMF0 number as a non-negative int below 2**32 (else ``default``)."""
    if isinstance(value, float) and 0 <= value < 2**32:
        return int(value)
    return default


def describe(track: VideoTrack | AudioTrack) -> str:
    """One short phrase for a log line: "H264 High 320x240", "AAC LC 44100Hz 2ch"."""
    parts = [lal_codec_name(track.codec)]
    if track.profile:
        parts.append(track.profile)
    if isinstance(track, VideoTrack):
        if track.width:
            parts.append(f"{track.width}x{track.height}")
    elif track.sample_rate:
        parts.append(f"{track.sample_rate}Hz {track.channels}ch")
    return " ".join(parts)
