"""lal flv2es: split an FLV file into raw elementary streams.

H.264 and H.265 video become Annex-B byte streams (``PREFIX.h264`` /
``PREFIX.h265``) with the parameter sets of the latest sequence header written
before every keyframe, so each GOP decodes on its own.  AAC audio becomes an
ADTS stream (``PREFIX.aac``).  Both legacy FLV codec ids and enhanced-RTMP
FourCC headers are understood; other codecs are skipped with a warning.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from lal_twisted.media import aac, avc, hevc
from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvTag
from lal_twisted.media.tags import (
    AudioPacketType,
    AvcPacketType,
    Codec,
    FrameType,
    SoundFormat,
    VideoCodecId,
    VideoPacketType,
    audio_codec_of,
    video_codec_of,
)
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import FlvInput

# Legacy FLV video codec ids and enhanced-RTMP FourCCs this tool extracts.
_VIDEO_CODEC_IDS: dict[int, Codec] = {VideoCodecId.AVC: Codec.H264, VideoCodecId.HEVC: Codec.H265}
_VIDEO_FOURCCS = {b"avc1": Codec.H264, b"hvc1": Codec.H265}
_FOURCC_AAC = b"mp4a"

# NAL unit types: parameter sets, access unit delimiters and random access points.
_H264_IDR = 5
_H264_SPS = 7
_H264_AUD = 9
_H265_IRAP = range(16, 24)
_H265_SPS = 33
_H265_AUD = 35


def warn(tool: str, message: str) -> None:
    """One warning line on stderr, in the same form as the errors of ``lal``."""
    print(f"lal {tool}: warning: {message}", file=sys.stderr)


class _Output:
    """An elementary-stream file, created on the first write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.frames = 0
        self.nbytes = 0
        self._fh: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._fh is None:
            try:
                self._fh = open(self.path, "wb")
            except OSError as e:
                raise ToolError(f"cannot write {self.path}: {e.strerror}") from None
        self._fh.write(data)
        self.frames += 1
        self.nbytes += len(data)

    @property
    def created(self) -> bool:
        return self._fh is not None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


