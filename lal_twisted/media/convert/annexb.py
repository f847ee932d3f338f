"""H.264 and H.265 between AVCC (FLV's length-prefixed NAL units, parameter
sets in the decoder configuration record) and Annex-B (start codes,
parameter sets in the stream before every keyframe).

FLV to Annex-B is on the TS muxer's hot path: :func:`access_unit` returns
the pieces of an access unit for the packer to join, and the loop that
reads the NAL lengths works over the tag body in place.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from lal_twisted.media import avc, hevc
from lal_twisted.media.convert.body import FlvBody, coded_frame, video_body, video_sequence_start
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import VideoTrack

__all__ = ["AUD", "START_CODE", "AnnexBError", "AnnexBUnit", "AnnexBWriter", "access_unit",
           "access_units", "annexb_to_flv", "annexb_units", "avcc", "join_annexb", "nal_kind",
           "parameter_sets", "split_annexb", "split_nalus"]

START_CODE = b"\x00\x00\x00\x01"
# Access unit delimiters, with their start code: H.264 NAL type 9
# (primary_pic_type 7: any slice); H.265 NAL type 35 (pic_type 2: any slice).
AUD = {Codec.H264: START_CODE + b"\x09\xf0", Codec.H265: START_CODE + b"\x46\x01\x50"}


class AnnexBError(ValueError):
    """Malformed NAL unit framing: a length past the end, no parameter sets."""


@dataclass(frozen=True, slots=True)
class _Kinds:
    """The NAL unit types of one codec this module tells apart."""

    aud: int
    vps: int  # -1: none (H.264)
    sps: int
    pps: int
    key_first: int  # IDR (H.264), IRAP (H.265): a random access point
    key_last: int
    vcl_last: int  # slices are types 1..vcl_last (0..vcl_last for H.265)
    starts_unit: frozenset[int]  # non-VCL types that open an access unit after a picture


_H264 = _Kinds(9, -1, 7, 8, 5, 5, 5, frozenset({6, 7, 8, 9, *range(14, 19)}))
_H265 = _Kinds(35, 32, 33, 34, 16, 23, 31, frozenset({32, 33, 34, 35, 39, *range(41, 45)}))
_KINDS = {Codec.H264: _H264, Codec.H265: _H265}
_LENGTH_READERS = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from,
                   4: struct.Struct(">I").unpack_from}


def nal_kind(nal: bytes, h265: bool) -> int:
    """The NAL unit type of ``nal`` (its header included); -1 for an empty one."""
    if not nal:
        return -1
    return (nal[0] >> 1) & 0x3F if h265 else nal[0] & 0x1F


# -- FLV (AVCC) to Annex-B -------------------------------------------------------------------

def parameter_sets(vps: Iterable[bytes], sps: Iterable[bytes], pps: Iterable[bytes]) -> bytes:
    """Parameter sets (VPS for H.265, SPS, PPS) in Annex-B form, in that order."""
    return b"".join(START_CODE + nal for group in (vps, sps, pps) for nal in group)


def access_unit(payload: bytes, start: int, end: int, length_size: int, h265: bool,
                keyframe: bool, params: bytes, aud: bytes = b"") -> list[bytes]:
    """The Annex-B pieces of the AVCC frame ``payload[start:end]``; empty if
    it holds no NAL unit.

    ``params`` (:func:`parameter_sets`) go in front of a keyframe, or a frame
    holding an IDR / IRAP picture, that has no SPS of its own.  With ``aud``
    (an :data:`AUD`, as MPEG-TS wants) the frame's own delimiters are dropped
    and ``aud`` starts the unit; without, they are kept and the parameter sets
    follow a leading one.  Raises :class:`AnnexBError` when a length runs past
    ``end``.
    """
    kinds = _H265 if h265 else _H264
    drop = kinds.aud if aud else -1
    sps, key_first, key_last = kinds.sps, kinds.key_first, kinds.key_last
    parts = [aud] if aud else []
    append = parts.append
    has_sps = random_access = False
    read = _LENGTH_READERS.get(length_size)
    pos = start
    while pos + length_size <= end:
        if read is None:
            size = int.from_bytes(payload[pos:pos + length_size], "big")
        else:
            (size,) = read(payload, pos)
        pos += length_size
        if pos + size > end:
            raise AnnexBError("NAL unit runs past the end of the frame")
        if size:
            nal_type = (payload[pos] >> 1) & 0x3F if h265 else payload[pos] & 0x1F
            if nal_type != drop:
                if nal_type == sps:
                    has_sps = True
                elif key_first <= nal_type <= key_last:
                    random_access = True
                append(START_CODE)
                append(payload[pos:pos + size])
        pos += size
    if len(parts) <= bool(aud):
        return []
    if (keyframe or random_access) and not has_sps and params:
        at = 1 if aud else (2 if nal_kind(parts[1], h265) == kinds.aud else 0)
        parts.insert(at, params)
    return parts


def split_nalus(data: bytes | bytearray | memoryview, nal_length_size: int = 4) -> list[bytes]:
    """The NAL units of AVCC data (each behind a ``nal_length_size``-byte
    length); empty ones are dropped, a length past the end raises."""
    if nal_length_size not in (1, 2, 3, 4):
        raise AnnexBError(f"invalid NAL length size {nal_length_size}")
    buf = bytes(data)
    end = len(buf)
    nalus: list[bytes] = []
    pos = 0
    read = _LENGTH_READERS.get(nal_length_size)
    while pos < end:
        if pos + nal_length_size > end:
            raise AnnexBError(f"truncated NAL length at offset {pos}")
        if read is None:
            size = int.from_bytes(buf[pos:pos + nal_length_size], "big")
        else:
            (size,) = read(buf, pos)
        pos += nal_length_size
        if pos + size > end:
            raise AnnexBError(f"NAL unit length {size} at offset {pos} exceeds data "
                              f"({end} bytes)")
        if size:
            nalus.append(buf[pos:pos + size])
        pos += size
    return nalus


def join_annexb(nalus: Iterable[bytes]) -> bytes:
    """NAL units as an Annex-B byte stream with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in nalus)


