"""A Stream: one publisher, many subscribers, and what lies between them.

Between them: the tracks (from sequence headers, onMetaData or what the
publisher announced), the GOP cache (:mod:`lal_twisted.hub.gop_cache`), the
stream-owned outputs (:class:`~lal_twisted.hub.ports.IStreamOutput`) and the
callers waiting for the tracks to be known (the describe step).  A Stream is
what :class:`~lal_twisted.hub.ports.PublishedStream` and
:class:`~lal_twisted.hub.ports.StreamView` describe; sinks and outputs read it
through the view only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from lal_twisted.hub.dummy_audio import DummyAudio
from lal_twisted.hub.gop_cache import DEFAULT_GOP_CACHE_MAX_BYTES, GopCache
from lal_twisted.hub.ports import ICorkable, IJoiningBurst, IPublisher, OutputKind
from lal_twisted.hub.tracks import FollowsTracks
from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.media.track import (
    Tracks,
    announced_tracks,
    audio_track,
    video_track,
)

if TYPE_CHECKING:
    from lal_twisted.hub.ports import ISink, IStreamOutput
    from lal_twisted.hub.session import Session

__all__ = ["DEFAULT_GOP_CACHE_MAX_BYTES", "IPublisher", "MAX_EXTRA_HEADERS", "Stream",
           "is_metadata"]

log = Logger("lal_twisted.hub.stream")


# At most this many headers besides the main video and audio ones (other
# tracks' sequence starts, colorInfo metadata...): a publisher inventing track
# sets must not grow them without bound.  Past it the oldest goes.
MAX_EXTRA_HEADERS = 16


# Gap placed between the last timestamp a player saw and the first one of a
# publisher that takes over the stream, so timestamps keep increasing.
_REBASE_GAP_MS = 40


class Stream(FollowsTracks):
    """Fan-out point for one stream key.

    ``feed`` takes each packet from the publisher, updates the tracks, the
    cached headers and GOPs, hands the packet to each stream-owned output and
    then the same packet object to every sink; sinks encode it once per output
    format (the encoded bytes are cached on the packet).
    """

    def __init__(self, key: str, gop_num: int = 1, single_gop_max_frame_num: int = 0,
                 gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES,
                 on_idle: Callable[[Stream], None] | None = None) -> None:
        self.key = key
        self.on_idle = on_idle  # the registry's: forget the stream
        self.publisher: Any = None
        self.publish_session: Session | None = None
        # Every sink, and whether it is a player's (a session's) rather than an
        # in-process consumer's (a recording): only players count as the
        # stream's audience.
        self.sinks: dict[ISink, bool] = {}
        # What feed() calls: each owned output's feed, then each sink's send.
        # Made again when the outputs or sinks change.
        self._sends: list[Callable[[AVPacket], None]] = []
        self._corkable: list[Any] = []  # the sinks that are ICorkable
        # Owned outputs by kind: [output, users].
        self._outputs: dict[OutputKind, list[Any]] = {}
        self.player_count = 0
        self.gop_cache = GopCache(gop_num, single_gop_max_frame_num, gop_cache_max_bytes, key)
        self.metadata: AVPacket | None = None
        self.video_header: AVPacket | None = None
        self.audio_header: AVPacket | None = None
        # Enhanced-RTMP headers other than track 0's sequence starts, by header_key.
        self.extra_headers: dict[tuple[int | bytes, ...], AVPacket] = {}
        self.tracks = Tracks()
        # Whether the tracks are known (announced, or a frame came after the
        # headers), and who waits for that (the describe step).
        self.tracks_known = False
        self._track_waiters: list[defer.Deferred[Tracks]] = []
        # A video frame has something to tell the track: there is none yet, or
        # its size is only in keyframes (VP9).
        self._video_pending = True
        self._audio_pending = True  # as _video_pending: no track yet, or AC-3 rate unknown
        self._dummy_audio: DummyAudio | None = None
        self._described: dict[str, tuple[str, float]] = {}
        self.packets_in = 0
        self.video_in = 0  # video packets (lal's in_frame_per_sec counts these)
        self.bytes_in = 0
        self._offset = 0
        self._rebase_pending = False
        self._last_ts: int | None = None

    @property
    def publishing(self) -> bool:
        return self.publisher is not None

    # -- stream-owned outputs ------------------------------------------------
    def output(self, kind: OutputKind) -> Any:
        """The output of ``kind`` this stream owns, made on first use (see
        :class:`~lal_twisted.hub.ports.IStreamOutput`).  It is fed every packet
        from now on, before the sinks; each call must be matched by a
        :meth:`release`, and the last release (or the stream's end) closes it.
        Bytes it encodes later than the packets came are charged to the GOP
        cache's bound through the ``charge`` it is made with."""
        entry = self._outputs.get(kind)
        if entry is None:
            entry = self._outputs[kind] = [kind.make(self, self.gop_cache.account), 0]
            self._refresh_sends()
        entry[1] += 1
        return entry[0]

    def release(self, output: Any) -> None:
        for kind, entry in self._outputs.items():
            if entry[0] is output:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._outputs[kind]
                    self._refresh_sends()
                    output.close()
                    if self.on_idle is not None and self.idle:
                        self.on_idle(self)
                return

    def _refresh_sends(self) -> None:
        outputs: list[IStreamOutput] = [entry[0] for entry in self._outputs.values()]
        sends: list[Callable[[AVPacket], None]] = [o.feed for o in outputs]
        self._sends = sends + [s.send for s in self.sinks]
        self._corkable = [s for s in self.sinks if ICorkable.providedBy(s)]

    # -- publisher side -----------------------------------------------------
    def start_publish(self, publisher: Any) -> None:
        if self._outputs:
            self._settle_outputs()
            for output, _users in self._outputs.values():
                output.publisher_changed()
        self._feed_directly()
        self.publisher = publisher
        self.gop_cache.reset()
        self.metadata = self.video_header = self.audio_header = None
        self.extra_headers = {}
        self.tracks = Tracks()
        self.tracks_known = False
        self._video_pending = self._audio_pending = True
        # A publisher taking over continues the timeline the players already saw.
        self._rebase_pending = self._last_ts is not None
        for sink in list(self.sinks):
            sink.publish_started(self)

    def add_dummy_audio(self, wait_ms: int) -> None:
        """Add silent AAC to this publisher's stream if it has no audio within
        ``wait_ms`` (see :mod:`lal_twisted.hub.dummy_audio`).  Until it is known,
        ``feed`` goes through the analysis; afterwards straight to the stream
        again when audio was found."""
        self._dummy_audio = DummyAudio(lambda packet: Stream.feed(self, packet), wait_ms,
                                       self.key, self._feed_directly)
        self.feed = self._dummy_audio.feed  # type: ignore[method-assign]

    def _feed_directly(self) -> None:
        self.__dict__.pop("feed", None)
        self._dummy_audio = None

    def stop_publish(self) -> None:
        if self._dummy_audio is not None:
            self._dummy_audio.flush()
            self._feed_directly()
        self.publisher = None
        for sink in list(self.sinks):
            sink.publish_stopped(self)

    def feed(self, packet: AVPacket) -> None:
        """Take one packet from the publisher and fan it out (owned outputs
        first, in stream order, then the sinks)."""
        if self._rebase_pending:
            self._rebase_pending = False
            assert self._last_ts is not None
            self._offset = self._last_ts + _REBASE_GAP_MS - packet.dts
        if self._offset:
            packet.dts += self._offset  # wide time: no wrap to take
        self._last_ts = packet.dts
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        kind = packet.kind
        if kind == VIDEO:
            self.video_in += 1
            if packet.is_sequence_header:
                if packet.header_key is not None:
                    self._extra_header(packet)
                else:
                    if self.video_header is None or self.video_header.payload != packet.payload:
                        self._set_video(video_track(packet.payload))
                    self.video_header = packet
                    self.gop_cache.clear()
            else:
                if self._video_pending:
                    self._video_frame(packet)
                    if not self.tracks_known:
                        self._tracks_known()
                self.gop_cache.add(packet)
        elif kind == AUDIO:
            if packet.is_sequence_header:
                if packet.header_key is not None:
                    self._extra_header(packet)
                else:
                    if self.audio_header is None or self.audio_header.payload != packet.payload:
                        self._set_audio(audio_track(packet.payload))
                    self.audio_header = packet
            else:
                if self._audio_pending:
                    self._audio_frame(packet)
                    if not self.tracks_known and self.tracks.video is None:
                        self._tracks_known()  # audio only, as far as anything said
                self.gop_cache.add(packet)
        elif kind == DATA and is_metadata(packet.payload):
            if self.metadata is None or self.metadata.payload != packet.payload:
                self._announce(announced_tracks(packet.payload))
            self.metadata = packet
        for send in self._sends:
            send(packet)

    def feed_many(self, packets: list[AVPacket]) -> None:
        """Feed packets that came together (one read from the publisher): the
        sinks that can (:class:`~lal_twisted.hub.ports.ICorkable`) hold their
        writes meanwhile, so each player gets them in one write, one system
        call instead of one per packet."""
        corkable = self._corkable
        if len(packets) < 2 or not corkable:
            for packet in packets:
                self.feed(packet)
            return
        for sink in corkable:
            sink.cork()
        try:
            for packet in packets:
                self.feed(packet)
        finally:
            for sink in corkable:
                sink.uncork()

    def _extra_header(self, packet: AVPacket) -> None:
        headers = self.extra_headers
        key = packet.header_key
        assert key is not None
        headers.pop(key, None)  # the latest goes last, after the ones it follows
        if len(headers) >= MAX_EXTRA_HEADERS:
            del headers[next(iter(headers))]
        headers[key] = packet

    def headers(self) -> list[AVPacket]:
        """What a new player needs before any frame: metadata, sequence headers
        (track 0's first, then the other tracks' and enhanced-RTMP extras)."""
        out = [p for p in (self.metadata, self.video_header, self.audio_header) if p is not None]
        out.extend(self.extra_headers.values())
        return out

    def cached_packets(self) -> list[AVPacket]:
        return self.gop_cache.packets()

    # -- subscriber side -------------------------------------------------------
    def add_sink(self, sink: ISink, gop_num: int | None = None,
                 player: bool = True) -> None:
        """Attach a sink and replay metadata, sequence headers and the last
        ``gop_num`` cached GOPs (all cached when None).  ``player`` is False for
        an in-process consumer (a recording), which ``player_count`` leaves out.

        A sink that takes a joining burst (:class:`~lal_twisted.hub.ports.IJoiningBurst`)
        is replayed only the newest GOPs that may fit in its ``max_backlog_bytes``
        (it trims its burst to the exact bytes).
        """
        if sink not in self.sinks:
            self.player_count += player
        self.sinks[sink] = player
        self._refresh_sends()
        sink.start(self)
        if self.publisher is None:
            return
        for packet in self.headers():
            sink.send(packet)
        cache = self.gop_cache
        limit = sink.max_backlog_bytes if IJoiningBurst.providedBy(sink) else None
        packets = cache.packets(gop_num, limit)
        if not packets:
            return
        first, last = packets[0], packets[-1]
        sizes = first.cached_size(), last.cached_size()
        for packet in packets:
            sink.send(packet)
        # A player of a format no one played while these packets came encoded
        # them now: count those encodings (once per format, not per player).
        if sizes != (first.cached_size(), last.cached_size()):
            cache.recount()

    def remove_sink(self, sink: ISink) -> None:
        present = sink in self.sinks
        if self.sinks.pop(sink, False):
            self.player_count -= 1
        if present:
            self._refresh_sends()

    @property
    def idle(self) -> bool:
        """Nobody publishes, plays, waits for the tracks or uses an owned output:
        the registry forgets it (``on_idle``, called when the last output is
        released)."""
        return (self.publisher is None and not self.sinks and not self._track_waiters
                and not self._outputs)

    def stats(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "publishing": self.publisher is not None,
            "subscribers": self.player_count,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            **self.tracks.as_dict(),
        }


_ON_METADATA = b"\x02\x00\x0aonMetaData"


def is_metadata(payload: bytes) -> bool:
    """True for an AMF0 data message that starts with the string "onMetaData"."""
    return payload.startswith(_ON_METADATA)
