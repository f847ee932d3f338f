"""The hub's ports: the plain sink, the optional joining burst, stream-owned
outputs, announced tracks and the describe step, on packets ffmpeg made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Media
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lal_twisted.hub.access import RefusalKind, Refused
from lal_twisted.hub.events import Observer
from lal_twisted.hub.ports import IJoiningBurst, IPublisher, ISink, IStreamOutput, OutputKind
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.hub.session import Session
from lal_twisted.hub.sink import Sink
from lal_twisted.hub.stream import Stream
from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import AudioTrack, Tracks, VideoTrack


def flv_packets(path: Path) -> list[AVPacket]:
    return [AVPacket(t.tag_type, t.timestamp, bytes(t.payload))
            for t in FlvReader().feed(path.read_bytes())]


@implementer(IPublisher)
class Publisher:
    description = "test publisher"

    def close(self, reason: str) -> None:
        pass


@implementer(ISink)
class PlainSink:
    """Only the five calls of the port: no burst, no backlog, no counters."""

    def __init__(self) -> None:
        self.got: list[AVPacket] = []
        self.events: list[str] = []

    def start(self, stream: Any) -> None:
        self.events.append("start")

    def send(self, packet: AVPacket) -> None:
        self.got.append(packet)

    def publish_started(self, stream: Any) -> None:
        self.events.append("publish_started")

    def publish_stopped(self, stream: Any) -> None:
        self.events.append("publish_stopped")

    def close(self, reason: str) -> None:
        self.events.append(f"close: {reason}")


class Refusals(Observer):
    def __init__(self) -> None:
        self.seen: list[Refused] = []

    def session_refused(self, session: Session, refusal: Refused) -> None:
        self.seen.append(refusal)


def registry() -> tuple[StreamRegistry, MemoryReactorClock, Refusals]:
    clock = MemoryReactorClock()
    reg = StreamRegistry(gop_num=2, reactor=clock, describe_timeout=3.0)
    refusals = Refusals()
    reg.add_observer(refusals)
    return reg, clock, refusals


def session(reg: StreamRegistry, name: str = "s") -> Session:
    s = reg.new_session("TEST", "test", "127.0.0.1:1")
    s.app, s.stream = "live", name
    return s


def outcome(d: defer.Deferred[Any]) -> list[Any]:
    """What ``d`` fires with, in a list that is empty until it does."""
    got: list[Any] = []
    d.addBoth(got.append)
    return got


def publish(reg: StreamRegistry, name: str = "s") -> tuple[Stream, Session]:
    pub = session(reg, name)
    d = reg.publish(pub, Publisher())
    stream: Stream = d.result  # synchronous: no access checks
    return stream, pub


# -- sinks ---------------------------------------------------------------------------
def test_a_sink_with_only_the_port_plays_headers_gops_and_live(media: Media) -> None:
    reg, _clock, _ = registry()
    packets = flv_packets(media.av)
    stream, pub = publish(reg)
    half = len(packets) // 2
    for packet in packets[:half]:
        stream.feed(packet)
    sink = PlainSink()
    verifyObject(ISink, sink)
    assert not IJoiningBurst.providedBy(sink)
    player = session(reg)
    d = reg.play(player, sink)
    assert d.called and d.result is stream
    headers = [p for p in sink.got if p.is_sequence_header or p.kind not in (AUDIO, VIDEO)]
    assert len(headers) == 3  # onMetaData, AVC and AAC sequence headers first
    assert sink.got[:3] == stream.headers()
    replayed = [p for p in sink.got[3:]]
    assert replayed and replayed[0].is_keyframe and replayed == stream.cached_packets()
    for packet in packets[half:]:
        stream.feed(packet)
    assert sink.got[-1] is packets[-1]
    reg.unpublish(pub, stream.publisher)
    assert sink.events == ["start", "publish_stopped"]
    reg.stop_play(player, sink)
    assert "live/s" not in reg.streams


class BurstCollector(Sink):
    protocol_name = "test"

    def __init__(self, reactor: Any, max_backlog_bytes: int) -> None:
        super().__init__(reactor, max_backlog_bytes=max_backlog_bytes)
        from lal_twisted.rtmp.session import media_encoder
        self.encoder = media_encoder(4096)
        self.sent: list[AVPacket] = []

    def send(self, packet: AVPacket) -> None:
        self.sent.append(packet)
        super().send(packet)

    def write(self, data: bytes) -> None:
        pass

    def disconnect(self, reason: str) -> None:
        pass


def test_a_joining_burst_sink_is_replayed_only_what_may_fit(media: Media) -> None:
    """A sink declaring IJoiningBurst with a small backlog gets the newest
    cached GOP only; a plain sink gets every cached GOP."""
    reg, clock, _ = registry()
    stream, _pub = publish(reg)
    for packet in flv_packets(media.av):
        stream.feed(packet)
    gops = stream.gop_cache.gops
    assert len(gops) == 2
    newest = sum(len(p.payload) for p in gops[-1])
    small = BurstCollector(clock, max_backlog_bytes=newest + 10)
    assert IJoiningBurst.providedBy(small)
    stream.add_sink(small)
    plain = PlainSink()
    stream.add_sink(plain)
    assert small.sent[3:] == gops[-1]
    assert plain.got[3:] == gops[0] + gops[-1]


# -- stream-owned outputs ------------------------------------------------------------------
@implementer(IStreamOutput)
class CountingOutput:
    """Numbers packets in the order it is fed them (as an RTP packetizer
    numbers its packets), and charges a fixed size per packet it is fed."""

    made: list[CountingOutput] = []

    def __init__(self, stream: Any, charge: Any) -> None:
        self.stream = stream
        self.charge = charge
        self.numbers: dict[int, int] = {}
        self.calls: list[str] = []
        self.closed = False
        CountingOutput.made.append(self)

    def feed(self, packet: AVPacket) -> None:
        self.numbers[id(packet)] = len(self.numbers)
        if self.stream.gop_cache.gops:
            self.charge(1000)

    def settle(self) -> None:
        self.calls.append("settle")

    def publisher_changed(self) -> None:
        self.calls.append("publisher_changed")

    def close(self) -> None:
        self.closed = True


COUNTING = OutputKind("counting", CountingOutput)


class OrderSink(PlainSink):
    """Reads the output's number of each packet as it gets it."""

    def __init__(self, output: CountingOutput) -> None:
        super().__init__()
        self.output = output
        self.numbers: list[int] = []

    def send(self, packet: AVPacket) -> None:
        self.numbers.append(self.output.numbers[id(packet)])  # fed before any sink
        super().send(packet)


