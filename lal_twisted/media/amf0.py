"""AMF0 (Action Message Format 0) encoding and decoding.

RTMP command messages and FLV ``onMetaData`` script tags carry AMF0 values.
The decoder is deliberately lenient where real encoders are known to deviate
from the specification (wrong ECMA array counts, a missing object end marker at
the very end of a message, invalid UTF-8), and strict everywhere else: any
malformed input raises :class:`AMF0Error` and nothing else.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "AMF0Error",
    "ECMAArray",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_VALUES",
    "UNDEFINED",
    "Undefined",
    "decode",
    "decode_one",
    "encode",
    "encode_value",
]

# Type markers.
NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

MAX_DEPTH = 64
"""Deepest nesting of objects/arrays accepted by the encoder and decoder."""

MAX_VALUES = 4096
"""Most top-level values one :func:`decode` call reads.  A command has a name, a
transaction id and a handful of arguments, metadata two values; without a cap
a message of one-byte nulls costs a Python object per byte (2.6 s of CPU for
4 MiB)."""

MAX_ENTRIES = 65536
"""Most object properties and array items, at any depth, one :func:`decode` or
:func:`decode_one` call reads.  Metadata has a few dozen; a keyframe index
copied from a recorded file two entries per keyframe (9 hours at one a second).
With :data:`MAX_VALUES` it bounds the objects, and so the CPU, any input costs."""

_U16_MAX = 0xFFFF
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_NUMBER = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_MARKER_NUMBER = struct.Struct(">Bd")
_MARKER_U16 = struct.Struct(">BH")
_MARKER_U32 = struct.Struct(">BI")
_OBJECT_END = b"\x00\x00\x09"


class AMF0Error(ValueError):
    """Raised for values that cannot be encoded and for malformed AMF0 data."""


class Undefined:
    """The AMF0 ``undefined`` value (marker 0x06), distinct from ``None`` (null).

    Only one instance, :data:`UNDEFINED`, ever exists.
    """

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


class ECMAArray(dict[str, Any]):
    """A dict that encodes as an AMF0 ECMA array (marker 0x08) instead of an object.

    ``onMetaData`` is conventionally sent as an ECMA array, so round-tripping
    metadata needs to preserve the distinction.
    """

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode each value in order and concatenate the results."""
    out: list[bytes] = []
    for value in values:
        _encode(value, out, 0)
    return b"".join(out)


def encode_value(value: Any) -> bytes:
    """Encode a single value."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise AMF0Error(f"string is not encodable as UTF-8: {exc}") from None


def _encode_key(key: Any, out: list[bytes]) -> None:
    if not isinstance(key, str):
        raise AMF0Error(f"object keys must be str, not {type(key).__name__}")
    raw = _encode_utf8(key)
    if len(raw) > _U16_MAX:
        raise AMF0Error(f"object key too long ({len(raw)} bytes)")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _encode_properties(mapping: dict[Any, Any], out: list[bytes], depth: int) -> None:
    for key, item in mapping.items():
        _encode_key(key, out)
        _encode(item, out, depth + 1)
    out.append(_OBJECT_END)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AMF0Error(f"nesting deeper than {MAX_DEPTH} levels")
    # bool is a subclass of int, so it must be tested first.
    if isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, int | float):
        try:
            out.append(_MARKER_NUMBER.pack(NUMBER, float(value)))
        except OverflowError:
            raise AMF0Error(f"integer too large for an AMF0 number: {value}") from None
    elif isinstance(value, str):
        raw = _encode_utf8(value)
        if len(raw) > _U16_MAX:
            out.append(_MARKER_U32.pack(LONG_STRING, len(raw)))
        else:
            out.append(_MARKER_U16.pack(STRING, len(raw)))
        out.append(raw)
    elif value is None:
        out.append(b"\x05")
    elif value is UNDEFINED:
        out.append(b"\x06")
    elif isinstance(value, ECMAArray):
        out.append(_MARKER_U32.pack(ECMA_ARRAY, len(value)))
        _encode_properties(value, out, depth)
    elif isinstance(value, dict):
        out.append(b"\x03")
        _encode_properties(value, out, depth)
    elif isinstance(value, list | tuple):
        out.append(_MARKER_U32.pack(STRICT_ARRAY, len(value)))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, datetime):
        # Naive datetimes are taken to be UTC; AMF0 dates carry no zone.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        millis = (aware - _EPOCH) / _ONE_MS
        out.append(b"\x0b")
        out.append(_DATE.pack(millis, 0))
    else:
        raise AMF0Error(f"cannot encode {type(value).__name__} as AMF0")


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


class _Budget:
    """Object properties and array items one decode call may still read."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ENTRIES

    @staticmethod
    def exhausted() -> AMF0Error:
        """The error once more than :data:`MAX_ENTRIES` entries were read."""
        return AMF0Error(f"more than {MAX_ENTRIES} object properties and array items")