# -- Annex-B to FLV (AVCC) -------------------------------------------------------------------

def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream, split at every 3- or 4-byte
    start code; a unit's trailing zero bytes (the first byte of a 4-byte start
    code after it) are dropped."""
    nals: list[bytes] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        pos = data.find(b"\x00\x00\x01", start)
        nal = data[start:len(data) if pos < 0 else pos].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def avcc(nalus: Iterable[bytes], length_size: int = 4) -> bytes:
    """NAL units as AVCC data: each behind its length in ``length_size`` bytes."""
    return b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in nalus)


def access_units(nals: Sequence[bytes], codec: Codec) -> list[list[bytes]]:
    """The NAL units of an elementary stream grouped into access units: one
    starts at a delimiter, parameter set or SEI after a picture's slices, or
    at the first slice of a picture (first_mb_in_slice 0, H.264 7.4.1.2.3;
    first_slice_segment_in_pic_flag, H.265 7.4.2.4.4)."""
    kinds = _KINDS[codec]
    h265 = codec == Codec.H265
    first_vcl = 0 if h265 else 1
    units: list[list[bytes]] = []
    current: list[bytes] = []
    seen_vcl = False
    for nal in nals:
        kind = nal_kind(nal, h265)
        if first_vcl <= kind <= kinds.vcl_last:
            # The first bit after the NAL header: first_slice_segment_in_pic_flag,
            # or the leading 1 of first_mb_in_slice = ue(0).
            at = 2 if h265 else 1
            if seen_vcl and len(nal) > at and nal[at] & 0x80:
                units.append(current)
                current = []
            seen_vcl = True
        elif kind in kinds.starts_unit and seen_vcl:
            units.append(current)
            current, seen_vcl = [], False
        current.append(nal)
    if current and seen_vcl:
        units.append(current)
    return units


@dataclass(frozen=True, slots=True)
class AnnexBUnit:
    """One access unit of an elementary stream: ``nals`` its NAL units but
    the parameter sets and delimiters; ``vps``, ``sps``, ``pps`` the
    parameter sets it carried; ``keyframe`` whether its picture is a random
    access point."""

    nals: list[bytes]
    vps: list[bytes]
    sps: list[bytes]
    pps: list[bytes]
    keyframe: bool


def annexb_units(data: bytes, codec: Codec) -> Iterator[AnnexBUnit]:
    """The access units of an H.264 or H.265 Annex-B stream, in decode order."""
    kinds = _KINDS[codec]
    h265 = codec == Codec.H265
    for unit in access_units(split_annexb(data), codec):
        vps: list[bytes] = []
        sps: list[bytes] = []
        pps: list[bytes] = []
        sets = {kinds.vps: vps, kinds.sps: sps, kinds.pps: pps}
        frame: list[bytes] = []
        keyframe = False
        for nal in unit:
            kind = nal_kind(nal, h265)
            target = sets.get(kind)
            if target is not None:
                if nal not in target:
                    target.append(nal)
            elif kind != kinds.aud:
                keyframe = keyframe or kinds.key_first <= kind <= kinds.key_last
                frame.append(nal)
        if frame:
            yield AnnexBUnit(frame, vps, sps, pps, keyframe)


def _decoder_config(codec: Codec, vps: list[bytes], sps: list[bytes], pps: list[bytes]) -> bytes:
    try:
        if codec == Codec.H264:
            return avc.build_decoder_config(sps, pps)
        return hevc.build_decoder_config(vps, sps, pps)
    except (avc.AvcError, hevc.HevcError) as e:
        raise AnnexBError(f"cannot describe the {codec} stream: {e}") from None


def annexb_to_flv(data: bytes, codec: Codec, enhanced_rtmp: bool = False) -> Iterator[FlvBody]:
    """An H.264 or H.265 Annex-B stream as FLV bodies: a sequence header from
    the first parameter sets and again wherever a keyframe brings others,
    then a frame per access unit (4-byte NAL lengths; parameter sets that
    come with another picture stay in its frame).  Access units before the
    first parameter sets cannot be decoded and are left out; a stream with
    none raises :class:`AnnexBError`."""
    current: tuple[list[bytes], list[bytes], list[bytes]] | None = None
    for unit in annexb_units(data, codec):
        nals = unit.nals
        if unit.keyframe or current is None:
            base = current or ([], [], [])
            sets = (unit.vps or base[0], unit.sps or base[1], unit.pps or base[2])
            if sets != current and sets[1] and sets[2]:
                current = sets
                yield FlvBody(VIDEO, video_sequence_start(
                    codec, _decoder_config(codec, *sets), enhanced_rtmp), header=True,
                    keyframe=True)
        elif (unit.vps, unit.sps, unit.pps) != ([], [], []):
            nals = [*unit.vps, *unit.sps, *unit.pps, *nals]  # in-band, as they came
        if current is None:
            continue
        yield FlvBody(VIDEO, video_body(codec, unit.keyframe, avcc(nals),
                                        enhanced_rtmp=enhanced_rtmp), keyframe=unit.keyframe)
    if current is None:
        raise AnnexBError(f"no SPS/PPS in the stream (is it Annex-B {codec}?)")


class AnnexBWriter:
    """FLV frames of one H.264 or H.265 track as Annex-B access units, the
    track's parameter sets in front of each keyframe that has none."""

    def __init__(self, track: VideoTrack) -> None:
        if not track.sps or not track.pps:
            raise AnnexBError("the sequence header has no SPS or PPS")
        self.track = track
        self.h265 = track.codec == Codec.H265
        self.params = parameter_sets(track.vps, track.sps, track.pps)

    def frame(self, packet: AVPacket) -> bytes:
        """``packet``'s access unit (b"" when it holds no frame of the track)."""
        span = coded_frame(packet, self.track.codec)
        if span is None:
            return b""
        return b"".join(access_unit(packet.payload, span[0], span[1],
                                    self.track.nal_length_size, self.h265,
                                    packet.is_keyframe, self.params))
