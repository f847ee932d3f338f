"""Describe the codec a sequence header announces, for logs and stats.

Payloads pass through the server untouched; this only reads them.  Any parse
failure yields what could be read plus an ``error`` entry, never an exception.
"""

from __future__ import annotations

from typing import Any

from lal_twisted.media import aac, avc

_VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264",
                 12: "h265"}
_VIDEO_FOURCC = {b"avc1": "h264", b"hvc1": "h265", b"av01": "av1", b"vp09": "vp9",
                 b"vp08": "vp8"}
_AUDIO_CODECS = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 4: "nellymoser16k",
                 5: "nellymoser8k", 6: "nellymoser", 7: "g711a", 8: "g711u", 10: "aac",
                 11: "speex", 13: "opus", 14: "mp3_8k"}
_AUDIO_FOURCC = {b"Opus": "opus", b"mp4a": "aac", b"ac-3": "ac3", b"ec-3": "eac3",
                 b"fLaC": "flac", b".mp3": "mp3"}


def video_info(payload: bytes) -> dict[str, Any]:
    """Codec, and for H.264 the profile and picture size, of a video sequence header."""
    if not payload:
        return {"codec": "unknown"}
    first = payload[0]
    if first & 0x80:  # enhanced RTMP: FourCC after the first byte
        codec = _VIDEO_FOURCC.get(bytes(payload[1:5]), repr(bytes(payload[1:5])))
        record = payload[5:]
    else:
        codec = _VIDEO_CODECS.get(first & 0x0F, f"id {first & 0x0F}")
        record = payload[5:]
    info: dict[str, Any] = {"codec": codec}
    if codec == "h264":
        try:
            config = avc.parse_decoder_config(record)
            if config.sps:
                sps = avc.parse_sps(config.sps[0])
                info.update(profile=sps.profile_name, level=sps.level_idc / 10,
                            width=sps.width, height=sps.height)
        except avc.AvcError as e:
            info["error"] = str(e)
    return info


def audio_info(payload: bytes) -> dict[str, Any]:
    """Codec, and for AAC the profile, sample rate and channels, of an audio header."""
    if not payload:
        return {"codec": "unknown"}
    first = payload[0]
    fmt = first >> 4
    if fmt == 9:  # enhanced RTMP audio: FourCC after the first byte
        codec = _AUDIO_FOURCC.get(bytes(payload[1:5]), repr(bytes(payload[1:5])))
        config = payload[5:]
    else:
        codec = _AUDIO_CODECS.get(fmt, f"id {fmt}")
        config = payload[2:]
    info: dict[str, Any] = {"codec": codec}
    if codec == "aac":
        try:
            asc = aac.parse_audio_specific_config(config)
            info.update(profile=asc.profile_name, sample_rate=asc.sample_rate,
                        channels=asc.channels)
        except aac.AacError as e:
            info["error"] = str(e)
    return info


def describe(info: dict[str, Any]) -> str:
    """One short phrase for a log line: "h264 High 320x240", "aac LC 44100Hz 2ch"."""
    parts = [str(info.get("codec", "?"))]
    if "profile" in info:
        parts.append(str(info["profile"]))
    if "width" in info:
        parts.append(f"{info['width']}x{info['height']}")
    if "sample_rate" in info:
        parts.append(f"{info['sample_rate']}Hz {info['channels']}ch")
    return " ".join(parts)
