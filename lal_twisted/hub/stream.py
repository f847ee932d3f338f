"""A Stream: one publisher, many subscribers, and the GOP cache between them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

from lal_twisted.hub.dummy_audio import DummyAudio
from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import (
    AudioTrack,
    Tracks,
    VideoTrack,
    announced_tracks,
    audio_frame_config,
    audio_track,
    describe,
    video_track,
    vp9_frame_size,
)
from lal_twisted.media.ts import TsMuxer

if TYPE_CHECKING:
    from lal_twisted.hub.session import Session
    from lal_twisted.hub.sink import IStreamSink

log = Logger("lal_twisted.hub.stream")

# At most one "stream ... video/audio: ..." line per kind this often (seconds).
_DESCRIBE_EVERY = 10.0

# At most this many headers besides the main video and audio ones (other
# tracks' sequence starts, colorInfo metadata...): a publisher inventing track
# sets must not grow them without bound.  Past it the oldest goes.
MAX_EXTRA_HEADERS = 16

# Audio codecs whose rate and channels are in their frames, not their sequence start.
_FRAME_DESCRIBED_AUDIO = (Codec.AC3, Codec.EAC3)

# Gap placed between the last timestamp a player saw and the first one of a
# publisher that takes over the stream, so timestamps keep increasing.
_REBASE_GAP_MS = 40


class IPublisher(Interface):
    """The source feeding a Stream (an RTMP publisher session, later a relay pull)."""

    description = Attribute("Short text naming the peer, for logs.")

    def close(reason: str) -> None:
        """Stop publishing and disconnect (server shutdown)."""


# The default bound of one stream's GOP cache.  Each packet counts about twice
# (payload and its RTMP copy), so this holds a 2 s GOP of a 30 Mbit/s stream, or
# about 70 000 tiny packets (see PACKET_OVERHEAD).
DEFAULT_GOP_CACHE_MAX_BYTES = 16 * 1024 * 1024

# What one cached packet costs besides its payload and its encodings, measured
# with tracemalloc on 64-bit CPython 3.11: the AVPacket with its slots (120 B),
# the payload bytes object's header (33 B, rounded up by the allocator), the dts
# int (28 B) and the cache's list slot (8 B), 193 B in all; rounded up.  Without
# it a flood of 1-byte frames would cost ~50 times what the cache counts.
PACKET_OVERHEAD = 200


class GopCache:
    """Packets from the latest keyframes, so a new player starts at once.

    Keeps up to ``gop_num`` GOPs (the one in progress included); ``gop_num = 0``
    keeps none.  ``max_frames`` (0 = no limit) caps the packets kept per GOP.
    ``max_bytes`` bounds the memory it holds, counting for each packet its
    payload, :data:`PACKET_OVERHEAD` and its cached encodings: past it the
    oldest GOPs go, and a GOP in progress that alone outgrows it is dropped and
    nothing is cached until the next keyframe (players joining meanwhile get the
    headers and wait for that keyframe).
    """

    def __init__(self, gop_num: int, max_frames: int = 0,
                 max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES, key: str = "") -> None:
        self.gop_num = gop_num
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.key = key
        self.gops: list[list[AVPacket]] = []
        # Running totals (counted bytes, payload bytes) since the cache was last
        # emptied, and their values where each cached GOP starts: a GOP's size is
        # a difference, so a packet costs two additions and no per-GOP update.
        self._counted = 0
        self._payload = 0
        self._starts: list[tuple[int, int]] = []
        self._limit = max_bytes  # _counted past this is over max_bytes
        self._current: list[AVPacket] | None = None  # the GOP in progress
        # The last packet added: its encodings are made while it is fanned out,
        # after add(), so they are counted when the next packet comes.
        self._unsettled: AVPacket | None = None
        self._overflowing = False  # the GOP in progress outgrew max_bytes
        self._overflow_logged = False
        self._trim_logged = False

    @property
    def bytes(self) -> int:
        """Counted bytes of the cached GOPs."""
        return self._counted - self._starts[0][0] if self._starts else 0

    def add(self, packet: AVPacket) -> None:
        if packet.is_keyframe and packet.kind == VIDEO:
            self._start_gop(packet)
            return
        current = self._current
        if current is None or (self.max_frames and len(current) >= self.max_frames):
            return  # nothing before the first keyframe is worth replaying
        size = len(packet.payload)
        counted = self._counted + size + PACKET_OVERHEAD
        unsettled = self._unsettled
        if unsettled is not None:
            counted += unsettled.cached_size()
        self._counted = counted
        self._payload += size
        current.append(packet)
        self._unsettled = packet
        if counted > self._limit:
            self._trim()

    def _start_gop(self, keyframe: AVPacket) -> None:
        if self.gop_num == 0:
            return
        if self._unsettled is not None:
            self._counted += self._unsettled.cached_size()
        if not self._overflowing:
            self._overflow_logged = False  # the GOP that just ended fitted
        self._overflowing = False
        self._current = [keyframe]
        self.gops.append(self._current)
        self._starts.append((self._counted, self._payload))
        size = len(keyframe.payload)
        self._counted += size + PACKET_OVERHEAD
        self._payload += size
        self._unsettled = keyframe
        if len(self.gops) > self.gop_num:
            self._drop_oldest()
        if self._counted > self._limit:
            self._trim()

    def _drop_oldest(self) -> None:
        del self.gops[0], self._starts[0]
        self._limit = self._starts[0][0] + self.max_bytes

    def _trim(self) -> None:
        """Back under ``max_bytes``: the oldest GOPs first, then the one in progress."""
        while self._counted > self._limit and len(self.gops) > 1:
            self._drop_oldest()
            if not self._trim_logged:
                self._trim_logged = True
                log.info("stream {key}: GOP cache over {max} bytes; it keeps fewer GOPs "
                         "than gop_num", key=self.key, max=self.max_bytes)
        if self._counted > self._limit:
            self.clear()
            self._overflowing = True
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warn("stream {key}: GOP over {max} bytes (stream.gop_cache_max_bytes); "
                         "not cached until a keyframe starts one that fits, new players "
                         "wait for the next keyframe", key=self.key, max=self.max_bytes)

    def account(self, size: int) -> None:
        """Count ``size`` bytes of encodings made after their packets were
        added (a consumer that encodes in batches, the HLS segmenter), against
        the GOPs cached now; then trim.  The bytes are charged to the GOP in
        progress, so the bound errs on the safe side."""
        if self.gops:
            self._counted += size
            if self._counted > self._limit:
                self._trim()

    def recount(self) -> None:
        """Count again every packet's encodings (a player of a new format encoded
        the cached packets), then trim.  O(cached packets)."""
        counted = payload = 0
        starts = []
        for gop in self.gops:
            starts.append((counted, payload))
            for packet in gop:
                size = len(packet.payload)
                counted += size + PACKET_OVERHEAD + packet.cached_size()
                payload += size
        self._counted, self._payload, self._starts = counted, payload, starts
        self._limit = self.max_bytes
        self._unsettled = None
        if counted > self._limit:
            self._trim()

    def clear(self) -> None:
        self.gops.clear()
        self._starts.clear()
        self._counted = self._payload = 0
        self._limit = self.max_bytes
        self._current = self._unsettled = None

    def reset(self) -> None:
        """Empty, for a new publisher (whose overflows are logged afresh)."""
        self.clear()
        self._overflowing = self._overflow_logged = self._trim_logged = False

    def packets(self, gop_num: int | None = None,
                max_bytes: int | None = None) -> list[AVPacket]:
        """Cached packets of the last ``gop_num`` GOPs (all when None), oldest
        first; with ``max_bytes``, only the newest of those whose payloads fit
        in it (no encoding is smaller than its payload)."""
        if gop_num == 0:
            return []
        first = 0 if gop_num is None else max(0, len(self.gops) - gop_num)
        if max_bytes is not None:
            while first < len(self.gops) and self._payload - self._starts[first][1] > max_bytes:
                first += 1
        return [p for gop in self.gops[first:] for p in gop]


class Stream:
    """Fan-out point for one stream key.

    ``feed`` takes each packet from the publisher, updates the cached headers
    and GOPs, and hands the same packet object to every sink; sinks encode it
    once per output format (the encoded bytes are cached on the packet).
    """

    def __init__(self, key: str, gop_num: int = 1, single_gop_max_frame_num: int = 0,
                 gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES) -> None:
        self.key = key
        self.publisher: Any = None
        self.publish_session: Session | None = None
        # Every sink, and whether it is a player's (a session's) rather than an
        # in-process consumer's (a recording, a segmenter): only players count
        # as the stream's audience.
        self.sinks: dict[IStreamSink, bool] = {}
        # What feed() calls for each sink: its send, or its live_send when it has
        # one (a sink that takes live packets in a plainer way, e.g. a list's
        # append: the HLS segmenter).  Made again when the sinks change.
        self._sends: list[Callable[[AVPacket], None]] = []
        self.player_count = 0
        self.gop_cache = GopCache(gop_num, single_gop_max_frame_num, gop_cache_max_bytes, key)
        self.metadata: AVPacket | None = None
        self.video_header: AVPacket | None = None
        self.audio_header: AVPacket | None = None
        # Enhanced-RTMP headers other than track 0's sequence starts, by header_key.
        self.extra_headers: dict[tuple[int | bytes, ...], AVPacket] = {}
        self.tracks = Tracks()
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
        self._ts_muxer: TsMuxer | None = None

    @property
    def ts_muxer(self) -> TsMuxer:
        """The stream's MPEG-TS muxer, made on first use and shared by every TS
        consumer (HLS, HTTP-TS, TS recording): ``ts_muxer.feed(packet)`` gives
        the packet's TS bytes, encoded once; ``ts_muxer.header(n)`` PAT + PMT.
        It lives as long as the Stream, across publishers, so continuity
        counters run on when a new publisher takes over."""
        muxer = self._ts_muxer
        if muxer is None:
            muxer = self._ts_muxer = TsMuxer(self, self.key)
        return muxer

    def _settle_ts(self) -> None:
        """Before the tracks change: packets a TS consumer holds to encode later
        are encoded now, with the tracks they were sent with."""
        muxer = self._ts_muxer
        if muxer is not None and muxer.catch_up is not None:
            muxer.catch_up(None)

    # -- publisher side -----------------------------------------------------
    def start_publish(self, publisher: Any) -> None:
        self._settle_ts()
        if self._ts_muxer is not None:
            self._ts_muxer.drop_held()  # the old publisher's last audio
        self._feed_directly()
        self.publisher = publisher
        self.gop_cache.reset()
        self.metadata = self.video_header = self.audio_header = None
        self.extra_headers = {}
        self.tracks = Tracks()
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
                self.gop_cache.add(packet)
        elif kind == DATA and is_metadata(packet.payload):
            if self.metadata is None or self.metadata.payload != packet.payload:
                self._announce(announced_tracks(packet.payload))
            self.metadata = packet
        for send in self._sends:
            send(packet)

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

    def _video_frame(self, packet: AVPacket) -> None:
        """A frame while the video track is unknown or lacks its size."""
        track = self.tracks.video
        if track is None:
            self._settle_ts()
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
        self._settle_ts()
        old = self.tracks.video
        if old is not None and not track.width:
            track.width, track.height = old.width, old.height  # announced by metadata
        self.tracks.video = track
        self._video_pending = track.codec == Codec.VP9
        if not self._video_pending or track.width:
            self._describe("video", track)  # else once a keyframe tells the size

    def _audio_frame(self, packet: AVPacket) -> None:
        """A frame while the audio track is unknown or lacks its rate (AC-3)."""
        track = self.tracks.audio
        self._audio_pending = False
        if track is None or self.audio_header is None:
            # No sequence header (MP3, G.711...): the frame, or onMetaData, tells.
            if track is None:
                self._settle_ts()
                track = self.tracks.audio = audio_track(packet.payload)
            self._describe("audio", track)
            return
        if track.codec in _FRAME_DESCRIBED_AUDIO and not track.sample_rate:
            info = audio_frame_config(packet.payload)
            if info is not None:
                track.sample_rate, track.channels = info.sample_rate, info.channels
            self._describe("audio", track)

    def _set_audio(self, track: AudioTrack) -> None:
        self._settle_ts()
        self._audio_pending = track.codec in _FRAME_DESCRIBED_AUDIO and not track.sample_rate
        self.tracks.audio = track
        if not self._audio_pending:
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
        self._settle_ts()
        if announced.video is not None and self.video_header is None:
            self.tracks.video = announced.video
        if announced.audio is not None and self.audio_header is None:
            self.tracks.audio = announced.audio

    # -- subscriber side -------------------------------------------------------
    def add_sink(self, sink: IStreamSink, gop_num: int | None = None,
                 player: bool = True) -> None:
        """Attach a sink and replay metadata, sequence headers and the last
        ``gop_num`` cached GOPs (all cached when None).  ``player`` is False for
        an in-process consumer (a recording), which ``player_count`` leaves out.

        Only the newest GOPs that may fit in the sink's ``max_backlog_bytes``
        are replayed (the sink trims its burst to the exact bytes).
        """
        if sink not in self.sinks:
            self.player_count += player
        self.sinks[sink] = player
        self._sends = [getattr(s, "live_send", None) or s.send for s in self.sinks]
        sink.start(self)
        if self.publisher is None:
            return
        for packet in self.headers():
            sink.send(packet)
        cache = self.gop_cache
        packets = cache.packets(gop_num, getattr(sink, "max_backlog_bytes", None))
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

    def remove_sink(self, sink: IStreamSink) -> None:
        if sink in self.sinks:
            self._sends = [getattr(s, "live_send", None) or s.send
                           for s in self.sinks if s is not sink]
        if self.sinks.pop(sink, False):
            self.player_count -= 1

    @property
    def idle(self) -> bool:
        return self.publisher is None and not self.sinks

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
