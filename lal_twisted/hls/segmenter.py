"""The HLS segmenter: a stream's TS packets cut into segments, and its playlists.

An :class:`HlsStream` reads a Stream's TS output while it is published (the
stream-owned :data:`~lal_twisted.outputs.ts.TS_SEGMENTS`, shared with TS
recordings), so the work it adds is collecting bytes: a segment starts with PAT/PMT and a video
keyframe (any audio frame for an audio-only stream) and is cut at the first
keyframe once ``fragment_duration_ms`` have passed.  A finished segment is
stored (memory or disk, :mod:`lal_twisted.hls.store`); once it is readable
it enters the live playlist (the last ``fragment_num``) and the record
playlist (every segment of the publish), and the manager tells the registry's
subscribers (``HlsSegmentMade``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lal_twisted.hls.playlist import Listing, Segment, render
from lal_twisted.hls.store import Pieces, Store
from lal_twisted.log import Logger
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.media.ts import TsMuxer, video_start
from lal_twisted.outputs.ts import TS_SEGMENTS, TsOutput

if TYPE_CHECKING:
    from lal_twisted.hub.ports import StreamView

__all__ = ["CLEANUP_IN_THE_END", "CLEANUP_NEVER", "CLEANUP_ASAP", "HlsMakeTsInfo",
           "HlsStream", "SegmenterConfig"]

log = Logger("lal_twisted.hls.segmenter")

CLEANUP_NEVER = 0  # keep every file
CLEANUP_IN_THE_END = 1  # delete the stream's files a while after it ends
CLEANUP_ASAP = 2  # delete segments delete_threshold segments after they leave the playlist

# A segment in progress is cut when it reaches this size even without a keyframe
# (what follows waits for the next keyframe), so a stream that sends no keyframe
# cannot grow one without bound.
MAX_SEGMENT_BYTES = 64 * 1024 * 1024

LIVE_PLAYLIST = "playlist.m3u8"
RECORD_PLAYLIST = "record.m3u8"


@dataclass
class SegmenterConfig:
    fragment_duration_ms: int = 3000
    fragment_num: int = 6
    delete_threshold: int = 6
    cleanup_mode: int = CLEANUP_IN_THE_END
    out_path: str = ""  # for event fields (lal's cwd-relative file names)


@dataclass(frozen=True)
class HlsMakeTsInfo:
    """lal's on_hls_make_ts fields: a segment was completed."""

    event: str
    stream_name: str
    cwd: str
    ts_file: str
    live_m3u8_file: str
    record_m3u8_file: str
    id: int
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Building:
    """The segment being collected."""

    __slots__ = ("parts", "size", "first_dts", "last_dts", "last_step", "created")

    def __init__(self, header: bytes, dts: int) -> None:
        self.parts = [header]
        self.size = len(header)
        self.first_dts = dts
        self.last_dts = dts
        self.last_step = 0
        self.created = time.time()


