"""Wide time: a publisher whose 32-bit RTMP timestamps wrap past 2**32 ms.

The RTMP edge unwraps them (a clock for the media stream), so the hub sees
time increase; RTMP and HTTP-FLV players get the same 32-bit timestamps the
publisher sent, wrapped as they were; the HLS segments' durations and the TS
PTS/DTS run on across the wrap."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import m3u8
import pytest
from conftest import FPS, Media, Server, ServerConfig
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import decode_errors, http_flv_bytes
from test_hls import get, url, wait_playlist
from test_hub_ports import PlainSink
from tsparse import parse
from twisted.internet.testing import MemoryReactorClock, StringTransport

from lal_twisted.httpflv.client import HttpFlvPull
from lal_twisted.hub.stream import Stream
from lal_twisted.media import flv
from lal_twisted.media.clock import WideClock
from lal_twisted.media.flv import FlvReader, FlvTag
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.media.ts import VIDEO_PID
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import ChunkReader, encode_message
from lal_twisted.rtmp.client_session import ClientSession, Ready, RtmpUrl
from lal_twisted.rtmp.session import ServerSession, media_encoder
from lal_twisted.tools.push import load_tags

WRAP = 1 << 32
SHIFT = WRAP - 3000  # the source starts 3 s before RTMP time wraps
TS_CLOCK = 1 << 33


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, WRAP - 1),
       steps=st.lists(st.one_of(st.integers(-(1 << 30), 1 << 30), st.integers(-100, 100),
                                st.sampled_from([-(1 << 30), 1 << 30])), max_size=60))
def test_a_clock_gives_back_the_wide_times(start: int, steps: list[int]) -> None:
    """Steps of up to 2**30 ms either way, across the wrap as often as they
    like, are read exactly."""
    wide = [start]
    for step in steps:
        wide.append(wide[-1] + step)
    clock = WideClock()
    assert [clock.widen(t % WRAP) for t in wide] == wide


def linked(mode: str) -> tuple[ClientSession, ServerSession]:
    """A client and a server session talking, publishing or playing."""
    client = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/wrap"), mode,
                           complex_handshake=False)
    server = ServerSession()
    client.start()
    pump(client, server)
    if mode == "publish":
        server.accept_publish()
    else:
        server.accept_play()
    pump(client, server)
    return client, server


def pump(client: ClientSession, server: ServerSession) -> list[object]:
    """Carry bytes both ways until both are quiet; the server's events."""
    events: list[object] = []
    while True:
        c2s = client.data_to_send()
        if c2s:
            events += server.receive(c2s)
        s2c = server.data_to_send()
        if s2c:
            client.receive(s2c)
        if not c2s and not s2c:
            return events


def test_a_publisher_across_the_wrap_is_seen_in_wide_time() -> None:
    """Video and audio on their own chunk streams, audio a little behind, and
    an aggregate message and a data message, all across the wrap: the server
    session's packets carry the wide times, increasing past 2**32."""
    client, server = linked("publish")
    sent = []
    for i in range(100):
        ts = SHIFT + 1000 + i * 40
        sent.append(AVPacket(VIDEO, ts, b"\x27\x01\x00\x00\x00" + bytes([i])))
        sent.append(AVPacket(AUDIO, ts - 15, b"\xaf\x01" + bytes([i])))
    for packet in sent:
        client.send_packet(packet)  # the writer takes the low 32 bits
    events = [e for e in pump(client, server) if isinstance(e, AVPacket)]
    assert [(p.kind, p.dts, p.payload) for p in events] == [
        (p.kind, p.dts, p.payload) for p in sent]
    assert max(p.dts for p in events) > WRAP
    # An aggregate of two tags either side of the wrap, then onMetaData.
    tags = flv.encode_tag(VIDEO, WRAP - 10, b"\x27\x01\x00\x00\x00a") + flv.encode_tag(
        AUDIO, WRAP + 30, b"\xaf\x01b")
    stream = client.stream_id
    client._out.append(encode_message(4096, 6, m.AGGREGATE, stream, WRAP - 10, tags))
    client._out.append(encode_message(4096, 4, m.DATA_AMF0, stream, WRAP + 50,
                                      m.SET_DATA_FRAME + b"\x02\x00\x0aonMetaData\x05"))
    later = [e for e in pump(client, server) if isinstance(e, AVPacket)]
    assert [(p.kind, p.dts) for p in later] == [(VIDEO, WRAP - 10), (AUDIO, WRAP + 30),
                                                 (DATA, WRAP + 50)]


