"""Tests for lal_twisted.media.amf0."""

from __future__ import annotations

import math
import struct
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lal_twisted.media import amf0
from lal_twisted.media.amf0 import UNDEFINED, AMF0Error, ECMAArray, Undefined

# --- known vectors ---------------------------------------------------------


def test_number_vector() -> None:
    assert amf0.encode_value(1.0) == bytes.fromhex("00 3F F0 00 00 00 00 00 00")
    assert amf0.encode_value(1) == bytes.fromhex("00 3F F0 00 00 00 00 00 00")
    assert amf0.decode(bytes.fromhex("00 3F F0 00 00 00 00 00 00")) == [1.0]


def test_connect_vector() -> None:
    expected = bytes.fromhex(
        "02 00 07 63 6f 6e 6e 65 63 74"  # "connect"
        "00 3f f0 00 00 00 00 00 00"  # 1.0
        "03 00 03 61 70 70 02 00 04 6c 69 76 65 00 00 09"  # {"app": "live"}
    )
    assert amf0.encode("connect", 1.0, {"app": "live"}) == expected
    assert amf0.decode(expected) == ["connect", 1.0, {"app": "live"}]


def test_scalar_vectors() -> None:
    assert amf0.encode_value(True) == b"\x01\x01"
    assert amf0.encode_value(False) == b"\x01\x00"
    assert amf0.encode_value(None) == b"\x05"
    assert amf0.encode_value(UNDEFINED) == b"\x06"
    assert amf0.encode_value("") == b"\x02\x00\x00"
    assert amf0.decode(b"\x01\x01\x01\x00\x05\x06") == [True, False, None, UNDEFINED]
    assert amf0.decode(b"\x0d") == [None]  # unsupported


def test_bool_is_not_number() -> None:
    (value,) = amf0.decode(amf0.encode_value(True))
    assert value is True


def test_ecma_array_vector() -> None:
    data = amf0.encode_value(ECMAArray(duration=0.0, stereo=True))
    expected = (
        b"\x08\x00\x00\x00\x02"
        + b"\x00\x08duration\x00"
        + struct.pack(">d", 0.0)
        + b"\x00\x06stereo\x01\x01"
        + b"\x00\x00\x09"
    )
    assert data == expected
    (decoded,) = amf0.decode(data)
    assert isinstance(decoded, ECMAArray)
    assert decoded == {"duration": 0.0, "stereo": True}


def test_strict_array_vector() -> None:
    data = amf0.encode_value([1, "a"])
    assert data == (b"\x0a\x00\x00\x00\x02" + b"\x00" + struct.pack(">d", 1.0) + b"\x02\x00\x01a")
    assert amf0.encode_value((1, "a")) == data
    assert amf0.decode(data) == [[1.0, "a"]]


def test_long_string() -> None:
    text = "x" * 70000
    data = amf0.encode_value(text)
    assert data[:5] == b"\x0c" + struct.pack(">I", 70000)
    assert amf0.decode(data) == [text]
    short = "y" * 65535
    assert amf0.encode_value(short)[:3] == b"\x02\xff\xff"


def test_utf8_string() -> None:
    data = amf0.encode_value("héllo")
    assert data == b"\x02\x00\x06h\xc3\xa9llo"
    assert amf0.decode(data) == ["héllo"]


