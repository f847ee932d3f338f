"""Tests for the RTMP chunk layer (lal_twisted.rtmp.chunk) and message helpers."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import (
    MAX_CSID,
    MAX_HEADER_SIZE,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    encode_message,
)
from lal_twisted.rtmp.message import Message, RtmpProtocolError

# ---------------------------------------------------------------------------
# Hand-built chunk headers, independent of ChunkWriter.


def basic(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])


def fmt0(csid: int, ts: int, length: int, type_id: int, msid: int) -> bytes:
    return (
        basic(0, csid)
        + ts.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + msid.to_bytes(4, "little")
    )


def fmt1(csid: int, delta: int, length: int, type_id: int) -> bytes:
    return basic(1, csid) + delta.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])


def fmt2(csid: int, delta: int) -> bytes:
    return basic(2, csid) + delta.to_bytes(3, "big")


def fmt3(csid: int) -> bytes:
    return basic(3, csid)


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def scs(size: int) -> bytes:
    """A complete Set Chunk Size message on csid 2."""
    return fmt0(2, 0, 4, m.SET_CHUNK_SIZE, 0) + u32(size)


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def feed_in_pieces(reader: ChunkReader, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    prev = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            out += reader.feed(data[prev:cut])
            prev = cut
    out += reader.feed(data[prev:])
    return out


# ---------------------------------------------------------------------------
# Round trip: ChunkWriter -> ChunkReader.

csids = st.one_of(
    st.integers(2, 63),
    st.integers(64, 319),
    st.integers(320, MAX_CSID),
    st.sampled_from([2, 63, 64, 319, 320, MAX_CSID]),
)
timestamps = st.one_of(
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFFFF + 10),
    st.sampled_from([0, 0xFFFFFE, 0xFFFFFF, 0x1000000, 2**32 - 1]),
)
# Types 1 and 2 would be acted upon by the reader, so they are tested separately.
type_ids = st.integers(3, 255)
stream_ids = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1]))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Message], bytes, list[int]]:
    chunk_size = draw(
        st.one_of(
            st.integers(1, 16),
            st.integers(17, 70000),
            st.sampled_from([128, 4096, 60000, 0x7FFFFFFF]),
        )
    )
    # Bound the number of chunks per message so the test stays fast.
    max_payload = min(20000, chunk_size * 300)
    near_boundary = st.sampled_from([0, 1, chunk_size - 1, chunk_size, chunk_size + 1])
    sizes = st.one_of(st.integers(0, max_payload), near_boundary.map(lambda n: min(n, max_payload)))
    messages = [
        Message(
            draw(csids),
            draw(type_ids),
            draw(stream_ids),
            draw(timestamps),
            payload_of(draw(sizes), draw(st.integers(0, 2**32))),
        )
        for _ in range(draw(st.integers(1, 6)))
    ]
    writer = ChunkWriter()
    scs_payload = m.set_chunk_size_payload(chunk_size)
    wire = writer.encode(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0, 0, scs_payload)
    writer.chunk_size = chunk_size
    wire += b"".join(
        writer.encode(msg.csid, msg.type_id, msg.stream_id, msg.timestamp, msg.payload)
        for msg in messages
    )
    cuts = draw(st.lists(st.integers(0, len(wire)), max_size=40))
    return chunk_size, messages, wire, cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_round_trip_random_splits(scenario: tuple[int, list[Message], bytes, list[int]]) -> None:
    chunk_size, messages, wire, cuts = scenario
    reader = ChunkReader()
    got = feed_in_pieces(reader, wire, cuts)
    expected = [Message(2, m.SET_CHUNK_SIZE, 0, 0, m.set_chunk_size_payload(chunk_size))]
    assert got == expected + messages
    assert all(type(msg.payload) is bytes for msg in got)
    assert reader.chunk_size == chunk_size
    assert reader.bytes_received == len(wire)
    assert reader.buffered_bytes == 0


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_round_trip_bytearray_input(scenario: tuple[int, list[Message], bytes, list[int]]) -> None:
    chunk_size, messages, wire, cuts = scenario
    reader = ChunkReader()
    out: list[Message] = []
    prev = 0
    for cut in sorted(set(cuts)) + [len(wire)]:
        out += reader.feed(bytearray(wire[prev:cut]))  # type: ignore[arg-type]
        prev = max(prev, cut)
    assert out[1:] == messages
    assert reader.buffered_bytes == 0


def test_round_trip_one_byte_at_a_time() -> None:
    messages = [
        Message(3, m.COMMAND_AMF0, 0, 0, payload_of(40, 1)),
        Message(6, m.VIDEO, 1, 0xFFFFFF, payload_of(25, 2)),
        Message(400, m.AUDIO, 1, 2**32 - 1, payload_of(8, 3)),
        Message(100, m.DATA_AMF0, 7, 123, b""),
        Message(6, m.VIDEO, 1, 0x12345678, payload_of(17, 4)),
    ]
    writer = ChunkWriter()
    wire = writer.encode(2, m.SET_CHUNK_SIZE, 0, 0, m.set_chunk_size_payload(7))
    writer.chunk_size = 7
    wire += b"".join(writer.encode(x.csid, x.type_id, x.stream_id, x.timestamp, x.payload)
                     for x in messages)
    reader = ChunkReader()
    got: list[Message] = []
    for i in range(len(wire)):
        got += reader.feed(wire[i : i + 1])
        assert reader.unparsed_bytes < MAX_HEADER_SIZE + reader.chunk_size
    assert got[1:] == messages
    assert reader.buffered_bytes == 0


def test_interleaved_chunk_streams() -> None:
    audio = payload_of(300, 5)
    video = payload_of(200, 6)
    wire = (
        fmt0(6, 10, 200, m.VIDEO, 1) + video[:128]
        + fmt0(4, 11, 300, m.AUDIO, 1) + audio[:128]
        + fmt3(6) + video[128:]
        + fmt3(4) + audio[128:256]
        + fmt3(4) + audio[256:]
    )
    assert ChunkReader().feed(wire) == [
        Message(6, m.VIDEO, 1, 10, video),
        Message(4, m.AUDIO, 1, 11, audio),
    ]


# ---------------------------------------------------------------------------
# Hand-built vectors.


def test_fmt1_fmt2_fmt3_new_message_deltas() -> None:
    wire = (
        fmt0(4, 1000, 3, m.AUDIO, 1) + b"abc"
        + fmt1(4, 20, 2, m.VIDEO) + b"de"
        + fmt2(4, 30) + b"fg"
        + fmt3(4) + b"hi"
        + fmt3(4) + b"jk"
    )
    assert ChunkReader().feed(wire) == [
        Message(4, m.AUDIO, 1, 1000, b"abc"),
        Message(4, m.VIDEO, 1, 1020, b"de"),
        Message(4, m.VIDEO, 1, 1050, b"fg"),
        Message(4, m.VIDEO, 1, 1080, b"hi"),
        Message(4, m.VIDEO, 1, 1110, b"jk"),
    ]


def test_type3_after_type0_repeats_absolute_timestamp_as_delta() -> None:
    wire = fmt0(5, 40, 1, m.DATA_AMF0, 1) + b"x" + fmt3(5) + b"y" + fmt3(5) + b"z"
    got = ChunkReader().feed(wire)
    assert [x.timestamp for x in got] == [40, 80, 120]


def test_extended_timestamp_on_type3_continuation_chunks() -> None:
    ts = 0x01234567
    data = payload_of(300, 7)
    wire = (
        fmt0(6, 0xFFFFFF, 300, m.VIDEO, 1) + u32(ts) + data[:128]
        + fmt3(6) + u32(ts) + data[128:256]
        + fmt3(6) + u32(ts) + data[256:]
    )
    assert ChunkReader().feed(wire) == [Message(6, m.VIDEO, 1, ts, data)]
    assert ChunkWriter(128).encode(6, m.VIDEO, 1, ts, data) == wire


def test_extended_delta_then_type3_new_messages() -> None:
    big = 0x01000000
    wire = (
        fmt0(4, 100, 2, m.AUDIO, 1) + b"ab"
        + fmt1(4, 0xFFFFFF, 1, m.AUDIO) + u32(big) + b"c"
        + fmt3(4) + u32(big) + b"d"
        + fmt2(4, 5) + b"e"
        + fmt3(4) + b"f"
    )
    got = ChunkReader().feed(wire)
    assert [x.timestamp for x in got] == [100, 100 + big, 100 + 2 * big, 105 + 2 * big,
                                          110 + 2 * big]
    assert [x.payload for x in got] == [b"ab", b"c", b"d", b"e", b"f"]


def test_type3_new_message_uses_its_own_extended_field() -> None:
    # The 4-byte field on a type-3 chunk that starts a message is the delta (as FFmpeg reads it).
    wire = (
        fmt0(4, 0xFFFFFF, 1, m.AUDIO, 1) + u32(0x01000000) + b"a"
        + fmt3(4) + u32(0x02000000) + b"b"
    )
    got = ChunkReader().feed(wire)
    assert [x.timestamp for x in got] == [0x01000000, 0x03000000]


def test_timestamps_wrap_modulo_2_32() -> None:
    wire = (
        fmt0(4, 0xFFFFFF, 1, m.AUDIO, 1) + u32(0xFFFFFFF0) + b"a"
        + fmt2(4, 0x20) + b"b"
        + fmt3(4) + b"c"
    )
    got = ChunkReader().feed(wire)
    assert [x.timestamp for x in got] == [0xFFFFFFF0, 0x10, 0x30]


def test_set_chunk_size_takes_effect_within_the_same_feed() -> None:
    big = payload_of(1000, 8)
    pending = payload_of(300, 9)
    wire = (
        fmt0(4, 0, 300, m.AUDIO, 1) + pending[:128]  # started with chunk size 128
        + scs(1000)
        + fmt0(3, 0, 1000, m.COMMAND_AMF0, 0) + big  # one chunk at the new size
        + fmt3(4) + pending[128:]  # the rest of csid 4 in one chunk
    )
    reader = ChunkReader()
    got = reader.feed(wire)
    assert got == [
        Message(2, m.SET_CHUNK_SIZE, 0, 0, u32(1000)),
        Message(3, m.COMMAND_AMF0, 0, 0, big),
        Message(4, m.AUDIO, 1, 0, pending),
    ]
    assert reader.chunk_size == 1000


def test_abort_discards_partial_message() -> None:
    data = payload_of(300, 10)
    start = fmt0(4, 0, 300, m.VIDEO, 1) + data[:128]
    abort = fmt0(2, 0, 4, m.ABORT, 0) + u32(4)
    reader = ChunkReader()
    assert reader.feed(start) == []
    assert reader.buffered_bytes == 128
    assert reader.feed(abort) == [Message(2, m.ABORT, 0, 0, u32(4))]
    assert reader.buffered_bytes == 0
    assert reader.feed(fmt0(4, 50, 3, m.VIDEO, 1) + b"new") == [Message(4, m.VIDEO, 1, 50, b"new")]


def test_abort_then_type3_starts_new_message() -> None:
    data = payload_of(200, 11)
    wire = (
        fmt0(4, 7, 200, m.VIDEO, 1) + data[:128]
        + fmt0(2, 0, 4, m.ABORT, 0) + u32(4)
        + fmt3(4) + data[:128] + fmt3(4) + data[128:]
    )
    got = ChunkReader().feed(wire)
    assert got[1] == Message(4, m.VIDEO, 1, 14, data)


def test_abort_of_unknown_stream_is_ignored() -> None:
    assert len(ChunkReader().feed(fmt0(2, 0, 4, m.ABORT, 0) + u32(99))) == 1


def test_header_mid_message_restarts() -> None:
    data = payload_of(300, 12)
    wire = fmt0(4, 0, 300, m.VIDEO, 1) + data[:128] + fmt1(4, 10, 2, m.VIDEO) + b"zz"
    reader = ChunkReader()
    assert reader.feed(wire) == [Message(4, m.VIDEO, 1, 10, b"zz")]
    assert reader.buffered_bytes == 0


def test_zero_length_messages() -> None:
    wire = fmt0(3, 5, 0, m.COMMAND_AMF0, 0) + fmt3(3) + fmt2(3, 1)
    assert ChunkReader().feed(wire) == [
        Message(3, m.COMMAND_AMF0, 0, 5, b""),
        Message(3, m.COMMAND_AMF0, 0, 10, b""),
        Message(3, m.COMMAND_AMF0, 0, 11, b""),
    ]
    assert encode_message(128, 3, m.COMMAND_AMF0, 0, 5, b"") == fmt0(3, 5, 0, m.COMMAND_AMF0, 0)


def test_multi_byte_csid_headers() -> None:
    data = payload_of(200, 13)
    for csid, first, cont in [
        (2, b"\x02", b"\xc2"),
        (63, b"\x3f", b"\xff"),
        (64, b"\x00\x00", b"\xc0\x00"),
        (319, b"\x00\xff", b"\xc0\xff"),
        (320, b"\x01\x00\x01", b"\xc1\x00\x01"),
        (MAX_CSID, b"\x01\xff\xff", b"\xc1\xff\xff"),
    ]:
        wire = encode_message(128, csid, m.VIDEO, 1, 0, data)
        assert wire.startswith(first)
        assert wire == fmt0(csid, 0, 200, m.VIDEO, 1) + data[:128] + cont + data[128:]
        assert ChunkReader().feed(wire) == [Message(csid, m.VIDEO, 1, 0, data)]


def test_writer_output_is_stateless_and_matches_module_function() -> None:
    writer = ChunkWriter(100)
    data = payload_of(1000, 14)
    first = writer.encode(6, m.VIDEO, 1, 40, data)
    writer.encode(6, m.VIDEO, 1, 80, b"x")
    assert writer.encode(6, m.VIDEO, 1, 40, data) == first
    assert encode_message(100, 6, m.VIDEO, 1, 40, data) == first
    assert encode_message(100, 6, m.VIDEO, 1, 40, bytearray(data)) == first  # type: ignore[arg-type]
    # Timestamps are taken modulo 2**32.
    assert encode_message(100, 6, m.VIDEO, 1, 2**32 + 40, data) == first


def test_writer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ChunkWriter(0)
    writer = ChunkWriter()
    with pytest.raises(ValueError):
        writer.chunk_size = 0x80000000
    assert writer.chunk_size == 128
    for csid in (0, 1, MAX_CSID + 1):
        with pytest.raises(ValueError):
            writer.encode(csid, m.VIDEO, 1, 0, b"x")
    with pytest.raises(ValueError):
        writer.encode(3, 256, 0, 0, b"x")
    with pytest.raises(ValueError):
        writer.encode(3, 8, 2**32, 0, b"x")
    with pytest.raises(ValueError):
        writer.encode(3, 8, 0, 0, bytes(0x1000000))


def test_large_single_chunk_fed_in_small_pieces_is_linear() -> None:
    data = payload_of(4 * 1024 * 1024, 15)
    wire = scs(0x7FFFFFFF) + encode_message(0x7FFFFFFF, 6, m.VIDEO, 1, 0, data)
    reader = ChunkReader()
    out: list[Message] = []
    for off in range(0, len(wire), 4096):
        out += reader.feed(wire[off : off + 4096])
    assert out[1] == Message(6, m.VIDEO, 1, 0, data)
    assert reader.buffered_bytes == 0


# ---------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_header_on_unknown_chunk_stream(fmt: int) -> None:
    header = {1: fmt1(7, 0, 1, m.AUDIO), 2: fmt2(7, 0), 3: fmt3(7)}[fmt]
    with pytest.raises(ChunkError) as info:
        ChunkReader().feed(header + b"a")
    assert str(info.value) == (
        f"chunk stream 7 referenced with a type-{fmt} header before any type-0 header"
    )


def test_message_length_over_limit() -> None:
    with pytest.raises(ChunkError, match="message length 300000 exceeds the limit of 1000"):
        ChunkReader(max_message_size=1000).feed(fmt0(3, 0, 300000, m.VIDEO, 1))
    reader = ChunkReader(max_message_size=1000)
    reader.feed(fmt0(3, 0, 1, m.VIDEO, 1) + b"a")
    with pytest.raises(ChunkError, match="exceeds the limit"):
        reader.feed(fmt1(3, 0, 1001, m.VIDEO))


@pytest.mark.parametrize("size", [0, 0x80000000, 0xFFFFFFFF])
def test_invalid_chunk_size(size: int) -> None:
    with pytest.raises(ChunkError, match=f"invalid chunk size {size}$"):
        ChunkReader().feed(scs(size))


def test_short_control_payloads() -> None:
    with pytest.raises(ChunkError, match="set chunk size payload too short"):
        ChunkReader().feed(fmt0(2, 0, 2, m.SET_CHUNK_SIZE, 0) + b"\x00\x01")
    with pytest.raises(ChunkError, match="abort payload too short"):
        ChunkReader().feed(fmt0(2, 0, 0, m.ABORT, 0))


def test_too_many_chunk_streams() -> None:
    reader = ChunkReader(max_chunk_streams=4)
    reader.feed(b"".join(fmt0(c, 0, 1, m.AUDIO, 1) + b"a" for c in range(3, 7)))
    with pytest.raises(ChunkError, match=r"too many chunk streams \(>4\)"):
        reader.feed(fmt0(7, 0, 1, m.AUDIO, 1) + b"a")
    default = ChunkReader()
    with pytest.raises(ChunkError, match=r"too many chunk streams \(>64\)"):
        default.feed(b"".join(fmt0(c, 0, 0, m.AUDIO, 1) for c in range(2, 100)))


def test_chunk_error_is_a_protocol_error() -> None:
    assert issubclass(ChunkError, RtmpProtocolError)


# Valid fragments mixed into random input so the fuzzer reaches deep states.
_FRAGMENTS = [
    fmt0(3, 0, 300, m.VIDEO, 1),
    fmt0(4, 0xFFFFFF, 5, m.AUDIO, 1) + u32(0x12345678),
    fmt0(70, 1, 2, m.AUDIO, 1),
    fmt0(400, 1, 0, m.AUDIO, 1),
    fmt1(3, 5, 40, m.VIDEO),
    fmt2(4, 0xFFFFFF) + u32(9),
    fmt3(3),
    fmt3(4),
    scs(1),
    scs(4096),
    scs(0x7FFFFFFF),
    fmt0(2, 0, 4, m.ABORT, 0) + u32(3),
    bytes(64),
]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(_FRAGMENTS)), max_size=40),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_random_bytes_raise_only_chunk_error(pieces: list[bytes], cuts: list[int]) -> None:
    max_size, max_streams = 500, 8
    reader = ChunkReader(max_message_size=max_size, max_chunk_streams=max_streams)
    data = b"".join(pieces)
    bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    prev = 0
    try:
        for cut in bounds:
            for msg in reader.feed(data[prev:cut]):
                assert len(msg.payload) <= max_size
            prev = cut
            assert reader.unparsed_bytes < MAX_HEADER_SIZE + min(reader.chunk_size, max_size)
            assert reader.buffered_bytes <= reader.unparsed_bytes + max_streams * max_size
    except ChunkError:
        pass


# ---------------------------------------------------------------------------
# Message and protocol-control payload helpers.


def test_message_value_semantics() -> None:
    a = Message(3, m.COMMAND_AMF0, 0, 5, b"abc")
    assert a == Message(3, m.COMMAND_AMF0, 0, 5, b"abc")
    assert a != Message(3, m.COMMAND_AMF0, 0, 6, b"abc")
    assert a != Message(4, m.COMMAND_AMF0, 0, 5, b"abc")
    assert a != Message(3, m.COMMAND_AMF0, 0, 5, b"abd")
    assert a != "abc"
    assert "csid=3" in repr(a) and "616263" in repr(a)
    assert not hasattr(a, "__dict__")


def test_control_payloads() -> None:
    assert m.set_chunk_size_payload(4096) == struct.pack(">I", 4096)
    with pytest.raises(ValueError):
        m.set_chunk_size_payload(0)
    assert m.window_ack_size_payload(2500000) == struct.pack(">I", 2500000)
    assert m.ack_payload(2**32 + 5) == struct.pack(">I", 5)
    assert m.set_peer_bandwidth_payload(2500000) == struct.pack(">IB", 2500000, 2)
    assert m.set_peer_bandwidth_payload(1, 0) == struct.pack(">IB", 1, 0)
    assert m.parse_u32(m.window_ack_size_payload(77)) == 77
    with pytest.raises(RtmpProtocolError):
        m.parse_u32(b"\x00\x01")


def test_user_control_payloads() -> None:
    begin = m.user_control_payload(m.STREAM_BEGIN, 1)
    assert begin == b"\x00\x00\x00\x00\x00\x01"
    assert m.parse_user_control(begin) == (m.STREAM_BEGIN, 1, None)
    sbl = m.user_control_payload(m.SET_BUFFER_LENGTH, 1, 3000)
    assert sbl == struct.pack(">HII", 3, 1, 3000)
    assert m.parse_user_control(sbl) == (m.SET_BUFFER_LENGTH, 1, 3000)
    assert m.parse_user_control(m.user_control_payload(m.PING_RESPONSE, 123)) == (7, 123, None)
    with pytest.raises(ValueError):
        m.user_control_payload(m.SET_BUFFER_LENGTH, 1)
    with pytest.raises(RtmpProtocolError):
        m.parse_user_control(b"\x00\x06\x00")
    with pytest.raises(RtmpProtocolError):
        m.parse_user_control(struct.pack(">HI", m.SET_BUFFER_LENGTH, 1))


def _first_chunks(csid: int, length: int, chunks: int) -> bytes:
    """The first ``chunks`` chunks (4096-byte bodies) of a ``length``-byte message."""
    data = encode_message(4096, csid, 9, 1, 0, bytes(length))
    return data[: 12 + 4096 + (chunks - 1) * 4097]


_SIZE_4096 = encode_message(128, 2, m.SET_CHUNK_SIZE, 0, 0, (4096).to_bytes(4, "big"))


def test_unfinished_messages_across_streams_are_capped() -> None:
    """Many chunk streams each holding part of a big message: bounded in total."""
    reader = ChunkReader(max_message_size=1 << 20, max_partial_bytes=3 << 20)
    reader.feed(_SIZE_4096)
    # Each stream holds 250 of the 256 chunks of a 1 MiB message: three fit...
    for csid in (4, 5, 6):
        assert reader.feed(_first_chunks(csid, 1 << 20, 250)) == []
    assert reader.buffered_bytes >= 3 * 250 * 4096
    # ...a fourth does not, although each message is under max_message_size.
    with pytest.raises(ChunkError, match="unfinished messages hold"):
        reader.feed(_first_chunks(7, 1 << 20, 250))


def test_finished_and_aborted_messages_release_the_cap() -> None:
    reader = ChunkReader(max_message_size=1 << 20, max_partial_bytes=(1 << 20) + 8192)
    reader.feed(_SIZE_4096)
    payload = bytes(range(256)) * 3000  # 768000 bytes, 188 chunks
    for i in range(5):  # far more than the cap in total, one message at a time
        messages = reader.feed(encode_message(4096, 6, 9, 1, i * 40, payload))
        assert [msg.payload for msg in messages] == [payload]
    # A partial message that is aborted frees its share for the next one.
    reader.feed(_first_chunks(7, len(payload), 150))
    reader.feed(encode_message(4096, 2, m.ABORT, 0, 0, (7).to_bytes(4, "big")))
    assert reader.feed(_first_chunks(8, len(payload), 150)) == []
    # and a new type-0 header on a stream drops its unfinished message too
    reader.feed(_first_chunks(8, len(payload), 150))
    assert reader.feed(_first_chunks(9, 4096 * 10, 5)) == []


# ---------------------------------------------------------------------------
# What unfinished messages cost, and the per-type limits.


def _tiny_chunks_of_a_big_message(payload: int) -> bytes:
    """The first ``payload`` bytes of a 16 MiB video message at chunk size 2."""
    # A type-0 chunk with 2 payload bytes, then 3-byte type-3 chunks.
    first = fmt0(6, 0, 16 * 1024 * 1024 - 1, m.VIDEO, 1) + b"ab"
    return first + (fmt3(6) + b"cd") * (payload // 2 - 1)


def test_unfinished_message_in_tiny_chunks_holds_its_payload_once() -> None:
    """A peer at chunk size 2 parks 256 KiB of an unfinished 16 MiB message: the
    reader holds and counts about 256 KiB, not tens of bytes per chunk."""
    payload = 256 * 1024
    data = _tiny_chunks_of_a_big_message(payload)
    pieces = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reader = ChunkReader()
        reader.feed(scs(2))
        for piece in pieces:
            assert reader.feed(piece) == []
        del piece
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert reader.partial_bytes == payload
    assert reader.buffered_bytes == payload + reader.unparsed_bytes
    assert held < 1.5 * payload, f"{held} bytes held for {payload} bytes of payload"


def test_partial_limit_counts_payload_held_in_tiny_chunks() -> None:
    reader = ChunkReader(max_partial_bytes=64 * 1024)
    reader.feed(scs(2))
    data = _tiny_chunks_of_a_big_message(128 * 1024)
    with pytest.raises(ChunkError, match="unfinished messages hold 65538 bytes, over the "
                                         "limit of 65536"):
        reader.feed(data)


def test_finished_message_from_tiny_chunks_releases_the_count() -> None:
    reader = ChunkReader()
    payload = bytes(range(256)) * 40
    reader.feed(scs(2))
    wire = encode_message(2, 6, m.VIDEO, 1, 7, payload)
    assert reader.feed(wire[:-3]) == []  # all but the last 2-byte chunk
    assert reader.partial_bytes == len(payload) - 2
    assert reader.feed(wire[-3:]) == [Message(6, m.VIDEO, 1, 7, payload)]
    assert reader.partial_bytes == reader.buffered_bytes == 0


@pytest.mark.parametrize(("type_id", "kind", "limit"), [
    (m.COMMAND_AMF0, "command", m.MAX_COMMAND_SIZE),
    (m.COMMAND_AMF3, "AMF3 command", m.MAX_COMMAND_SIZE),
    (m.DATA_AMF0, "data", m.MAX_DATA_SIZE),
    (m.DATA_AMF3, "AMF3 data", m.MAX_DATA_SIZE),
])
def test_command_and_data_over_their_limit_are_refused_at_the_header(
        type_id: int, kind: str, limit: int) -> None:
    """A 4 MiB command of AMF0 nulls is refused by its header: nothing of it is
    buffered, and the error names the type and the limit."""
    wire = encode_message(128, 3, type_id, 0, 0, b"\x05" * (4 * 1024 * 1024))
    reader = ChunkReader()
    with pytest.raises(ChunkError) as info:
        reader.feed(wire[:4096])
    assert str(info.value) == (f"{kind} message (type {type_id}) of {4 * 1024 * 1024} bytes "
                               f"is over the limit of {limit} for its type")
    assert reader.partial_bytes == 0
    # A type-1 header is checked the same way.
    reader = ChunkReader()
    reader.feed(fmt0(3, 0, 1, m.AUDIO, 1) + b"a")
    with pytest.raises(ChunkError, match="over the limit"):
        reader.feed(fmt1(3, 0, limit + 1, type_id))
    # At the limit the message is read.
    payload = b"\x05" * limit
    reader = ChunkReader()
    assert reader.feed(encode_message(128, 3, type_id, 0, 0, payload)) == [
        Message(3, type_id, 0, 0, payload)]


def test_type_limits_never_exceed_max_message_size_and_can_be_replaced() -> None:
    with pytest.raises(ChunkError, match="message length 2000 exceeds the limit of 1000"):
        ChunkReader(max_message_size=1000).feed(fmt0(3, 0, 2000, m.COMMAND_AMF0, 0))
    reader = ChunkReader(max_type_sizes={m.VIDEO: 100})
    assert reader.feed(fmt0(3, 0, 1 << 20, m.COMMAND_AMF0, 0) + bytes(128)) == []
    assert reader.partial_bytes == 128
    with pytest.raises(ChunkError,
                       match=r"^message \(type 9\) of 101 bytes is over the limit of 100 "):
        reader.feed(fmt0(4, 0, 101, m.VIDEO, 1))
