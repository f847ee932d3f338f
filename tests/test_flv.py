"""Tests for lal_twisted.media.flv and the file helpers of lal_twisted.tools.flvfile."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import made_by

from lal_twisted.media.flv import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvError,
    FlvReader,
    FlvTag,
    encode_tag,
    file_header,
)
from lal_twisted.tools import flvfile

FFMPEG = shutil.which("ffmpeg") or ("/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None)


def test_constants() -> None:
    assert (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT) == (8, 9, 18)


def test_file_header_bytes() -> None:
    assert file_header() == bytes.fromhex("464c5601 05 00000009 00000000")
    assert file_header(has_audio=False) == bytes.fromhex("464c5601 01 00000009 00000000")
    assert file_header(has_video=False) == bytes.fromhex("464c5601 04 00000009 00000000")
    assert file_header(False, False) == bytes.fromhex("464c5601 00 00000009 00000000")
    assert len(file_header()) == 13


def test_encode_tag_vector() -> None:
    tag = encode_tag(TAG_AUDIO, 0x123456, b"\xaf\x01\x21")
    assert tag == bytes.fromhex(
        "08 000003 123456 00 000000"  # type, size, timestamp, ext, stream id
        "af0121"
        "0000000e"  # 11 + 3
    )


def test_encode_tag_extended_timestamp() -> None:
    tag = encode_tag(TAG_VIDEO, 0x12345678, b"")
    assert tag == bytes.fromhex("09 000000 345678 12 000000 0000000b")
    # Timestamps are taken modulo 2**32.
    assert encode_tag(TAG_VIDEO, 2**32 + 5, b"") == encode_tag(TAG_VIDEO, 5, b"")
    assert encode_tag(TAG_VIDEO, -1, b"")[4:8] == b"\xff\xff\xff\xff"


def test_encode_tag_errors() -> None:
    with pytest.raises(FlvError):
        encode_tag(TAG_VIDEO, 0, bytes(0x1000000))
    with pytest.raises(FlvError):
        encode_tag(256, 0, b"")


def test_reader_basic() -> None:
    data = file_header(has_audio=True, has_video=False) + encode_tag(TAG_SCRIPT, 0, b"meta")
    data += encode_tag(TAG_AUDIO, 0xABCDEF12, b"\xaf\x00")
    reader = FlvReader()
    assert not reader.header_parsed
    tags = reader.feed(data)
    assert reader.header_parsed
    assert reader.has_audio and not reader.has_video
    assert tags == [FlvTag(TAG_SCRIPT, 0, b"meta"), FlvTag(TAG_AUDIO, 0xABCDEF12, b"\xaf\x00")]
    assert reader.buffered() == 0
    assert reader.at_tag_boundary()
    assert reader.prev_size_mismatches == 0


def test_reader_returns_tag_before_its_trailer() -> None:
    data = file_header() + encode_tag(TAG_VIDEO, 40, b"\x17\x01")
    reader = FlvReader()
    tags = reader.feed(data[:-4])
    assert tags == [FlvTag(TAG_VIDEO, 40, b"\x17\x01")]
    assert reader.at_tag_boundary()
    assert reader.feed(data[-4:]) == []
    assert reader.buffered() == 0


def test_reader_honours_data_offset() -> None:
    header = b"FLV\x01\x05" + struct.pack(">I", 15) + b"padpad" + b"\x00\x00\x00\x00"
    data = header + encode_tag(TAG_AUDIO, 1, b"x")
    for split in range(len(data) + 1):
        reader = FlvReader()
        tags = reader.feed(data[:split]) + reader.feed(data[split:])
        assert tags == [FlvTag(TAG_AUDIO, 1, b"x")]


def test_reader_unknown_tag_type_passed_through() -> None:
    data = file_header() + encode_tag(0x2A, 7, b"zz")
    assert FlvReader().feed(data) == [FlvTag(0x2A, 7, b"zz")]


def test_reader_tolerates_wrong_previous_tag_size() -> None:
    first, second = encode_tag(TAG_AUDIO, 0, b"a"), encode_tag(TAG_AUDIO, 1, b"b")
    data = bytearray(file_header() + first + second)
    data[13 + 12 : 13 + 16] = b"\x00\x00\x00\x00"  # first tag's PreviousTagSize
    reader = FlvReader()
    assert [t.payload for t in reader.feed(bytes(data))] == [b"a", b"b"]
    assert reader.prev_size_mismatches == 1


def test_not_an_flv() -> None:
    with pytest.raises(FlvError, match="not an FLV"):
        FlvReader().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(FlvError, match="not an FLV"):
        FlvReader().feed(b"XY")  # rejected before a whole header arrives
    reader = FlvReader()
    assert reader.feed(b"FL") == []
    with pytest.raises(FlvError, match="not an FLV"):
        reader.feed(b"X\x01\x05\x00\x00\x00\x09")


def test_bad_data_offset() -> None:
    with pytest.raises(FlvError, match="data offset"):
        FlvReader().feed(b"FLV\x01\x05\x00\x00\x00\x05")


def test_oversize_tag() -> None:
    reader = FlvReader(max_tag_size=100)
    assert reader.feed(file_header() + encode_tag(TAG_VIDEO, 0, bytes(100))) != []
    with pytest.raises(FlvError, match="exceeds limit"):
        reader.feed(encode_tag(TAG_VIDEO, 0, bytes(101))[:11])


def test_reader_compacts_buffer() -> None:
    reader = FlvReader()
    reader.feed(file_header())
    payload = bytes(1000)
    blob = encode_tag(TAG_VIDEO, 0, payload) * 200
    total = 0
    for i in range(0, len(blob), 777):
        total += len(reader.feed(blob[i : i + 777]))
        assert len(reader._buf) < 70_000
    assert total == 200
    assert reader.buffered() == 0


_tags = st.lists(
    st.builds(
        FlvTag,
        st.sampled_from([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT, 0, 255]),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.binary(max_size=300),
    ),
    max_size=8,
)


def _stream(tags: list[FlvTag]) -> bytes:
    return file_header() + b"".join(encode_tag(t.tag_type, t.timestamp, t.payload) for t in tags)


@settings(max_examples=150, deadline=None)
@given(_tags, st.data())
def test_reader_round_trip_random_splits(tags: list[FlvTag], data: st.DataObject) -> None:
    stream = _stream(tags)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FlvReader()
    got: list[FlvTag] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[prev:cut])
        prev = cut
    assert got == tags
    assert reader.buffered() == 0
    assert reader.prev_size_mismatches == 0


@settings(max_examples=30, deadline=None)
@given(_tags)
def test_reader_byte_by_byte(tags: list[FlvTag]) -> None:
    stream = _stream(tags)
    reader = FlvReader()
    got: list[FlvTag] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert got == tags


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=50))
def test_random_bytes_after_header_only_raise_flv_error(garbage: bytes, step: int) -> None:
    reader = FlvReader(max_tag_size=1000)
    reader.feed(file_header())
    try:
        for i in range(0, len(garbage), step):
            for tag in reader.feed(garbage[i : i + step]):
                assert isinstance(tag, FlvTag)
    except FlvError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_only_raise_flv_error(garbage: bytes) -> None:
    try:
        FlvReader().feed(garbage)
    except FlvError:
        pass


# --- files (tools.flvfile) -----------------------------------------------------------------


def test_write_and_iter_file(tmp_path: Path) -> None:
    tags = [FlvTag(TAG_SCRIPT, 0, b"m"), FlvTag(TAG_VIDEO, 0, b"v" * 100_000)]
    tags += [FlvTag(TAG_AUDIO, ts, bytes([ts % 256]) * 50) for ts in range(0, 2000, 23)]
    path = tmp_path / "out.flv"
    flvfile.write_file(str(path), tags, has_audio=True, has_video=True)
    assert path.read_bytes()[:13] == file_header()
    assert list(flvfile.iter_file(str(path))) == tags
    assert list(flvfile.iter_file(str(path), chunk_size=7)) == tags


def test_iter_file_truncated(tmp_path: Path) -> None:
    tags = [FlvTag(TAG_AUDIO, 0, b"a" * 20), FlvTag(TAG_AUDIO, 10, b"b" * 20)]
    path = tmp_path / "t.flv"
    flvfile.write_file(str(path), tags)
    full = path.read_bytes()

    # Cut inside the second tag's body.
    path.write_bytes(full[:-10])
    with pytest.raises(FlvError, match="truncated FLV"):
        list(flvfile.iter_file(str(path)))
    assert list(flvfile.iter_file(str(path), allow_truncated=True)) == tags[:1]

    # Cut inside the second tag's header.
    path.write_bytes(full[: 13 + 35 + 5])
    with pytest.raises(FlvError, match="truncated FLV"):
        list(flvfile.iter_file(str(path)))
    assert list(flvfile.iter_file(str(path), allow_truncated=True)) == tags[:1]

    # Only the final PreviousTagSize missing (or partial): tolerated.
    for cut in (1, 2, 4):
        path.write_bytes(full[:-cut])
        assert list(flvfile.iter_file(str(path))) == tags

    # Incomplete file header.
    path.write_bytes(full[:5])
    with pytest.raises(FlvError, match="truncated FLV"):
        list(flvfile.iter_file(str(path)))
    assert list(flvfile.iter_file(str(path), allow_truncated=True)) == []

    path.write_bytes(b"")
    with pytest.raises(FlvError, match="truncated FLV"):
        list(flvfile.iter_file(str(path)))


def test_iter_file_not_flv(tmp_path: Path) -> None:
    path = tmp_path / "x.flv"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(FlvError, match="not an FLV"):
        list(flvfile.iter_file(str(path)))


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not available")
def test_iter_ffmpeg_file(tmp_path: Path) -> None:
    assert FFMPEG is not None
    path = tmp_path / "ff.flv"
    made_by(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ],
        path,
        timeout=60,
    )
    tags = list(flvfile.iter_file(str(path)))
    assert tags[0].tag_type == TAG_SCRIPT
    assert tags[0].payload.startswith(b"\x02\x00\x0aonMetaData")
    video = [t for t in tags if t.tag_type == TAG_VIDEO]
    audio = [t for t in tags if t.tag_type == TAG_AUDIO]
    # One sequence header, 10 coded frames (an end-of-sequence tag may follow).
    assert [t.payload[1] for t in video].count(1) == 10
    assert video[0].payload[:2] == b"\x17\x00"
    assert audio[0].payload[:2] == b"\xaf\x00"
    assert max(t.timestamp for t in tags) >= 900
    reader = FlvReader()
    reader.feed(path.read_bytes())
    assert reader.has_audio and reader.has_video
    assert reader.prev_size_mismatches == 0
