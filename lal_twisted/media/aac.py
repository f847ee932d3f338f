"""AAC helpers: AudioSpecificConfig parsing.

FLV and RTMP carry AAC as raw access units preceded by a sequence header
holding the AudioSpecificConfig (ASC).  The ADTS headers MPEG-TS (HLS) and
elementary streams need, made from the ASC, are
:mod:`lal_twisted.media.convert`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AacError", "AscInfo", "parse_audio_specific_config"]

SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
"""Sampling rates by sampling-frequency index (0..12)."""

EXPLICIT_RATE_INDEX = 15

AOT_MAIN = 1
AOT_LC = 2
AOT_SBR = 5
AOT_PS = 29
_AOT_ER_BSAC = 22

_PROFILE_NAMES = {
    AOT_MAIN: "Main",
    AOT_LC: "LC",
    AOT_SBR: "HE-AAC (SBR)",
    AOT_PS: "HE-AACv2",
}

class AacError(ValueError):
    """Raised for malformed AudioSpecificConfig data or unrepresentable ADTS frames."""


@dataclass(frozen=True)
class AscInfo:
    """What an AudioSpecificConfig says about the stream.

    For explicitly signalled HE-AAC (object type 5 or 29) ``object_type`` stays
    5/29, ``sample_rate`` is the output (SBR extension) rate, while
    ``freq_index`` is the core sampling-frequency index as written in the
    config, ``core_object_type`` the underlying codec (normally 2, LC) and
    ``core_sample_rate`` the core rate.  For other object types the core fields
    equal the main ones.  ``channels`` is the channel configuration as
    signalled (0 means defined in a program config element; HE-AACv2 signals 1
    even though it decodes to stereo).
    """

    object_type: int
    sample_rate: int
    channels: int
    freq_index: int
    core_object_type: int = 0
    core_sample_rate: int = 0

    @property
    def profile_name(self) -> str:
        """Human-readable profile name, e.g. ``"LC"``."""
        return _PROFILE_NAMES.get(self.object_type, f"AOT {self.object_type}")


class _Bits:
    """MSB-first bit reader over a short byte string."""

    __slots__ = ("_value", "_left")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def read(self, count: int) -> int:
        if count > self._left:
            raise AacError("AudioSpecificConfig too short")
        self._left -= count
        return (self._value >> self._left) & ((1 << count) - 1)


def _object_type(bits: _Bits) -> int:
    aot = bits.read(5)
    if aot == 31:
        aot = 32 + bits.read(6)
    return aot


def _sample_rate(bits: _Bits) -> tuple[int, int]:
    index = bits.read(4)
    if index == EXPLICIT_RATE_INDEX:
        return index, bits.read(24)
    if index >= len(SAMPLE_RATES):
        raise AacError(f"reserved sampling frequency index {index}")
    return index, SAMPLE_RATES[index]


def parse_audio_specific_config(data: bytes | bytearray | memoryview) -> AscInfo:
    """Parse the leading fields of an AudioSpecificConfig.

    Handles escaped object types, explicit sampling rates and explicit
    SBR/PS signalling (object type 5/29).  Backward-compatible (sync
    extension) SBR signalling after the GASpecificConfig is not examined, so
    such streams report as LC at the core rate.
    """
    raw = bytes(data)
    if len(raw) < 2:
        raise AacError(f"AudioSpecificConfig too short ({len(raw)} bytes)")
    bits = _Bits(raw)
    object_type = _object_type(bits)
    if object_type == 0:
        raise AacError("invalid audio object type 0")
    freq_index, core_rate = _sample_rate(bits)
    channels = bits.read(4)
    core_type = object_type
    sample_rate = core_rate
    if object_type in (AOT_SBR, AOT_PS):
        _ext_index, sample_rate = _sample_rate(bits)
        core_type = _object_type(bits)
    return AscInfo(object_type, sample_rate, channels, freq_index, core_type, core_rate)
