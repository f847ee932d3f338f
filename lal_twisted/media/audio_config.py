"""Configuration records of the enhanced-RTMP audio codecs: Opus's ``OpusHead``
(RFC 7845 section 5.1) and FLAC's STREAMINFO (RFC 9639 section 8.2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["AudioConfig", "AudioConfigError", "parse_flac_streaminfo", "parse_opus_head"]

OPUS_RATE = 48000  # Opus always decodes at 48 kHz; OpusHead's rate is the input's
_OPUS_HEAD = struct.Struct("<8sBBHIhB")


class AudioConfigError(ValueError):
    """Raised for a malformed audio configuration record."""


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int
    channels: int
    bits: int = 0
    input_rate: int = 0


def parse_opus_head(record: bytes) -> AudioConfig:
    if len(record) < _OPUS_HEAD.size or not record.startswith(b"OpusHead"):
        raise AudioConfigError("Opus sequence start without an OpusHead header")
    _, version, channels, _pre_skip, input_rate, _gain, _family = _OPUS_HEAD.unpack_from(record)
    if version >> 4 != 0 or channels == 0:
        raise AudioConfigError(f"OpusHead version {version} with {channels} channels")
    return AudioConfig(OPUS_RATE, channels, input_rate=input_rate)


def parse_flac_streaminfo(record: bytes) -> AudioConfig:
    """STREAMINFO, bare (34 bytes) or after the "fLaC" marker and a block header."""
    if record.startswith(b"fLaC"):
        record = record[8:]
    if len(record) < 18:
        raise AudioConfigError(f"FLAC STREAMINFO too short ({len(record)} bytes)")
    packed = int.from_bytes(record[10:18], "big")
    rate = packed >> 44
    channels = ((packed >> 41) & 0x07) + 1
    bits = ((packed >> 36) & 0x1F) + 1
    if rate == 0:
        raise AudioConfigError("FLAC STREAMINFO with a sample rate of 0")
    return AudioConfig(rate, channels, bits)
