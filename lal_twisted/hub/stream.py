"""A Stream: one publisher, many subscribers, and the GOP cache between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.media.track import (
    AudioTrack,
    Tracks,
    VideoTrack,
    announced_tracks,
    audio_track,
    describe,
    video_track,
)

if TYPE_CHECKING:
    from lal_twisted.hub.session import Session
    from lal_twisted.hub.sink import IStreamSink

log = Logger("lal_twisted.hub.stream")

# Gap placed between the last timestamp a player saw and the first one of a
# publisher that takes over the stream, so timestamps keep increasing.
_REBASE_GAP_MS = 40


class IPublisher(Interface):
    """The source feeding a Stream (an RTMP publisher session, later a relay pull)."""

    description = Attribute("Short text naming the peer, for logs.")

    def close(reason: str) -> None:
        """Stop publishing and disconnect (server shutdown)."""


class GopCache:
    """Packets from the latest keyframes, so a new player starts at once.

    Keeps up to ``gop_num`` GOPs (the one in progress included); ``gop_num = 0``
    keeps none.  ``max_frames`` (0 = no limit) caps the packets kept per GOP.
    """

    def __init__(self, gop_num: int, max_frames: int = 0) -> None:
        self.gop_num = gop_num
        self.max_frames = max_frames
        self.gops: list[list[AVPacket]] = []

    def add(self, packet: AVPacket) -> None:
        if self.gop_num == 0:
            return
        if packet.kind == VIDEO and packet.is_keyframe:
            self.gops.append([packet])
            if len(self.gops) > self.gop_num:
                del self.gops[0]
            return
        if not self.gops:
            return  # nothing before the first keyframe is worth replaying
        current = self.gops[-1]
        if self.max_frames and len(current) >= self.max_frames:
            return
        current.append(packet)

    def clear(self) -> None:
        self.gops.clear()

    def packets(self, gop_num: int | None = None) -> list[AVPacket]:
        """Cached packets of the last ``gop_num`` GOPs (all when None), oldest first."""
        if gop_num == 0:
            return []
        gops = self.gops if gop_num is None else self.gops[-gop_num:]
        return [p for gop in gops for p in gop]


class Stream:
    """Fan-out point for one stream key.

    ``feed`` takes each packet from the publisher, updates the cached headers
    and GOPs, and hands the same packet object to every sink; sinks encode it
    once per output format (the encoded bytes are cached on the packet).
    """

    def __init__(self, key: str, gop_num: int = 1, single_gop_max_frame_num: int = 0) -> None:
        self.key = key
        self.publisher: Any = None
        self.publish_session: Session | None = None
        self.sinks: dict[IStreamSink, None] = {}
        self.gop_cache = GopCache(gop_num, single_gop_max_frame_num)
        self.metadata: AVPacket | None = None
        self.video_header: AVPacket | None = None
        self.audio_header: AVPacket | None = None
        self.tracks = Tracks()
        self.packets_in = 0
        self.bytes_in = 0
        self._offset = 0
        self._rebase_pending = False
        self._last_ts: int | None = None

    # -- publisher side -----------------------------------------------------
    def start_publish(self, publisher: Any) -> None:
        self.publisher = publisher
        self.gop_cache.clear()
        self.metadata = self.video_header = self.audio_header = None
        self.tracks = Tracks()
        # A publisher taking over continues the timeline the players already saw.
        self._rebase_pending = self._last_ts is not None
        for sink in list(self.sinks):
            sink.publish_started(self)

    def stop_publish(self) -> None:
        self.publisher = None
        for sink in list(self.sinks):
            sink.publish_stopped(self)

    def feed(self, packet: AVPacket) -> None:
        """Take one packet from the publisher and fan it out."""
        if self._rebase_pending:
            self._rebase_pending = False
            assert self._last_ts is not None
            self._offset = (self._last_ts + _REBASE_GAP_MS - packet.dts) & 0xFFFFFFFF
        if self._offset:
            packet.dts = (packet.dts + self._offset) & 0xFFFFFFFF
        self._last_ts = packet.dts
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        kind = packet.kind
        tracks = self.tracks
        if kind == VIDEO:
            if packet.is_sequence_header:
                if self.video_header is None or self.video_header.payload != packet.payload:
                    self._set_video(video_track(packet.payload))
                self.video_header = packet
                self.gop_cache.clear()
            else:
                if tracks.video is None:
                    tracks.video = VideoTrack(packet.codec)  # type: ignore[arg-type]
                self.gop_cache.add(packet)
        elif kind == AUDIO:
            if packet.is_sequence_header:
                if self.audio_header is None or self.audio_header.payload != packet.payload:
                    self._set_audio(audio_track(packet.payload))
                self.audio_header = packet
            else:
                if tracks.audio is None:
                    tracks.audio = audio_track(packet.payload)
                self.gop_cache.add(packet)
        elif kind == DATA and is_metadata(packet.payload):
            if self.metadata is None or self.metadata.payload != packet.payload:
                self._announce(announced_tracks(packet.payload))
            self.metadata = packet
        for sink in self.sinks:
            sink.send(packet)

    def _set_video(self, track: VideoTrack) -> None:
        old = self.tracks.video
        if old is not None and not track.width:
            track.width, track.height = old.width, old.height  # announced by metadata
        self.tracks.video = track
        log.info("stream {key} video: {desc}", key=self.key, desc=describe(track))

    def _set_audio(self, track: AudioTrack) -> None:
        self.tracks.audio = track
        log.info("stream {key} audio: {desc}", key=self.key, desc=describe(track))

    def _announce(self, announced: Tracks) -> None:
        """Tracks named by onMetaData, kept until their sequence headers arrive."""
        if announced.video is not None and self.video_header is None:
            self.tracks.video = announced.video
        if announced.audio is not None and self.audio_header is None:
            self.tracks.audio = announced.audio

    # -- subscriber side -------------------------------------------------------
    def add_sink(self, sink: IStreamSink, gop_num: int | None = None) -> None:
        """Attach a sink and replay metadata, sequence headers and the last
        ``gop_num`` cached GOPs (all cached when None)."""
        self.sinks[sink] = None
        sink.start(self)
        if self.publisher is None:
            return
        for packet in (self.metadata, self.video_header, self.audio_header):
            if packet is not None:
                sink.send(packet)
        for packet in self.gop_cache.packets(gop_num):
            sink.send(packet)

    def remove_sink(self, sink: IStreamSink) -> None:
        self.sinks.pop(sink, None)

    @property
    def idle(self) -> bool:
        return self.publisher is None and not self.sinks

    def stats(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "publishing": self.publisher is not None,
            "subscribers": len(self.sinks),
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            **self.tracks.as_dict(),
        }


_ON_METADATA = b"\x02\x00\x0aonMetaData"


def is_metadata(payload: bytes) -> bool:
    """True for an AMF0 data message that starts with the string "onMetaData"."""
    return payload.startswith(_ON_METADATA)