def test_an_owned_output_is_fed_in_order_before_sinks_and_charged_once(media: Media) -> None:
    reg, _clock, _ = registry()
    stream, pub = publish(reg)
    output = stream.output(COUNTING)
    assert stream.output(COUNTING) is output  # one per stream and kind
    verifyObject(IStreamOutput, output)
    sink = OrderSink(output)
    stream.add_sink(sink)
    packets = flv_packets(media.av)
    before = stream.gop_cache.bytes
    for packet in packets:
        stream.feed(packet)
    assert sink.numbers == list(range(len(packets)))
    # Charged bytes count against the GOP cache's bound: more than the packets alone.
    plain = Stream("live/plain", gop_num=2)
    plain.start_publish(Publisher())
    for packet in flv_packets(media.av):
        plain.feed(packet)
    assert stream.gop_cache.bytes > plain.gop_cache.bytes > before
    # A new sequence header (a changed track) has the output settle first.
    header = next(p for p in packets if p.kind == VIDEO and p.is_sequence_header)
    changed = AVPacket(VIDEO, packets[-1].dts + 40, header.payload[:-1] + b"\x00")
    assert "settle" in output.calls  # the first headers told the tracks
    output.calls.clear()
    stream.feed(changed)
    assert output.calls == ["settle"]
    # A new publisher: settle, then the old publisher's state goes.
    reg.unpublish(pub, stream.publisher)
    stream2, _ = publish(reg)
    assert stream2 is stream  # the sink kept it
    assert output.calls == ["settle", "settle", "publisher_changed"]
    # Two users: the first release keeps it, the last closes it.
    stream.release(output)
    assert not output.closed
    stream.release(output)
    assert output.closed
    stream.feed(packets[0])  # no longer fed
    assert len(output.numbers) == len(packets) + 1


def test_an_owned_output_keeps_its_stream_until_released(media: Media) -> None:
    """The publisher left and no sink is attached, but a user of an owned output
    (the HLS segmenter finishing its last segment) still has it: the stream
    stays until the last release, which closes the output and forgets it."""
    reg, _clock, _ = registry()
    stream, pub = publish(reg)
    output = stream.output(COUNTING)
    recording = PlainSink()
    reg.subscribe("live/s", recording)
    reg.unpublish(pub, stream.publisher)
    reg.unsubscribe("live/s", recording)
    assert reg.streams.get("live/s") is stream and not output.closed
    stream.release(output)
    assert output.closed
    assert "live/s" not in reg.streams


