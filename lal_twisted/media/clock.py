"""Wide timestamps: the hub's time is milliseconds that do not wrap.

RTMP messages and FLV tags carry 32-bit millisecond timestamps, which wrap
after 49.7 days (and publishers often start near the top).  The edges that
read them (the RTMP chunk layer's sessions, the HTTP-FLV client) turn them
into a running wide value with a :class:`WideClock` per media stream; the
RTMP and FLV writers take the low 32 bits again when they encode.  Inside,
differences are plain subtraction, and the 90 kHz (MPEG-TS, RTP video) and
48 kHz (RTP Opus) clocks are made from the wide value each time (``ms * 90``,
not a running sum), so they never drift from it; each takes its own width
(33 bits for TS) only where it is written.
"""

from __future__ import annotations

__all__ = ["WIRE_MASK", "WideClock", "signed_step"]

WIRE_MASK = 0xFFFFFFFF  # RTMP and FLV timestamps: 32 bits
_HALF = 0x80000000
_WRAP = 0x100000000


# How far from where a clock last moved its window a timestamp may be and still
# read with the window's offset: steps up to this are read exactly.
_REACH = 1 << 30


class WideClock:
    """32-bit timestamps of one media stream, as they come, to wide ones.

    The first is taken as it is; each next one is the wide value nearest to
    the times before it (exact for steps of up to 2**30 ms, 12 days, either
    way), so time runs on across the wrap and steps back (audio a little
    behind video) stay steps back.

    A timestamp inside the window ``lo <= ts < hi`` reads as ``ts + base``:
    one comparison on the hot path (the RTMP connection reads the three
    fields itself); outside it, :meth:`place` finds the wide value and moves
    the window there, which happens at the wrap and on big jumps only.
    """

    __slots__ = ("lo", "hi", "base", "_anchor")

    def __init__(self) -> None:
        self.lo = self.hi = 0  # an empty window: the first timestamp is placed
        self.base = 0
        self._anchor: int | None = None  # the wide value the window was placed around

    def widen(self, timestamp: int) -> int:
        """The wide value of the 32-bit ``timestamp`` read next."""
        if self.lo <= timestamp < self.hi:
            return timestamp + self.base
        return self.place(timestamp)

    def place(self, timestamp: int) -> int:
        """:meth:`widen` for a timestamp outside the window: the wide value
        nearest to the window's, and the window moved around it."""
        anchor = self._anchor
        wide = timestamp if anchor is None else anchor + signed_step(timestamp - anchor)
        self._anchor = wide
        self.base = wide - timestamp
        self.lo = max(0, timestamp - _REACH)
        self.hi = min(WIRE_MASK + 1, timestamp + _REACH)
        return wide


def signed_step(diff: int) -> int:
    """A difference of two 32-bit timestamps as the step between them, less
    than 2**31 either way."""
    diff &= WIRE_MASK
    return diff - _WRAP if diff & _HALF else diff