class _Track:
    """What every output track counts: frames it could not write, and why."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.out = _Output(path)
        self.early = 0  # coded frames before any sequence header
        self.unusable = 0  # coded frames after an unusable sequence header
        self.malformed = 0  # frames that cannot be split or framed
        self.bad_config = False

    def skip(self) -> None:
        """Count a coded frame that has no usable configuration to go with."""
        if self.bad_config:
            self.unusable += 1
        else:
            self.early += 1

    def describe(self) -> str:
        return self.name


class _VideoTrack(_Track):
    """One H.264 or H.265 stream: the latest parameter sets and the Annex-B output."""

    def __init__(self, codec: str, prefix: str) -> None:
        super().__init__(codec, f"{prefix}.{codec}")
        self.codec = codec
        self.param_sets: list[bytes] | None = None
        self.nal_length_size = 4

    def configure(self, record: bytes) -> str | None:
        """Take a new decoder configuration record; return an error message if unusable."""
        try:
            if self.codec == "h264":
                avc_config = avc.parse_decoder_config(record)
                sets = avc_config.sps + avc_config.pps
                self.nal_length_size = avc_config.nal_length_size
            else:
                hevc_config = hevc.parse_decoder_config(record)
                sets = hevc_config.vps + hevc_config.sps + hevc_config.pps
                self.nal_length_size = hevc_config.nal_length_size
        except (avc.AvcError, hevc.HevcError) as e:
            self.param_sets = None
            self.bad_config = True
            return str(e)
        self.param_sets = sets
        self.bad_config = False
        return None

    def frame(self, data: bytes, flv_keyframe: bool) -> None:
        """Write one coded frame (length-prefixed NAL units) as an Annex-B access unit."""
        if self.param_sets is None:
            self.skip()
            return
        try:
            nalus = avc.split_nalus(data, self.nal_length_size)
        except avc.AvcError:
            self.malformed += 1
            return
        if not nalus:
            return
        types = [self._nal_type(n) for n in nalus]
        if self.codec == "h264":
            key = flv_keyframe or _H264_IDR in types
            has_sets, aud = _H264_SPS in types, _H264_AUD
        else:
            key = flv_keyframe or any(t in _H265_IRAP for t in types)
            has_sets, aud = _H265_SPS in types, _H265_AUD
        if key and not has_sets:
            # Parameter sets go after an access unit delimiter, which must come first.
            at = 1 if types[0] == aud else 0
            nalus[at:at] = self.param_sets
        self.out.write(avc.to_annexb(nalus))

    def _nal_type(self, nal: bytes) -> int:
        if self.codec == "h264":
            return nal[0] & 0x1F
        return (nal[0] >> 1) & 0x3F


class _AudioTrack(_Track):
    """The AAC stream: the latest AudioSpecificConfig and the ADTS output."""

    def __init__(self, prefix: str) -> None:
        super().__init__("aac", f"{prefix}.aac")
        self.info: aac.AscInfo | None = None

    def configure(self, config: bytes) -> str | None:
        """Take a new AudioSpecificConfig; return an error message if unusable."""
        try:
            info = aac.parse_audio_specific_config(config)
            aac.adts_header(info, 0)  # ADTS must be able to express it
        except aac.AacError as e:
            self.info = None
            self.bad_config = True
            return str(e)
        self.info = info
        self.bad_config = False
        return None

    def frame(self, data: bytes) -> None:
        """Write one raw AAC frame with its ADTS header."""
        if self.info is None:
            self.skip()
            return
        if not data:
            return
        try:
            header = aac.adts_header(self.info, len(data))
        except aac.AacError:
            self.malformed += 1
            return
        self.out.write(header + data)

    def describe(self) -> str:
        info = self.info
        if info is None:
            return "aac"
        return f"aac {info.profile_name} {info.sample_rate} Hz {info.channels} ch"


class Splitter:
    """Route the tags of an FLV file to the elementary-stream outputs."""

    def __init__(self, prefix: str, video: bool = True, audio: bool = True,
                 tool: str = "flv2es") -> None:
        self.prefix = prefix
        self.want_video = video
        self.want_audio = audio
        self.tool = tool
        self.video_tracks: dict[str, _VideoTrack] = {}
        self.audio_track: _AudioTrack | None = None
        self.video_tags = 0
        self.audio_tags = 0
        self.skipped: list[str] = []
        self._warned: set[str] = set()
        self._tag_index = 0

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(self.tool, message)

    def _skip_codec(self, kind: str, name: str) -> None:
        label = f"{name} {kind}"
        if label not in self.skipped:
            self.skipped.append(label)
        self._warn_once(label, f"skipping {label}: only H.264, H.265 and AAC are extracted")

    def feed(self, tag: FlvTag) -> None:
        """Handle one tag; script data and unknown tag types are ignored."""
        self._tag_index += 1
        if tag.tag_type == TAG_VIDEO:
            self.video_tags += 1
            if self.want_video and tag.payload:
                self._video(tag.payload)
        elif tag.tag_type == TAG_AUDIO:
            self.audio_tags += 1
            if self.want_audio and tag.payload:
                self._audio(tag.payload)

    def _video_track(self, codec: str) -> _VideoTrack:
        track = self.video_tracks.get(codec)
        if track is None:
            track = self.video_tracks[codec] = _VideoTrack(codec, self.prefix)
        return track

    def _video(self, payload: bytes) -> None:
        first = payload[0]
        if first & 0x80:
            frame_type = (first >> 4) & 0x07
            packet_type = first & 0x0F
            if frame_type == FrameType.COMMAND and packet_type != VideoPacketType.METADATA:
                return
            fourcc = payload[1:5]
            codec = _VIDEO_FOURCCS.get(fourcc)
            if codec is None:
                self._skip_codec("video", video_codec_of(payload))
                return
            if packet_type == VideoPacketType.SEQUENCE_START:
                self._configure_video(codec, payload[5:])
            elif packet_type == VideoPacketType.CODED_FRAMES:
                self._video_track(codec).frame(payload[8:], frame_type == FrameType.KEY)
            elif packet_type == VideoPacketType.CODED_FRAMES_X:
                self._video_track(codec).frame(payload[5:], frame_type == FrameType.KEY)
            elif packet_type not in (VideoPacketType.SEQUENCE_END, VideoPacketType.METADATA,
                                     VideoPacketType.MPEG2TS_SEQUENCE_START):
                self._warn_once(f"video packet type {packet_type}",
                                f"skipping enhanced-RTMP video packets of type {packet_type}")
            return
        frame_type = first >> 4
        if frame_type == FrameType.COMMAND:
            return
        codec = _VIDEO_CODEC_IDS.get(first & 0x0F)
        if codec is None:
            self._skip_codec("video", video_codec_of(payload))
            return
        if len(payload) < 5:
            self._warn_once(f"short {codec}", f"skipping {codec} video tags shorter than 5 bytes")
            return
        packet_type = payload[1]
        if packet_type == AvcPacketType.SEQUENCE_HEADER:
            self._configure_video(codec, payload[5:])
        elif packet_type == AvcPacketType.NALU:
            self._video_track(codec).frame(payload[5:], frame_type == FrameType.KEY)
        elif packet_type != AvcPacketType.END_OF_SEQUENCE:
            self._warn_once(f"{codec} packet type {packet_type}",
                            f"skipping {codec} video packets of type {packet_type}")

    def _configure_video(self, codec: str, record: bytes) -> None:
        error = self._video_track(codec).configure(record)
        if error:
            warn(self.tool, f"unusable {codec} sequence header in tag {self._tag_index} "
                            f"({error}); skipping frames until the next one")

    def _audio(self, payload: bytes) -> None:
        first = payload[0]
        sound_format = first >> 4
        if sound_format == SoundFormat.AAC:
            if len(payload) < 2:
                return
            packet_type, body = payload[1], payload[2:]
        elif sound_format == SoundFormat.EX_HEADER and payload[1:5] == _FOURCC_AAC:
            packet_type, body = first & 0x0F, payload[5:]
            if packet_type not in (AudioPacketType.SEQUENCE_START, AudioPacketType.CODED_FRAMES,
                                   AudioPacketType.SEQUENCE_END):
                self._warn_once(f"audio packet type {packet_type}",
                                f"skipping enhanced-RTMP audio packets of type {packet_type}")
                return
        else:
            self._skip_codec("audio", audio_codec_of(payload))
            return
        if self.audio_track is None:
            self.audio_track = _AudioTrack(self.prefix)
        # A legacy AACPacketType uses the same numbers: 0 sequence header, 1 raw frame.
        if packet_type == AudioPacketType.SEQUENCE_START:
            error = self.audio_track.configure(body)
            if error:
                warn(self.tool, f"unusable AAC sequence header in tag {self._tag_index} "
                                f"({error}); skipping frames until the next one")
        elif packet_type == AudioPacketType.CODED_FRAMES:
            self.audio_track.frame(body)

    def _tracks(self) -> list[_Track]:
        tracks: list[_Track] = list(self.video_tracks.values())
        if self.audio_track is not None:
            tracks.append(self.audio_track)
        return tracks

    def outputs(self) -> list[tuple[_Output, str]]:
        """The files written so far with a description of each."""
        return [(t.out, t.describe()) for t in self._tracks() if t.out.created]

    def close(self) -> None:
        """Close the outputs and warn about the frames that could not be written."""
        for track in self._tracks():
            track.out.close()
            name = track.name
            if track.early:
                warn(self.tool, f"skipped {track.early} {name} frames that came before "
                                "the first sequence header")
            if track.unusable:
                warn(self.tool, f"skipped {track.unusable} {name} frames that followed an "
                                "unusable sequence header")
            if track.malformed:
                warn(self.tool, f"skipped {track.malformed} malformed {name} frames")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "flv2es", help="split an FLV file into raw H.264/H.265/AAC streams",
        description="Write the video of FILE as an Annex-B stream (PREFIX.h264 or "
                    "PREFIX.h265, parameter sets before every keyframe) and its AAC audio "
                    "as ADTS (PREFIX.aac).  Only the tracks present are written; other "
                    "codecs are skipped with a warning.")
    p.add_argument("file", metavar="FILE", help="FLV file to read")
    p.add_argument("prefix", metavar="OUT_PREFIX",
                   help="output path without extension (e.g. out -> out.h264, out.aac)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--video-only", action="store_true", help="write only the video stream")
    only.add_argument("--audio-only", action="store_true", help="write only the audio stream")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Split ``args.file`` into elementary streams next to ``args.prefix``."""
    source = FlvInput(args.file, progress="flv2es")
    splitter = Splitter(args.prefix, video=not args.audio_only, audio=not args.video_only)
    try:
        for tag in source:
            splitter.feed(tag)
    finally:
        splitter.close()
    outputs = splitter.outputs()
    if outputs:
        parts = [f"{out.path} ({what}, {out.frames} frames, {out.nbytes} bytes)"
                 for out, what in outputs]
        print("wrote " + ", ".join(parts))
    if source.problem:
        written = "wrote what was complete" if outputs else "nothing written"
        raise ToolError(f"{source.problem}; {written}")
    if outputs:
        return 0
    wanted = "video" if args.video_only else "audio" if args.audio_only else "audio or video"
    seen = (splitter.video_tags if splitter.want_video else 0) + (
        splitter.audio_tags if splitter.want_audio else 0)
    if not seen:
        raise ToolError(f"{args.file}: no {wanted} tags")
    if splitter.skipped:
        raise ToolError(f"{args.file}: nothing to extract (only {', '.join(splitter.skipped)})")
    raise ToolError(f"{args.file}: nothing to extract (no decodable {wanted} frames)")
