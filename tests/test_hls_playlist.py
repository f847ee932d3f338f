"""HLS playlists as text: the incremental listing behind the record playlist
renders the same bytes as rendering its segments whole."""

from __future__ import annotations

import m3u8
from hypothesis import given, settings
from hypothesis import strategies as st

from lal_twisted.hls import playlist
from lal_twisted.hls.playlist import Listing, Segment, render

# An operation: append a segment (its duration in ms, and whether a new
# publisher starts with it), or remove the listed segment at an index.
_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 12_000), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 40), st.just(False)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_ops, st.booleans())
def test_a_listing_renders_what_rendering_its_segments_gives(ops: list, ended: bool) -> None:
    listing = Listing()
    sequence = discontinuity = 0
    for op, value, new_publisher in ops:
        if op == "add":
            discontinuity += new_publisher
            listing.append(Segment(f"s-{sequence}.ts", sequence, value / 1000, 1000,
                                   discontinuity))
            sequence += 1
        elif listing.segments:
            listing.remove(listing.segments[value % len(listing.segments)])
        segments = list(listing)
        assert listing.render(ended) == render(segments, ended)
    text = listing.render(ended).decode()
    parsed = m3u8.loads(text)
    assert [s.uri for s in parsed.segments] == [s.name for s in listing]
    assert parsed.is_endlist == ended
    if listing.segments:
        assert parsed.media_sequence == listing.segments[0].sequence
        assert parsed.target_duration >= max(round(s.duration) for s in listing)


def test_a_segment_not_listed_is_not_removed() -> None:
    listing = Listing()
    kept = Segment("a.ts", 0, 3.0, 10)
    listing.append(kept)
    listing.remove(Segment("a.ts", 0, 3.0, 10))  # equal, but not the listed one
    assert list(listing) == [kept]


def test_each_segment_is_rendered_once_however_long_the_publish(monkeypatch) -> None:
    """A day of 3 s segments: every new segment costs its own lines only
    (rendering them all each time made a long publish quadratic)."""
    rendered = []
    entry = playlist._entry

    def counted(segment: Segment, discontinuity: bool) -> bytes:
        rendered.append(segment.sequence)
        return entry(segment, discontinuity)

    monkeypatch.setattr(playlist, "_entry", counted)
    listing = Listing()
    for i in range(28_800):
        listing.append(Segment(f"s-{i}.ts", i, 3.0 + (i % 7) / 10, 1000))
        text = listing.render() if i % 1000 == 0 else b""
        assert not text or text.count(b"#EXTINF:") == i + 1
    assert rendered == list(range(28_800))
    whole = listing.render(ended=True)
    assert whole.endswith(b"s-28799.ts\n#EXT-X-ENDLIST\n")
    assert b"#EXT-X-TARGETDURATION:4\n" in whole
