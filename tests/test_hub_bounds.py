"""Memory bounds of the hub: the GOP cache in bytes, the joining burst and the
sequence headers of a backed-up player."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from test_hub_seams import Collector, Publisher
from test_protocol import Hub, audio, audio_header, frame, headers, metadata, video_header
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport

from lal_twisted import log as lal_log
from lal_twisted.config import ConfigError, from_dict
from lal_twisted.hub.gop_cache import DEFAULT_GOP_CACHE_MAX_BYTES, PACKET_OVERHEAD
from lal_twisted.hub.stream import Stream
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp.sink import RtmpSink
from lal_twisted.service import make_service

MiB = 1024 * 1024


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """The project's log events while the test runs."""
    events: list[dict[str, Any]] = []
    lal_log.publisher.addObserver(events.append)
    yield events
    lal_log.publisher.removeObserver(events.append)


class Player(Collector):
    """An RTMP player that reads at once and keeps nothing."""

    def write(self, data: bytes) -> None:
        pass


def live_stream(max_bytes: int, gop_num: int = 1) -> tuple[Stream, Player]:
    """A publishing Stream with one RTMP player attached (so every packet gets
    its encoding cached, as on a real server), headers fed."""
    stream = Stream("live/test", gop_num=gop_num, gop_cache_max_bytes=max_bytes)
    stream.start_publish(Publisher())
    player = Player(MemoryReactorClock())
    stream.add_sink(player)
    for packet in headers():
        stream.feed(packet)
    return stream, player


def tiny(ts: int) -> AVPacket:
    return AVPacket(VIDEO, ts, b"\x27")  # a 1-byte inter frame


def late_joiner(stream: Stream, max_backlog_bytes: int = 2 * MiB) -> list[AVPacket]:
    """What a player joining now is sent, as packets (its burst)."""
    sent: list[AVPacket] = []
    player = Player(MemoryReactorClock())
    player.max_backlog_bytes = max_backlog_bytes
    player.send = sent.append  # type: ignore[method-assign]
    stream.add_sink(player)
    stream.remove_sink(player)
    return sent


def first_media(packets: list[AVPacket]) -> AVPacket | None:
    return next((p for p in packets if p.kind != DATA and not p.is_sequence_header), None)


# -- 1. the GOP cache is bounded in bytes ---------------------------------------------------


def test_one_keyframe_then_tiny_frames_stops_caching_within_the_bound(
        logged: list[dict[str, Any]]) -> None:
    stream, player = live_stream(DEFAULT_GOP_CACHE_MAX_BYTES)
    cache = stream.gop_cache
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        stream.feed(frame(0, True))
        most = 0
        for i in range(100_000):
            stream.feed(tiny(40 + i))
            most = max(most, cache.bytes)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ~240 counted bytes per 1-byte frame: 100k of them would be ~24 MB.
    assert most <= DEFAULT_GOP_CACHE_MAX_BYTES
    assert peak - start < DEFAULT_GOP_CACHE_MAX_BYTES * 1.1
    assert current - start < 1 * MiB  # the GOP that outgrew the bound is let go
    print(f"\n1 keyframe + 100k 1-byte frames, bound 16 MiB: traced peak "
          f"{(peak - start) / MiB:.1f} MiB, after {(current - start) / MiB:.2f} MiB")
    assert player.packets_out == 3 + 1 + 100_000  # the live player lost nothing
    warnings = [e for e in logged if "not cached" in e.get("log_format", "")]
    assert len(warnings) == 1, "said once, not per packet"
    # Nothing fits: a late joiner gets only the headers and waits for a keyframe.
    got = late_joiner(stream)
    assert [(p.kind, p.is_sequence_header) for p in got] == [
        (DATA, False), (VIDEO, True), (AUDIO, True)]
    # The next keyframe starts a GOP that is cached again.
    stream.feed(frame(200_000, True))
    stream.feed(tiny(200_040))
    assert first_media(late_joiner(stream)) is not None
    assert first_media(late_joiner(stream)).is_keyframe  # type: ignore[union-attr]


def test_many_small_gops_keep_the_newest_within_the_bound_and_memory_follows() -> None:
    bound = 4 * MiB
    stream, _ = live_stream(bound, gop_num=1000)
    cache = stream.gop_cache
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        most = 0
        for i in range(100_000):
            stream.feed(frame(i, True, size=20) if i % 100 == 0 else tiny(i))
            most = max(most, cache.bytes)
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert most <= bound
    assert cache.bytes > bound * 0.9  # the oldest GOPs went, the newest stayed
    assert len(cache.gops) < 1000
    # The count is honest: what the cache holds is within 10% of what it counts.
    assert held < bound * 1.1
    print(f"\n1000 GOPs of 1-byte frames, bound 4 MiB: counted {cache.bytes / MiB:.2f} MiB, "
          f"traced {held / MiB:.2f} MiB")
    got = late_joiner(stream, max_backlog_bytes=64 * MiB)
    assert first_media(got).is_keyframe  # type: ignore[union-attr]
    assert len(got) == 3 + sum(len(gop) for gop in cache.gops)


