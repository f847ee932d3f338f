"""AV1: the AV1CodecConfigurationRecord (``av1C``) an enhanced-RTMP ``av01``
sequence start carries, and the sequence header OBU inside it.

The record's 4 fixed bytes give profile, level and tier; the picture size is
only in the sequence header OBU (``max_frame_width_minus_1``), which encoders
put in the record's configOBUs.  Field layout: AV1 bitstream spec section 5.5.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Av1Config", "Av1Error", "parse_config"]

OBU_SEQUENCE_HEADER = 1
_PROFILE_NAMES = {0: "Main", 1: "High", 2: "Professional"}


class Av1Error(ValueError):
    """Raised for a malformed or truncated av1C record or sequence header."""


@dataclass(frozen=True)
class Av1Config:
    profile: int
    level_idx: int
    tier: int
    width: int = 0
    height: int = 0

    @property
    def profile_name(self) -> str:
        return _PROFILE_NAMES.get(self.profile, f"profile {self.profile}")

    @property
    def level(self) -> float:
        """seq_level_idx as the level number X.Y (2.0 for 0, 3.1 for 5...)."""
        return 2 + (self.level_idx >> 2) + (self.level_idx & 3) / 10


class _Bits:
    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = int.from_bytes(data, "big")
        self._end = len(data) * 8
        self._pos = 0

    def f(self, count: int) -> int:
        pos = self._pos + count
        if pos > self._end:
            raise Av1Error("truncated AV1 sequence header")
        self._pos = pos
        return (self._data >> (self._end - pos)) & ((1 << count) - 1)

    def uvlc(self) -> int:
        zeros = 0
        while not self.f(1):
            zeros += 1
            if zeros >= 32:
                raise Av1Error("invalid uvlc in AV1 sequence header")
        return self.f(zeros) + (1 << zeros) - 1


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise Av1Error("truncated OBU size")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise Av1Error("OBU size longer than 8 bytes")


def parse_config(record: bytes) -> Av1Config:
    """Profile, level and tier from an av1C record, and the maximum picture
    size from its sequence header OBU when it has one."""
    if len(record) < 4:
        raise Av1Error(f"av1C record too short ({len(record)} bytes)")
    if record[0] != 0x81:
        raise Av1Error(f"av1C marker/version is {record[0]:#x}, not 0x81")
    profile, level_idx, tier = record[1] >> 5, record[1] & 0x1F, record[2] >> 7
    pos = 4
    while pos < len(record):
        header = record[pos]
        obu_type, extension, has_size = (header >> 3) & 0x0F, header & 0x04, header & 0x02
        pos += 2 if extension else 1
        if has_size:
            size, pos = _leb128(record, pos)
        else:
            size = len(record) - pos
        if pos + size > len(record):
            raise Av1Error("truncated OBU in av1C")
        if obu_type == OBU_SEQUENCE_HEADER:
            width, height = _sequence_header_size(record[pos:pos + size])
            return Av1Config(profile, level_idx, tier, width, height)
        pos += size
    return Av1Config(profile, level_idx, tier)


def _sequence_header_size(obu: bytes) -> tuple[int, int]:
    r = _Bits(obu)
    r.f(3)  # seq_profile
    r.f(1)  # still_picture
    if r.f(1):  # reduced_still_picture_header
        r.f(5)  # seq_level_idx[0]
    else:
        decoder_model = False
        buffer_delay_length = 0
        if r.f(1):  # timing_info_present_flag
            r.f(32)
            r.f(32)
            if r.f(1):  # equal_picture_interval
                r.uvlc()
            decoder_model = bool(r.f(1))
            if decoder_model:
                buffer_delay_length = r.f(5) + 1
                r.f(32)
                r.f(5)
                r.f(5)
        initial_display_delay = r.f(1)
        for _ in range(r.f(5) + 1):  # operating points
            r.f(12)  # operating_point_idc
            if r.f(5) > 7:  # seq_level_idx
                r.f(1)  # seq_tier
            if decoder_model and r.f(1):
                r.f(buffer_delay_length)
                r.f(buffer_delay_length)
                r.f(1)
            if initial_display_delay and r.f(1):
                r.f(4)
    width_bits, height_bits = r.f(4) + 1, r.f(4) + 1
    return r.f(width_bits) + 1, r.f(height_bits) + 1
