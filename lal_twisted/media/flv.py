"""FLV container: file header, tag encoding and an incremental (sans-IO) reader.

An FLV stream is a 9-byte header, a 4-byte ``PreviousTagSize0`` and then tags,
each an 11-byte tag header, the tag body and a 4-byte ``PreviousTagSize``.
HTTP-FLV output is exactly this byte stream, and recorded files use it too.
The module does no I/O: opening, reading and writing files is left to callers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from lal_twisted.media.tags import TagType

if TYPE_CHECKING:
    from lal_twisted.media.packet import AVPacket

__all__ = [
    "FLV_HEADER_SIZE",
    "TAG_AUDIO",
    "TAG_HEADER_SIZE",
    "TAG_SCRIPT",
    "TAG_VIDEO",
    "FlvError",
    "FlvReader",
    "FlvTag",
    "FlvTagEncoder",
    "TAG_ENCODER",
    "encode_tag",
    "file_header",
]

TAG_AUDIO: Final[int] = TagType.AUDIO
TAG_VIDEO: Final[int] = TagType.VIDEO
TAG_SCRIPT: Final[int] = TagType.SCRIPT

FLV_HEADER_SIZE = 9
TAG_HEADER_SIZE = 11
_PREV_SIZE_LEN = 4
_MAX_DATA_SIZE = 0xFFFFFF

_FLAG_AUDIO = 0x04
_FLAG_VIDEO = 0x01

# type<<24 | data size, ts_low24<<8 | ts_high8, stream id (u16 + u8).
_TAG_HEADER = struct.Struct(">IIHB")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">3sBBI")

# Compact the reader's buffer once this many consumed bytes sit at its front.
_COMPACT_THRESHOLD = 64 * 1024


class FlvError(ValueError):
    """Raised for malformed or truncated FLV data and unencodable tags."""


@dataclass(slots=True)
class FlvTag:
    """One FLV tag: type (8 audio, 9 video, 18 script), timestamp in ms, body."""

    tag_type: int
    timestamp: int
    payload: bytes


def file_header(has_audio: bool = True, has_video: bool = True) -> bytes:
    """The 9-byte FLV file header followed by ``PreviousTagSize0`` (13 bytes)."""
    flags = (_FLAG_AUDIO if has_audio else 0) | (_FLAG_VIDEO if has_video else 0)
    return _HEADER.pack(b"FLV", 1, flags, FLV_HEADER_SIZE) + b"\x00\x00\x00\x00"


def encode_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    """Encode one tag with its trailing ``PreviousTagSize``.

    The timestamp is taken modulo 2**32; its top byte goes into the
    extended-timestamp field.
    """
    size = len(payload)
    if size > _MAX_DATA_SIZE:
        raise FlvError(f"tag payload too large for FLV: {size} bytes")
    if not 0 <= tag_type <= 0xFF:
        raise FlvError(f"invalid tag type {tag_type}")
    ts = timestamp & 0xFFFFFFFF
    header = _TAG_HEADER.pack((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24), 0, 0)
    return b"".join((header, payload, _U32.pack(TAG_HEADER_SIZE + size)))


class FlvTagEncoder:
    """Encodes AVPackets as FLV tags (HTTP-FLV, recording); use :data:`TAG_ENCODER`."""

    def encode(self, packet: AVPacket) -> bytes:
        return encode_tag(packet.kind, packet.dts, packet.payload)


TAG_ENCODER = FlvTagEncoder()


class FlvReader:
    """Incremental FLV parser: feed it bytes, get back complete tags.

    Any split of the input across :meth:`feed` calls yields the same tags.  A
    tag is returned as soon as its body is complete; the ``PreviousTagSize``
    that follows it is consumed later and only counted when it disagrees
    (``prev_size_mismatches``), since some writers get it wrong.  Unknown tag
    types are returned unchanged; the tag-type byte is reported as is.
    """

    def __init__(self, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self.header_parsed = False
        self.has_audio = False
        self.has_video = False
        self.prev_size_mismatches = 0
        self._buf = bytearray()
        self._pos = 0
        # Bytes of padding between the header and PreviousTagSize0 still to skip.
        self._skip = 0
        # Expected value of the PreviousTagSize still to read, or None if none is due.
        self._expect_prev: int | None = None
        # Bytes dropped from the front of the buffer so far (for error offsets).
        self._dropped = 0

    def buffered(self) -> int:
        """Number of received bytes not yet consumed."""
        return len(self._buf) - self._pos

    @property
    def in_header_padding(self) -> bool:
        """True while bytes between the header and ``PreviousTagSize0`` are still due."""
        return self._skip > 0

    def at_tag_boundary(self) -> bool:
        """True if the input so far ends between tags.

        A stream cut right after a tag body (before or inside its
        ``PreviousTagSize``) also counts as ending between tags.
        """
        if not self.header_parsed or self._skip:
            return False
        if self._expect_prev is not None:
            return self.buffered() < _PREV_SIZE_LEN
        return self.buffered() == 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[FlvTag]:
        """Add received bytes and return every tag completed by them."""
        buf = self._buf
        buf += data
        tags: list[FlvTag] = []
        pos = self._pos
        end = len(buf)
        try:
            if not self.header_parsed:
                if end - pos < FLV_HEADER_SIZE:
                    if not b"FLV".startswith(bytes(buf[pos : pos + 3])):
                        raise FlvError("not an FLV stream: bad signature")
                    return tags
                pos = self._parse_header(pos)
            if self._skip:
                step = min(self._skip, end - pos)
                pos += step
                self._skip -= step
                if self._skip:
                    return tags
            max_size = self.max_tag_size
            while True:
                if self._expect_prev is not None:
                    if end - pos < _PREV_SIZE_LEN:
                        break
                    (prev,) = _U32.unpack_from(buf, pos)
                    if prev != self._expect_prev:
                        self.prev_size_mismatches += 1
                    pos += _PREV_SIZE_LEN
                    self._expect_prev = None
                if end - pos < TAG_HEADER_SIZE:
                    break
                type_size, ts_field, _, _ = _TAG_HEADER.unpack_from(buf, pos)
                size = type_size & 0xFFFFFF
                if size > max_size:
                    raise FlvError(
                        f"tag data size {size} exceeds limit {max_size} "
                        f"(stream offset {self._dropped + pos})"
                    )
                body = pos + TAG_HEADER_SIZE
                if end - body < size:
                    break
                timestamp = (ts_field >> 8) | ((ts_field & 0xFF) << 24)
                tags.append(FlvTag(type_size >> 24, timestamp, bytes(buf[body : body + size])))
                pos = body + size
                self._expect_prev = TAG_HEADER_SIZE + size
        finally:
            self._pos = pos
            self._compact()
        return tags

    def _parse_header(self, pos: int) -> int:
        signature, _version, flags, data_offset = _HEADER.unpack_from(self._buf, pos)
        if signature != b"FLV":
            raise FlvError("not an FLV stream: bad signature")
        if data_offset < FLV_HEADER_SIZE:
            raise FlvError(f"invalid FLV header data offset {data_offset}")
        if data_offset - FLV_HEADER_SIZE > self.max_tag_size:
            raise FlvError(f"FLV header data offset {data_offset} too large")
        self.header_parsed = True
        self.has_audio = bool(flags & _FLAG_AUDIO)
        self.has_video = bool(flags & _FLAG_VIDEO)
        self._skip = data_offset - FLV_HEADER_SIZE
        self._expect_prev = 0
        return pos + FLV_HEADER_SIZE

    def _compact(self) -> None:
        pos = self._pos
        if pos == 0:
            return
        if pos >= len(self._buf) or pos >= _COMPACT_THRESHOLD:
            del self._buf[:pos]
            self._dropped += pos
            self._pos = 0
