"""H.265/HEVC helpers: HEVCDecoderConfigurationRecord parsing.

An HEVC sequence header (FLV codec id 12 or enhanced-RTMP ``hvc1``) carries an
HEVCDecoderConfigurationRecord with the VPS, SPS and PPS and the NAL length
size needed to split the following frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["HevcConfig", "HevcError", "parse_decoder_config"]

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
