"""RTMP server and client protocols connected in memory (twisted.test.iosim)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump, connect, makeFakeClient, makeFakeServer

from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.media import amf0
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp.chunk import encode_message
from lal_twisted.rtmp.client import RTMPClientProtocol
from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl, Status
from lal_twisted.rtmp.server import RTMPServerFactory, RTMPServerProtocol

URL = "rtmp://127.0.0.1:1935/live/test"


def metadata() -> AVPacket:
    return AVPacket(DATA, 0, amf0.encode("onMetaData", {"width": 320.0, "height": 180.0,
                                                        "videocodecid": 7.0,
                                                        "audiocodecid": 10.0}))


def video_header() -> AVPacket:
    # AVCDecoderConfigurationRecord around a real 320x180 High-profile SPS.
    sps = bytes.fromhex("6764000dacd941419f9e10000003001000000303c0f1429960")
    pps = bytes.fromhex("68ebe3cb22c0")
    record = (bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + len(sps).to_bytes(2, "big")
              + sps + b"\x01" + len(pps).to_bytes(2, "big") + pps)
    return AVPacket(VIDEO, 0, b"\x17\x00\x00\x00\x00" + record)


def audio_header() -> AVPacket:
    return AVPacket(AUDIO, 0, b"\xaf\x00\x12\x10")


def frame(ts: int, key: bool, size: int = 6000) -> AVPacket:
    return AVPacket(VIDEO, ts, (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" +
                    os.urandom(size))


def audio(ts: int) -> AVPacket:
    return AVPacket(AUDIO, ts, b"\xaf\x01" + os.urandom(200))


@dataclass
class Peer:
    hub: Hub
    server: RTMPServerProtocol
    client: RTMPClientProtocol
    pump: IOPump
    packets: list[AVPacket] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)

    def send(self, *packets: AVPacket) -> None:
        for p in packets:
            self.client.send_packet(p)
        self.hub.flush()

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.statuses]


class Hub:
    def __init__(self, **kwargs: object) -> None:
        self.clock = MemoryReactorClock()
        self.registry = StreamRegistry(gop_num=1, reactor=self.clock)
        self.factory = RTMPServerFactory(self.registry, reactor=self.clock,  # type: ignore[arg-type]
                                         **kwargs)
        self.port = 40000
        self.pumps: list[IOPump] = []

    def flush(self) -> None:
        """Deliver everything in flight on every connection."""
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def connect(self, mode: str, url: str | RtmpUrl = URL) -> Peer:
        self.port += 1
        server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1935))
        assert isinstance(server, RTMPServerProtocol)
        peer = Peer(self, server, None, None)  # type: ignore[arg-type]
        parsed = RtmpUrl.parse(url) if isinstance(url, str) else url
        client = RTMPClientProtocol(ClientSession(parsed, mode),
                                    on_packet=peer.packets.append,
                                    on_status=peer.statuses.append)
        client_transport = makeFakeClient(client)
        client_transport.hostAddress = IPv4Address("TCP", "127.0.0.1", self.port)
        server_transport = makeFakeServer(server)
        server_transport.peerAddress = client_transport.hostAddress
        peer.client = client
        peer.pump = connect(server, server_transport, client, client_transport)
        self.pumps.append(peer.pump)
        self.flush()
        return peer


def headers() -> list[AVPacket]:
    return [metadata(), video_header(), audio_header()]


def media_payloads(packets: list[AVPacket]) -> list[tuple[int, int, bytes]]:
    return [(p.kind, p.dts, p.payload) for p in packets]


def test_publish_and_play_round_trip() -> None:
    hub = Hub()
    early = hub.connect("play")
    assert early.client.ready.called and "NetStream.Play.Start" in early.codes
    pub = hub.connect("publish")
    assert pub.client.ready.called
    sent = headers() + [frame(0, True), audio(10), frame(40, False), frame(0x1000000, False)]
    pub.send(*[AVPacket(p.kind, p.dts, p.payload) for p in sent])
    assert media_payloads(early.packets) == media_payloads(sent)
    stream = hub.registry.get("live/test")
    assert stream is not None
    video, sound = stream.tracks.video, stream.tracks.audio
    assert video is not None and (video.codec, video.width, video.height) == ("h264", 320, 180)
    assert sound is not None
    assert (sound.codec, sound.sample_rate, sound.channels) == ("aac", 44100, 2)


def test_late_joiner_gets_headers_and_gop_from_keyframe() -> None:
    hub = Hub()
    pub = hub.connect("publish")
    pub.send(*headers(), frame(0, True), frame(40, False), frame(80, True), audio(90),
             frame(120, False))
    late = hub.connect("play")
    kinds = [(p.kind, p.dts, p.is_sequence_header, p.is_keyframe) for p in late.packets]
    assert kinds == [
        (DATA, 0, False, False),
        (VIDEO, 0, True, True),
        (AUDIO, 0, True, False),
        (VIDEO, 80, False, True),   # the GOP starts at the latest keyframe
        (AUDIO, 90, False, False),
        (VIDEO, 120, False, False),
    ]


def test_duplicate_publisher_refused_first_untouched() -> None:
    hub = Hub()
    player = hub.connect("play")
    first = hub.connect("publish")
    first.send(*headers(), frame(0, True))
    second = hub.connect("publish")
    failures: list[object] = []
    second.client.ready.addErrback(failures.append)
    second.pump.flush()
    assert failures and "BadName" in str(failures[0])
    assert second.client.transport.disconnected  # type: ignore[union-attr]
    first.send(frame(40, False))
    assert player.packets[-1].dts == 40
    stream = hub.registry.get("live/test")
    assert stream is not None and stream.publisher is first.server


def test_publisher_leaves_mid_message_and_another_takes_over() -> None:
    hub = Hub()
    player = hub.connect("play")
    pub = hub.connect("publish")
    pub.send(*headers(), frame(1000, True), frame(1040, False))
    # Half a large video message, then the connection drops.
    data = pub.client.session.encode_packet(frame(1080, False, size=20000))
    pub.client.transport.write(data[: len(data) // 2])  # type: ignore[union-attr]
    hub.flush()
    pub.client.transport.loseConnection()  # type: ignore[union-attr]
    hub.flush()
    assert "NetStream.Play.UnpublishNotify" in player.codes
    assert not player.client.transport.disconnected  # type: ignore[union-attr]
    assert [p.dts for p in player.packets][-1] == 1040

    pub2 = hub.connect("publish")
    pub2.send(*headers(), frame(0, True), frame(40, False))
    assert player.codes[-1] == "NetStream.Play.PublishNotify"
    after = player.packets[-5:]
    assert after[0].kind == DATA and after[1].is_sequence_header and after[2].is_sequence_header
    # the new publisher's timeline continues after the old one's for the player
    stamps = [p.dts for p in after[3:]]
    assert stamps[0] > 1040 and stamps[1] - stamps[0] == 40


def test_slow_player_drops_to_keyframe_and_is_disconnected_after_stall() -> None:
    hub = Hub(stall_timeout=5.0, max_backlog_bytes=20000)
    fast = hub.connect("play")
    slow = hub.connect("play")
    pub = hub.connect("publish")
    pub.send(*headers(), frame(0, True))
    slow_sink = slow.server.sink
    assert slow_sink is not None
    # What a TCP transport does when its buffer passes the high-water mark:
    slow_transport = slow.server.transport
    assert isinstance(slow_transport, FakeTransport)
    slow_transport.producer.pauseProducing()
    pub.send(frame(40, False), frame(80, False), frame(120, False), frame(160, False))
    assert slow_sink.packets_dropped >= 1  # past the backlog allowance
    # The publisher and the other player are not held back.
    assert [p.dts for p in fast.packets[-4:]] == [40, 80, 120, 160]
    slow_transport.producer.resumeProducing()
    before = len(slow.packets)
    pub.send(frame(200, False), frame(240, True), frame(280, False))
    got = [p.dts for p in slow.packets[before:]]
    assert got[0] == 240, "after a drop the player resumes at a keyframe"
    # Paused for longer than the stall timeout: disconnected, publisher unaffected.
    slow_transport.producer.pauseProducing()
    hub.clock.advance(5.1)
    slow.pump.flush()
    assert slow.server.close_reason is not None and "stalled" in slow.server.close_reason
    pub.send(frame(320, False))
    assert fast.packets[-1].dts == 320
    stream = hub.registry.get("live/test")
    assert stream is not None and len(stream.sinks) == 1


def live_stream_and_a_raw_connection() -> tuple[Hub, Peer, Peer, Any, FakeTransport]:
    """A live stream with a player, and one more server connection fed by hand."""
    hub = Hub()
    player = hub.connect("play")
    pub = hub.connect("publish")
    pub.send(*headers(), frame(0, True))
    server = hub.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1935))
    transport = makeFakeServer(server)
    server.makeConnection(transport)
    return hub, player, pub, server, transport


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x05" + b"\x00" * 1536,
])
def test_garbage_handshake_closes_only_that_connection(garbage: bytes) -> None:
    hub, player, pub, server, transport = live_stream_and_a_raw_connection()
    server.dataReceived(garbage)
    assert transport.disconnecting or transport.disconnected
    pub.send(frame(40, False))
    assert player.packets[-1].dts == 40


def test_absurd_message_length_closes_publisher() -> None:
    hub = Hub(max_message_size=1 << 20)
    pub = hub.connect("publish")
    # A type-0 chunk header on csid 6 announcing a 16 MiB video message.
    header = bytes([6]) + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + \
        (1).to_bytes(4, "little")
    pub.client.transport.write(header)  # type: ignore[union-attr]
    pub.pump.flush()
    assert pub.server.close_reason is not None and "exceeds" in pub.server.close_reason
    assert hub.registry.get("live/test") is None


def test_oversized_command_closes_only_that_connection() -> None:
    """4 MiB of AMF0 nulls before connect: the header alone closes the connection,
    with a one-line reason; the other connections go on."""
    hub, player, pub, server, transport = live_stream_and_a_raw_connection()
    server.dataReceived(b"\x03" + bytes(2 * 1536))
    server.dataReceived(encode_message(128, 3, 20, 0, 0, b"\x05" * (4 << 20))[:4096])
    assert transport.disconnecting or transport.disconnected
    assert server.close_reason == ("protocol error: command message (type 20) of 4194304 "
                                   "bytes is over the limit of 65536 for its type")
    pub.send(frame(40, False))
    assert player.packets[-1].dts == 40


def test_silent_connection_is_closed_after_handshake_timeout() -> None:
    hub = Hub(handshake_timeout=10.0)
    server = hub.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1935))
    transport = makeFakeServer(server)
    server.makeConnection(transport)
    hub.clock.advance(9.9)
    assert not (transport.disconnecting or transport.disconnected)
    hub.clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected
    assert "no RTMP connect" in (server.close_reason or "")


def _eager_pair() -> tuple[Any, Any, MemoryReactorClock, Any]:
    """An EagerServer on one end of a socket pair whose send buffer is small."""
    import socket

    from twisted.internet.protocol import Protocol

    from lal_twisted.net import EagerServer

    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    proto = Protocol()
    reactor = MemoryReactorClock()
    transport = EagerServer(a, proto, ("127.0.0.1", 1), None, 1, reactor)
    proto.makeConnection(transport)
    return a, b, reactor, transport


def test_eager_transport_sends_at_once_and_buffers_the_rest() -> None:
    """EagerServer writes through when idle and keeps order when the kernel is full."""
    a, b, reactor, transport = _eager_pair()
    transport.write(b"hello")
    assert b.recv(100) == b"hello"          # sent at once, nothing queued
    assert not transport._tempDataBuffer
    big = bytes(range(256)) * 4096           # 1 MiB: more than the socket takes
    transport.write(big)
    transport.write(b"tail")
    queued = transport._tempDataLen + len(transport.dataBuffer) - transport.offset
    assert 0 < queued <= len(big) + 4       # the rest waits for Twisted's normal path
    assert transport in reactor.getWriters()
    got = b""
    b.settimeout(2)
    while len(got) < len(big) + 4 - queued:
        got += b.recv(1 << 20)
    assert got == (big + b"tail")[: len(got)]  # in order, no byte lost or repeated
    a.close()
    b.close()


def test_eager_write_sequence_sends_pieces_together_and_queues_the_rest() -> None:
    """writeSequence sends its pieces with one sendmsg when idle (HLS headers and
    segment, not joined first); what the kernel leaves is queued in order."""
    a, b, reactor, transport = _eager_pair()
    transport.writeSequence([b"head:", b"", b"body"])
    assert b.recv(100) == b"head:body"      # both pieces at once, nothing queued
    assert not transport._tempDataBuffer and transport not in reactor.getWriters()
    big = bytes(range(256)) * 4096           # 1 MiB: more than the socket takes
    transport.writeSequence([b"HEAD", big, b"end"])
    transport.writeSequence([b"more", b"!"])  # queued behind, not sent ahead
    expected = b"HEAD" + big + b"end" + b"more!"
    queued = transport._tempDataLen + len(transport.dataBuffer) - transport.offset
    assert 0 < queued < len(expected)
    assert transport in reactor.getWriters()
    got = b""
    b.settimeout(2)
    while len(got) < len(expected) - queued:
        got += b.recv(1 << 20)
    while len(got) < len(expected):  # Twisted's write path sends the rest
        transport.doWrite()
        try:
            got += b.recv(1 << 20)
        except TimeoutError:
            break
    assert got == expected                   # in order, no byte lost or repeated
    a.close()
    b.close()


def _memfd(data: bytes) -> Any:
    import os

    from lal_twisted.net import FileSpan

    fd = os.memfd_create("test-span")
    os.write(fd, data)
    return FileSpan(fd, len(data))


def _drain(transport: Any, b: Any, expected_len: int) -> bytes:
    got = b""
    b.settimeout(2)
    while len(got) < expected_len:
        transport.doWrite()  # Twisted's write path sends what was queued
        try:
            got += b.recv(1 << 20)
        except TimeoutError:
            break
    return got


def test_eager_write_sequence_sends_a_file_span_with_sendfile() -> None:
    """A memfd span as the last piece follows the pieces before it, whole, with
    nothing queued when the socket takes it all."""
    import os

    a, b, reactor, transport = _eager_pair()
    span = _memfd(b"0123456789" * 100)
    transport.writeSequence([b"HTTP head\r\n\r\n", span])
    assert _drain(transport, b, 1015) == b"HTTP head\r\n\r\n" + b"0123456789" * 100
    assert not transport._tempDataBuffer and transport not in reactor.getWriters()
    os.close(span.fd)
    a.close()
    b.close()


def test_eager_file_span_the_kernel_does_not_take_is_queued_in_order() -> None:
    """A span larger than the socket takes: the rest is read from the file and
    queued; what is written next goes after it; nothing is lost or repeated."""
    import os

    a, b, reactor, transport = _eager_pair()
    big = bytes(range(256)) * 4096           # 1 MiB: more than the socket takes
    span = _memfd(big)
    transport.writeSequence([b"HEAD", span])
    transport.writeSequence([b"next", _memfd(b"second body")])  # behind the first
    transport.write(b"!")
    os.close(span.fd)                         # the queued rest is already read
    expected = b"HEAD" + big + b"next" + b"second body" + b"!"
    queued = transport._tempDataLen + len(transport.dataBuffer) - transport.offset
    assert 0 < queued < len(expected)
    assert transport in reactor.getWriters()
    assert _drain(transport, b, len(expected)) == expected
    a.close()
    b.close()


def test_a_file_span_after_queued_pieces_waits_its_turn() -> None:
    """When the pieces before the span are only partly sent, the span is not
    sent ahead of them."""
    a, b, reactor, transport = _eager_pair()
    big = bytes(range(256)) * 4096
    transport.writeSequence([big, _memfd(b"after the big piece")])
    expected = big + b"after the big piece"
    assert _drain(transport, b, len(expected)) == expected
    a.close()
    b.close()


class LowWaterSocket:
    """Stands in for a transport's socket: records SO_RCVLOWAT."""

    def __init__(self) -> None:
        self.low_water = 1

    def setsockopt(self, level: int, option: int, value: int) -> None:
        import socket

        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        self.low_water = value