def test_a_player_gets_32_bit_timestamps_and_reads_them_wide() -> None:
    """What the server writes to a player wraps at 2**32 on the wire; the
    client session reading it unwraps it again."""
    client, server = linked("play")
    encoder = media_encoder(server.out_chunk_size)
    wide = [SHIFT + i * 1000 for i in range(6)]
    data = b"".join(encoder.encode(AVPacket(VIDEO, ts, b"\x27\x01\x00\x00\x00x"))
                    for ts in wide)
    reader = ChunkReader()
    reader.chunk_size = server.out_chunk_size
    assert [msg.timestamp for msg in reader.feed(data)] == [ts % WRAP for ts in wide]
    assert [e.dts for e in client.receive(data) if isinstance(e, AVPacket)] == wide


def test_the_http_flv_client_reads_wide_time() -> None:
    reactor = MemoryReactorClock()
    packets: list[AVPacket] = []
    HttpFlvPull(reactor, "http://127.0.0.1:8080/live/x.flv", packets.append).start()
    factory = reactor.tcpClients[0][2]
    proto = factory.buildProtocol(None)
    proto.makeConnection(StringTransport())
    wide = [SHIFT + i * 1000 for i in range(6)]
    body = flv.file_header() + b"".join(flv.encode_tag(VIDEO, ts, b"\x27\x01\x00\x00\x00x")
                                        for ts in wide)
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\r\n" + body)
    assert [p.dts for p in packets] == wide


def test_lal_push_reads_a_file_that_wraps_as_running_on(tmp_path: Path) -> None:
    frame = b"\x27\x01\x00\x00\x00x"
    path = tmp_path / "wraps.flv"
    path.write_bytes(flv.file_header() + b"".join(
        flv.encode_tag(VIDEO, SHIFT + i * 1000, frame) for i in range(6)))
    assert [t.timestamp for t in load_tags(str(path))] == [i * 1000 for i in range(6)]


def test_a_publisher_taking_over_continues_the_wide_timeline() -> None:
    """The stream's time is wide past 2**32; a new publisher starting at 0
    carries on 40 ms after the last time the players saw, no wrap taken."""
    stream = Stream("live/wrap", gop_num=1)
    sink = PlainSink()
    stream.add_sink(sink)
    frame = b"\x27\x01\x00\x00\x00x"
    stream.start_publish(object())
    first = [WRAP + 1000 + i * 40 for i in range(5)]
    for ts in first:
        stream.feed(AVPacket(VIDEO, ts, frame))
    stream.stop_publish()
    stream.start_publish(object())
    for i in range(3):
        stream.feed(AVPacket(VIDEO, i * 40, frame))
    assert [p.dts for p in sink.got] == first + [first[-1] + 40 * (i + 1) for i in range(3)]


# -- end to end: the real server --------------------------------------------------------

@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    return lambda directory: {"hls": {
        "enable": True, "fragment_duration_ms": 1000, "fragment_num": 10,
        "use_memory_as_disk_flag": True, "out_path": str(directory / "hls") + "/",
        "cleanup_mode": 0}}


def rtmp_session(address: str, mode: str) -> tuple[socket.socket, ClientSession, bytearray,
                                                   list[object]]:
    """An RTMP client session over a socket, until the server has said yes;
    every byte received is kept, and the events so far."""
    parsed = RtmpUrl.parse(address)
    sock = socket.create_connection(("127.0.0.1", parsed.port), timeout=10)
    session = ClientSession(parsed, mode)
    session.start()
    received = bytearray()
    events: list[object] = []
    while not any(isinstance(e, Ready) for e in events):
        sock.sendall(session.data_to_send())
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        received += data
        events += session.receive(data)
        sock.sendall(session.data_to_send())
    return sock, session, received, events


