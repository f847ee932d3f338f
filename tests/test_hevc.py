"""Tests for lal_twisted.media.hevc."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lal_twisted.media import hevc
from lal_twisted.media.hevc import HevcConfig, HevcError

VPS = bytes.fromhex("40010c01ffff01600000030090000003000003003c959809")
SPS = bytes.fromhex(
    "42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003210"
)
PPS = bytes.fromhex("4401c172b46240")

# The hvcC box of a libx265 320x240 encode (ffmpeg ... -c:v libx265 out.mp4), with its
# SEI array dropped and numOfArrays lowered to 3 to keep the vector short.
REAL_HVCC = bytes.fromhex(
    "0101600000009000000000003cf000fcfdf8f800000f03"
    "200001001840010c01ffff01600000030090000003000003003c959809"
    "210001002a42010101600000030090000003000003003ca00a080f165959a4932bc05a0200000300020000"
    "0300321022000100074401c172b46240"
)

# Fixed 22 bytes: version, profile, compat flags, constraint flags, level,
# min_spatial_segmentation, parallelism, chroma format, bit depths, frame rate, and the
# byte with lengthSizeMinusOne.
_FIXED = bytes.fromhex("01 01 60000000 900000000000 5d f000 fc fd f8 f8 0000")


def _record(length_byte: int, arrays: list[tuple[int, list[bytes]]]) -> bytes:
    out = bytearray(_FIXED + bytes((length_byte, len(arrays))))
    for nal_type, nalus in arrays:
        out += bytes((0x80 | nal_type,)) + struct.pack(">H", len(nalus))
        for nal in nalus:
            out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


def test_fixed_part_is_23_bytes() -> None:
    assert len(_record(0x0F, [])) == 23


def test_parse_real_record() -> None:
    assert hevc.parse_decoder_config(REAL_HVCC) == HevcConfig(4, [VPS], [SPS], [PPS])


def test_parse_handmade_record() -> None:
    sei = b"\x4e\x01\x05\x00"
    record = _record(
        0x0D,  # constantFrameRate 0, one temporal layer, nested, lengthSizeMinusOne 1
        [
            (32, [b"\x40\x01\xaa"]),
            (33, [b"\x42\x01\xbb", b"\x42\x01\xcc\xdd"]),
            (39, [sei]),
            (34, [b"\x44\x01"]),
            (34, [b"\x44\x01\xee"]),
        ],
    )
    config = hevc.parse_decoder_config(record)
    assert config == HevcConfig(
        nal_length_size=2,
        vps=[b"\x40\x01\xaa"],
        sps=[b"\x42\x01\xbb", b"\x42\x01\xcc\xdd"],
        pps=[b"\x44\x01", b"\x44\x01\xee"],
    )


def test_nal_length_sizes() -> None:
    for low_bits, size in ((0, 1), (1, 2), (3, 4)):
        assert hevc.parse_decoder_config(_record(0xFC | low_bits, [])).nal_length_size == size


def test_empty_arrays() -> None:
    assert hevc.parse_decoder_config(_record(0x0F, [(32, []), (33, [])])) == HevcConfig(
        4, [], [], []
    )


def test_too_short() -> None:
    with pytest.raises(HevcError, match="too short"):
        hevc.parse_decoder_config(REAL_HVCC[:22])
    with pytest.raises(HevcError, match="too short"):
        hevc.parse_decoder_config(b"")


def test_bad_version() -> None:
    with pytest.raises(HevcError, match="version"):
        hevc.parse_decoder_config(b"\x1c\x00\x00\x00\x00" + REAL_HVCC)


def test_truncation_errors() -> None:
    for cut in range(23, len(REAL_HVCC)):
        with pytest.raises(HevcError, match="truncated"):
            hevc.parse_decoder_config(REAL_HVCC[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_random_input_only_raises_hevc_error(data: bytes) -> None:
    try:
        hevc.parse_decoder_config(_FIXED + data)
    except HevcError:
        pass
