"""lal flv2es: split an FLV file into raw elementary streams.

H.264 and H.265 video become Annex-B byte streams (``PREFIX.h264`` /
``PREFIX.h265``) with the parameter sets of the latest sequence header written
before every keyframe, so each GOP decodes on its own.  AAC audio becomes an
ADTS stream (``PREFIX.aac``).  Both legacy FLV codec ids and enhanced-RTMP
FourCC headers are understood; other codecs are skipped with a warning.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from lal_twisted.media import aac, avc, hevc
from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvError, FlvReader, FlvTag
from lal_twisted.media.tags import audio_codec_of, video_codec_of
from lal_twisted.tools.cli import ToolError

_CHUNK = 1 << 20

# Legacy FLV video codec ids and enhanced-RTMP FourCCs this tool extracts.
_VIDEO_CODEC_IDS = {7: "h264", 12: "h265"}
_VIDEO_FOURCCS = {b"avc1": "h264", b"hvc1": "h265"}
_SOUND_AAC = 10
_SOUND_EX_HEADER = 9
_FOURCC_AAC = b"mp4a"

# Enhanced-RTMP video packet types.
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3
_EX_METADATA = 4
_EX_MPEG2TS_SEQUENCE_START = 5

# Legacy AVC/HEVC packet types (byte 1 of the video tag).
_PKT_SEQUENCE_HEADER = 0
_PKT_NALUS = 1
_PKT_END_OF_SEQUENCE = 2

_FRAME_KEY = 1
_FRAME_COMMAND = 5

# NAL unit types: parameter sets, access unit delimiters and random access points.
_H264_IDR = 5
_H264_SPS = 7
_H264_AUD = 9
_H265_IRAP = range(16, 24)
_H265_SPS = 33
_H265_AUD = 35


class FlvInput:
    """The tags of an FLV file, read in chunks, with the failures a tool reports.

    Iterating yields complete tags.  A missing file or a file that is not an
    FLV raises :class:`ToolError`; a file that ends inside a tag, or holds a
    malformed tag after a valid start, stops the iteration and leaves a
    message in :attr:`problem` so the caller can finish what was complete.
    With ``progress`` set and stderr a terminal, the percentage read is shown
    at most once a second.
    """

    def __init__(self, path: str, progress: str | None = None) -> None:
        self.path = path
        self.progress = progress
        self.tags_read = 0
        self.problem: str | None = None
        self.has_audio = False
        self.has_video = False
        try:
            self._fh: io.BufferedReader = open(path, "rb")
        except FileNotFoundError:
            raise ToolError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ToolError(f"{path}: is a directory") from None
        except OSError as e:
            raise ToolError(f"{path}: {e.strerror}") from None
        self.size = os.fstat(self._fh.fileno()).st_size

    def __iter__(self) -> Iterator[FlvTag]:
        reader = FlvReader()
        done = 0
        show = self.progress is not None and sys.stderr.isatty()
        shown = False
        last_shown = time.monotonic()
        try:
            with self._fh as fh:
                while chunk := fh.read1(_CHUNK):
                    try:
                        tags = reader.feed(chunk)
                    except FlvError as e:
                        if not reader.header_parsed:
                            reason = str(e).removeprefix("not an FLV stream: ")
                            raise ToolError(f"{self.path}: not an FLV file ({reason})") from None
                        self.has_audio, self.has_video = reader.has_audio, reader.has_video
                        self.problem = (f"malformed FLV after {self.tags_read} complete tags: "
                                        f"{e}")
                        return
                    self.has_audio, self.has_video = reader.has_audio, reader.has_video
                    for tag in tags:
                        self.tags_read += 1
                        yield tag
                    done += len(chunk)
                    if show and time.monotonic() - last_shown >= 1.0:
                        last_shown = time.monotonic()
                        sofar = (f"{100 * done // self.size}%" if self.size
                                 else f"{done / 1e6:.1f} MB")
                        sys.stderr.write(f"\r\x1b[Klal {self.progress}: {sofar} of {self.path}")
                        sys.stderr.flush()
                        shown = True
        finally:
            if shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
        if not reader.header_parsed:
            what = "empty file" if self.size == 0 else "too short for an FLV header"
            raise ToolError(f"{self.path}: not an FLV file ({what})")
        if not reader.at_tag_boundary():
            self.problem = (f"truncated FLV: {self.path} ends inside tag {self.tags_read + 1} "
                            f"after {self.tags_read} complete tags")


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
            if frame_type == _FRAME_COMMAND and packet_type != _EX_METADATA:
                return
            fourcc = payload[1:5]
            codec = _VIDEO_FOURCCS.get(fourcc)
            if codec is None:
                self._skip_codec("video", video_codec_of(payload))
                return
            if packet_type == _EX_SEQUENCE_START:
                self._configure_video(codec, payload[5:])
            elif packet_type == _EX_CODED_FRAMES:
                self._video_track(codec).frame(payload[8:], frame_type == _FRAME_KEY)
            elif packet_type == _EX_CODED_FRAMES_X:
                self._video_track(codec).frame(payload[5:], frame_type == _FRAME_KEY)
            elif packet_type not in (_EX_SEQUENCE_END, _EX_METADATA,
                                     _EX_MPEG2TS_SEQUENCE_START):
                self._warn_once(f"video packet type {packet_type}",
                                f"skipping enhanced-RTMP video packets of type {packet_type}")
            return
        frame_type = first >> 4
        if frame_type == _FRAME_COMMAND:
            return
        codec = _VIDEO_CODEC_IDS.get(first & 0x0F)
        if codec is None:
            self._skip_codec("video", video_codec_of(payload))
            return
        if len(payload) < 5:
            self._warn_once(f"short {codec}", f"skipping {codec} video tags shorter than 5 bytes")
            return
        packet_type = payload[1]
        if packet_type == _PKT_SEQUENCE_HEADER:
            self._configure_video(codec, payload[5:])
        elif packet_type == _PKT_NALUS:
            self._video_track(codec).frame(payload[5:], frame_type == _FRAME_KEY)
        elif packet_type != _PKT_END_OF_SEQUENCE:
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
        if sound_format == _SOUND_AAC:
            if len(payload) < 2:
                return
            packet_type, body = payload[1], payload[2:]
        elif sound_format == _SOUND_EX_HEADER and payload[1:5] == _FOURCC_AAC:
            packet_type, body = first & 0x0F, payload[5:]
            if packet_type not in (_PKT_SEQUENCE_HEADER, _PKT_NALUS, _PKT_END_OF_SEQUENCE):
                self._warn_once(f"audio packet type {packet_type}",
                                f"skipping enhanced-RTMP audio packets of type {packet_type}")
                return
        else:
            self._skip_codec("audio", audio_codec_of(payload))
            return
        if self.audio_track is None:
            self.audio_track = _AudioTrack(self.prefix)
        if packet_type == _PKT_SEQUENCE_HEADER:
            error = self.audio_track.configure(body)
            if error:
                warn(self.tool, f"unusable AAC sequence header in tag {self._tag_index} "
                                f"({error}); skipping frames until the next one")
        elif packet_type == _PKT_NALUS:
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
