"""RTMP chunk stream layer: reassemble incoming chunks, split outgoing messages.

Pure and I/O free: :class:`ChunkReader` is fed raw bytes and returns complete
:class:`~lal_twisted.rtmp.message.Message` objects; :class:`ChunkWriter`
(:mod:`lal_twisted.rtmp.chunk_writer`) turns a message into the bytes to put on
the wire.

The reader is one state machine in one loop (``ChunkReader.feed``), the hot path
of every publisher's bytes: its header forms, extended timestamps and partial
messages are handled in line, with locals instead of attribute lookups, which is
why this module is longer than most.

Timestamp rules applied by the reader (per chunk stream id):

* type 0 carries the absolute timestamp; types 1 and 2 carry a delta that is
  added to the timestamp of the previous message on that chunk stream;
* a type-3 chunk that starts a new message adds the previous header's
  timestamp field again.  After a type-1/2 header that field is the delta; after
  a type-0 header it is the absolute timestamp, so a type-0 message at ``t``
  followed by a type-3 message yields ``2 * t``.  This is what the RTMP
  specification says ("the timestamp delta for this Type 3 chunk is the same as
  the timestamp of the Type 0 chunk") and what FFmpeg and lal implement;
* when the 3-byte field is 0xFFFFFF, the real value follows as a 4-byte
  extended timestamp, and every later type-3 chunk on that chunk stream
  (continuation or new message) carries the 4-byte field too.  For a type-3
  chunk that starts a new message the value read there is the delta; on a
  continuation chunk it is read and ignored;
* all timestamps wrap modulo 2**32.

A type-0/1/2 header that arrives while a message on the same chunk stream is
still incomplete discards the partial message and starts the new one (lenient,
as deployed servers are).  After a :class:`ChunkError` the reader state is
undefined and the connection must be closed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from lal_twisted.rtmp.chunk_writer import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CSID,
    MAX_HEADER_SIZE,
    ChunkWriter,
    encode_message,
)
from lal_twisted.rtmp.message import (
    ABORT,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    MESSAGE_SIZE_LIMITS,
    SET_CHUNK_SIZE,
    Message,
    RtmpProtocolError,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_CSID",
    "MAX_HEADER_SIZE",
    "ChunkError",
    "ChunkReader",
    "ChunkWriter",
    "encode_message",
]


_EXTENDED = 0xFFFFFF
# How an over-long message is named in the error, for the types with a limit of their own.
_LIMITED_KINDS = {COMMAND_AMF0: "command", COMMAND_AMF3: "AMF3 command",
                  DATA_AMF0: "data", DATA_AMF3: "AMF3 data"}
# Stands for "no partial message"; never grown (a new message gets its own buffer).
_EMPTY = bytearray()
_TS_MASK = 0xFFFFFFFF

# ts(3) len(3) type(1), read as u16+u8 pairs because struct has no 24-bit code.
_FMT01 = struct.Struct(">HBHBB")
_FMT2 = struct.Struct(">HB")
_U32 = struct.Struct(">I")
_LE32 = struct.Struct("<I")


class ChunkError(RtmpProtocolError):
    """Malformed or hostile chunk stream."""


class _ChunkStream:
    """Per-csid reader state: the last header's fields and the partial message."""

    __slots__ = (
        "timestamp",
        "delta",
        "extended",
        "length",
        "type_id",
        "stream_id",
        "left",
        "partial",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        # Timestamp field of the last type-0/1/2 header (absolute after type 0),
        # reused by a type-3 chunk that starts a new message.
        self.delta = 0
        self.extended = False
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        # Payload bytes still missing from the message being assembled (0: none).
        self.left = 0
        # The payload received so far of the message being assembled: one
        # buffer grown chunk by chunk (bytearray over-allocates by at most an
        # eighth), so what is held stays proportional to what the peer sent,
        # whatever the chunk size (a list of pieces costs ~40 bytes per chunk).
        self.partial = _EMPTY


class ChunkReader:
    """Incremental chunk-stream parser: feed bytes, get complete messages.

    Holds at most one partial message per chunk stream plus an unparsed tail
    shorter than one chunk (header and body).  Set Chunk Size and Abort are
    acted upon as soon as they complete and are also returned to the caller.

    A message longer than ``max_message_size``, or than the limit
    ``max_type_sizes`` sets for its type (by default the command and data
    limits of :data:`~lal_twisted.rtmp.message.MESSAGE_SIZE_LIMITS`), is refused
    with a :class:`ChunkError` as soon as its header arrives, before any of its
    payload is buffered.
    """

    __slots__ = (
        "chunk_size",
        "bytes_received",
        "max_message_size",
        "max_chunk_streams",
        "max_partial_bytes",
        "_limits",
        "_smallest_limit",
        "_streams",
        "_buf",
        "_held",
    )

    def __init__(
        self,
        max_message_size: int = 16 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_partial_bytes: int | None = None,
        max_type_sizes: Mapping[int, int] | None = None,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        # Bytes of unfinished messages held across all chunk streams; without a
        # total cap a peer could park max_chunk_streams x max_message_size.
        self.max_partial_bytes = (
            2 * max_message_size if max_partial_bytes is None else max_partial_bytes
        )
        # The longest message accepted, by type id: one list index per header.
        # Fixed here: later changes to max_message_size do not reach it.
        limits = [max_message_size] * 256
        sizes = MESSAGE_SIZE_LIMITS if max_type_sizes is None else max_type_sizes
        for type_id, size in sizes.items():
            limits[type_id] = min(size, max_message_size)
        self._limits = limits
        self._smallest_limit = min(limits)
        self._streams: dict[int, _ChunkStream] = {}
        self._buf = bytearray()
        # Payload bytes in the partial-message buffers of all chunk streams.
        self._held = 0

    @property
    def unparsed_bytes(self) -> int:
        """Length of the buffered tail that does not yet form a whole chunk."""
        return len(self._buf)

    @property
    def partial_bytes(self) -> int:
        """Payload bytes of unfinished messages, the figure held against
        ``max_partial_bytes``: each chunk stream keeps them in one buffer."""
        return self._held

    @property
    def buffered_bytes(self) -> int:
        """Everything held: the unparsed tail plus partially assembled payloads."""
        return len(self._buf) + self._held

    def feed(self, data: bytes) -> list[Message]:
        """Consume ``data`` and return every message it completes, in order.

        Raises :class:`ChunkError` on a protocol violation.
        """
        self.bytes_received += len(data)
        out: list[Message] = []
        buf = self._buf
        if not buf and type(data) is bytes:
            # Nothing pending: parse the caller's bytes in place, keep only the tail.
            pos = self._parse(data, out)
            if pos < len(data):
                buf += memoryview(data)[pos:]
        else:
            buf += data
            pos = self._parse(buf, out)
            if pos:
                # Deleting a bytearray prefix is cheap; the tail is < one chunk.
                del buf[:pos]
        return out

    def _new_stream(self, csid: int, fmt: int) -> _ChunkStream:
        """Register a chunk stream seen for the first time, enforcing the limits."""
        if fmt:
            raise ChunkError(
                f"chunk stream {csid} referenced with a type-{fmt} header "
                f"before any type-0 header"
            )
        if len(self._streams) >= self.max_chunk_streams:
            raise ChunkError(f"too many chunk streams (>{self.max_chunk_streams})")
        cs = self._streams[csid] = _ChunkStream()
        return cs

    def _too_long(self, type_id: int, length: int) -> ChunkError:
        """The error for a header announcing a message over its type's limit."""
        limit = self._limits[type_id]
        if limit < self.max_message_size:
            kind = _LIMITED_KINDS.get(type_id)
            return ChunkError(
                f"{kind + ' ' if kind else ''}message (type {type_id}) of {length} bytes "
                f"is over the limit of {limit} for its type"
            )
        return ChunkError(f"message length {length} exceeds the limit of {limit}")

    def _set_chunk_size(self, payload: bytes) -> int:
        """Apply a Set Chunk Size message to the reader."""
        if len(payload) < 4:
            raise ChunkError(f"set chunk size payload too short ({len(payload)} bytes)")
        size: int = _U32.unpack_from(payload)[0]
        if not 0 < size <= MAX_CHUNK_SIZE:
            raise ChunkError(f"invalid chunk size {size}")
        self.chunk_size = size
        return size

    def _abort(self, payload: bytes) -> None:
        """Apply an Abort message: drop the partial message of the named chunk stream."""
        if len(payload) < 4:
            raise ChunkError(f"abort payload too short ({len(payload)} bytes)")
        cs = self._streams.get(_U32.unpack_from(payload)[0])
        if cs is not None and cs.left:
            self._held -= len(cs.partial)
            cs.left = 0
            cs.partial = _EMPTY

    def _over_partial_limit(self, held: int) -> ChunkError:
        """The error for unfinished messages holding more than ``max_partial_bytes``."""
        return ChunkError(
            f"unfinished messages hold {held} bytes, over the limit of "
            f"{self.max_partial_bytes}"
        )

    def _parse(self, buf: bytes | bytearray, out: list[Message]) -> int:
        """Parse whole chunks from ``buf``, append finished messages to ``out``
        and return the offset of the first byte not consumed.

        A chunk's effects are committed only once its body is fully available,
        so an incomplete chunk is simply parsed again on the next feed.
        """
        pos = 0
        end = len(buf)
        streams = self._streams
        chunk_size = self.chunk_size
        limits = self._limits
        # Below the smallest limit (most media messages) one comparison is enough.
        small = self._smallest_limit
        # The held-bytes count lives in a local while parsing (the hot path),
        # and is written back before anything else reads it.
        held = self._held
        max_held = self.max_partial_bytes
        while pos < end:
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid == 0:
                if p >= end:
                    break
                csid = 64 + buf[p]
                p += 1
            elif csid == 1:
                if p + 2 > end:
                    break
                csid = 64 + buf[p] + (buf[p + 1] << 8)
                p += 2
            cs = streams.get(csid)
            if cs is None:
                cs = self._new_stream(csid, fmt)

            if fmt == 3:
                if cs.extended:
                    if p + 4 > end:
                        break
                    field = _U32.unpack_from(buf, p)[0]
                    p += 4
                else:
                    field = cs.delta
                left = cs.left
                if left:
                    # Continuation chunk of the message being assembled.
                    body = chunk_size if left > chunk_size else left
                    stop = p + body
                    if stop > end:
                        break
                    pos = stop
                    partial = cs.partial
                    left -= body
                    cs.left = left
                    if left:
                        partial += buf[p:stop]
                        held += body
                        if held > max_held:
                            raise self._over_partial_limit(held)
                        continue
                    held -= len(partial)
                    # The last piece joins the rest in the one copy made here.
                    payload = b"".join((partial, buf[p:stop]))
                    cs.partial = _EMPTY
                else:
                    # New message with the previous length, type and stream id.
                    length = cs.length
                    body = chunk_size if length > chunk_size else length
                    stop = p + body
                    if stop > end:
                        break
                    pos = stop
                    cs.timestamp = (cs.timestamp + field) & _TS_MASK
                    cs.delta = field
                    if body < length:
                        piece = buf[p:stop]  # already a new bytearray when buf is one
                        cs.partial = piece if type(piece) is bytearray else bytearray(piece)
                        cs.left = length - body
                        held += body
                        if held > max_held:
                            raise self._over_partial_limit(held)
                        continue
                    payload = bytes(buf[p:stop])
            else:
                if fmt == 0:
                    if p + 11 > end:
                        break
                    t_hi, t_lo, l_hi, l_lo, type_id = _FMT01.unpack_from(buf, p)
                    stream_id = _LE32.unpack_from(buf, p + 7)[0]
                    p += 11
                    length = (l_hi << 8) | l_lo
                    if length > small and length > limits[type_id]:
                        raise self._too_long(type_id, length)
                elif fmt == 1:
                    if p + 7 > end:
                        break
                    t_hi, t_lo, l_hi, l_lo, type_id = _FMT01.unpack_from(buf, p)
                    stream_id = cs.stream_id
                    p += 7
                    length = (l_hi << 8) | l_lo
                    if length > small and length > limits[type_id]:
                        raise self._too_long(type_id, length)
                else:
                    if p + 3 > end:
                        break
                    t_hi, t_lo = _FMT2.unpack_from(buf, p)
                    type_id = cs.type_id
                    stream_id = cs.stream_id
                    length = cs.length
                    p += 3
                field = (t_hi << 8) | t_lo
                extended = field == _EXTENDED
                if extended:
                    if p + 4 > end:
                        break
                    field = _U32.unpack_from(buf, p)[0]
                    p += 4
                body = chunk_size if length > chunk_size else length
                stop = p + body
                if stop > end:
                    break
                pos = stop
                if cs.left:  # a new header drops the unfinished message
                    held -= len(cs.partial)
                    cs.left = 0
                    cs.partial = _EMPTY
                cs.timestamp = field if fmt == 0 else (cs.timestamp + field) & _TS_MASK
                cs.delta = field
                cs.extended = extended
                cs.length = length
                cs.type_id = type_id
                cs.stream_id = stream_id
                if body < length:
                    piece = buf[p:stop]
                    cs.partial = piece if type(piece) is bytearray else bytearray(piece)
                    cs.left = length - body
                    held += body
                    if held > max_held:
                        raise self._over_partial_limit(held)
                    continue
                payload = bytes(buf[p:stop])

            type_id = cs.type_id
            out.append(Message(csid, type_id, cs.stream_id, cs.timestamp, payload))
            if type_id == SET_CHUNK_SIZE:
                chunk_size = self._set_chunk_size(payload)
            elif type_id == ABORT:
                self._held = held
                self._abort(payload)
                held = self._held
        self._held = held
        return pos
