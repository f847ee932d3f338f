"""H.264/AVC helpers: SPS parsing and decoder configuration records.

FLV and RTMP carry H.264 as AVCC: a sequence header holding an
AVCDecoderConfigurationRecord (SPS/PPS and the NAL length size), then frames
made of length-prefixed NAL units; stream info (resolution, profile) comes
from the SPS.  Turning the frames into Annex-B (MPEG-TS, elementary streams)
and back is :mod:`lal_twisted.media.convert`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "AvcConfig",
    "AvcError",
    "SpsInfo",
    "build_decoder_config",
    "parse_decoder_config",
    "parse_sps",
    "remove_emulation_prevention",
]

NAL_SPS = 7
NAL_PPS = 8

_EPB = b"\x00\x00\x03"

# Profiles whose SPS carries chroma format, bit depths and scaling matrices.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

_PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}

_U16 = struct.Struct(">H")


class AvcError(ValueError):
    """Raised for malformed or truncated H.264 data."""


def remove_emulation_prevention(nal: bytes | bytearray | memoryview) -> bytes:
    """Turn a NAL unit's payload into its RBSP by dropping emulation-prevention bytes.

    Every ``00 00 03`` becomes ``00 00``; the zero count restarts after each
    removed byte, so ``00 00 03 00 00 03`` becomes ``00 00 00 00``.
    """
    data = bytes(nal)
    idx = data.find(_EPB)
    if idx < 0:
        return data
    parts: list[bytes] = []
    start = 0
    while idx >= 0:
        parts.append(data[start : idx + 2])
        start = idx + 3
        idx = data.find(_EPB, start)
    parts.append(data[start:])
    return b"".join(parts)


class _BitReader:
    """MSB-first bit reader over a whole RBSP held as one integer."""

    __slots__ = ("_value", "_nbits", "_pos")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._nbits = len(data) * 8
        self._pos = 0

    def bits(self, count: int) -> int:
        pos = self._pos + count
        if pos > self._nbits:
            raise AvcError("truncated SPS")
        self._pos = pos
        return (self._value >> (self._nbits - pos)) & ((1 << count) - 1)

    def flag(self) -> bool:
        return self.bits(1) == 1

    def ue(self) -> int:
        """Unsigned exp-Golomb code."""
        left = self._nbits - self._pos
        rest = self._value & ((1 << left) - 1)
        if rest == 0:
            raise AvcError("truncated SPS")
        zeros = left - rest.bit_length()
        if zeros > 31:
            raise AvcError("invalid exp-Golomb code in SPS")
        self._pos += zeros
        return self.bits(zeros + 1) - 1

    def se(self) -> int:
        """Signed exp-Golomb code."""
        code = self.ue()
        return (code + 1) >> 1 if code & 1 else -(code >> 1)


@dataclass(frozen=True)
class SpsInfo:
    """The stream properties carried by an H.264 sequence parameter set."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    width: int
    height: int
    chroma_format_idc: int

    @property
    def profile_name(self) -> str:
        """Human-readable profile name, e.g. ``"High"``."""
        return _PROFILE_NAMES.get(self.profile_idc, f"profile {self.profile_idc}")


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + reader.se() + 256) % 256
        if nxt != 0:
            last = nxt


