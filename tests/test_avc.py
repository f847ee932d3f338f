"""Tests for lal_twisted.media.avc."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import made_by

from lal_twisted.media import avc, convert
from lal_twisted.media.avc import AvcConfig, AvcError, SpsInfo

FFMPEG = shutil.which("ffmpeg") or ("/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None)

# SPS NAL units captured from libx264 output (ffmpeg -f lavfi -i testsrc=... -f h264),
# with the sizes, profiles and chroma formats ffprobe reported for them.
REAL_SPS = [
    # 320x240 yuv420p, default (High) profile
    ("6764000dacd94141fb011000000300100000030320f1429960", 100, 0, 13, 320, 240, 1),
    # 426x240: 27 macroblocks wide, cropped by 6 pixels
    ("67640015acd941b1fe4f011000000300100000030320f162d960", 100, 0, 21, 426, 240, 1),
    # 320x240 -profile:v baseline (constrained baseline: constraint_set0/1 flags)
    ("6742c00dd90141fb011000000300100000030320f142a480", 66, 0xC0, 13, 320, 240, 1),
    # 1920x1080 High: 1088 coded lines cropped to 1080
    ("67640028acd940780227e5c044000003000400000300c83c60c658", 100, 0, 40, 1920, 1080, 1),
    # 640x360 -profile:v high444 -pix_fmt yuv444p
    ("67f4001e919b281405ff1380880000030008000003019078b16cb0", 244, 0, 30, 640, 360, 3),
    # 720x576 interlaced (frame_mbs_only_flag = 0)
    ("6764001eacd940b424d8088000000300800000190f8a14cb", 100, 0, 30, 720, 576, 1),
    # 320x240 -profile:v main
    ("674d400deca0a0fd80880000030008000003019078a14cb0", 77, 0x40, 13, 320, 240, 1),
    # 322x242 yuv422p (High 4:2:2), cropped in both directions
    ("677a000dbcd9415087888fc044000003000400000300c83c50a658", 122, 0, 13, 322, 242, 2),
    # 320x240 yuv420p10le (High 10)
    ("676e000da6cd94141fb011000003000100000300320f142996", 110, 0, 13, 320, 240, 1),
]

# An AVCDecoderConfigurationRecord from an ffmpeg-written FLV (320x240 High), with
# the High-profile extension bytes (fd f8 f8 00) after the PPS list.
REAL_AVCC = bytes.fromhex(
    "0164000dffe100196764000dacd94141fb011000000300100000030320f142996001000668ebe3cb22c0fdf8f800"
)


@pytest.mark.parametrize(
    ("hex_sps", "profile", "constraints", "level", "width", "height", "chroma"), REAL_SPS
)
def test_parse_real_sps(
    hex_sps: str, profile: int, constraints: int, level: int, width: int, height: int, chroma: int
) -> None:
    info = avc.parse_sps(bytes.fromhex(hex_sps))
    assert info == SpsInfo(profile, constraints, level, width, height, chroma)


def test_profile_names() -> None:
    names = {
        66: "Baseline",
        77: "Main",
        88: "Extended",
        100: "High",
        110: "High 10",
        122: "High 4:2:2",
        244: "High 4:4:4 Predictive",
        44: "profile 44",
    }
    for idc, name in names.items():
        assert SpsInfo(idc, 0, 30, 16, 16, 1).profile_name == name


# --- synthetic SPS ---------------------------------------------------------


class BitWriter:
    """Builds an RBSP bit by bit (test helper; speed does not matter here)."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def u(self, count: int, value: int) -> BitWriter:
        self.bits.append(format(value, f"0{count}b") if count else "")
        return self

    def ue(self, value: int) -> BitWriter:
        code = format(value + 1, "b")
        self.bits.append("0" * (len(code) - 1) + code)
        return self

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = "".join(self.bits) + "1"
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