# -- announced tracks and the describe step ---------------------------------------------------
def test_describe_a_live_stream_gives_its_tracks_at_once(media: Media) -> None:
    reg, _clock, _ = registry()
    stream, _pub = publish(reg)
    for packet in flv_packets(media.av)[:50]:
        stream.feed(packet)
    got = outcome(reg.describe(session(reg)))
    tracks: Tracks = got[0]
    assert tracks.video is not None and tracks.video.codec == Codec.H264
    assert (tracks.video.width, tracks.video.height) == (320, 240)
    assert tracks.video.sps and tracks.video.pps
    assert tracks.audio is not None and tracks.audio.codec == Codec.AAC
    assert tracks.audio.sample_rate == 44100
    assert list(reg.sessions) == [_pub.id]  # a describe is no session


def test_describe_waits_for_a_publisher_that_comes_later(media: Media) -> None:
    reg, clock, refusals = registry()
    got = outcome(reg.describe(session(reg)))
    assert not got
    clock.advance(1)
    stream, _pub = publish(reg)
    packets = flv_packets(media.av)
    for packet in packets[:3]:  # metadata and sequence headers: not yet
        stream.feed(packet)
    assert not got
    for packet in packets[3:10]:
        stream.feed(packet)
    assert got and got[0].video.codec == Codec.H264 and got[0].audio.codec == Codec.AAC
    clock.advance(10)  # the timeout was cancelled
    assert not refusals.seen


def test_describe_times_out_not_found_or_with_what_is_known(media: Media) -> None:
    reg, clock, refusals = registry()
    nobody = outcome(reg.describe(session(reg, "nobody")))
    clock.advance(3.1)
    assert nobody[0].check(Refused) and nobody[0].value.kind is RefusalKind.NOT_FOUND
    assert "live/nobody" not in reg.streams  # the waiter left nothing behind
    # A publisher that says nothing of its tracks.
    publish(reg, "mute")
    silent = outcome(reg.describe(session(reg, "mute")))
    clock.advance(3.1)
    assert silent[0].check(Refused) and silent[0].value.kind is RefusalKind.TIMEOUT
    assert [r.kind for r in refusals.seen] == [RefusalKind.NOT_FOUND, RefusalKind.TIMEOUT]
    # Audio came, the video onMetaData named never did: what is known.
    stream2, _ = publish(reg, "half")
    packets = flv_packets(media.av)
    stream2.feed(packets[0])  # onMetaData names H.264 and AAC
    for packet in packets:
        if packet.kind == AUDIO:
            stream2.feed(packet)
    half = outcome(reg.describe(session(reg, "half")))
    assert not half
    clock.advance(3.1)
    assert half[0].audio.codec == Codec.AAC


def test_announced_tracks_are_known_at_once_and_headers_refine_them(media: Media) -> None:
    reg, _clock, _ = registry()
    waiting = outcome(reg.describe(session(reg)))
    stream, _pub = publish(reg)
    announced = Tracks(VideoTrack(Codec.H264, width=320, height=240),
                       AudioTrack(Codec.OPUS, sample_rate=48000, channels=2))
    stream.announce(announced)
    assert waiting and waiting[0].audio.codec == Codec.OPUS
    assert outcome(reg.describe(session(reg)))[0].video.width == 320
    for packet in flv_packets(media.av)[:3]:
        stream.feed(packet)
    assert stream.tracks.video.sps  # the sequence header's track replaced the announced one
    assert stream.tracks.audio.codec == Codec.AAC


def test_describe_goes_through_the_access_checks() -> None:
    reg, _clock, refusals = registry()

    class Deny:
        name = "deny"

        def check(self, s: Session) -> Any:
            return Refused("not you", kind=RefusalKind.DENIED)

    reg.add_access_check(Deny())
    denied = outcome(reg.describe(session(reg)))
    assert denied[0].check(Refused) and denied[0].value.kind is RefusalKind.DENIED
    assert [r.kind for r in refusals.seen] == [RefusalKind.DENIED]
    bad = outcome(reg.describe(session(reg, "bad?name")))
    assert bad[0].value.kind is RefusalKind.BAD_NAME