def parse_sps(nal: bytes | bytearray | memoryview) -> SpsInfo:
    """Parse an SPS NAL unit (including its 1-byte NAL header) into :class:`SpsInfo`.

    Width and height are the displayed size, i.e. after frame cropping.
    """
    data = bytes(nal)
    if not data:
        raise AvcError("empty SPS")
    if data[0] & 0x1F != NAL_SPS:
        raise AvcError(f"not an SPS: NAL unit type {data[0] & 0x1F}")
    rbsp = remove_emulation_prevention(data[1:])
    if len(rbsp) < 4:
        raise AvcError("truncated SPS")
    profile_idc, constraint_flags, level_idc = rbsp[0], rbsp[1], rbsp[2]
    r = _BitReader(rbsp[3:])
    sps_id = r.ue()
    if sps_id > 31:
        raise AvcError(f"invalid seq_parameter_set_id {sps_id}")

    chroma_format_idc = 1
    separate_colour_plane = False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise AvcError(f"invalid chroma_format_idc {chroma_format_idc}")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.flag()  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(r, 16 if i < 6 else 64)

    r.ue()  # log2_max_frame_num_minus4
    pic_order_cnt_type = r.ue()
    if pic_order_cnt_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pic_order_cnt_type == 1:
        r.flag()  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise AvcError(f"invalid num_ref_frames_in_pic_order_cnt_cycle {cycle}")
        for _ in range(cycle):
            r.se()  # offset_for_ref_frame[i]
    elif pic_order_cnt_type != 2:
        raise AvcError(f"invalid pic_order_cnt_type {pic_order_cnt_type}")

    r.ue()  # max_num_ref_frames
    r.flag()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.flag()  # mb_adaptive_frame_field_flag
    r.flag()  # direct_8x8_inference_flag

    field_factor = 1 if frame_mbs_only else 2
    width = width_mbs * 16
    height = height_map_units * 16 * field_factor
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, field_factor
        else:
            sub_width = 1 if chroma_array_type == 3 else 2
            sub_height = 2 if chroma_array_type == 1 else 1
            crop_x, crop_y = sub_width, sub_height * field_factor
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
        if width <= 0 or height <= 0:
            raise AvcError("SPS cropping leaves an empty picture")
    return SpsInfo(profile_idc, constraint_flags, level_idc, width, height, chroma_format_idc)


@dataclass
class AvcConfig:
    """An AVCDecoderConfigurationRecord: profile/level, NAL length size, SPS and PPS."""

    profile: int
    compat: int
    level: int
    nal_length_size: int
    sps: list[bytes]
    pps: list[bytes]


def parse_decoder_config(record: bytes | bytearray | memoryview) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord.

    ``record`` is the body of an FLV/RTMP AVC sequence header after its 5-byte
    video tag header.  Bytes after the PPS list (the High profile extension)
    are ignored.
    """
    data = bytes(record)
    if len(data) < 7:
        raise AvcError(f"AVC decoder config too short ({len(data)} bytes)")
    version, profile, compat, level, length_byte, sps_byte = data[:6]
    if version != 1:
        raise AvcError(f"unsupported AVC decoder config version {version}")
    pos = 6
    sps, pos = _read_param_sets(data, pos, sps_byte & 0x1F, "SPS")
    if pos >= len(data):
        raise AvcError("truncated AVC decoder config: missing PPS count")
    pps, pos = _read_param_sets(data, pos + 1, data[pos], "PPS")
    return AvcConfig(profile, compat, level, (length_byte & 0x03) + 1, sps, pps)


def _read_param_sets(data: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    sets: list[bytes] = []
    end = len(data)
    for _ in range(count):
        if pos + 2 > end:
            raise AvcError(f"truncated AVC decoder config: {what} length")
        (size,) = _U16.unpack_from(data, pos)
        pos += 2
        if pos + size > end:
            raise AvcError(f"truncated AVC decoder config: {what} data")
        sets.append(data[pos : pos + size])
        pos += size
    return sets, pos


def build_decoder_config(sps: list[bytes], pps: list[bytes], nal_length_size: int = 4) -> bytes:
    """Build an AVCDecoderConfigurationRecord from SPS and PPS NAL units.

    Profile, compatibility and level are copied from the first SPS.
    """
    if not sps:
        raise AvcError("at least one SPS is required")
    if len(sps) > 31 or len(pps) > 255:
        raise AvcError("too many parameter sets")
    if nal_length_size not in (1, 2, 4):
        raise AvcError(f"invalid NAL length size {nal_length_size}")
    if len(sps[0]) < 4:
        raise AvcError("SPS too short")
    first = sps[0]
    parts = [bytes((1, first[1], first[2], first[3], 0xFC | (nal_length_size - 1)))]
    for group in (sps, pps):
        # SPS count shares its byte with three reserved 1-bits; PPS count is a full byte.
        parts.append(bytes((len(group) | (0xE0 if group is sps else 0),)))
        for nal in group:
            if len(nal) > 0xFFFF:
                raise AvcError("parameter set too large")
            parts.append(_U16.pack(len(nal)))
            parts.append(bytes(nal))
    return b"".join(parts)