def publish(address: str, tags: list[FlvTag]) -> None:
    """Send the tags as they come in time, with 32-bit timestamps ``SHIFT``
    on from their own: the stream's clock wraps 3 s in."""
    sock, session, _, _ = rtmp_session(address, "publish")
    start = time.monotonic()
    for tag in tags:
        delay = tag.timestamp / 1000 - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        session.send_packet(AVPacket(tag.tag_type, (tag.timestamp + SHIFT) % WRAP, tag.payload))
        sock.sendall(session.data_to_send())
    time.sleep(0.5)
    sock.close()


def rtmp_play(address: str, out: list[tuple[list[m.Message], list[AVPacket]]]) -> None:
    """Play until the server goes quiet: the media messages as they were on
    the wire, and the packets the client session made of them."""
    sock, session, received, events = rtmp_session(address, "play")
    sock.settimeout(2.5)
    packets = [e for e in events if isinstance(e, AVPacket)]
    try:
        while data := sock.recv(65536):
            received += data
            packets += [e for e in session.receive(data) if isinstance(e, AVPacket)]
    except TimeoutError:
        pass
    sock.close()
    chunks = bytes(received[len(received) - session.reader.bytes_received:])
    wire = [msg for msg in ChunkReader().feed(chunks) if msg.type_id in (AUDIO, VIDEO)]
    out.append((wire, [p for p in packets if p.kind != DATA]))


def test_across_the_wrap_players_get_wrapped_times_and_hls_runs_on(
        server: Server, media: Media) -> None:
    source = [t for t in FlvReader().feed(media.av.read_bytes())]
    media_tags = [t for t in source if t.tag_type in (AUDIO, VIDEO)]
    publisher = threading.Thread(target=publish, args=(server.rtmp_url("wrap"), source))
    publisher.start()
    time.sleep(0.5)  # before the second keyframe: the players start at the first
    played: list[tuple[list[m.Message], list[AVPacket]]] = []
    player = threading.Thread(target=rtmp_play, args=(server.rtmp_url("wrap"), played))
    player.start()
    _, body = http_flv_bytes(server.flv_url("wrap"), 12, idle=2.5)
    publisher.join()
    player.join()

    # HTTP-FLV: the publisher's tags, byte for byte, their 32-bit times as it sent them.
    flv_tags = [t for t in FlvReader().feed(body) if t.tag_type in (AUDIO, VIDEO)]
    assert [(t.tag_type, t.timestamp, bytes(t.payload)) for t in flv_tags] == [
        (t.tag_type, (t.timestamp + SHIFT) % WRAP, bytes(t.payload)) for t in media_tags]
    assert min(t.timestamp for t in flv_tags) < 3000 < WRAP - 3000 < max(
        t.timestamp for t in flv_tags)
    # RTMP: the same on the wire; the player's session reads them wide.
    wire, packets = played[0]
    assert [(msg.type_id, msg.timestamp, msg.payload) for msg in wire] == [
        (t.tag_type, (t.timestamp + SHIFT) % WRAP, bytes(t.payload)) for t in media_tags]
    assert [p.dts for p in packets] == [t.timestamp + SHIFT for t in media_tags]

    # HLS: segments of about a second each, their DTS on from the wrap's.
    record = wait_playlist(server, "wrap/record.m3u8", segments=5)
    for _ in range(50):
        record = m3u8.loads(get(url(server, "wrap/record.m3u8"))[2].decode(),
                            uri=url(server, "wrap/record.m3u8"))
        if record.is_endlist:
            break
        time.sleep(0.2)
    assert record.is_endlist
    durations = [seg.duration for seg in record.segments]
    assert len(durations) == 6 and all(0.9 <= d <= 1.1 for d in durations), durations
    data = b"".join(get(seg.absolute_uri)[2] for seg in record.segments)
    video = [p.dts for p in parse(data).pes if p.pid == VIDEO_PID]
    first_video = next(t.timestamp for t in media_tags
                       if t.tag_type == VIDEO and t.payload[1] == 1)
    assert video[0] == (first_video + SHIFT) * 90 % TS_CLOCK
    assert {(b - a) % TS_CLOCK for a, b in zip(video, video[1:], strict=False)} == {
        90 * 1000 // FPS}
    assert len(video) == 6 * FPS
    joined = Path(server.log_path).with_name("wrap.ts")
    joined.write_bytes(data)
    assert decode_errors(joined) == ""
