"""The GOP cache: a stream's packets since its latest keyframes, so a new
player starts at once.  Its byte bound counts each packet's payload, a fixed
overhead and the encodings cached on it (those the stream's outputs made in
batches are charged with :meth:`GopCache.account`)."""

from __future__ import annotations

from lal_twisted.log import Logger
from lal_twisted.media.packet import VIDEO, AVPacket

__all__ = ["DEFAULT_GOP_CACHE_MAX_BYTES", "PACKET_OVERHEAD", "GopCache"]

log = Logger("lal_twisted.hub.gop_cache")

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
