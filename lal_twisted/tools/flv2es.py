"""lal flv2es: split an FLV file into raw elementary streams.

H.264 and H.265 video become Annex-B byte streams (``PREFIX.h264`` /
``PREFIX.h265``) with the parameter sets of the latest sequence header written
before every keyframe, so each GOP decodes on its own; AV1 becomes a low
overhead OBU stream (``PREFIX.obu``, as ``ffmpeg -f obu`` writes), the
sequence header before every keyframe.  AAC audio becomes an ADTS stream
(``PREFIX.aac``).  Legacy FLV codec ids and enhanced-RTMP headers (ModEx and
multitrack included: the main track is extracted) are understood; other
codecs are skipped with a warning.  The conversions are
:mod:`lal_twisted.media.convert`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from lal_twisted.media import enhanced
from lal_twisted.media.convert import (
    CONVERSION_ERRORS,
    AdtsWriter,
    AnnexBWriter,
    ObuWriter,
)
from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvTag
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.tags import AvcPacketType, Codec, SoundFormat, VideoPacketType
from lal_twisted.media.track import audio_track, video_track
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import FlvInput

# The codecs extracted, with the file extension of their elementary stream.
_VIDEO_EXTENSIONS = {Codec.H264: "h264", Codec.H265: "h265", Codec.AV1: "obu"}
_AUDIO_EXTENSION = "aac"
# Video packets that carry no picture and are passed over without a word.
_NO_PICTURE = (int(VideoPacketType.SEQUENCE_END), int(VideoPacketType.METADATA),
               int(VideoPacketType.MPEG2TS_SEQUENCE_START))
_LEGACY_NO_PICTURE = int(AvcPacketType.END_OF_SEQUENCE)


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


class _Writer(Protocol):
    def frame(self, packet: AVPacket) -> bytes: ...


class _Track:
    """One output track: the converter of its latest usable sequence header,
    and the frames it could not write, and why."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.out = _Output(path)
        self.writer: _Writer | None = None
        self.description = name
        self.early = 0  # coded frames before any sequence header
        self.unusable = 0  # coded frames after an unusable sequence header
        self.malformed = 0  # frames that cannot be split or framed
        self.bad_config = False

    def configure(self, make: Callable[[], _Writer]) -> str | None:
        """Take the converter ``make()`` builds; an error message if it cannot."""
        try:
            self.writer = make()
        except CONVERSION_ERRORS as e:
            self.writer = None
            self.bad_config = True
            return str(e)
        self.bad_config = False
        return None

    def frame(self, packet: AVPacket) -> None:
        """Write one coded frame in the elementary-stream form."""
        if self.writer is None:
            if self.bad_config:
                self.unusable += 1
            else:
                self.early += 1
            return
        try:
            data = self.writer.frame(packet)
        except CONVERSION_ERRORS:
            self.malformed += 1
            return
        if data:
            self.out.write(data)


def _packet_type(payload: bytes, video: bool) -> int:
    """The packet type a tag body names (AVCPacketType / AACPacketType for
    legacy tags), -1 when unreadable."""
    enhanced_tag = payload[0] & 0x80 if video else payload[0] >> 4 == SoundFormat.EX_HEADER
    if enhanced_tag:
        try:
            return enhanced.parse(payload, video).packet_type
        except enhanced.EnhancedError:
            return -1
    return payload[1] if len(payload) > 1 else -1