def test_date_round_trip() -> None:
    when = datetime(2021, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    data = amf0.encode_value(when)
    assert data[0] == 0x0B
    assert len(data) == 11
    millis, tz = struct.unpack(">dh", data[1:])
    assert millis == 1614834367890.0
    assert tz == 0
    assert amf0.decode(data) == [when]
    # Naive datetimes are taken as UTC.
    assert amf0.encode_value(when.replace(tzinfo=None)) == data


def test_typed_object_decodes_to_dict() -> None:
    data = b"\x10\x00\x03Foo" + b"\x00\x01a\x05" + b"\x00\x00\x09"
    assert amf0.decode(data) == [{"a": None}]


def test_xml_document_decodes_to_str() -> None:
    assert amf0.decode(b"\x0f\x00\x00\x00\x03<a>") == ["<a>"]


def test_decode_one_offsets() -> None:
    data = amf0.encode("a", 2.0, None)
    value, offset = amf0.decode_one(data)
    assert (value, offset) == ("a", 4)
    value, offset = amf0.decode_one(data, offset)
    assert (value, offset) == (2.0, 13)
    value, offset = amf0.decode_one(memoryview(data), offset)
    assert (value, offset) == (None, 14)
    with pytest.raises(AMF0Error):
        amf0.decode_one(data, 14)


def test_undefined_singleton() -> None:
    assert Undefined() is UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert not UNDEFINED


# --- leniency --------------------------------------------------------------


def test_ecma_array_with_zero_count() -> None:
    data = b"\x08\x00\x00\x00\x00" + b"\x00\x01a\x01\x01" + b"\x00\x01b\x05" + b"\x00\x00\x09"
    assert amf0.decode(data + b"\x05") == [{"a": True, "b": None}, None]


def test_ecma_array_with_too_large_count() -> None:
    data = b"\x08\x00\x00\x00\x09" + b"\x00\x01a\x01\x01" + b"\x00\x00\x09" + b"\x02\x00\x01z"
    assert amf0.decode(data) == [{"a": True}, "z"]


def test_missing_end_marker_at_end_of_data() -> None:
    data = amf0.encode("onMetaData", ECMAArray(width=640.0, height=360.0))
    assert data.endswith(b"\x00\x00\x09")
    expected = ["onMetaData", {"width": 640.0, "height": 360.0}]
    assert amf0.decode(data[:-3]) == expected
    # A partial end marker (zeros only) is also tolerated.
    assert amf0.decode(data[:-1]) == expected
    assert amf0.decode(data[:-2]) == expected
    nested = amf0.encode({"a": {"b": 1}})
    assert amf0.decode(nested[:-6]) == [{"a": {"b": 1.0}}]


def test_invalid_utf8_is_replaced() -> None:
    assert amf0.decode(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"\x00\x3f\xf0", "truncated number"),
        (b"\x01", "truncated boolean"),
        (b"\x02\x00\x05ab", "truncated string"),
        (b"\x0c\x00\x00\x01\x00ab", "truncated long string"),
        (b"\x0a\x00\x00\x00\x03\x05", "truncated strict array"),
        (b"\x0a\x00\x00\x00\x03\x05\x0a\x00\x00\x00\x00", "value expected at offset 11"),
        (b"\x0b\x00\x00", "truncated date"),
        (b"\x03\x00\x05ab", "truncated object key"),
        (b"\x03\x00\x01a", "has no value"),
        (b"\x07\x00\x01", "reference"),
        (b"\x11\x00", "AMF3"),
        (b"\x09", "unknown AMF0 type marker 0x09"),
        (b"\x04", "unknown AMF0 type marker 0x04"),
        (b"\x05\x12", "unknown AMF0 type marker 0x12 at offset 1"),
    ],
)
def test_decode_errors(data: bytes, cause: str) -> None:
    with pytest.raises(AMF0Error, match=cause):
        amf0.decode(data)


def test_decode_error_reports_offset() -> None:
    with pytest.raises(AMF0Error, match="truncated number at offset 6"):
        amf0.decode(b"\x05\x05\x05\x05\x05\x00\x00")


def test_decode_nesting_limit() -> None:
    deep_ok = b"\x0a\x00\x00\x00\x01" * amf0.MAX_DEPTH + b"\x05"
    value = amf0.decode(deep_ok)[0]
    for _ in range(amf0.MAX_DEPTH):
        value = value[0]
    assert value is None
    too_deep = b"\x03\x00\x01a" * (amf0.MAX_DEPTH + 1) + b"\x05"
    with pytest.raises(AMF0Error, match="nesting"):
        amf0.decode(too_deep)
    very_deep = b"\x03\x00\x01a" * 100_000
    with pytest.raises(AMF0Error, match="nesting"):
        amf0.decode(very_deep)


def test_date_out_of_range() -> None:
    with pytest.raises(AMF0Error, match="date"):
        amf0.decode(b"\x0b" + struct.pack(">dh", 1e300, 0))
    with pytest.raises(AMF0Error, match="date"):
        amf0.decode(b"\x0b" + struct.pack(">dh", math.nan, 0))


