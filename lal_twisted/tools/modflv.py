"""lal modflv: rewrite the tag timestamps of an FLV file.

Payloads are copied unchanged; only the timestamps move.  ``--rebase`` starts
the file at 0, ``--shift`` moves every tag by a fixed amount and ``--repair``
removes backward steps and large jumps, track by track, as left behind by
publishers that reconnect or have broken clocks.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from lal_twisted.media.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvTag, encode_tag, file_header
from lal_twisted.media.packet import AVPacket
from lal_twisted.tools.common import ToolError
from lal_twisted.tools.flvfile import FlvInput

DEFAULT_MAX_GAP = 1000
DEFAULT_VIDEO_INTERVAL = 40
DEFAULT_AUDIO_INTERVAL = 23
_MAX_TIMESTAMP = 0xFFFFFFFF
_RECENT_DELTAS = 32
_MEDIA = (TAG_AUDIO, TAG_VIDEO)
_KINDS = {TAG_AUDIO: "audio", TAG_VIDEO: "video", TAG_SCRIPT: "script"}

Retimer = Callable[[int, FlvTag], int]
"""Maps (1-based tag index, tag) to the tag's new timestamp."""


def _kind(tag: FlvTag) -> str:
    return _KINDS.get(tag.tag_type, f"type {tag.tag_type}")


def is_sequence_header(tag: FlvTag) -> bool:
    """True for an audio/video sequence header (decoder configuration, not a frame)."""
    return tag.tag_type in _MEDIA and AVPacket(tag.tag_type, 0, tag.payload).is_sequence_header


def first_frame_timestamp(path: str) -> int | None:
    """Timestamp of the first audio or video frame of an FLV file (None if there is none).

    Sequence headers are passed over: writers often put them at 0 even when
    the frames start later (``ffmpeg -output_ts_offset``).
    """
    for tag in FlvInput(path):
        if tag.tag_type in _MEDIA and not is_sequence_header(tag):
            return tag.timestamp
    return None


def rebaser(base: int) -> Retimer:
    """Subtract ``base`` from every timestamp, never going below 0.

    Tags before the first frame (metadata, sequence headers) end up at 0.
    """

    def retime(index: int, tag: FlvTag) -> int:
        return max(0, tag.timestamp - base)

    return retime


def shifter(shift: int) -> Retimer:
    """Add ``shift`` to every timestamp.

    Metadata and sequence headers at 0 stay at 0, as writers put them there
    whatever time the frames start at.  A result outside 0..2**32-1 is a
    :class:`ToolError` naming the first such tag.
    """

    def retime(index: int, tag: FlvTag) -> int:
        if tag.timestamp == 0 and (tag.tag_type not in _MEDIA or is_sequence_header(tag)):
            return 0
        ts = tag.timestamp + shift
        if ts < 0 or ts > _MAX_TIMESTAMP:
            raise ToolError(
                f"--shift {shift} moves tag {index} ({_kind(tag)} at {tag.timestamp} ms) "
                f"to {ts} ms, outside the FLV timestamp range")
        return ts

    return retime


class _TrackClock:
    """The output timeline of one track (audio or video) while repairing."""

    def __init__(self, default_interval: int) -> None:
        self.default_interval = default_interval
        self.last: int | None = None  # output timestamp of the previous tag
        self.offset = 0  # output minus input on the established timeline
        self.pending: int | None = None  # offset a repaired tag proposed
        self.deltas: deque[int] = deque(maxlen=_RECENT_DELTAS)

    def interval(self) -> int:
        """The typical frame interval: median of recent positive steps."""
        if not self.deltas:
            return self.default_interval
        return max(1, round(statistics.median(self.deltas)))


