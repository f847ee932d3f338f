"""Enhanced RTMP / FLV tag headers (veovera E-RTMP v1 and v2), read without copying.

An enhanced video tag starts with ``[IsExHeader:1][FrameType:3][PacketType:4]``,
an enhanced audio tag with ``[SoundFormat=9:4][PacketType:4]``.  Before the
FourCC may come any number of ModEx blocks (packet type 7: a size, opaque data,
then the modifier's type and the real packet type in one byte; type 0 carries
a nanosecond offset to the millisecond timestamp) and, with packet type
Multitrack, a byte ``[AvMultitrackType:4][PacketType:4]``:

- OneTrack (0): FourCC, then one track: id, body to the end.
- ManyTracks (1): FourCC, then tracks: id, UI24 size, body.
- ManyTracksManyCodecs (2): tracks: FourCC, id, UI24 size, body.

A video command frame (frame type 5, any packet type but Metadata) has one
command byte and no FourCC.  :func:`parse` finds the packet type and every
track's FourCC and body; the server forwards the bytes untouched, so this is
only for flags, codec names and the stats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lal_twisted.media.tags import AudioPacketType, FrameType, VideoPacketType

__all__ = ["EnhancedError", "ExHeader", "ExTrack", "parse", "MULTITRACK_ONE_TRACK",
           "MULTITRACK_MANY_TRACKS", "MULTITRACK_MANY_CODECS", "MOD_EX_NANO_OFFSET"]

MULTITRACK_ONE_TRACK = 0
MULTITRACK_MANY_TRACKS = 1
MULTITRACK_MANY_CODECS = 2
MOD_EX_NANO_OFFSET = 0  # ModEx type: UI24 nanoseconds added to the timestamp

# A header with more ModEx blocks than this is refused: each costs at least two
# bytes, and nothing defines more than one of each type.
_MAX_MOD_EX = 16

_V_MOD_EX = int(VideoPacketType.MOD_EX)
_V_MULTITRACK = int(VideoPacketType.MULTITRACK)
_V_METADATA = int(VideoPacketType.METADATA)
_A_MOD_EX = int(AudioPacketType.MOD_EX)
_A_MULTITRACK = int(AudioPacketType.MULTITRACK)
_COMMAND = int(FrameType.COMMAND)


class EnhancedError(ValueError):
    """A malformed or truncated enhanced header."""


@dataclass(slots=True)
class ExTrack:
    """One track of an enhanced tag: ``payload[start:end]`` is its body (for
    avc1/hvc1 CodedFrames, the composition time then the NAL units)."""

    track_id: int
    fourcc: bytes
    start: int
    end: int


@dataclass(slots=True)
class ExHeader:
    """What an enhanced tag header says.  ``multitrack`` is -1 for a plain
    (single-track) tag; ``command`` is the video command byte of a command
    frame (no tracks), else -1."""

    packet_type: int
    frame_type: int = 0
    multitrack: int = -1
    nano_offset: int = 0
    command: int = -1
    mod_ex: list[tuple[int, bytes]] = field(default_factory=list)
    tracks: list[ExTrack] = field(default_factory=list)


def parse(payload: bytes, video: bool) -> ExHeader:
    """Read the enhanced header of a video (``video``) or audio tag body."""
    end = len(payload)
    if end < 1:
        raise EnhancedError("empty tag")
    first = payload[0]
    header = ExHeader(first & 0x0F, (first >> 4) & 0x07 if video else 0)
    pos = 1
    mod_ex, multitrack = (_V_MOD_EX, _V_MULTITRACK) if video else (_A_MOD_EX, _A_MULTITRACK)
    while header.packet_type == mod_ex:
        if len(header.mod_ex) >= _MAX_MOD_EX:
            raise EnhancedError(f"more than {_MAX_MOD_EX} ModEx blocks")
        _need(pos + 1, end, "ModEx size")
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            _need(pos + 2, end, "ModEx size")
            size = int.from_bytes(payload[pos:pos + 2], "big") + 1
            pos += 2
        _need(pos + size + 1, end, "ModEx data")
        data = payload[pos:pos + size]
        pos += size
        mod_type, header.packet_type = payload[pos] >> 4, payload[pos] & 0x0F
        pos += 1
        header.mod_ex.append((mod_type, data))
        if mod_type == MOD_EX_NANO_OFFSET and size >= 3:
            header.nano_offset = int.from_bytes(data[:3], "big")
    if video and header.frame_type == _COMMAND and header.packet_type != _V_METADATA:
        _need(pos + 1, end, "video command")
        header.command = payload[pos]
        return header
    fourcc = b""
    if header.packet_type == multitrack:
        _need(pos + 1, end, "multitrack type")
        header.multitrack, header.packet_type = payload[pos] >> 4, payload[pos] & 0x0F
        pos += 1
        if header.packet_type == multitrack:
            raise EnhancedError("multitrack packet nested in a multitrack packet")
        if header.multitrack > MULTITRACK_MANY_CODECS:
            raise EnhancedError(f"unknown multitrack type {header.multitrack}")
    if header.multitrack != MULTITRACK_MANY_CODECS:
        _need(pos + 4, end, "FourCC")
        fourcc = payload[pos:pos + 4]
        pos += 4
    if header.multitrack < 0:
        header.tracks.append(ExTrack(0, fourcc, pos, end))
        return header
    while True:
        if header.multitrack == MULTITRACK_MANY_CODECS:
            _need(pos + 4, end, "track FourCC")
            fourcc = payload[pos:pos + 4]
            pos += 4
        _need(pos + 1, end, "track id")
        track_id = payload[pos]
        pos += 1
        if header.multitrack == MULTITRACK_ONE_TRACK:
            header.tracks.append(ExTrack(track_id, fourcc, pos, end))
            return header
        _need(pos + 3, end, "track size")
        size = int.from_bytes(payload[pos:pos + 3], "big")
        pos += 3
        _need(pos + size, end, f"body of track {track_id}")
        header.tracks.append(ExTrack(track_id, fourcc, pos, pos + size))
        pos += size
        if pos >= end:
            return header


def _need(upto: int, end: int, what: str) -> None:
    if upto > end:
        raise EnhancedError(f"enhanced header truncated in the {what}")