def add_emulation_prevention(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def make_sps(profile: int, level: int, body: BitWriter) -> bytes:
    return b"\x67" + add_emulation_prevention(bytes((profile, 0, level)) + body.rbsp())


def test_sps_with_scaling_lists_and_poc_type_1() -> None:
    w = BitWriter()
    w.ue(0)  # seq_parameter_set_id
    w.ue(1)  # chroma_format_idc 4:2:0
    w.ue(0).ue(0).u(1, 0)  # bit depths, qpprime flag
    w.u(1, 1)  # seq_scaling_matrix_present_flag
    # List 0 (4x4): 16 explicit deltas, including wrap-around.
    w.u(1, 1)
    for delta in [1, 2, -3, 100, -128, 127, 5, -5, 0, 1, 2, 3, -4, 7, 9, -20]:
        w.se(delta)
    # List 1: a single delta reaching 0 selects the default matrix.
    w.u(1, 1).se(-8)
    # List 2: absent.  List 3: stops part-way when the next scale hits 0.
    w.u(1, 0)
    w.u(1, 1).se(4).se(-12)  # 8 -> 12 -> 0: the rest repeat the last scale
    w.u(1, 0).u(1, 0)  # lists 4, 5 absent
    w.u(1, 1)  # list 6 (8x8): 64 deltas
    for i in range(64):
        w.se((-1) ** i * (i % 7))
    w.u(1, 0)  # list 7 absent
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(1)  # pic_order_cnt_type 1
    w.u(1, 0).se(-3).se(2).ue(3).se(1).se(-1).se(5)
    w.ue(4).u(1, 0)  # max_num_ref_frames, gaps
    w.ue(79).ue(22)  # 80 x 23 map units
    w.u(1, 0).u(1, 1)  # frame_mbs_only_flag 0, mb_adaptive_frame_field_flag
    w.u(1, 1)  # direct_8x8_inference_flag
    w.u(1, 1).ue(0).ue(0).ue(0).ue(4)  # cropping: bottom 4 units of 4 lines
    w.u(1, 0)  # no VUI
    info = avc.parse_sps(make_sps(100, 31, w))
    assert info == SpsInfo(100, 0, 31, 1280, 720, 1)


def _444_sps(separate_planes: bool) -> bytes:
    w = BitWriter().ue(3).ue(3).u(1, int(separate_planes)).ue(2).ue(2).u(1, 0)
    w.u(1, 1)  # scaling matrix present: 12 lists for 4:4:4
    for i in range(12):
        present = i in (0, 7, 11)
        w.u(1, int(present))
        if present:
            for _ in range(16 if i < 6 else 64):
                w.se(1)
    w.ue(2).ue(0).ue(6)  # log2_max_frame_num, poc type 0, log2_max_poc_lsb
    w.ue(1).u(1, 0).ue(39).ue(21).u(1, 1).u(1, 1)  # 640 x 352 progressive
    w.u(1, 1).ue(1).ue(2).ue(0).ue(1)  # crop 1 left, 2 right, 1 bottom (1-pixel units)
    w.u(1, 0)
    return make_sps(244, 40, w)


@pytest.mark.parametrize("separate_planes", [False, True])
def test_sps_444_crop_units(separate_planes: bool) -> None:
    info = avc.parse_sps(_444_sps(separate_planes))
    assert info == SpsInfo(244, 0, 40, 637, 351, 3)


def test_sps_monochrome_interlaced_crop_units() -> None:
    w = BitWriter().ue(0).ue(0).ue(0).ue(0).u(1, 0).u(1, 0)  # 4:0:0, no scaling
    w.ue(0).ue(2)  # poc type 2
    w.ue(1).u(1, 0).ue(9).ue(4)  # 160 wide, 5 map units
    w.u(1, 0).u(1, 0).u(1, 1)  # field coding: height 5 * 32 = 160
    w.u(1, 1).ue(1).ue(0).ue(3).ue(0)  # left 1 px, top 3 * 2 lines
    info = avc.parse_sps(make_sps(100, 30, w))
    assert info == SpsInfo(100, 0, 30, 159, 154, 0)


def test_sps_errors() -> None:
    with pytest.raises(AvcError):
        avc.parse_sps(b"")
    with pytest.raises(AvcError, match="not an SPS"):
        avc.parse_sps(bytes.fromhex("68ebe3cb22c0"))
    real = bytes.fromhex(REAL_SPS[0][0])
    for cut in range(1, 9):  # the fields parsed end in the 9th byte
        with pytest.raises(AvcError, match="truncated"):
            avc.parse_sps(real[:cut])
    with pytest.raises(AvcError, match="pic_order_cnt_type"):
        avc.parse_sps(make_sps(66, 30, BitWriter().ue(0).ue(0).ue(3)))
    with pytest.raises(AvcError, match="chroma_format_idc"):
        avc.parse_sps(make_sps(100, 30, BitWriter().ue(0).ue(4)))
    with pytest.raises(AvcError, match="exp-Golomb"):
        avc.parse_sps(b"\x67\x42\x00\x1e" + bytes(5) + b"\xff")
    empty = BitWriter().ue(0).ue(0).ue(0).ue(0).ue(1).u(1, 0).ue(0).ue(0).u(1, 1).u(1, 1)
    with pytest.raises(AvcError, match="empty picture"):
        avc.parse_sps(make_sps(66, 30, empty.u(1, 1).ue(8).ue(0).ue(0).ue(0)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_random_sps_only_raises_avc_error(data: bytes) -> None:
    try:
        info = avc.parse_sps(b"\x67" + data)
    except AvcError:
        return
    assert info.width > 0 and info.height > 0


# --- ffmpeg-generated SPS --------------------------------------------------


def _encode_sps(tmp_path: Path, size: str, *extra: str) -> bytes:
    assert FFMPEG is not None
    out = tmp_path / "out.h264"
    made_by(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=25",
            "-frames:v",
            "1",
            "-c:v",
            "libx264",
            *extra,
            "-f",
            "h264",
        ],
        out,
        timeout=60,
    )
    for unit in re.split(b"\x00\x00\x01", out.read_bytes()):
        unit = unit.rstrip(b"\x00")
        if unit and unit[0] & 0x1F == 7:
            return unit
    raise AssertionError("no SPS in ffmpeg output")


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not available")
@pytest.mark.parametrize(
    ("size", "extra", "expected"),
    [
        ("320x240", ("-pix_fmt", "yuv420p"), (320, 240, "High", 1)),
        ("426x240", ("-pix_fmt", "yuv420p"), (426, 240, "High", 1)),
        ("176x144", ("-pix_fmt", "yuv420p", "-profile:v", "baseline"), (176, 144, "Baseline", 1)),
        ("1280x720", ("-pix_fmt", "yuv420p", "-profile:v", "high"), (1280, 720, "High", 1)),
        ("330x190", ("-pix_fmt", "yuv444p"), (330, 190, "High 4:4:4 Predictive", 3)),
        ("322x242", ("-pix_fmt", "yuv422p"), (322, 242, "High 4:2:2", 2)),
    ],
)
def test_parse_ffmpeg_sps(
    tmp_path: Path, size: str, extra: tuple[str, ...], expected: tuple[int, int, str, int]
) -> None:
    info = avc.parse_sps(_encode_sps(tmp_path, size, *extra))
    assert (info.width, info.height, info.profile_name, info.chroma_format_idc) == expected


# --- emulation prevention --------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("", ""),
        ("0102", "0102"),
        ("000003", "0000"),
        ("00000301", "000001"),
        ("000003000003", "00000000"),
        ("0000030303", "00000303"),  # the later 03s are data
        ("00030000", "00030000"),
        ("aa00000300bb00000302", "aa000000bb000002"),
    ],
)
def test_remove_emulation_prevention(escaped: str, raw: str) -> None:
    assert avc.remove_emulation_prevention(bytes.fromhex(escaped)) == bytes.fromhex(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_emulation_prevention_round_trip(rbsp: bytes) -> None:
    escaped = add_emulation_prevention(rbsp)
    assert avc.remove_emulation_prevention(escaped) == rbsp
    assert avc.remove_emulation_prevention(memoryview(escaped)) == rbsp


# --- decoder configuration record ------------------------------------------


def test_parse_real_decoder_config() -> None:
    config = avc.parse_decoder_config(REAL_AVCC)
    assert config == AvcConfig(
        profile=100,
        compat=0,
        level=13,
        nal_length_size=4,
        sps=[bytes.fromhex(REAL_SPS[0][0])],
        pps=[bytes.fromhex("68ebe3cb22c0")],
    )


def test_parse_handmade_decoder_config() -> None:
    sps1, sps2 = b"\x67\x4d\x40\x1f\xaa", b"\x67\x4d\x40\x1f\xbb\xcc"
    pps1, pps2, pps3 = b"\x68\x01", b"\x68\x02\x03", b"\x68"
    record = (
        b"\x01\x4d\x40\x1f\xfd\xe2"  # version, profile, compat, level, size 2, 2 SPS
        + b"\x00\x05"
        + sps1
        + b"\x00\x06"
        + sps2
        + b"\x03"
        + b"\x00\x02"
        + pps1
        + b"\x00\x03"
        + pps2
        + b"\x00\x01"
        + pps3
    )
    config = avc.parse_decoder_config(record)
    assert config == AvcConfig(0x4D, 0x40, 0x1F, 2, [sps1, sps2], [pps1, pps2, pps3])
    assert avc.build_decoder_config([sps1, sps2], [pps1, pps2, pps3], 2) == record


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=4, max_size=40), min_size=1, max_size=3),
    st.lists(st.binary(max_size=20), max_size=3),
    st.sampled_from([1, 2, 4]),
)
def test_decoder_config_round_trip(sps: list[bytes], pps: list[bytes], size: int) -> None:
    record = avc.build_decoder_config(sps, pps, size)
    config = avc.parse_decoder_config(record)
    assert config == AvcConfig(sps[0][1], sps[0][2], sps[0][3], size, sps, pps)


