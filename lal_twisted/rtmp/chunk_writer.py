"""RTMP chunk writing, sans-IO: one message in, its chunks out.

The bytes depend only on the message and the chunk size (a type-0 header,
then type-3 ones), never on the receiver, so one encoding is shared by every
player with that chunk size.
"""

from __future__ import annotations

import struct

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "MAX_CSID", "MAX_HEADER_SIZE", "ChunkWriter",
           "encode_message"]

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
MAX_CSID = 65599
# 3-byte basic header + 11-byte type-0 message header + 4-byte extended timestamp.
MAX_HEADER_SIZE = 18

_EXTENDED = 0xFFFFFF
_MAX_LENGTH = 0xFFFFFF
_TS_MASK = 0xFFFFFFFF
_U32 = struct.Struct(">I")
# Type-0 message header on output: ts(3 BE) len(3 BE) type(1) stream id(4 LE).
_FMT0_OUT = struct.Struct("<7BI")


def _basic_headers(csid: int) -> tuple[bytes, bytes]:
    """Type-0 and type-3 basic headers for ``csid`` (1, 2 or 3 bytes each)."""
    if 2 <= csid <= 63:
        return bytes((csid,)), bytes((0xC0 | csid,))
    if 64 <= csid <= 319:
        return bytes((0, csid - 64)), bytes((0xC0, csid - 64))
    if 320 <= csid <= MAX_CSID:
        lo = (csid - 64) & 0xFF
        hi = (csid - 64) >> 8
        return bytes((1, lo, hi)), bytes((0xC1, lo, hi))
    raise ValueError(f"invalid chunk stream id {csid}")


# Precomputed for the csids that fit the 1- and 2-byte forms (all this server uses).
_BASIC_HEADERS = {csid: _basic_headers(csid) for csid in range(2, 320)}


def encode_message(
    chunk_size: int, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
) -> bytes:
    """Encode one message as chunks: a type-0 chunk followed by type-3 chunks.

    The output depends only on the arguments (no per-receiver header
    compression), so one encoding can be shared by every receiver that uses
    the same chunk size.  ``timestamp`` is taken modulo 2**32.
    """
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"invalid chunk size {chunk_size}")
    length = len(payload)
    if length > _MAX_LENGTH:
        raise ValueError(f"message length {length} does not fit in 24 bits")
    headers = _BASIC_HEADERS.get(csid)
    if headers is None:
        headers = _basic_headers(csid)
    first, cont = headers
    timestamp &= _TS_MASK
    ts_field = _EXTENDED if timestamp >= _EXTENDED else timestamp
    try:
        head = first + _FMT0_OUT.pack(
            ts_field >> 16,
            (ts_field >> 8) & 0xFF,
            ts_field & 0xFF,
            length >> 16,
            (length >> 8) & 0xFF,
            length & 0xFF,
            type_id,
            stream_id,
        )
    except struct.error as exc:
        raise ValueError(f"type id {type_id} or stream id {stream_id} out of range") from exc
    if ts_field == _EXTENDED:
        ext = _U32.pack(timestamp)
        head += ext
        cont += ext
    if length <= chunk_size:
        return head + payload
    view = memoryview(payload)
    count = (length + chunk_size - 1) // chunk_size
    parts: list[bytes | memoryview] = [cont] * (2 * count)
    parts[0] = head
    parts[1::2] = [view[off : off + chunk_size] for off in range(0, length, chunk_size)]
    return b"".join(parts)


class ChunkWriter:
    """Encodes outgoing messages with the current outgoing chunk size.

    Set :attr:`chunk_size` right after sending the Set Chunk Size message.
    """

    __slots__ = ("_chunk_size",)

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self.chunk_size = chunk_size

    @property
    def chunk_size(self) -> int:
        """Maximum chunk body size used for outgoing messages."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if not 0 < value <= MAX_CHUNK_SIZE:
            raise ValueError(f"invalid chunk size {value}")
        self._chunk_size = value

    def encode(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> bytes:
        """Encode one message; see :func:`encode_message`."""
        return encode_message(self._chunk_size, csid, type_id, stream_id, timestamp, payload)
