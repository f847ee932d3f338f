"""AV1: the AV1CodecConfigurationRecord (``av1C``) an enhanced-RTMP ``av01``
sequence start carries, and the sequence header OBU inside it.

The record's 4 fixed bytes give profile, level and tier; the picture size is
only in the sequence header OBU (``max_frame_width_minus_1``), which encoders
put in the record's configOBUs.  Field layout: AV1 bitstream spec section 5.5.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Av1Config", "Av1Error", "SequenceHeader", "build_config", "leb128", "parse_config",
           "parse_sequence_header"]

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
            size, pos = leb128(record, pos)
        else:
            size = len(record) - pos
        if pos + size > len(record):
            raise Av1Error("truncated OBU in av1C")
        if obu_type == OBU_SEQUENCE_HEADER:
            seq = parse_sequence_header(record[pos:pos + size])
            return Av1Config(profile, level_idx, tier, seq.width, seq.height)
        pos += size
    return Av1Config(profile, level_idx, tier)


def leb128(data: bytes, pos: int) -> tuple[int, int]:
    """The leb128 number at ``data[pos:]`` (an OBU size) and where it ends."""
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


@dataclass(frozen=True)
class SequenceHeader:
    """What an av1C record repeats of a sequence header OBU, the picture size,
    and what reading a frame header needs (``reduced_still_picture_header``)."""

    profile: int
    level_idx: int  # of operating point 0
    tier: int
    width: int
    height: int
    reduced_still_picture_header: bool
    high_bitdepth: bool
    twelve_bit: bool
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int


def parse_sequence_header(obu: bytes) -> SequenceHeader:
    """Parse a sequence header OBU's payload (AV1 spec 5.5) up to its color config."""
    r = _Bits(obu)
    profile = r.f(3)
    r.f(1)  # still_picture
    reduced = bool(r.f(1))
    tier = 0
    if reduced:
        level_idx = r.f(5)
    else:
        decoder_model = False
        buffer_delay_length = 0
        if r.f(1):  # timing_info_present_flag
            r.f(32)  # num_units_in_display_tick
            r.f(32)  # time_scale
            if r.f(1):  # equal_picture_interval
                r.uvlc()
            decoder_model = bool(r.f(1))
            if decoder_model:
                buffer_delay_length = r.f(5) + 1
                r.f(32)  # num_units_in_decoding_tick
                r.f(5)  # buffer_removal_time_length_minus_1
                r.f(5)  # frame_presentation_time_length_minus_1
        initial_display_delay = r.f(1)
        level_idx = -1
        for _ in range(r.f(5) + 1):  # operating points
            r.f(12)  # operating_point_idc
            level = r.f(5)
            op_tier = r.f(1) if level > 7 else 0
            if level_idx < 0:
                level_idx, tier = level, op_tier
            if decoder_model and r.f(1):
                r.f(buffer_delay_length)
                r.f(buffer_delay_length)
                r.f(1)
            if initial_display_delay and r.f(1):
                r.f(4)
    width_bits, height_bits = r.f(4) + 1, r.f(4) + 1
    width, height = r.f(width_bits) + 1, r.f(height_bits) + 1
    if not reduced and r.f(1):  # frame_id_numbers_present_flag
        r.f(4)
        r.f(3)
    r.f(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        r.f(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = r.f(1)
        if order_hint:
            r.f(2)  # enable_jnt_comp, enable_ref_frame_mvs
        force_screen_content = 2 if r.f(1) else r.f(1)  # 2: SELECT
        if force_screen_content and not r.f(1):  # seq_choose_integer_mv
            r.f(1)  # seq_force_integer_mv
        if order_hint:
            r.f(3)  # order_hint_bits_minus_1
    r.f(3)  # enable_superres, enable_cdef, enable_restoration
    # color_config()
    high_bitdepth = bool(r.f(1))
    twelve_bit = profile == 2 and high_bitdepth and bool(r.f(1))
    monochrome = profile != 1 and bool(r.f(1))
    primaries = transfer = matrix = 2  # unspecified
    if r.f(1):  # color_description_present_flag
        primaries, transfer, matrix = r.f(8), r.f(8), r.f(8)
    position = 0
    if monochrome:
        sub_x = sub_y = 1
    elif primaries == 1 and transfer == 13 and matrix == 0:  # sRGB
        sub_x = sub_y = 0
    else:
        r.f(1)  # color_range
        if profile == 0:
            sub_x = sub_y = 1
        elif profile == 1:
            sub_x = sub_y = 0
        elif twelve_bit:
            sub_x = r.f(1)
            sub_y = r.f(1) if sub_x else 0
        else:
            sub_x, sub_y = 1, 0
        if sub_x and sub_y:
            position = r.f(2)
    return SequenceHeader(profile, level_idx, tier, width, height, reduced, high_bitdepth,
                          twelve_bit, monochrome, sub_x, sub_y, position)


def build_config(sequence_header_obu: bytes) -> bytes:
    """An av1C record (AV1-ISOBMFF 2.3) for a sequence header OBU (header,
    size field and payload), which it carries as its configOBUs."""
    if len(sequence_header_obu) < 2 or (sequence_header_obu[0] >> 3) & 0x0F != OBU_SEQUENCE_HEADER:
        raise Av1Error("not a sequence header OBU")
    header = sequence_header_obu[0]
    pos = 2 if header & 0x04 else 1
    if header & 0x02:
        size, pos = leb128(sequence_header_obu, pos)
        if pos + size > len(sequence_header_obu):
            raise Av1Error("truncated sequence header OBU")
    seq = parse_sequence_header(sequence_header_obu[pos:])
    return bytes((
        0x81,  # marker, version 1
        seq.profile << 5 | seq.level_idx,
        seq.tier << 7 | seq.high_bitdepth << 6 | seq.twelve_bit << 5 | seq.monochrome << 4
        | seq.subsampling_x << 3 | seq.subsampling_y << 2 | seq.chroma_sample_position,
        0,  # no initial presentation delay
    )) + sequence_header_obu
