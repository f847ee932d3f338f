"""lal es2flv: wrap elementary streams in an FLV file: H.264 or H.265 (Annex B,
as ``ffmpeg -f h264`` / ``-f hevc`` write them), AV1 (the low overhead OBU
stream of ``ffmpeg -f obu``) and AAC (ADTS), one video and one audio at most.

H.264 and H.265 get the legacy codec ids (7, and for H.265 the id 12 that
Chinese CDNs and lal use) by default, the enhanced-RTMP ``avc1`` / ``hvc1``
headers with ``--enhanced``; AV1 is always enhanced RTMP (``av01``).  A
sequence header comes first and again wherever the stream's parameter sets
(sequence header OBU, AAC configuration) change.

The video must have no B-frames (decode order is presentation order): each
access unit gets the next ``1000 / fps`` ms timestamp and composition time 0.
Audio frames are timed by their sample rate.  The stream type is read from
the file name (.h264 .264 .avc, .h265 .265 .hevc, .obu .av1, .aac .adts) or,
failing that, from the first bytes.  The conversions are
:mod:`lal_twisted.media.convert`'s.
"""

from __future__ import annotations

import argparse
import heapq
import os
from collections.abc import Iterator
from typing import Any

from lal_twisted.media.convert import (
    CONVERSION_ERRORS,
    FlvBody,
    adts_to_flv,
    annexb_to_flv,
    obu_to_flv,
    split_annexb,
)
from lal_twisted.media.flv import TAG_AUDIO, FlvTag
from lal_twisted.media.tags import Codec
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import write_file

_EXTENSIONS = {".h264": Codec.H264, ".264": Codec.H264, ".avc": Codec.H264,
               ".h265": Codec.H265, ".265": Codec.H265, ".hevc": Codec.H265,
               ".obu": Codec.AV1, ".av1": Codec.AV1, ".aac": Codec.AAC, ".adts": Codec.AAC}


def sniff(data: bytes) -> Codec | None:
    """The codec of an elementary stream from its first bytes, None if unknown."""
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return Codec.AAC  # an ADTS sync word, layer 0
    if data[:2] == b"\x12\x00":
        return Codec.AV1  # a temporal delimiter OBU
    nals = split_annexb(data[:4096])
    if nals:
        # What streams start with: in H.265 a VPS, SPS, PPS, AUD or SEI (the
        # type in bits 1-6, layer 0); in H.264 an SPS, AUD or SEI.
        first = nals[0][0]
        if first in (0x40, 0x42, 0x44, 0x46, 0x4E):
            return Codec.H265
        if first & 0x1F in (6, 7, 9) and not first & 0x80:
            return Codec.H264
    return None


def codec_of(path: str, data: bytes) -> Codec:
    codec = _EXTENSIONS.get(os.path.splitext(path)[1].lower()) or sniff(data)
    if codec is None:
        raise ToolError(f"{path}: not an H.264, H.265, AV1 (OBU) or AAC (ADTS) stream "
                        "that can be recognised; name it .h264, .h265, .obu or .aac")
    return codec


def bodies(data: bytes, codec: Codec, enhanced: bool) -> Iterator[FlvBody]:
    """The FLV bodies of one elementary stream."""
    if codec == Codec.AAC:
        return adts_to_flv(data, enhanced)
    if codec == Codec.AV1:
        return obu_to_flv(data)
    return annexb_to_flv(data, codec, enhanced)


def timed(items: Iterator[FlvBody], fps: float, rank: int) -> Iterator[
        tuple[int, int, int, FlvTag]]:
    """One track's tags as (time, rank, order, tag), for merging tracks:
    video frames every ``1000 / fps`` ms, audio frames by their durations; a
    sequence header at the time of the frame after it."""
    frames = 0
    played = 0.0
    for order, item in enumerate(items):
        ts = round(played) if item.kind == TAG_AUDIO else round(frames * 1000 / fps)
        yield ts, rank, order, FlvTag(item.kind, ts, item.body)
        if not item.header:
            frames += 1
            played += item.duration


def add_parser(sub: Any) -> None:
    p = sub.add_parser("es2flv", help="wrap H.264/H.265/AV1/AAC elementary streams in FLV",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="elementary stream files: one video, one audio at most")
    p.add_argument("output", help="FLV file to write")
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate (default 25)")
    p.add_argument("--enhanced", action="store_true",
                   help="enhanced-RTMP tags (avc1, hvc1, mp4a) instead of the legacy codec ids")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.fps <= 0:
        raise ToolError("--fps must be above 0")
    if len(args.inputs) > 2:
        raise ToolError("at most two inputs: one video and one audio stream")
    tracks: dict[bool, tuple[str, Codec, bytes]] = {}  # by "is audio"
    for path in args.inputs:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise ToolError(f"cannot read {path}: {e.strerror}") from None
        codec = codec_of(path, data)
        audio = codec == Codec.AAC
        if audio in tracks:
            raise ToolError(f"{path}: a second {'audio' if audio else 'video'} stream "
                            f"(after {tracks[audio][0]})")
        tracks[audio] = (path, codec, data)
    streams = []
    counts: list[str] = []
    for audio, (path, codec, data) in sorted(tracks.items()):
        try:
            items = list(bodies(data, codec, args.enhanced))
        except CONVERSION_ERRORS as e:
            raise ToolError(f"{path}: {e}") from None
        frames = sum(1 for item in items if not item.header)
        counts.append(f"{frames} {'audio' if audio else 'video'} frames ({codec})")
        streams.append(timed(iter(items), args.fps, int(audio)))
    tags = [tag for _ts, _rank, _order, tag in heapq.merge(*streams)]
    try:
        write_file(args.output, tags, has_audio=True in tracks, has_video=False in tracks)
    except OSError as e:
        raise ToolError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"lal es2flv: {', '.join(counts)} to {args.output}")
    return 0