def test_encodings_of_a_new_format_are_counted() -> None:
    """A player of a format nobody played encodes the cache on joining; the
    cache counts those copies too."""

    class OtherFormat:
        def encode(self, packet: AVPacket) -> bytes:
            return b"x" * (len(packet.payload) + 15)

    stream, _ = live_stream(DEFAULT_GOP_CACHE_MAX_BYTES)
    stream.feed(frame(0, True, size=1000))
    for i in range(1, 50):
        stream.feed(frame(i * 40, False, size=1000))
    before = stream.gop_cache.bytes
    other = Player(MemoryReactorClock())
    other.encoder = OtherFormat()
    stream.add_sink(other)
    assert stream.gop_cache.bytes >= before + 50 * 1015


def test_cached_size_is_what_the_encodings_hold() -> None:
    class Other:
        def encode(self, packet: AVPacket) -> bytes:
            return bytes(len(packet.payload) + 15)

    packet = frame(0, True, size=5000)
    assert packet.cached_size() == 0
    rtmp = packet.encoded(Player(MemoryReactorClock()).encoder)
    assert packet.cached_size() == sys.getsizeof(rtmp)
    flv = packet.encoded(Other())
    more = packet._more_encodings
    assert packet.cached_size() == sys.getsizeof(rtmp) + sys.getsizeof(flv) + sys.getsizeof(more)


def test_gop_cache_max_bytes_config() -> None:
    assert from_dict({}).stream.gop_cache_max_bytes == 16 * MiB
    config = from_dict({"stream": {"gop_cache_max_bytes": 1 * MiB}})
    registry = make_service(config).registry
    assert registry.subscribe("live/x", Player(MemoryReactorClock())).gop_cache.max_bytes == MiB
    with pytest.raises(ConfigError, match="stream.gop_cache_max_bytes: must be at least 65536"):
        from_dict({"stream": {"gop_cache_max_bytes": 1000}})


def test_packet_overhead_is_what_a_cached_packet_costs() -> None:
    keep: list[AVPacket] = []
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            keep.append(AVPacket(VIDEO, 100_000 + i, b"\x27\x01\x00\x00\x00" + bytes(8)))
        per_packet = (tracemalloc.get_traced_memory()[0] - start) / len(keep) - 13
    finally:
        tracemalloc.stop()
    assert per_packet <= PACKET_OVERHEAD


# -- 2. the joining burst fits in the player's backlog budget -------------------------------


def publish_gops(hub: Hub, gops: int) -> Any:
    """A publisher sending headers and ``gops`` GOPs of ~10 kB (a 6 kB keyframe,
    four 1 kB frames, audio); the stream caches up to 3 GOPs."""
    hub.registry.gop_num = 3
    pub = hub.connect("publish")
    packets = headers()
    for g in range(gops):
        ts = g * 200
        packets += [frame(ts, True), audio(ts + 10)]
        packets += [frame(ts + 40 * k, False, size=1000) for k in range(1, 5)]
    pub.send(*packets)
    return pub


def recorded_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RtmpSink, int]]:
    writes: list[tuple[RtmpSink, int]] = []
    original = RtmpSink.write

    def write(self: RtmpSink, data: bytes) -> None:
        writes.append((self, len(data)))
        original(self, data)

    monkeypatch.setattr(RtmpSink, "write", write)
    return writes


@pytest.mark.parametrize(("budget", "gops_sent"), [
    (1 * MiB, 3), (25_000, 2), (12_000, 1),
    (20_600, 1),  # two GOPs' payloads fit, not their encodings with the headers
])
def test_late_joiner_burst_is_the_newest_gops_that_fit(
        monkeypatch: pytest.MonkeyPatch, budget: int, gops_sent: int) -> None:
    hub = Hub(max_backlog_bytes=budget)
    publish_gops(hub, 3)
    writes = recorded_writes(monkeypatch)
    late = hub.connect("play")
    burst = writes[0][1]
    assert burst <= budget
    media = [p for p in late.packets if p.kind != DATA and not p.is_sequence_header]
    assert media[0].kind == VIDEO and media[0].is_keyframe
    keyframes = [p.dts for p in media if p.is_keyframe]
    assert keyframes == [0, 200, 400][3 - gops_sent:]  # the newest ones
    assert media[-1].dts == 560  # up to the live edge
    sink = late.server.sink
    assert sink is not None and sink.packets_out == len(late.packets)