def test_decoder_config_errors() -> None:
    with pytest.raises(AvcError, match="too short"):
        avc.parse_decoder_config(REAL_AVCC[:6])
    with pytest.raises(AvcError, match="version"):
        avc.parse_decoder_config(b"\x17\x00" + REAL_AVCC)
    for cut in range(7, 42):
        with pytest.raises(AvcError, match="truncated"):
            avc.parse_decoder_config(REAL_AVCC[:cut])
    with pytest.raises(AvcError):
        avc.build_decoder_config([], [])
    with pytest.raises(AvcError):
        avc.build_decoder_config([b"\x67\x64\x00\x1f"], [], 3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_random_decoder_config_only_raises_avc_error(data: bytes) -> None:
    try:
        avc.parse_decoder_config(b"\x01" + data)
    except AvcError:
        pass


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not available")
def test_ffmpeg_flv_sequence_header(tmp_path: Path) -> None:
    from lal_twisted.media import flv
    from lal_twisted.tools import flvfile

    assert FFMPEG is not None
    path = tmp_path / "v.flv"
    made_by(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=426x240:rate=25",
            "-frames:v",
            "3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "flv",
        ],
        path,
        timeout=60,
    )
    video = [t.payload for t in flvfile.iter_file(str(path)) if t.tag_type == flv.TAG_VIDEO]
    assert video[0][:2] == b"\x17\x00"
    config = avc.parse_decoder_config(video[0][5:])
    assert config.nal_length_size == 4
    assert len(config.sps) == 1 and len(config.pps) == 1
    info = avc.parse_sps(config.sps[0])
    assert (info.width, info.height, info.profile_idc) == (426, 240, config.profile)
    nalus = convert.split_nalus(video[1][5:], config.nal_length_size)
    assert any(n[0] & 0x1F == 5 for n in nalus)  # an IDR slice


