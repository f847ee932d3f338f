"""Subscriber sinks: where a Stream's packets leave for one player.

A :class:`Sink` is an ``IPushProducer`` registered on its player's transport.
While the transport is paused (its write buffer passed the high-water mark) the
sink keeps writing up to ``max_backlog_bytes`` of slack, so a momentary pause
(a GOP burst to a new player) loses nothing.  Past that it drops packets and,
once resumed, waits for the next video keyframe so the player never sees a
broken GOP.  A sink paused longer than ``stall_timeout`` is disconnected.

The joining burst (metadata, sequence headers, cached GOPs) also fits in
``max_backlog_bytes``: the oldest GOPs are left out, or all of them, and the
player waits for the next keyframe.  Sequence headers dropped past the backlog
are sent again, the stream's latest, before the keyframe the player resumes at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from lal_twisted.hub.ports import ICorkable, IFlowCounts, IJoiningBurst
from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket, Encoder

if TYPE_CHECKING:
    from lal_twisted.hub.ports import StreamView

log = Logger("lal_twisted.hub.sink")


@implementer(IJoiningBurst, ICorkable, IFlowCounts, IPushProducer)
class Sink:
    """Packet-level flow control shared by every transport-backed sink.

    Subclasses set ``encoder`` (the shared :class:`~lal_twisted.media.packet.Encoder`
    of their format) and implement :meth:`write` and :meth:`disconnect`.
    """

    protocol_name = "sink"
    encoder: Encoder

    def __init__(
        self,
        reactor: IReactorTime,
        stall_timeout: float = 10.0,
        max_backlog_bytes: int = 2 * 1024 * 1024,
        wait_timeout: float = 0.0,
    ) -> None:
        self.reactor = reactor
        # How long the player may wait for a publisher (0: as long as it likes).
        self.wait_timeout = wait_timeout
        self._wait_call: IDelayedCall | None = None
        self.stall_timeout = stall_timeout
        self.max_backlog_bytes = max_backlog_bytes
        self.stream: StreamView | None = None
        self.paused = False
        self.waiting_keyframe = True
        self.bytes_out = 0
        self.packets_out = 0
        self.packets_dropped = 0
        self._backlog = 0
        self._stall_call: IDelayedCall | None = None
        # The burst being collected: segments of bytes, the first for what comes
        # before the first keyframe, then one per GOP; _burst is the last one.
        self._burst: list[bytes] | None = None
        self._burst_segments: list[list[bytes]] = []
        self._burst_marks: list[tuple[int, int]] = []  # (bytes_out, packets_out) at each start
        self._burst_writing = 0  # size of the burst while it is being written
        # Writes held while the stream feeds a batch of packets (cork/uncork).
        self._corked: list[bytes] | None = None
        self._stale_headers = 0  # VIDEO / AUDIO bits: a sequence header of that kind was dropped
        self.closed = False
        self.stalled = False  # closed for not reading (subscriber.stall_timeout_ms)

    # -- format hooks -------------------------------------------------------
    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def disconnect(self, reason: str) -> None:
        raise NotImplementedError

    # -- ISink ------------------------------------------------------------------
    def start(self, stream: StreamView) -> None:
        self.stream = stream
        self.waiting_keyframe = True
        if not stream.publishing:
            self._wait_for_publisher()

    def publish_started(self, stream: StreamView) -> None:
        # A new publisher starts a new GOP sequence: wait for its keyframe.
        self.waiting_keyframe = True
        self._cancel_wait()

    def publish_stopped(self, stream: StreamView) -> None:
        self._wait_for_publisher()

    def _wait_for_publisher(self) -> None:
        if self.wait_timeout > 0 and self._wait_call is None and not self.closed:
            self._wait_call = self.reactor.callLater(
                self.wait_timeout, self.close,
                f"no publisher for {self.wait_timeout:g}s (subscriber.publisher_wait_timeout_ms)")

    def _cancel_wait(self) -> None:
        _cancel(self._wait_call)
        self._wait_call = None

    def send(self, packet: AVPacket) -> None:
        if self.closed:
            return
        if self.waiting_keyframe:
            if packet.is_keyframe and packet.kind != AUDIO and not packet.is_sequence_header:
                self.waiting_keyframe = False
            elif packet.is_sequence_header or packet.kind == DATA:
                pass  # headers and metadata always go through
            elif (packet.kind == AUDIO and self.stream is not None
                  and self.stream.tracks.video is None):
                self.waiting_keyframe = False
            else:
                self.packets_dropped += 1
                return
            if self._stale_headers and not self.waiting_keyframe and not self._resend_headers():
                self.packets_dropped += 1
                return
        data = packet.encoded(self.encoder)
        burst = self._burst
        if burst is not None:
            if packet.is_keyframe and packet.kind == VIDEO and not packet.is_sequence_header:
                burst = self._next_burst_segment()
            burst.append(data)
            self.bytes_out += len(data)
            self.packets_out += 1
            return
        if self.paused:
            if self._backlog + len(data) > self.max_backlog_bytes:
                self.packets_dropped += 1
                self.waiting_keyframe = True
                if packet.is_sequence_header:
                    # Not kept: the stream's latest goes before the next keyframe.
                    self._stale_headers |= 1 << packet.kind
                return
            self._backlog += len(data)
        self.bytes_out += len(data)
        self.packets_out += 1
        corked = self._corked
        if corked is not None:
            corked.append(data)
            return
        self.write(data)

    def _resend_headers(self) -> bool:
        """Send the stream's latest sequence headers of the kinds dropped while
        the player was backed up; False if they were dropped again."""
        stale, self._stale_headers = self._stale_headers, 0
        stream = self.stream
        if stream is not None:
            for header in stream.headers():
                if stale & (1 << header.kind):
                    self.send(header)
        return not self.waiting_keyframe

    def emit(self, data: bytes) -> None:
        """Write bytes that are not a packet (a container header): into the burst
        being collected, if any, else straight out."""
        self.bytes_out += len(data)
        if self._burst is not None:
            self._burst.append(data)
        elif self._corked is not None:
            self._corked.append(data)
        else:
            self.write(data)

    # -- ICorkable ------------------------------------------------------------------
    def cork(self) -> None:
        self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and not self.closed:
            # If this write pauses the transport, it is the start of the backlog.
            data = corked[0] if len(corked) == 1 else b"".join(corked)
            self._burst_writing = len(data)
            try:
                self.write(data)
            finally:
                self._burst_writing = 0

    def begin_burst(self) -> None:
        self._burst = []
        self._burst_segments = [self._burst]
        self._burst_marks = [(self.bytes_out, self.packets_out)]

    def _next_burst_segment(self) -> list[bytes]:
        """A keyframe starts a GOP in the burst: a new segment for it."""
        segment: list[bytes] = []
        self._burst = segment
        self._burst_segments.append(segment)
        self._burst_marks.append((self.bytes_out, self.packets_out))
        return segment

    def end_burst(self, prefix: bytes = b"") -> None:
        """Write ``prefix`` and the burst in one write, within ``max_backlog_bytes``:
        the oldest GOPs are left out until it fits (all of them if the newest
        alone does not; the player then waits for the next keyframe)."""
        segments, marks = self._burst_segments, self._burst_marks
        self._burst, self._burst_segments, self._burst_marks = None, [], []
        if self.closed or not segments:
            if prefix and not self.closed:
                self.write(prefix)
            return
        marks.append((self.bytes_out, self.packets_out))  # where the last segment ends
        size = len(prefix) + self.bytes_out - marks[0][0]
        first_gop = 1
        while size > self.max_backlog_bytes and first_gop < len(segments):
            (start_bytes, start_packets), (end_bytes, end_packets) = marks[first_gop:first_gop + 2]
            size -= end_bytes - start_bytes
            self.bytes_out -= end_bytes - start_bytes
            self.packets_out -= end_packets - start_packets
            first_gop += 1
        if first_gop == len(segments) > 1:
            self.waiting_keyframe = True  # no cached GOP fits: start at the next keyframe
        if first_gop > 1:
            segments = [segments[0], *segments[first_gop:]]
        data = b"".join([prefix, *(chunk for segment in segments for chunk in segment)])
        if data:
            # If this write pauses the transport, the burst is the start of the backlog.
            self._burst_writing = len(data)
            try:
                self.write(data)
            finally:
                self._burst_writing = 0

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_stall()
        self._cancel_wait()
        self.disconnect(reason)

    # -- IPushProducer ----------------------------------------------------------
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted interface
        if self.paused or self.closed:
            return
        self.paused = True
        # Written before the pause is in the transport's buffer, except a burst
        # that paused it by being written: that counts against max_backlog_bytes.
        self._backlog = self._burst_writing
        self._stall_call = self.reactor.callLater(self.stall_timeout, self._stalled)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted interface
        if not self.paused:
            return
        self.paused = False
        self._cancel_stall()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted interface
        self.closed = True
        self._cancel_stall()
        self._cancel_wait()

    # -- internals -----------------------------------------------------------------
    def _cancel_stall(self) -> None:
        _cancel(self._stall_call)
        self._stall_call = None

    def _stalled(self) -> None:
        self._stall_call = None
        self.stalled = True
        reason = (f"player stalled: not reading for {self.stall_timeout:g}s "
                  f"({self.packets_dropped} packets dropped)")
        self.close(reason)


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel ``call`` if it is still pending."""
    if call is not None and call.active():
        call.cancel()
    return None
