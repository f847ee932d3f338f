"""AV1 between FLV's coded frames (enhanced RTMP ``av01``: the OBUs of one
temporal unit; the sequence header OBU in the av1C record of the sequence
start) and the low overhead bitstream format (AV1 spec 5.2: every OBU with
its size field, each temporal unit opened by a temporal delimiter), what
``ffmpeg -f obu`` reads and writes.

A temporal unit's OBUs go into a frame as they are, its temporal delimiter
included, as ffmpeg's FLV muxer writes them; frames without one (the
ISOBMFF form) get one on the way out, and an OBU without its size field
(allowed last in an ISOBMFF sample) gets one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lal_twisted.media.av1 import (
    OBU_SEQUENCE_HEADER,
    Av1Error,
    SequenceHeader,
    build_config,
    leb128,
    parse_config,
    parse_sequence_header,
)
from lal_twisted.media.convert.body import FlvBody, coded_frame, video_body, video_sequence_start
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import VideoTrack

__all__ = ["OBU_FRAME", "OBU_FRAME_HEADER", "OBU_TEMPORAL_DELIMITER", "TEMPORAL_DELIMITER",
           "Obu", "ObuUnit", "ObuWriter", "is_keyframe", "obu_to_flv", "obu_units",
           "split_obus", "temporal_unit"]

_AV1C_FIXED = 4  # the av1C bytes before its configOBUs

OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_FRAME = 6
TEMPORAL_DELIMITER = b"\x12\x00"  # type 2, has_size_field, size 0


@dataclass(frozen=True, slots=True)
class Obu:
    """One OBU of a buffer: its type, and where the OBU (``start``: its header)
    and its payload lie."""

    obu_type: int
    start: int
    payload: int
    end: int
    has_size: bool


def split_obus(data: bytes) -> list[Obu]:
    """The OBUs of ``data``; one without a size field runs to the end."""
    obus: list[Obu] = []
    pos = 0
    end = len(data)
    while pos < end:
        header = data[pos]
        if header & 0x80:
            raise Av1Error(f"OBU at byte {pos} has its forbidden bit set")
        payload = pos + (2 if header & 0x04 else 1)
        has_size = bool(header & 0x02)
        if has_size:
            size, payload = leb128(data, payload)
            stop = payload + size
        else:
            stop = end
        if stop > end or payload > end:
            raise Av1Error(f"OBU at byte {pos} runs past the end")
        obus.append(Obu((header >> 3) & 0x0F, pos, payload, stop, has_size))
        pos = stop
    return obus


def _sized(data: bytes, obu: Obu) -> bytes:
    """An OBU with its size field (added if it had none)."""
    if obu.has_size:
        return data[obu.start:obu.end]
    header = data[obu.start:obu.payload]
    size = obu.end - obu.payload
    field = bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        field.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes((header[0] | 0x02,)) + header[1:] + bytes(field) + data[obu.payload:obu.end]


def temporal_unit(frame: bytes, sequence_header: bytes, keyframe: bool) -> bytes:
    """An FLV frame's OBUs as one temporal unit of the low overhead format:
    a temporal delimiter first, and ``sequence_header`` (a whole OBU, from
    the av1C record) in front of a keyframe that carries none."""
    obus = split_obus(frame)
    parts = [TEMPORAL_DELIMITER]
    if keyframe and sequence_header and not any(
            o.obu_type == OBU_SEQUENCE_HEADER for o in obus):
        parts.append(sequence_header)
    if all(o.has_size for o in obus):
        start = obus[0].end if obus and obus[0].obu_type == OBU_TEMPORAL_DELIMITER else 0
        parts.append(frame[start:] if start else frame)
    else:
        parts += [_sized(frame, o) for o in obus if o.obu_type != OBU_TEMPORAL_DELIMITER]
    return b"".join(parts)


def is_keyframe(data: bytes, obus: list[Obu], sequence: SequenceHeader | None) -> bool:
    """Whether a temporal unit holds a key frame: a frame header with
    show_existing_frame 0 and frame_type KEY_FRAME (AV1 spec 5.9.2; every
    frame of a reduced still picture header is one)."""
    for obu in obus:
        if obu.obu_type in (OBU_FRAME, OBU_FRAME_HEADER) and obu.payload < obu.end:
            if sequence is not None and sequence.reduced_still_picture_header:
                return True
            # show_existing_frame f(1) = 0, then frame_type f(2) = 0.
            if data[obu.payload] & 0xE0 == 0:
                return True
    return False


@dataclass(frozen=True, slots=True)
class ObuUnit:
    """One temporal unit of a low overhead stream, ready for FLV: ``frame`` its
    OBUs (temporal delimiter and sequence header included), ``sequence_header``
    the last sequence header OBU seen (whole), ``keyframe`` whether it holds a
    key frame."""

    frame: bytes
    sequence_header: bytes
    keyframe: bool


def obu_units(data: bytes) -> Iterator[ObuUnit]:
    """The temporal units of an AV1 low overhead bitstream."""
    sequence_obu = b""
    sequence: SequenceHeader | None = None
    unit: list[Obu] = []
    for obu in split_obus(data):
        if not obu.has_size:
            raise Av1Error(f"OBU at byte {obu.start} has no size field: not the low "
                           "overhead bitstream format (an Annex B stream?)")
        if obu.obu_type == OBU_TEMPORAL_DELIMITER and unit:
            yield ObuUnit(data[unit[0].start:unit[-1].end], sequence_obu,
                          is_keyframe(data, unit, sequence))
            unit = []
        if obu.obu_type == OBU_SEQUENCE_HEADER and data[obu.start:obu.end] != sequence_obu:
            sequence_obu = data[obu.start:obu.end]
            sequence = parse_sequence_header(data[obu.payload:obu.end])
        unit.append(obu)
    if unit:
        yield ObuUnit(data[unit[0].start:unit[-1].end], sequence_obu,
                      is_keyframe(data, unit, sequence))


def obu_to_flv(data: bytes) -> Iterator[FlvBody]:
    """An AV1 low overhead bitstream as FLV bodies (enhanced RTMP ``av01``):
    a sequence start (av1C) from the first sequence header and again wherever
    a new one comes, then a frame per temporal unit.  Units before the first
    sequence header are left out; a stream with none raises :class:`Av1Error`."""
    current = b""
    for unit in obu_units(data):
        if not unit.sequence_header:
            continue
        if unit.sequence_header != current:
            current = unit.sequence_header
            yield FlvBody(VIDEO, video_sequence_start(Codec.AV1, build_config(current)),
                          header=True, keyframe=True)
        yield FlvBody(VIDEO, video_body(Codec.AV1, unit.keyframe, unit.frame),
                      keyframe=unit.keyframe)
    if not current:
        raise Av1Error("no sequence header OBU in the stream (is it AV1 in the low overhead "
                       "format, ffmpeg -f obu?)")


class ObuWriter:
    """FLV frames of one AV1 track as temporal units of the low overhead
    format, the av1C record's sequence header in front of each keyframe that
    has none."""

    def __init__(self, track: VideoTrack) -> None:
        parse_config(track.config)  # raises Av1Error when malformed
        self.sequence_header = b""
        config_obus = track.config[_AV1C_FIXED:]
        for obu in split_obus(config_obus):
            if obu.obu_type == OBU_SEQUENCE_HEADER:
                self.sequence_header = _sized(config_obus, obu)
                break

    def frame(self, packet: AVPacket) -> bytes:
        """``packet``'s temporal unit (b"" when it holds no AV1 frame)."""
        span = coded_frame(packet, Codec.AV1)
        if span is None:
            return b""
        payload = packet.payload
        frame = payload[span[0]:span[1]] if span[0] or span[1] != len(payload) else payload
        return temporal_unit(frame, self.sequence_header, packet.is_keyframe)