# --- NAL framing -----------------------------------------------------------


def test_split_nalus() -> None:
    data = b"\x00\x00\x00\x02\x65\x88" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x01\x06"
    assert convert.split_nalus(data) == [b"\x65\x88", b"\x06"]
    assert convert.split_nalus(b"") == []
    assert convert.split_nalus(b"\x02\x41\x42\x01\x43", 1) == [b"\x41\x42", b"\x43"]
    assert convert.split_nalus(b"\x00\x01\x41", 2) == [b"\x41"]
    assert convert.split_nalus(b"\x00\x00\x01\x41", 3) == [b"\x41"]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"\x00\x00\x00\x05\x65", 4),
        (b"\x00\x00\x00", 4),
        (b"\x00\x00\x00\x01\x65\x00", 4),
        (b"\x03\x01", 1),
        (b"\x00\x01\x41", 5),
    ],
)
def test_split_nalus_errors(data: bytes, size: int) -> None:
    with pytest.raises(convert.AnnexBError):
        convert.split_nalus(data, size)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=6), st.sampled_from([1, 2, 3, 4]))
def test_split_round_trip(nalus: list[bytes], size: int) -> None:
    data = b"".join(len(n).to_bytes(size, "big") + n for n in nalus)
    assert convert.split_nalus(data, size) == nalus


def test_join_annexb() -> None:
    assert convert.join_annexb([]) == b""
    assert convert.join_annexb([b"\x67\x42", b"\x68"]) == (
        b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68")
    assert convert.join_annexb(iter([b"\x65"])) == b"\x00\x00\x00\x01\x65"
