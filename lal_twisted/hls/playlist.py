"""HLS media playlists (RFC 8216), as text: the live window and the record list."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Segment", "render"]


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
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{max(target, 1)}",
             f"#EXT-X-MEDIA-SEQUENCE:{first.sequence if first else 0}"]
    if first is not None and first.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity_sequence}")
    previous = first.discontinuity_sequence if first else 0
    for segment in segments:
        if segment.discontinuity_sequence != previous:
            lines.append("#EXT-X-DISCONTINUITY")
            previous = segment.discontinuity_sequence
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(segment.name)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    lines.append("")
    return "\n".join(lines).encode("utf-8")