def decode(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every value in ``data`` until its end.

    At most :data:`MAX_VALUES` values and :data:`MAX_ENTRIES` properties and
    items in all: more raises :class:`AMF0Error`, so the work is bounded.
    """
    view = _as_view(data)
    end = len(view)
    values: list[Any] = []
    budget = _Budget()
    offset = 0
    while offset < end:
        if len(values) == MAX_VALUES:
            raise AMF0Error(f"more than {MAX_VALUES} values in one message")
        value, offset = _decode(view, offset, 0, budget)
        values.append(value)
    return values


def decode_one(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode one value starting at ``offset``; return it and the offset just past it.

    At most :data:`MAX_ENTRIES` properties and items, as :func:`decode`."""
    view = _as_view(data)
    if offset < 0 or offset >= len(view):
        raise AMF0Error(f"no value at offset {offset} (data length {len(view)})")
    return _decode(view, offset, 0, _Budget())


def _as_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError as exc:
            raise AMF0Error(f"unsupported buffer: {exc}") from None
    return view


def _need(view: memoryview, offset: int, size: int, what: str) -> None:
    if offset + size > len(view):
        raise AMF0Error(
            f"truncated {what} at offset {offset}: need {size} bytes, have {len(view) - offset}"
        )


def _text(view: memoryview, start: int, size: int) -> str:
    # Some encoders emit Latin-1 or cut strings mid-character; replacing bad
    # sequences keeps a whole command or metadata message usable.
    return str(view[start : start + size], "utf-8", "replace")


def _read_string(view: memoryview, offset: int, what: str) -> tuple[str, int]:
    _need(view, offset, 2, what)
    (size,) = _U16.unpack_from(view, offset)
    offset += 2
    _need(view, offset, size, what)
    return _text(view, offset, size), offset + size


def _read_long_string(view: memoryview, offset: int, what: str) -> tuple[str, int]:
    _need(view, offset, 4, what)
    (size,) = _U32.unpack_from(view, offset)
    offset += 4
    _need(view, offset, size, what)
    return _text(view, offset, size), offset + size


def _read_properties(
    view: memoryview, offset: int, depth: int, result: dict[str, Any], budget: _Budget
) -> int:
    """Read key/value pairs into ``result`` until the end marker; return the new offset.

    Reaching the end of the data exactly where a key would start (or inside
    what can only be a truncated end marker) ends the object quietly, because
    some encoders omit the end marker of the last object in a message.
    """
    end = len(view)
    while True:
        remaining = end - offset
        if remaining == 0:
            return offset
        if remaining < 3 and not any(view[offset:end]):
            return end
        _need(view, offset, 2, "object key")
        (key_size,) = _U16.unpack_from(view, offset)
        if key_size == 0 and remaining >= 3 and view[offset + 2] == OBJECT_END:
            return offset + 3
        key_start = offset + 2
        _need(view, key_start, key_size, "object key")
        key = _text(view, key_start, key_size)
        offset = key_start + key_size
        if offset >= end:
            raise AMF0Error(f"truncated object: key {key!r} has no value at offset {offset}")
        budget.left -= 1
        if budget.left < 0:
            raise budget.exhausted()
        result[key], offset = _decode(view, offset, depth + 1, budget)


def _decode(view: memoryview, offset: int, depth: int, budget: _Budget) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise AMF0Error(f"nesting deeper than {MAX_DEPTH} levels at offset {offset}")
    if offset >= len(view):
        raise AMF0Error(f"truncated data: value expected at offset {offset}")
    marker = view[offset]
    pos = offset + 1
    if marker == NUMBER:
        _need(view, pos, 8, "number")
        return _NUMBER.unpack_from(view, pos)[0], pos + 8
    if marker == BOOLEAN:
        _need(view, pos, 1, "boolean")
        return view[pos] != 0, pos + 1
    if marker == STRING:
        return _read_string(view, pos, "string")
    if marker == OBJECT:
        obj: dict[str, Any] = {}
        return obj, _read_properties(view, pos, depth, obj, budget)
    if marker == NULL or marker == UNSUPPORTED:
        return None, pos
    if marker == UNDEFINED_MARKER:
        return UNDEFINED, pos
    if marker == ECMA_ARRAY:
        _need(view, pos, 4, "ECMA array count")
        # The count is advisory: some encoders write 0 or a wrong value, so the
        # array is read up to its end marker instead.
        array = ECMAArray()
        return array, _read_properties(view, pos + 4, depth, array, budget)
    if marker == STRICT_ARRAY:
        _need(view, pos, 4, "strict array count")
        (count,) = _U32.unpack_from(view, pos)
        pos += 4
        # Every element takes at least one byte; reject impossible counts early.
        _need(view, pos, count, "strict array")
        budget.left -= count
        if budget.left < 0:
            raise budget.exhausted()
        items: list[Any] = []
        for _ in range(count):
            item, pos = _decode(view, pos, depth + 1, budget)
            items.append(item)
        return items, pos
    if marker == DATE:
        _need(view, pos, 10, "date")
        millis, _tz = _DATE.unpack_from(view, pos)
        try:
            when = _EPOCH + timedelta(milliseconds=millis)
        except (OverflowError, ValueError):
            raise AMF0Error(f"date out of range at offset {offset}: {millis!r} ms") from None
        return when, pos + 10
    if marker == LONG_STRING:
        return _read_long_string(view, pos, "long string")
    if marker == XML_DOCUMENT:
        return _read_long_string(view, pos, "XML document")
    if marker == TYPED_OBJECT:
        _class_name, pos = _read_string(view, pos, "typed object class name")
        typed: dict[str, Any] = {}
        return typed, _read_properties(view, pos, depth, typed, budget)
    if marker == REFERENCE:
        raise AMF0Error(f"unsupported AMF0 reference (0x07) at offset {offset}")
    if marker == AVMPLUS:
        raise AMF0Error(f"unsupported switch to AMF3 (0x11) at offset {offset}")
    raise AMF0Error(f"unknown AMF0 type marker 0x{marker:02x} at offset {offset}")
