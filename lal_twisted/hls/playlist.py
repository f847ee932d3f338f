"""HLS media playlists (RFC 8216), as text: the live window and the record list."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Listing", "Segment", "render"]


@dataclass
class Segment:
    """One finished TS segment: its file name, sequence number, duration in
    seconds, size, and its discontinuity sequence number (one more for each
    publisher that took over the stream)."""

    name: str
    sequence: int
    duration: float
    size: int
    discontinuity_sequence: int = 0
    created: float = 0.0  # wall clock, seconds


def render(segments: list[Segment], ended: bool = False) -> bytes:
    """A version 3 media playlist listing ``segments`` (relative URIs), with
    EXT-X-ENDLIST when ``ended``.

    EXT-X-TARGETDURATION is the ceiling of the longest segment listed (RFC 8216
    4.3.3.1: each EXTINF rounded to the nearest integer must not exceed it);
    EXT-X-MEDIA-SEQUENCE the first listed segment's number; EXT-X-DISCONTINUITY
    goes before the first segment of each new publisher, and
    EXT-X-DISCONTINUITY-SEQUENCE counts those that left the window.
    """
    target = max((math.ceil(s.duration) for s in segments), default=1)
    first = segments[0] if segments else None
    previous = first.discontinuity_sequence if first else 0
    entries = []
    for segment in segments:
        entries.append(_entry(segment, segment.discontinuity_sequence != previous))
        previous = segment.discontinuity_sequence
    return _playlist(first, target, entries, ended)


_DISCONTINUITY = b"#EXT-X-DISCONTINUITY\n"


def _entry(segment: Segment, discontinuity: bool) -> bytes:
    """A segment's lines, after an EXT-X-DISCONTINUITY when a new publisher
    starts with it."""
    text = f"#EXTINF:{segment.duration:.3f},\n{segment.name}\n"
    return (_DISCONTINUITY if discontinuity else b"") + text.encode("utf-8")


def _playlist(first: Segment | None, target: int, entries: list[bytes], ended: bool) -> bytes:
    head = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{max(target, 1)}",
            f"#EXT-X-MEDIA-SEQUENCE:{first.sequence if first else 0}", ""]
    if first is not None and first.discontinuity_sequence:
        head.insert(4, f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity_sequence}")
    return b"".join((("\n".join(head)).encode("utf-8"), *entries,
                     b"#EXT-X-ENDLIST\n" if ended else b""))


class Listing:
    """Segments in playlist order, each one's lines rendered once: rendering
    the playlist is a join, not a pass over every segment.  A record playlist
    grows by a segment every few seconds for as long as the publish lasts (a
    day is ~29,000 segments) and is rendered again after each one; rendered
    whole each time, its cost grew with the square of the publish's length.
    Segments leave from the front (the oldest are deleted first)."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._entries: list[bytes] = []  # without the first one's discontinuity line
        self._targets: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def append(self, segment: Segment) -> None:
        last = self.segments[-1] if self.segments else None
        start = last is not None and segment.discontinuity_sequence != last.discontinuity_sequence
        self.segments.append(segment)
        self._entries.append(_entry(segment, start))
        self._targets[math.ceil(segment.duration)] += 1

    def remove(self, segment: Segment) -> None:
        """Take ``segment`` out (nothing if it is not listed)."""
        i = next((i for i, listed in enumerate(self.segments) if listed is segment), -1)
        if i < 0:
            return
        del self.segments[i], self._entries[i]
        target = math.ceil(segment.duration)
        self._targets[target] -= 1
        if not self._targets[target]:
            del self._targets[target]
        if i < len(self.segments):  # the next one follows another segment now
            follower = self.segments[i]
            before = self.segments[i - 1] if i else None
            start = (before is not None
                     and follower.discontinuity_sequence != before.discontinuity_sequence)
            if start != self._entries[i].startswith(_DISCONTINUITY):
                self._entries[i] = _entry(follower, start)

    def render(self, ended: bool = False) -> bytes:
        """The same bytes as ``render(list(self), ended)``."""
        first = self.segments[0] if self.segments else None
        return _playlist(first, max(self._targets, default=1), self._entries, ended)