def test_late_joiner_with_a_budget_below_one_gop_gets_headers_then_a_keyframe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub(max_backlog_bytes=5000)
    pub = publish_gops(hub, 2)
    writes = recorded_writes(monkeypatch)
    late = hub.connect("play")
    assert writes[0][1] <= 5000
    assert [(p.kind, p.is_sequence_header) for p in late.packets] == [
        (DATA, False), (VIDEO, True), (AUDIO, True)]
    pub.send(frame(600, False, size=1000), audio(610), frame(640, True, size=1000))
    media = [p for p in late.packets if p.kind != DATA and not p.is_sequence_header]
    assert media[0].is_keyframe and media[0].dts == 640
    sink = late.server.sink
    assert sink is not None and sink.packets_out == 3 + 1


def test_a_burst_that_backs_up_the_transport_counts_as_backlog() -> None:
    """If writing the burst pauses the transport, the burst is the start of
    the backlog: the player has only what is left of its budget."""

    class PausingPlayer(Collector):
        def write(self, data: bytes) -> None:
            super().write(data)
            if len(data) > 8000:  # a transport whose high-water mark is 8 kB
                self.pauseProducing()

    stream, _ = live_stream(DEFAULT_GOP_CACHE_MAX_BYTES)
    stream.feed(frame(0, True, size=10_000))
    player = PausingPlayer(MemoryReactorClock())
    player.max_backlog_bytes = 13_000
    player.begin_burst()
    stream.add_sink(player)
    player.end_burst()
    assert player.paused and player.packets_out == 4
    stream.feed(frame(40, False, size=1000))  # fits in what is left
    stream.feed(frame(80, False, size=3000))  # does not
    assert player.packets_out == 5 and player.packets_dropped == 1


# -- 3. sequence headers to a paused player are bounded ------------------------------------


def test_paused_player_flooded_with_sequence_headers_holds_bounded_memory() -> None:
    hub = Hub(max_backlog_bytes=20_000)
    player = hub.connect("play")
    pub = hub.connect("publish")
    pub.send(*headers(), frame(0, True))
    transport = player.server.transport
    assert isinstance(transport, FakeTransport)
    sink = player.server.sink
    assert sink is not None
    transport.producer.pauseProducing()
    # A flood of sequence headers; only the publisher's connection is pumped, so
    # what the server writes to the paused player piles up in its transport.
    before = len(player.packets)
    latest = video_header()
    latest.payload = latest.payload[:-1] + b"\x61"  # another PPS: the latest header
    flood = [video_header() if i % 2 else audio_header() for i in range(10_000)]
    for packet in [*flood, latest, AVPacket(AUDIO, 0, b"\xaf\x00\x12\x08")]:
        pub.client.send_packet(AVPacket(packet.kind, packet.dts, packet.payload))
        pub.pump.flush()
    held = sum(len(chunk) for chunk in transport.stream)
    print(f"\n10k sequence headers to a paused player: {held} bytes held "
          f"(max_backlog_bytes 20000)")
    assert held <= 20_000 + 1000
    assert sink.packets_dropped > 9000
    transport.producer.resumeProducing()
    pub.send(frame(40, False), frame(80, True), frame(120, False))
    got = player.packets[before:]
    key_at = next(i for i, p in enumerate(got) if p.is_keyframe and not p.is_sequence_header)
    assert got[key_at].dts == 80
    assert not any(p.kind == VIDEO and not p.is_sequence_header for p in got[:key_at])
    video_headers = [p for p in got[:key_at] if p.kind == VIDEO and p.is_sequence_header]
    audio_headers = [p for p in got[:key_at] if p.kind == AUDIO and p.is_sequence_header]
    assert video_headers[-1].payload == latest.payload  # decodes with the latest
    assert audio_headers[-1].payload == b"\xaf\x00\x12\x08"
    assert [p.dts for p in got[key_at:]] == [80, 120]


def test_paused_player_within_its_backlog_still_gets_headers_in_order() -> None:
    hub = Hub(max_backlog_bytes=100_000)
    player = hub.connect("play")
    pub = hub.connect("publish")
    pub.send(*headers(), frame(0, True))
    transport = player.server.transport
    assert isinstance(transport, FakeTransport)
    transport.producer.pauseProducing()
    pub.send(metadata(), video_header(), frame(40, True), frame(80, False))
    transport.producer.resumeProducing()
    pub.send(frame(120, False))
    assert [p.dts for p in player.packets[-5:]] == [0, 0, 40, 80, 120]
    assert player.server.sink is not None and player.server.sink.packets_dropped == 0