def test_batched_reads_and_publishing_again() -> None:
    """A batched publisher is read every read_batch_ms (20) whatever arrives;
    publish, deleteStream, publish leaves one batching timer; deleteStream puts
    SO_RCVLOWAT back to 1 and stops the batched reads."""
    if not sys.platform.startswith("linux"):
        pytest.skip("read batching is Linux only")
    hub = Hub(read_batch_ms=20)
    pub = hub.connect("publish")
    sock = LowWaterSocket()
    reads: list[float] = []
    transport: Any = pub.server.transport
    transport.socket = sock
    transport.doRead = lambda: reads.append(round(hub.clock.seconds(), 3))

    def batch_timers() -> int:
        return sum(1 for call in hub.clock.getDelayedCalls()
                   if getattr(call.func, "__self__", None) is pub.server
                   and call.func.__name__ == "_batch_reads")

    def delete_stream() -> None:
        pub.client.session.close_stream()  # FCUnpublish + deleteStream
        pub.client.flush()
        hub.flush()
        stream = hub.registry.get("live/test")
        assert stream is None or stream.publisher is None

    def publish_again() -> None:
        pub.client.session._call("publish", None, "test", "live", expect_reply=False)
        pub.client.flush()
        hub.flush()
        stream = hub.registry.get("live/test")
        assert stream is not None and stream.publisher is pub.server

    assert batch_timers() == 1
    delete_stream()
    assert batch_timers() == 0
    publish_again()
    assert batch_timers() == 1

    batcher = hub.factory.batcher
    assert batcher is not None
    pub.send(*headers(), *[frame(i * 40, i == 0, 6000) for i in range(25)])  # 150 kB
    hub.clock.advance(5.0)  # ~30 kB/s over the window: ~600 B per 20 ms
    assert pub.server in batcher and sock.low_water == 16384 and batch_timers() == 1
    for i in range(1, 11):
        hub.clock.advance(5 + i / 100 + 1e-9 - hub.clock.seconds())
    assert reads == [5.02, 5.04, 5.06, 5.08, 5.1]
    hub.clock.advance(4.9)  # a window with nothing: each message read at once again
    assert pub.server not in batcher and sock.low_water == 1 and batch_timers() == 1
    done = len(reads)
    hub.clock.advance(1.0)
    assert len(reads) == done

    pub.send(*[frame(1000 + i * 40, i == 0, 6000) for i in range(25)])
    hub.clock.advance(5.0)
    assert pub.server in batcher and sock.low_water == 16384
    done = len(reads)
    delete_stream()
    assert pub.server not in batcher and sock.low_water == 1 and batch_timers() == 0
    hub.clock.advance(1.0)
    assert len(reads) == done
    publish_again()
    pub.client.transport.loseConnection()  # type: ignore[union-attr]
    hub.flush()
    assert batch_timers() == 0 and pub.server not in batcher