class Repairer:
    """Make timestamps non-decreasing per track without large jumps.

    A tag whose timestamp steps back, or forward by more than ``max_gap`` ms,
    compared with the previous tag of its track is placed one typical frame
    interval after that tag.  The following tags then either return to the
    track's previous timeline (the bad tag was a one-off glitch) or continue
    from the repaired one (the clock jumped for good, e.g. a reconnect).  A
    forward gap is kept when the other track's timeline agrees with it (a real
    gap in one track), and a repaired or newly starting track is pulled up
    so it never falls more than ``max_gap`` behind the other track.
    """

    def __init__(self, max_gap: int = DEFAULT_MAX_GAP,
                 video_interval: int = DEFAULT_VIDEO_INTERVAL,
                 audio_interval: int = DEFAULT_AUDIO_INTERVAL) -> None:
        self.max_gap = max_gap
        self.clocks = {TAG_VIDEO: _TrackClock(video_interval),
                       TAG_AUDIO: _TrackClock(audio_interval)}
        self.last_media: int | None = None

    def __call__(self, index: int, tag: FlvTag) -> int:
        if tag.tag_type not in _MEDIA:
            return self._script(tag.timestamp)
        clock = self.clocks[tag.tag_type]
        if is_sequence_header(tag):
            return self._sequence_header(clock, tag.timestamp)
        other = self.clocks[TAG_AUDIO if tag.tag_type == TAG_VIDEO else TAG_VIDEO]
        ts = tag.timestamp
        if clock.last is None:
            out = ts
            if other.last is not None and abs(ts - other.last) > self.max_gap:
                out = other.last
            clock.offset = out - ts
        else:
            out = self._continue(clock, other, ts)
        clock.last = out
        self.last_media = out
        return out

    def _continue(self, clock: _TrackClock, other: _TrackClock, ts: int) -> int:
        assert clock.last is not None
        interval = clock.interval()
        best: tuple[int, int] | None = None  # (distance from the interval, offset)
        for offset in (clock.offset, clock.pending):
            if offset is None:
                continue
            step = ts + offset - clock.last
            if 0 <= step <= self.max_gap and (best is None or abs(step - interval) < best[0]):
                best = (abs(step - interval), offset)
        if best is None:
            candidate = ts + clock.offset
            if (candidate - clock.last > self.max_gap and other.last is not None
                    and abs(candidate - other.last) <= self.max_gap):
                best = (0, clock.offset)
        if best is not None:
            offset = best[1]
            step = ts + offset - clock.last
            if step > 0:
                clock.deltas.append(step)
            clock.offset = offset
            clock.pending = None
            return ts + offset
        out = clock.last + interval
        if other.last is not None and out < other.last - self.max_gap:
            out = other.last
        clock.pending = out - ts
        return out

    def _sequence_header(self, clock: _TrackClock, ts: int) -> int:
        """A sequence header follows its track's timeline but does not move it."""
        if clock.last is None:
            return ts
        out = ts + clock.offset
        return out if 0 <= out - clock.last <= self.max_gap else clock.last

    def _script(self, ts: int) -> int:
        """Script data keeps its time unless it is far from the media around it."""
        if self.last_media is None or abs(ts - self.last_media) <= self.max_gap:
            return ts
        return self.last_media


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "modflv", help="rewrite the tag timestamps of an FLV file",
        description="Copy IN to OUT with new tag timestamps; payloads are unchanged.")
    p.add_argument("input", metavar="IN", help="FLV file to read")
    p.add_argument("output", metavar="OUT", help="FLV file to write (may be IN)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rebase", action="store_true",
                      help="start at 0: subtract the first audio/video frame's timestamp "
                           "from every tag")
    mode.add_argument("--shift", type=int, metavar="MS",
                      help="add MS (may be negative) to every timestamp; metadata and "
                           "sequence headers at 0 stay at 0")
    mode.add_argument("--repair", action="store_true",
                      help="make timestamps non-decreasing per track, closing jumps back "
                           "and forward jumps larger than --max-gap")
    p.add_argument("--max-gap", type=int, metavar="MS", default=None,
                   help=f"with --repair, the largest forward step kept "
                        f"(default {DEFAULT_MAX_GAP})")
    p.set_defaults(func=run)


def _retimer(args: argparse.Namespace) -> Retimer:
    if args.max_gap is not None and not args.repair:
        raise ToolError("--max-gap only applies to --repair")
    if args.repair:
        max_gap = DEFAULT_MAX_GAP if args.max_gap is None else args.max_gap
        if max_gap <= 0:
            raise ToolError(f"--max-gap must be positive, got {max_gap}")
        return Repairer(max_gap)
    if args.shift is not None:
        return shifter(args.shift)
    return rebaser(first_frame_timestamp(args.input) or 0)


def _widen(span: list[int], ts: int) -> None:
    """Grow ``span`` ([] or [low, high]) to include ``ts``."""
    if not span:
        span[:] = [ts, ts]
    else:
        span[0] = min(span[0], ts)
        span[1] = max(span[1], ts)


def run(args: argparse.Namespace) -> int:
    """Rewrite the timestamps of ``args.input`` into ``args.output``."""
    retime = _retimer(args)
    source = FlvInput(args.input, progress="modflv")
    # Write beside the output and rename at the end, so a failure leaves no
    # half-written file and OUT may be the input itself.
    tmp_path = f"{args.output}.{os.getpid()}.tmp"
    try:
        out_file = open(tmp_path, "xb")
    except OSError as e:
        raise ToolError(f"cannot write {args.output}: {e.strerror}") from None
    read = changed = 0
    # Earliest and latest frame timestamps, in the input and in the output.
    span_in: list[int] = []
    span_out: list[int] = []
    try:
        with out_file as fh:
            header_written = False
            for tag in source:
                if not header_written:
                    fh.write(file_header(source.has_audio, source.has_video))
                    header_written = True
                read += 1
                ts = retime(read, tag)
                if ts != tag.timestamp:
                    changed += 1
                if tag.tag_type in _MEDIA and not is_sequence_header(tag):
                    _widen(span_in, tag.timestamp)
                    _widen(span_out, ts)
                fh.write(encode_tag(tag.tag_type, ts, tag.payload))
            if not header_written:
                fh.write(file_header(source.has_audio, source.has_video))
        os.replace(tmp_path, args.output)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    if span_in:
        span = (f"frame timestamps {span_out[0]}..{span_out[1]} ms "
                f"(input {span_in[0]}..{span_in[1]} ms)")
    else:
        span = "no audio or video frames"
    print(f"wrote {args.output}: {read} tags read, {read} written, {changed} changed; {span}")
    if source.problem:
        raise ToolError(f"{source.problem}; wrote the {read} complete tags to {args.output}")
    return 0