@pytest.mark.parametrize(
    "value",
    [b"bytes", object(), {1: "a"}, 10**400, "\ud800", {"k" * 70000: 1}, {1, 2}],
)
def test_encode_errors(value: Any) -> None:
    with pytest.raises(AMF0Error):
        amf0.encode_value(value)


def test_encode_nesting_limit() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(AMF0Error, match="nesting"):
        amf0.encode(cyclic)


# --- property tests --------------------------------------------------------

_keys = st.text(max_size=8)
_scalars = (
    st.floats(allow_nan=False)
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.booleans()
    | st.text(max_size=20)
    | st.none()
    | st.just(UNDEFINED)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_keys, children, max_size=4)
        | st.dictionaries(_keys, children, max_size=4).map(ECMAArray)
    ),
    max_leaves=20,
)


def _normalise(value: Any) -> Any:
    """What a value decodes back to: numbers become floats, tuples lists."""
    if isinstance(value, bool) or value is None or value is UNDEFINED:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, ECMAArray):
        return ECMAArray({k: _normalise(v) for k, v in value.items()})
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, max_size=4))
def test_round_trip(values: list[Any]) -> None:
    data = amf0.encode(*values)
    decoded = amf0.decode(data)
    expected = [_normalise(v) for v in values]
    assert decoded == expected
    assert _same_types(decoded, expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_amf0_error(data: bytes) -> None:
    try:
        amf0.decode(data)
    except AMF0Error:
        pass


_markers = st.sampled_from(
    [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x05",
        b"\x06",
        b"\x08",
        b"\x0a",
        b"\x0b",
        b"\x0c",
        b"\x10",
        b"\x00\x00\x09",
        b"\x00\x01a",
        b"\xff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_markers | st.binary(max_size=4), max_size=24))
def test_structured_garbage_only_raises_amf0_error(chunks: list[bytes]) -> None:
    try:
        amf0.decode(b"".join(chunks))
    except AMF0Error:
        pass


@settings(max_examples=100, deadline=None)
@given(_values, st.data())
def test_truncated_encodings_only_raise_amf0_error(value: Any, data: st.DataObject) -> None:
    encoded = amf0.encode_value(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    try:
        amf0.decode(encoded[:cut])
    except AMF0Error:
        pass


# -- bounded work --------------------------------------------------------------------------

def test_many_top_level_values_are_refused_quickly() -> None:
    """4 MiB of one-byte nulls (a command a peer could send) costs a few
    thousand values, not four million."""
    started = time.process_time()
    with pytest.raises(AMF0Error, match=f"more than {amf0.MAX_VALUES} values"):
        amf0.decode(b"\x05" * (4 << 20))
    assert time.process_time() - started < 0.5
    assert len(amf0.decode(b"\x05" * amf0.MAX_VALUES)) == amf0.MAX_VALUES


@pytest.mark.parametrize("make", [
    lambda n: b"\x0a" + n.to_bytes(4, "big") + b"\x05" * n,  # strict array of nulls
    lambda n: b"\x03" + b"\x00\x00\x05" * n + b"\x00\x00\x09",  # object, empty keys
    lambda n: b"\x08" + bytes(4) + b"\x00\x01k\x05" * n + b"\x00\x00\x09",  # ECMA array
    # two nested arrays, each under the limit, counted together
    lambda n: b"\x0a" + (2).to_bytes(4, "big") + 2 * (
        b"\x0a" + (n // 2).to_bytes(4, "big") + b"\x05" * (n // 2)),
])
def test_too_many_entries_are_refused_quickly(make: Any) -> None:
    data = make(amf0.MAX_ENTRIES + 1)
    started = time.process_time()
    with pytest.raises(AMF0Error, match=f"more than {amf0.MAX_ENTRIES} object properties"):
        amf0.decode(data)
    with pytest.raises(AMF0Error, match="more than"):
        amf0.decode_one(data)
    assert time.process_time() - started < 1.0


def test_entries_up_to_the_limit_decode() -> None:
    [items] = amf0.decode(b"\x0a" + amf0.MAX_ENTRIES.to_bytes(4, "big")
                          + b"\x05" * amf0.MAX_ENTRIES)
    assert items == [None] * amf0.MAX_ENTRIES
    # The limit is per call: the next call starts afresh.
    assert amf0.decode(amf0.encode([1.0] * 10)) == [[1.0] * 10]
