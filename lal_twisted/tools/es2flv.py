"""lal es2flv: wrap an H.265 elementary stream (Annex B, as ``ffmpeg -f hevc``
writes it) in an FLV file, with the legacy codec id 12 that Chinese CDNs and
lal use (default) or the enhanced-RTMP ``hvc1`` header (``--enhanced``).

The stream must have no B-frames (decode order is presentation order): each
access unit gets the next ``1000 / fps`` ms timestamp and composition time 0.
The sequence header is an HEVCDecoderConfigurationRecord built from the first
VPS, SPS and PPS; access units whose picture is a random access point are
keyframes.
"""

from __future__ import annotations

import argparse
import struct
from collections.abc import Iterator
from typing import Any

from lal_twisted.media import avc, hevc
from lal_twisted.media.flv import TAG_VIDEO, FlvTag
from lal_twisted.media.tags import FrameType, VideoCodecId, VideoPacketType
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import write_file

_U32 = struct.Struct(">I")
_PARAMETER_SETS = (hevc.NAL_VPS, hevc.NAL_SPS, hevc.NAL_PPS)


def hevc_tags(data: bytes, fps: float, enhanced: bool = False) -> Iterator[FlvTag]:
    """FLV video tags for an H.265 Annex B stream: the sequence header, then one
    tag per access unit (parameter sets and AUDs left out of the frames)."""
    nals = avc.split_annexb(data)
    params: dict[int, list[bytes]] = {kind: [] for kind in _PARAMETER_SETS}
    for nal in nals:
        kind = hevc.nal_type(nal)
        if kind in params and nal not in params[kind]:
            params[kind].append(nal)
    if not params[hevc.NAL_SPS] or not params[hevc.NAL_PPS]:
        raise ToolError("no SPS/PPS in the H.265 stream (is it Annex B H.265?)")
    try:
        record = hevc.build_decoder_config(params[hevc.NAL_VPS], params[hevc.NAL_SPS],
                                           params[hevc.NAL_PPS])
    except hevc.HevcError as e:
        raise ToolError(f"cannot describe the H.265 stream: {e}") from None
    yield FlvTag(TAG_VIDEO, 0, _header(FrameType.KEY, True, enhanced) + record)
    for index, unit in enumerate(hevc.access_units(nals)):
        frames = [nal for nal in unit
                  if hevc.nal_type(nal) not in (*_PARAMETER_SETS, hevc.NAL_AUD)]
        if not frames:
            continue
        frame_type = FrameType.KEY if hevc.is_irap(unit) else FrameType.INTER
        body = b"".join(_U32.pack(len(nal)) + nal for nal in frames)
        yield FlvTag(TAG_VIDEO, round(index * 1000 / fps), _header(frame_type, False, enhanced)
                     + body)


def _header(frame_type: int, sequence: bool, enhanced: bool) -> bytes:
    if enhanced:
        packet_type = VideoPacketType.SEQUENCE_START if sequence else VideoPacketType.CODED_FRAMES_X
        return bytes([0x80 | frame_type << 4 | packet_type]) + b"hvc1"
    # [FrameType:4][CodecId=12:4][AVCPacketType][CompositionTime:SI24 = 0]
    return bytes([frame_type << 4 | VideoCodecId.HEVC, 0 if sequence else 1, 0, 0, 0])


def add_parser(sub: Any) -> None:
    p = sub.add_parser("es2flv", help="wrap an H.265 elementary stream in FLV (codec id 12)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="H.265 Annex B file (ffmpeg -f hevc)")
    p.add_argument("output", help="FLV file to write")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--enhanced", action="store_true",
                   help="write enhanced-RTMP hvc1 tags instead of codec id 12")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.fps <= 0:
        raise ToolError("--fps must be above 0")
    try:
        with open(args.input, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ToolError(f"cannot read {args.input}: {e.strerror}") from None
    tags = list(hevc_tags(data, args.fps, args.enhanced))
    try:
        write_file(args.output, tags, has_audio=False, has_video=True)
    except OSError as e:
        raise ToolError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"lal es2flv: {len(tags) - 1} frames to {args.output}")
    return 0
