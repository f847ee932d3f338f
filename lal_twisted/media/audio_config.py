"""Configuration of the enhanced-RTMP audio codecs: Opus's ``OpusHead`` (RFC 7845
section 5.1), FLAC's STREAMINFO (RFC 9639 section 8.2), the E-RTMP multichannel
config, and for AC-3 / E-AC-3 (whose sequence start is empty) the header of a
sync frame (ATSC A/52 5.3 and E.1.2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["AudioConfig", "AudioConfigError", "multichannel_count", "parse_ac3_frame",
           "parse_flac_streaminfo", "parse_opus_head"]

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


_AC3_RATES = (48000, 44100, 32000)
_EAC3_HALF_RATES = (24000, 22050, 16000)
_ACMOD_CHANNELS = (2, 1, 2, 3, 3, 4, 4, 5)


def parse_ac3_frame(frame: bytes) -> AudioConfig:
    """Sample rate and channels (LFE included) from an AC-3 or E-AC-3 sync frame;
    ``bits`` carries the bsid (up to 10: AC-3, 16: E-AC-3)."""
    if len(frame) < 8 or frame[:2] != b"\x0b\x77":
        raise AudioConfigError("not an AC-3 sync frame")
    bits = int.from_bytes(frame[2:8], "big")  # 48 bits after the sync word
    bsid = frame[5] >> 3
    if bsid <= 10:  # AC-3: crc1(16) fscod(2) frmsizecod(6) bsid(5) bsmod(3) acmod(3) ...
        fscod = (bits >> 30) & 0x3
        acmod = (bits >> 13) & 0x7
        pos = 13  # bits left after acmod
        if acmod & 1 and acmod != 1:
            pos -= 2  # cmixlev
        if acmod & 4:
            pos -= 2  # surmixlev
        if acmod == 2:
            pos -= 2  # dsurmod
        lfe = (bits >> (pos - 1)) & 1
        if fscod == 3:
            raise AudioConfigError("AC-3 frame with a reserved sample rate code")
        rate = _AC3_RATES[fscod]
    elif bsid == 16:  # E-AC-3: strmtyp(2) substreamid(3) frmsiz(11) fscod(2) ...
        fscod = (bits >> 30) & 0x3
        fscod2_or_blocks = (bits >> 28) & 0x3
        acmod, lfe = (bits >> 25) & 0x7, (bits >> 24) & 1
        if fscod == 3:
            if fscod2_or_blocks == 3:
                raise AudioConfigError("E-AC-3 frame with a reserved sample rate code")
            rate = _EAC3_HALF_RATES[fscod2_or_blocks]
        else:
            rate = _AC3_RATES[fscod]
    else:
        raise AudioConfigError(f"AC-3 frame with an unknown bsid {bsid}")
    return AudioConfig(rate, _ACMOD_CHANNELS[acmod] + lfe, bits=bsid)


def multichannel_count(body: bytes) -> int:
    """The channel count of an E-RTMP MultichannelConfig body
    (audioChannelOrder UI8, channelCount UI8, ...); 0 when too short."""
    return body[1] if len(body) >= 2 else 0