class Splitter:
    """Route the tags of an FLV file to the elementary-stream outputs."""

    def __init__(self, prefix: str, video: bool = True, audio: bool = True,
                 tool: str = "flv2es") -> None:
        self.prefix = prefix
        self.want_video = video
        self.want_audio = audio
        self.tool = tool
        self.video_tracks: dict[Codec, _Track] = {}
        self.audio_track: _Track | None = None
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
        self._warn_once(label, f"skipping {label}: only H.264, H.265, AV1 and AAC are "
                               "extracted")

    def feed(self, tag: FlvTag) -> None:
        """Handle one tag; script data and unknown tag types are ignored."""
        self._tag_index += 1
        if tag.tag_type == TAG_VIDEO:
            self.video_tags += 1
            if self.want_video and tag.payload:
                self._video(AVPacket(tag.tag_type, tag.timestamp, bytes(tag.payload)))
        elif tag.tag_type == TAG_AUDIO:
            self.audio_tags += 1
            if self.want_audio and tag.payload:
                self._audio(AVPacket(tag.tag_type, tag.timestamp, bytes(tag.payload)))

    def _video(self, packet: AVPacket) -> None:
        codec = packet.codec
        if codec is None:
            return  # a command frame
        extension = _VIDEO_EXTENSIONS.get(codec)
        if extension is None:
            self._skip_codec("video", str(codec))
            return
        track = self.video_tracks.get(codec)
        if track is None:
            track = self.video_tracks[codec] = _Track(str(codec), f"{self.prefix}.{extension}")
        if packet.is_sequence_header:
            if packet.header_key is None:  # the main track's decoder configuration
                config = video_track(packet.payload)
                make = ObuWriter if codec == Codec.AV1 else AnnexBWriter
                self._configured(str(codec), track.configure(lambda: make(config)))
            return
        payload = packet.payload
        enhanced_tag = bool(payload[0] & 0x80)
        if not enhanced_tag and len(payload) < 5:
            self._warn_once(f"short {codec}", f"skipping {codec} video tags shorter than 5 bytes")
            return
        packet_type = _packet_type(payload, True)
        if packet_type in (_NO_PICTURE if enhanced_tag else (_LEGACY_NO_PICTURE,)):
            return
        known = (int(VideoPacketType.CODED_FRAMES), int(VideoPacketType.CODED_FRAMES_X)) \
            if enhanced_tag else (int(AvcPacketType.NALU),)
        if packet_type not in known:
            what = "enhanced-RTMP video" if enhanced_tag else f"{codec} video"
            self._warn_once(f"{what} packet type {packet_type}",
                            f"skipping {what} packets of type {packet_type}")
            return
        track.frame(packet)

    def _configured(self, name: str, error: str | None) -> None:
        if error:
            warn(self.tool, f"unusable {name} sequence header in tag {self._tag_index} "
                            f"({error}); skipping frames until the next one")

    def _audio(self, packet: AVPacket) -> None:
        if packet.codec != Codec.AAC:
            self._skip_codec("audio", str(packet.codec))
            return
        packet_type = _packet_type(packet.payload, False)
        # A legacy AACPacketType uses the same numbers: 0 sequence header, 1 raw frame.
        if packet_type not in (0, 1, 2) and not packet.is_sequence_header:
            self._warn_once(f"audio packet type {packet_type}",
                            f"skipping enhanced-RTMP audio packets of type {packet_type}")
            return
        if self.audio_track is None:
            self.audio_track = _Track("aac", f"{self.prefix}.{_AUDIO_EXTENSION}")
        track = self.audio_track
        if packet.is_sequence_header:
            if packet.header_key is None:
                config = audio_track(packet.payload).config
                self._configured("AAC", track.configure(lambda: AdtsWriter(config)))
                writer = track.writer
                track.description = (_describe_aac(writer) if isinstance(writer, AdtsWriter)
                                     else "aac")
        elif packet_type == 1:
            track.frame(packet)

    def _tracks(self) -> list[_Track]:
        tracks = list(self.video_tracks.values())
        if self.audio_track is not None:
            tracks.append(self.audio_track)
        return tracks

    def outputs(self) -> list[tuple[_Output, str]]:
        """The files written so far with a description of each."""
        return [(t.out, t.description) for t in self._tracks() if t.out.created]

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


def _describe_aac(writer: AdtsWriter) -> str:
    info = writer.info
    return f"aac {info.profile_name} {info.sample_rate} Hz {info.channels} ch"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "flv2es", help="split an FLV file into raw H.264/H.265/AV1/AAC streams",
        description="Write the video of FILE as an Annex-B stream (PREFIX.h264 or "
                    "PREFIX.h265, parameter sets before every keyframe) or an AV1 OBU "
                    "stream (PREFIX.obu), and its AAC audio as ADTS (PREFIX.aac).  Only the "
                    "tracks present are written; other codecs are skipped with a warning.")
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