class HlsStream:
    """The HLS output of one stream name: its segments, playlists and files."""

    def __init__(self, name: str, store: Store, config: SegmenterConfig,
                 emit: Callable[[HlsMakeTsInfo], None] = lambda info: None,
                 schedule: Callable[[HlsStream], None] | None = None) -> None:
        """``schedule(self)`` is called when a publish begins and must see that
        :meth:`drain` is called every little while (the manager does, for every
        stream together): the stream's TS output holds the packets until then."""
        self.name = name
        self.schedule = schedule
        self.output: TsOutput | None = None
        self.store = store
        self.config = config
        self.emit = emit
        self.stream: StreamView | None = None
        self.key = ""  # the stream key feeding it
        self.live: deque[Segment] = deque()
        self.expired: deque[Segment] = deque()  # left the playlist, not deleted yet
        self.record = Listing()
        self.files: dict[str, Segment] = {}  # every segment file that exists
        self.sequence = 0
        self.discontinuity_sequence = 0
        self.publishing = False
        self.live_playlist: bytes | None = None
        self.record_playlist: bytes | None = None
        self._building: _Building | None = None
        self._headers = 0
        self._new_publisher = False
        self._pending: deque[tuple[Segment, bool]] = deque()  # stored, waiting to be listed
        self.segments_made = 0
        self.segments_dropped = 0

    # -- the publish -------------------------------------------------------------
    def begin(self, stream: StreamView) -> None:
        """A publisher starts feeding ``stream`` (its key may be new)."""
        if self.publishing:
            self.end()
        self.stream = stream
        self.key = stream.key
        self.publishing = True
        output = self.output = stream.output(TS_SEGMENTS)
        output.readers.append(self._take)
        if self.schedule is not None:
            self.schedule(self)
        self._building = None
        self._new_publisher = bool(self.live or self.record or self._pending)
        self.record = Listing()
        self.record_playlist = None

    def end(self) -> None:
        """The publisher left: the last segment is finished and the record
        playlist gets EXT-X-ENDLIST."""
        if not self.publishing:
            return
        output, stream = self.output, self.stream
        assert output is not None and stream is not None
        held = output.flush()  # takes the packets held first
        self.publishing = False
        output.readers.remove(self._take)
        self.output = self.stream = None
        stream.release(output)
        building = self._building
        self._building = None
        if building is not None:
            if held:  # the audio the muxer holds for its next PES
                building.parts.append(held)
                building.size += len(held)
            self._finish(building, building.last_dts + building.last_step, ended=True)
        elif not self._pending:
            self._publish_playlists(ended=True)

    def close(self, reason: str) -> None:
        self.end()

    def drain(self) -> None:
        """Take the packets the stream's TS output holds."""
        if self.output is not None:
            self.output.drain()

    def _take(self, pairs: list[tuple[AVPacket, bytes]], muxer: TsMuxer) -> None:
        """Packets and their TS bytes, in stream order, into segments."""
        # The common case inline (a frame inside the segment being built);
        # keyframes, the first segment and audio-only streams go to _place.
        place = self._place
        video = muxer.writes_video
        for packet, data in pairs:
            building = self._building
            if building is None or not video or (packet.is_keyframe and packet.kind == VIDEO):
                place(packet, data, video, muxer)
                continue
            dts = packet.dts
            step = dts - building.last_dts  # wide time: plain differences
            if step > 0:
                building.last_step = step
                building.last_dts = dts
            building.parts.append(data)
            building.size += len(data)
            if building.size > MAX_SEGMENT_BYTES:
                self._building = None
                self._finish(building, building.last_dts + building.last_step)

    def _place(self, packet: AVPacket, data: bytes, video: bool, muxer: TsMuxer) -> None:
        """Add a packet's TS bytes to the segment, cutting it where one ends."""
        building = self._building
        dts = packet.dts
        if video:
            if packet.is_keyframe and packet.kind == VIDEO:
                # Audio the muxer held from before the keyframe comes first in its
                # bytes: it ends the segment before, a segment starts with video.
                if building is None:
                    building = self._open(dts, muxer)
                    start = video_start(data)
                    if start:  # nothing from before the first keyframe
                        data = data[start:]
                elif dts - building.first_dts >= self.config.fragment_duration_ms:
                    start = video_start(data)
                    if start:
                        building.parts.append(data[:start])
                        building.size += start
                        data = data[start:]
                    self._finish(building, dts)
                    building = self._open(dts, muxer)
            elif building is None:
                return  # a segment starts at a keyframe
        elif building is None:
            building = self._open(dts, muxer)
        elif dts - building.first_dts >= self.config.fragment_duration_ms:
            self._finish(building, dts)
            building = self._open(dts, muxer)
        step = dts - building.last_dts
        if step > 0:
            building.last_step = step
            building.last_dts = dts
        building.parts.append(data)
        building.size += len(data)
        if building.size > MAX_SEGMENT_BYTES:
            self._building = None
            self._finish(building, building.last_dts + building.last_step)

    # -- segments ----------------------------------------------------------------------
    def _open(self, dts: int, muxer: TsMuxer) -> _Building:
        header = muxer.header(self._headers)
        self._headers += 1
        building = self._building = _Building(header, dts)
        return building

    def _finish(self, building: _Building, end_dts: int, ended: bool = False) -> None:
        duration = max(end_dts - building.first_dts, 1) / 1000.0
        sequence = self.sequence
        self.sequence += 1
        if self._new_publisher:
            self._new_publisher = False
            self.discontinuity_sequence += 1
        name = f"{self.name}-{int(building.created * 1000)}-{sequence}.ts"
        segment = Segment(name, sequence, duration, building.size,
                          self.discontinuity_sequence, building.created)
        data = Pieces(building.parts, building.size)  # written or served without a join
        building.parts = []
        self._pending.append((segment, ended))
        self.store.put(f"{self.name}/{name}", data).addCallback(self._stored, segment)

    def _stored(self, written: bool, segment: Segment) -> None:
        # Stores finish in order (memory at once, disk on one thread).
        while self._pending and self._pending[0][0] is not segment:
            self._pending.popleft()
        ended = self._pending.popleft()[1] if self._pending else False
        if not written:
            self.segments_dropped += 1
            if ended:
                self._publish_playlists(ended=True)
            return
        self.segments_made += 1
        self.files[segment.name] = segment
        self.live.append(segment)
        if self.config.cleanup_mode != CLEANUP_ASAP:  # its segments go: no record playlist, as lal
            self.record.append(segment)
        while len(self.live) > self.config.fragment_num:
            self.expired.append(self.live.popleft())
        if self.config.cleanup_mode == CLEANUP_ASAP:
            while len(self.expired) > self.config.delete_threshold:
                old = self.expired.popleft()
                self._delete_segment(old)
        elif self.store.in_memory:
            # Memory holds the window and delete_threshold more, whatever the mode.
            while len(self.expired) > self.config.delete_threshold:
                self._delete_segment(self.expired.popleft())
        self._publish_playlists(ended=ended or not self.publishing and not self._pending)
        self.emit(HlsMakeTsInfo(
            event="close", stream_name=self.name, cwd=os.getcwd(),
            ts_file=self._path(segment.name), live_m3u8_file=self._path(LIVE_PLAYLIST),
            record_m3u8_file=self._path(RECORD_PLAYLIST), id=segment.sequence,
            duration=segment.duration))

    def _delete_segment(self, segment: Segment) -> None:
        self.files.pop(segment.name, None)
        self.store.delete(f"{self.name}/{segment.name}")
        self.record.remove(segment)

    def _path(self, file: str) -> str:
        return os.path.join(self.config.out_path, self.name, file)

    def _publish_playlists(self, ended: bool) -> None:
        self.live_playlist = render(list(self.live)) if self.live else None
        self.record_playlist = self.record.render(ended) if self.record else None
        if not self.store.in_memory:
            if self.live_playlist is not None:
                self.store.put(f"{self.name}/{LIVE_PLAYLIST}", self.live_playlist)
            if self.record_playlist is not None:
                self.store.put(f"{self.name}/{RECORD_PLAYLIST}", self.record_playlist)

    def remove_files(self) -> None:
        """Delete every file of this stream name (cleanup mode 1 at the end)."""
        self.live.clear()
        self.expired.clear()
        self.record = Listing()
        self.files.clear()
        self.live_playlist = self.record_playlist = None
        self.store.delete_dir(self.name)
