"""How a Stream follows its tracks: from sequence headers, onMetaData, the
first frames (VP9's size, AC-3's rate) and what a publisher announces; when
they count as known, and the callers waiting for that (the describe step).

:class:`FollowsTracks` is a part of :class:`~lal_twisted.hub.stream.Stream`
(a base class: its methods run on the Stream's own attributes, so the
per-packet path pays nothing for the split).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from lal_twisted.log import Logger
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import (
    AudioTrack,
    Tracks,
    VideoTrack,
    audio_frame_config,
    audio_track,
    describe,
    vp9_frame_size,
)

if TYPE_CHECKING:
    from lal_twisted.hub.ports import IStreamOutput

__all__ = ["FollowsTracks"]

log = Logger("lal_twisted.hub.stream")

# At most one "stream ... video/audio: ..." line per kind this often (seconds).
_DESCRIBE_EVERY = 10.0

# Audio codecs whose rate and channels are in their frames, not their sequence start.
_FRAME_DESCRIBED_AUDIO = (Codec.AC3, Codec.EAC3)


class FollowsTracks:
    """The tracks of a Stream (see the module's text)."""

    key: str
    publisher: Any
    tracks: Tracks
    tracks_known: bool
    video_header: AVPacket | None
    audio_header: AVPacket | None
    _track_waiters: list[defer.Deferred[Tracks]]
    _video_pending: bool
    _audio_pending: bool
    _described: dict[str, tuple[str, float]]
    _outputs: dict[Any, list[Any]]

    def _settle_outputs(self) -> None:
        """The tracks or the publisher are about to change: outputs that hold
        packets encode them now, with the tracks they came with."""
        output: IStreamOutput
        for output, _users in self._outputs.values():
            output.settle()

    def announce(self, tracks: Tracks) -> None:
        """The tracks the publisher's protocol declared before its media (an
        SDP, a WHIP offer, a PMT).  Sequence headers that come later refine
        them; the tracks count as known at once."""
        if self._outputs:
            self._settle_outputs()
        if tracks.video is not None and self.video_header is None:
            self.tracks.video = tracks.video
        if tracks.audio is not None and self.audio_header is None:
            self.tracks.audio = tracks.audio
        self._tracks_known()

    def when_tracks_known(self) -> defer.Deferred[Tracks]:
        """Fires with (a copy of) the tracks once they are known: at once if
        they are.  A waiter that gives up cancels its Deferred."""
        if self.tracks_known and self.publisher is not None:
            return defer.succeed(self._tracks_copy())
        d: defer.Deferred[Tracks] = defer.Deferred(self._track_waiters.remove)
        self._track_waiters.append(d)
        return d

    @property
    def waiting(self) -> int:
        """How many callers wait for the tracks."""
        return len(self._track_waiters)

    def _tracks_copy(self) -> Tracks:
        return Tracks(self.tracks.video, self.tracks.audio)

    def _tracks_known(self) -> None:
        self.tracks_known = True
        waiters, self._track_waiters = self._track_waiters, []
        for d in waiters:
            d.callback(self._tracks_copy())

    def _video_frame(self, packet: AVPacket) -> None:
        """A frame while the video track is unknown or lacks its size."""
        track = self.tracks.video
        if track is None:
            self._settle_outputs()
            self.tracks.video = VideoTrack(packet.codec)  # type: ignore[arg-type]
            self._video_pending = packet.codec == Codec.VP9
        elif track.codec == Codec.VP9 and packet.is_keyframe:
            self._video_pending = False
            size = vp9_frame_size(packet.payload)
            if size is not None:
                track.width, track.height = size
            self._describe("video", track)
        elif track.codec != Codec.VP9:
            self._video_pending = False

    def _set_video(self, track: VideoTrack) -> None:
        self._settle_outputs()
        old = self.tracks.video
        if old is not None and not track.width:
            track.width, track.height = old.width, old.height  # announced by metadata
        self.tracks.video = track
        sized_by_frames = track.codec == Codec.VP9
        # A frame still has something to tell: VP9's size, or that the tracks are known.
        self._video_pending = sized_by_frames or not self.tracks_known
        if not sized_by_frames or track.width:
            self._describe("video", track)  # else once a keyframe tells the size

    def _audio_frame(self, packet: AVPacket) -> None:
        """A frame while the audio track is unknown or lacks its rate (AC-3)."""
        track = self.tracks.audio
        self._audio_pending = False
        if track is None or self.audio_header is None:
            # No sequence header (MP3, G.711...): the frame, or onMetaData, tells.
            if track is None:
                self._settle_outputs()
                track = self.tracks.audio = audio_track(packet.payload)
            self._describe("audio", track)
            return
        if track.codec in _FRAME_DESCRIBED_AUDIO and not track.sample_rate:
            info = audio_frame_config(packet.payload)
            if info is not None:
                track.sample_rate, track.channels = info.sample_rate, info.channels
            self._describe("audio", track)

    def _set_audio(self, track: AudioTrack) -> None:
        self._settle_outputs()
        described_by_frames = track.codec in _FRAME_DESCRIBED_AUDIO and not track.sample_rate
        self._audio_pending = described_by_frames or not self.tracks_known
        self.tracks.audio = track
        if not described_by_frames:
            self._describe("audio", track)  # else once a frame tells rate and channels

    def _describe(self, kind: str, track: VideoTrack | AudioTrack) -> None:
        """One log line when a track changes; a publisher that alternates headers
        gets at most one line per kind every _DESCRIBE_EVERY seconds."""
        text, now = describe(track), time.monotonic()
        last_text, last_time = self._described.get(kind, ("", -_DESCRIBE_EVERY))
        if text != last_text and now - last_time >= _DESCRIBE_EVERY:
            self._described[kind] = (text, now)
            log.info("stream {key} {kind}: {desc}", key=self.key, kind=kind, desc=text)

    def _announce(self, announced: Tracks) -> None:
        """Tracks named by onMetaData, kept until their sequence headers arrive."""
        self._settle_outputs()
        if announced.video is not None and self.video_header is None:
            self.tracks.video = announced.video
        if announced.audio is not None and self.audio_header is None:
            self.tracks.audio = announced.audio