@pytest.mark.parametrize("later", [False, True])
def test_a_cancelled_describe_leaves_no_waiter(later: bool) -> None:
    reg, clock, _ = registry()
    d = reg.describe(session(reg))
    if later:
        clock.advance(1)
    d.cancel()
    assert outcome(d)[0].check(defer.CancelledError)
    assert "live/s" not in reg.streams
    assert not clock.getDelayedCalls()
    clock.advance(5)


@implementer(IStreamOutput)
class Packetizer:
    """Cuts each packet into units of at most 200 bytes, numbered per stream
    (the state an RTP packetizer keeps): an encoding of several units."""

    def __init__(self, stream: Any, charge: Any) -> None:
        self.sequence = 0

    def feed(self, packet: AVPacket) -> None:
        packet.encoded(self)

    def encode(self, packet: AVPacket) -> tuple[bytes, ...]:
        payload = packet.payload
        units = []
        for at in range(0, len(payload), 200):
            units.append(self.sequence.to_bytes(2, "big") + payload[at:at + 200])
            self.sequence = (self.sequence + 1) & 0xFFFF
        return tuple(units)

    def settle(self) -> None:
        pass

    def publisher_changed(self) -> None:
        pass

    def close(self) -> None:
        pass


PACKETIZER = OutputKind("units", Packetizer)


class Interleaved(PlainSink):
    """Frames each unit for its session: ``$``, its channel, the length."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.wire: list[bytes] = []
        self.output: Any = None

    def start(self, stream: Any) -> None:
        self.output = stream.output(PACKETIZER)
        super().start(stream)

    def send(self, packet: AVPacket) -> None:
        for unit in packet.encoded(self.output):
            self.wire.append(b"$" + bytes([self.channel]) + len(unit).to_bytes(2, "big") + unit)


def test_an_output_of_several_units_per_packet_is_shared_and_framed_per_session(
        media: Media) -> None:
    reg, _clock, _ = registry()
    stream, _pub = publish(reg)
    first, second = Interleaved(0), Interleaved(2)
    stream.add_sink(first)
    stream.add_sink(second)
    packets = flv_packets(media.av)
    for packet in packets:
        stream.feed(packet)
    assert first.output is second.output
    assert len(first.wire) == len(second.wire) > len(packets)
    numbers = [int.from_bytes(w[4:6], "big") for w in first.wire]
    assert numbers == list(range(len(numbers)))  # one sequence for the stream, in order
    assert [w[:1] + w[2:] for w in first.wire] == [w[:1] + w[2:] for w in second.wire]
    assert {w[1] for w in first.wire} == {0} and {w[1] for w in second.wire} == {2}
    payload = b"".join(p.payload for p in packets)
    assert b"".join(w[6:] for w in first.wire) == payload  # bytes round-tripped
    # The units count against the GOP cache's bound.
    for gop in stream.gop_cache.gops:
        for packet in gop:
            units = packet.encoded(first.output)
            assert packet.cached_size() >= sum(len(u) for u in units) + 33 * len(units)


class Writes(BurstCollector):
    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, max_backlog_bytes=1 << 20)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_a_batch_of_packets_leaves_in_one_write_per_player(media: Media) -> None:
    reg, clock, _ = registry()
    stream, _pub = publish(reg)
    packets = flv_packets(media.av)
    players = [Writes(clock) for _ in range(3)]
    plain = PlainSink()  # not corkable: one send per packet as before
    for sink in (*players, plain):
        stream.add_sink(sink)
    stream.feed_many(packets[:3])  # headers
    first = packets.index(next(p for p in packets if p.is_keyframe))
    batch = packets[first:first + 6]
    for sink in players:
        sink.writes.clear()
    stream.feed_many(batch)
    encoder = players[0].encoder
    expected = b"".join(p.encoded(encoder) for p in batch)
    for sink in players:
        assert sink.writes == [expected]
    assert plain.got[-6:] == batch
    stream.feed(packets[first + 6])  # a single packet: written at once
    assert players[0].writes[-1] == packets[first + 6].encoded(encoder)
    # A paused player keeps its backlog bound across a batch.
    slow = players[1]
    slow.pauseProducing()
    slow.max_backlog_bytes = len(expected) // 2
    before = len(slow.writes)
    stream.feed_many(packets[first + 7:first + 40])
    assert slow.packets_dropped > 0
    assert len(slow.writes) == before + 1
    assert 0 < len(slow.writes[-1]) <= len(expected) // 2
