"""H.265/HEVC helpers: HEVCDecoderConfigurationRecord and SPS parsing.

An HEVC sequence header (FLV codec id 12 or enhanced-RTMP ``hvc1``) carries an
HEVCDecoderConfigurationRecord with the VPS, SPS and PPS and the NAL length
size needed to split the following frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lal_twisted.media import avc

__all__ = ["HevcConfig", "HevcError", "HevcSps", "build_decoder_config", "parse_decoder_config",
           "parse_sps"]

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34

_FIXED_SIZE = 23
_LENGTH_SIZE_BYTE = 21
_NUM_ARRAYS_BYTE = 22

_U16 = struct.Struct(">H")


class HevcError(ValueError):
    """Raised for malformed or truncated HEVC data."""


@dataclass
class HevcConfig:
    """The parts of an HEVCDecoderConfigurationRecord a server needs."""

    nal_length_size: int
    vps: list[bytes]
    sps: list[bytes]
    pps: list[bytes]


def parse_decoder_config(record: bytes | bytearray | memoryview) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord.

    The record is 23 bytes of fixed fields (the last being numOfArrays) and
    then arrays of NAL units, each with a type byte, a u16 count and
    u16-length-prefixed NAL units.  Arrays of types other than VPS, SPS and PPS
    (e.g. SEI) are skipped.
    """
    data = bytes(record)
    if len(data) < _FIXED_SIZE:
        raise HevcError(f"HEVC decoder config too short ({len(data)} bytes)")
    if data[0] != 1:
        raise HevcError(f"unsupported HEVC decoder config version {data[0]}")
    nal_length_size = (data[_LENGTH_SIZE_BYTE] & 0x03) + 1
    lists: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
    pos = _FIXED_SIZE
    end = len(data)
    for index in range(data[_NUM_ARRAYS_BYTE]):
        if pos + 3 > end:
            raise HevcError(f"truncated HEVC decoder config: header of array {index}")
        nal_type = data[pos] & 0x3F
        (count,) = _U16.unpack_from(data, pos + 1)
        pos += 3
        target = lists.get(nal_type)
        for _ in range(count):
            if pos + 2 > end:
                raise HevcError(f"truncated HEVC decoder config: NAL length in array {index}")
            (size,) = _U16.unpack_from(data, pos)
            pos += 2
            if pos + size > end:
                raise HevcError(f"truncated HEVC decoder config: NAL data in array {index}")
            if target is not None:
                target.append(data[pos : pos + size])
            pos += size
    return HevcConfig(nal_length_size, lists[NAL_VPS], lists[NAL_SPS], lists[NAL_PPS])


_PROFILE_NAMES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "Rext", 5: "High Throughput",
                  9: "SCC"}


@dataclass(frozen=True)
class HevcSps:
    """What a server shows of an H.265 SPS: profile, level and the picture size
    after the conformance window."""

    profile_idc: int
    tier: int
    level_idc: int  # 30 x the level number
    chroma_format_idc: int
    width: int
    height: int

    @property
    def profile_name(self) -> str:
        return _PROFILE_NAMES.get(self.profile_idc, f"profile {self.profile_idc}")

    @property
    def level(self) -> float:
        return self.level_idc / 30


def parse_sps(nal: bytes | bytearray | memoryview) -> HevcSps:
    """Parse an H.265 SPS NAL unit (2-byte NAL header included) far enough for
    profile, tier, level, chroma format and the cropped picture size."""
    data = bytes(nal)
    if len(data) < 3 or (data[0] >> 1) & 0x3F != NAL_SPS:
        raise HevcError("not an HEVC SPS NAL unit")
    try:
        r = avc._BitReader(avc.remove_emulation_prevention(data[2:]))
        r.bits(4)  # sps_video_parameter_set_id
        max_sub_layers_minus1 = r.bits(3)
        r.bits(1)  # temporal_id_nesting
        # profile_tier_level(1, max_sub_layers_minus1)
        r.bits(2)  # general_profile_space
        tier = r.bits(1)
        profile_idc = r.bits(5)
        r.bits(32)  # compatibility flags
        r.bits(48)  # progressive/interlaced/... and reserved constraint flags
        level_idc = r.bits(8)
        present = [(r.bits(1), r.bits(1)) for _ in range(max_sub_layers_minus1)]
        if max_sub_layers_minus1 > 0:
            r.bits(2 * (8 - max_sub_layers_minus1))
        for profile_present, level_present in present:
            if profile_present:
                r.bits(88)
            if level_present:
                r.bits(8)
        r.ue()  # sps_seq_parameter_set_id
        chroma = r.ue()
        separate_planes = chroma == 3 and r.flag()
        width, height = r.ue(), r.ue()
        if r.flag():  # conformance_window_flag
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            sub_w = 2 if chroma in (1, 2) and not separate_planes else 1
            sub_h = 2 if chroma == 1 and not separate_planes else 1
            width -= sub_w * (left + right)
            height -= sub_h * (top + bottom)
    except avc.AvcError as e:
        raise HevcError(f"malformed HEVC SPS: {e}") from None
    if width <= 0 or height <= 0 or width > 65535 or height > 65535:
        raise HevcError(f"HEVC SPS with an impossible picture size {width}x{height}")
    return HevcSps(profile_idc, tier, level_idc, chroma, width, height)


def build_decoder_config(vps: list[bytes], sps: list[bytes], pps: list[bytes],
                         nal_length_size: int = 4) -> bytes:
    """An HEVCDecoderConfigurationRecord for the given parameter sets (the
    general profile/tier/level fields copied from the first SPS)."""
    if not sps:
        raise HevcError("an HEVC decoder config needs an SPS")
    rbsp = avc.remove_emulation_prevention(sps[0][2:])
    if len(rbsp) < 13:
        raise HevcError("HEVC SPS too short")
    # profile_tier_level's general part: 12 bytes after the first SPS byte.
    general = rbsp[1:13]
    info = parse_sps(sps[0])
    out = bytearray([1])
    out += general[:1] + general[1:5] + general[5:11] + general[11:12]
    out += bytes([0xF0, 0x00])  # reserved + min_spatial_segmentation_idc 0
    out += bytes([0xFC])  # reserved + parallelismType 0
    out += bytes([0xFC | info.chroma_format_idc])
    out += bytes([0xF8, 0xF8])  # luma / chroma bit depth - 8: 0 (8 bit)
    out += bytes([0, 0])  # avgFrameRate
    # constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1, lengthSizeMinusOne
    out += bytes([0x0C | (nal_length_size - 1)])
    arrays = [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)]
    out += bytes([sum(1 for _, nals in arrays if nals)])
    for nal_type, nals in arrays:
        if not nals:
            continue
        out += bytes([0x80 | nal_type]) + _U16.pack(len(nals))
        for nal in nals:
            out += _U16.pack(len(nal)) + nal
    return bytes(out)
