"""The RTMP connection core (handshake, acknowledgements, pings, chunk sizes) on
both sides, driven with plain bytes: hand-written chunks, not a peer session."""

from __future__ import annotations

from typing import Any

import pytest

from lal_twisted.media import amf0
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import ChunkReader
from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl
from lal_twisted.rtmp.connection import RtmpConnection, command_payload
from lal_twisted.rtmp.handshake import HANDSHAKE_SIZE, ServerHandshake
from lal_twisted.rtmp.message import Message
from lal_twisted.rtmp.session import ConnectRequest, ServerSession

# A simple-handshake C0+C1 (or S0+S1): version 3, then time, zero version, zero "random".
C0C1 = b"\x03" + bytes(HANDSHAKE_SIZE)
ECHO = bytes(HANDSHAKE_SIZE)  # C2 or S2; neither side checks what it holds


def chunk(csid: int, type_id: int, payload: bytes, stream_id: int = 0,
          timestamp: int = 0) -> bytes:
    """One type-0 chunk holding a whole message (payload within the chunk size)."""
    return (bytes((csid,)) + timestamp.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
            + bytes((type_id,)) + stream_id.to_bytes(4, "little") + payload)


def control(type_id: int, payload: bytes) -> bytes:
    """A protocol-control message as both sides send it: csid 2, stream 0, time 0."""
    return chunk(m.CSID_PROTOCOL, type_id, payload)


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def ping_request(value: int) -> bytes:
    return control(m.USER_CONTROL, b"\x00\x06" + u32(value))


def ping_response(value: int) -> bytes:
    return control(m.USER_CONTROL, b"\x00\x07" + u32(value))


def ack(count: int) -> bytes:
    return control(m.ACK, u32(count))


def audio(size: int) -> bytes:
    """An audio message of ``size`` bytes on the wire (12 of them header, so at
    most 140 for one chunk at the initial chunk size)."""
    assert 14 <= size <= 140
    return chunk(m.CSID_AUDIO, m.AUDIO, b"\xaf\x01" + bytes(size - 14), stream_id=1)


def server() -> ServerSession:
    """A server session past the handshake; nothing queued."""
    session = ServerSession()
    assert session.receive(C0C1) == []
    assert session.receive(ECHO) == []
    session.data_to_send()
    return session


def client(mode: str = "publish", chunk_size: int = 4096) -> ClientSession:
    """A client session past the handshake (its connect queued and taken)."""
    session = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/test"), mode,
                            chunk_size=chunk_size, complex_handshake=False)
    session.start()
    session.data_to_send()
    assert session.receive(C0C1 + ECHO) == []
    session.data_to_send()
    return session


Session = ServerSession | ClientSession
SIDES = [pytest.param(server, id="server"), pytest.param(client, id="client")]


# -- handshake ------------------------------------------------------------------------

def test_server_parses_the_chunks_that_follow_c2_in_the_same_read() -> None:
    session = ServerSession()
    assert session.receive(C0C1) == []
    s0s1s2 = session.data_to_send()
    assert len(s0s1s2) == 1 + 2 * HANDSHAKE_SIZE
    assert s0s1s2[0] == 3 and s0s1s2[-HANDSHAKE_SIZE:] == C0C1[1:]  # S2 echoes C1
    connect = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
    events = session.receive(ECHO + chunk(m.CSID_COMMAND, m.COMMAND_AMF0, connect)
                             + ping_request(9))
    assert events == [ConnectRequest(app="live", tc_url="rtmp://h/live", query="")]
    assert session.handshake is None
    out = session.data_to_send()
    assert out.endswith(ping_response(9))
    assert session.reader.bytes_received == len(connect) + 12 + 18  # the chunks only


def test_client_sends_connect_as_the_handshake_completes() -> None:
    session = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/test"), "play",
                            complex_handshake=False)
    session.start()
    c0c1 = session.data_to_send()
    assert len(c0c1) == 1 + HANDSHAKE_SIZE and c0c1[0] == 3
    assert session.receive(C0C1) == []  # S0+S1, no S2 yet: C2 only
    assert session.data_to_send() == C0C1[1:]  # C2 echoes S1
    # S2 and the first chunks in one read: connect goes out, then the ping answer.
    assert session.receive(ECHO + ping_request(7)) == []
    out = session.data_to_send()
    assert out.startswith(control(m.SET_CHUNK_SIZE, u32(4096)))
    messages = ChunkReader().feed(out)
    assert [msg.type_id for msg in messages] == [m.SET_CHUNK_SIZE, m.COMMAND_AMF0, m.USER_CONTROL]
    assert amf0.decode(messages[1].payload)[:2] == ["connect", 1.0]
    assert out.endswith(ping_response(7))


def test_client_with_nothing_after_s2() -> None:
    session = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/test"), "publish",
                            complex_handshake=False)
    session.start()
    session.data_to_send()
    assert session.receive(C0C1 + ECHO) == []
    messages = ChunkReader().feed(session.data_to_send()[HANDSHAKE_SIZE:])
    assert [msg.type_id for msg in messages] == [m.SET_CHUNK_SIZE, m.COMMAND_AMF0]
    assert session.reader.bytes_received == 0


# -- acknowledgements -------------------------------------------------------------------

@pytest.mark.parametrize("make", SIDES)
def test_ack_when_the_window_passes(make: Any) -> None:
    session: Session = make()
    window = 500
    sent = len(control(m.WINDOW_ACK_SIZE, u32(window)))
    session.receive(control(m.WINDOW_ACK_SIZE, u32(window)))
    assert session.data_to_send() == b""
    last_acked = 0
    acks = 0
    while acks < 3:
        session.receive(audio(120))  # media nobody asked for still counts
        sent += 120
        if sent - last_acked >= window:
            assert session.data_to_send() == ack(sent)
            last_acked = sent
            acks += 1
        else:
            assert session.data_to_send() == b""


@pytest.mark.parametrize("make", SIDES)
def test_ack_at_exactly_the_window(make: Any) -> None:
    session: Session = make()
    session.receive(control(m.WINDOW_ACK_SIZE, u32(100)))  # 16 bytes
    session.receive(audio(83))
    assert session.data_to_send() == b""
    session.receive(b"\x00")  # a byte of the next chunk: 100 in all
    assert session.data_to_send() == ack(100)


@pytest.mark.parametrize("make", SIDES)
def test_one_ack_per_read_with_the_full_count(make: Any) -> None:
    session: Session = make()
    session.receive(control(m.WINDOW_ACK_SIZE, u32(100)))
    session.data_to_send()
    data = audio(100) * 4  # four windows' worth in one read
    session.receive(data)
    assert session.data_to_send() == ack(16 + len(data))


@pytest.mark.parametrize("make", SIDES)
def test_no_ack_without_a_window(make: Any) -> None:
    session: Session = make()
    for _ in range(50):
        session.receive(audio(140))
    assert session.data_to_send() == b""


def test_ack_count_wraps_at_32_bits() -> None:
    session = server()
    session.receive(control(m.WINDOW_ACK_SIZE, u32(100)))
    session.reader.bytes_received += (1 << 32) - 16
    session.receive(audio(100))
    assert session.data_to_send() == ack(100)


# -- ping -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", SIDES)
def test_ping_request_is_answered(make: Any) -> None:
    session: Session = make()
    assert session.receive(ping_request(0xDEADBEEF)) == []
    assert session.data_to_send() == ping_response(0xDEADBEEF)


@pytest.mark.parametrize("make", SIDES)
def test_other_user_control_events_are_quiet(make: Any) -> None:
    session: Session = make()
    session.receive(control(m.USER_CONTROL, b"\x00\x00" + u32(1))  # StreamBegin
                    + control(m.USER_CONTROL, b"\x00\x03" + u32(1) + u32(3000))
                    + control(m.USER_CONTROL, b"\x00\x07" + u32(5)))  # a PingResponse
    assert session.data_to_send() == b""


# -- chunk sizes ------------------------------------------------------------------------

def test_server_announces_its_chunk_size_on_connect_and_uses_it() -> None:
    session = ServerSession(chunk_size=1000, window_ack_size=5000)
    session.receive(C0C1)
    session.receive(ECHO)
    session.data_to_send()
    session.receive(chunk(m.CSID_COMMAND, m.COMMAND_AMF0, amf0.encode(
        "connect", 1.0, {"app": "live"})))
    out = session.data_to_send()
    head = (control(m.WINDOW_ACK_SIZE, u32(5000))
            + control(m.SET_PEER_BANDWIDTH, u32(5000) + b"\x02")
            + control(m.SET_CHUNK_SIZE, u32(1000)))
    assert out.startswith(head)
    result = out[len(head):]
    # The _result (longer than 128 bytes) is one chunk at the new size.
    assert 128 < len(result) - 12 <= 1000
    assert result[:1] == bytes((m.CSID_COMMAND,))
    assert int.from_bytes(result[4:7], "big") == len(result) - 12
    assert session.writer.chunk_size == 1000


def test_client_announces_its_chunk_size_before_connect() -> None:
    session = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/test"), "play",
                            chunk_size=300, complex_handshake=False)
    session.start()
    session.data_to_send()
    session.receive(C0C1 + ECHO)
    out = session.data_to_send()[HANDSHAKE_SIZE:]
    assert out.startswith(control(m.SET_CHUNK_SIZE, u32(300)))
    connect = out[16:]
    # One chunk at the new size: its length field covers everything after the header.
    assert 128 < len(connect) - 12 <= 300
    assert int.from_bytes(connect[4:7], "big") == len(connect) - 12
    assert session.writer.chunk_size == 300


@pytest.mark.parametrize("make", SIDES)
def test_peer_chunk_size_applies_to_what_follows(make: Any) -> None:
    session: Session = make()
    big = b"\xaf\x01" + bytes(3000)
    session.receive(control(m.SET_CHUNK_SIZE, u32(4096)))
    assert session.reader.chunk_size == 4096
    session.receive(chunk(m.CSID_AUDIO, m.AUDIO, big, stream_id=1))  # one 3 kB chunk
    assert session.reader.unparsed_bytes == 0
    assert session.data_to_send() == b""


def test_client_reads_a_big_result_after_the_server_chunk_size() -> None:
    session = client("publish")
    result = amf0.encode("_result", 1.0, {"fmsVer": "x" * 200}, {"code": "ok"})
    session.receive(control(m.SET_CHUNK_SIZE, u32(4096))
                    + chunk(m.CSID_COMMAND, m.COMMAND_AMF0, result))
    out = session.data_to_send()
    reader = ChunkReader()
    reader.chunk_size = session.writer.chunk_size
    names = [amf0.decode(msg.payload)[0] for msg in reader.feed(out)]
    assert names == ["releaseStream", "FCPublish", "createStream"]


# -- the core on its own ------------------------------------------------------------------

class Probe(RtmpConnection):
    """The bare core with hooks that record what reaches them."""

    def __init__(self) -> None:
        super().__init__(ServerHandshake(), 4096, 1 << 20)
        self.seen: list[Any] = []

    def _on_handshake_done(self) -> None:
        self.seen.append("handshake done")

    def _on_message(self, msg: Message, events: list[Any]) -> None:
        self.seen.append(msg.type_id)
        events.append(msg.type_id)


def every_type() -> bytes:
    return b"".join([
        control(m.SET_CHUNK_SIZE, u32(128)), control(m.ABORT, u32(9)), ack(1),
        control(m.USER_CONTROL, b"\x00\x00" + u32(1)), control(m.WINDOW_ACK_SIZE, u32(1 << 30)),
        control(m.SET_PEER_BANDWIDTH, u32(1 << 30) + b"\x02"),
        chunk(m.CSID_AUDIO, m.AUDIO, b"\xaf\x01a", 1, 5),
        chunk(m.CSID_DATA, m.DATA_AMF0, amf0.encode("onMetaData"), 1),
        chunk(m.CSID_VIDEO, m.VIDEO, b"\x27\x01v", 1, 6),
        chunk(m.CSID_DATA, m.DATA_AMF3, b"\x00" + amf0.encode("x"), 1),
        chunk(m.CSID_COMMAND, m.SHARED_OBJECT_AMF0, b"so"),
        chunk(m.CSID_COMMAND, m.SHARED_OBJECT_AMF3, b"so"),
        chunk(m.CSID_COMMAND, m.COMMAND_AMF3, b"\x00" + amf0.encode("x", 0.0)),
        chunk(m.CSID_COMMAND, m.COMMAND_AMF0, amf0.encode("x", 0.0)),
        chunk(m.CSID_VIDEO, m.AGGREGATE, b"", 1),
    ])


NOT_CONTROL = [m.DATA_AMF0, m.DATA_AMF3, m.SHARED_OBJECT_AMF0, m.SHARED_OBJECT_AMF3,
               m.COMMAND_AMF3, m.COMMAND_AMF0, m.AGGREGATE]


def test_the_hook_gets_every_message_but_control_and_media() -> None:
    probe = Probe()
    probe.receive(C0C1)
    assert probe.seen == []
    assert probe.receive(ECHO + every_type()) == NOT_CONTROL  # media dropped: gate shut
    assert probe.seen == ["handshake done", *NOT_CONTROL]
    assert len(probe.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE  # no reply to any of it


def test_media_becomes_packets_in_order_once_the_gate_opens() -> None:
    probe = Probe()
    probe.receive(C0C1)
    probe.receive(ECHO)
    probe._media_in = True
    events = probe.receive(every_type())
    kinds = [(e.kind, e.dts, e.payload) if isinstance(e, AVPacket) else e for e in events]
    assert kinds == [(AUDIO, 5, b"\xaf\x01a"), m.DATA_AMF0, (VIDEO, 6, b"\x27\x01v"),
                     *NOT_CONTROL[1:]]


def test_command_payload_unwraps_amf3() -> None:
    body = amf0.encode("connect", 1.0)
    assert command_payload(Message(3, m.COMMAND_AMF3, 0, 0, b"\x00" + body)) == body
    assert command_payload(Message(3, m.COMMAND_AMF0, 0, 0, body)) == body
    assert command_payload(Message(3, m.COMMAND_AMF3, 0, 0, b"\x11x")) == b"\x11x"


def test_control_senders_write_the_specified_bytes() -> None:
    probe = Probe()
    probe._send_window_ack_size(2500000)
    probe._send_peer_bandwidth(2500000, m.LIMIT_SOFT)
    probe._send_user_control(m.STREAM_BEGIN, 1)
    probe._send_chunk_size()
    probe._send_command("onStatus", 0.0, None, {"code": "c"}, stream_id=1)
    assert probe.data_to_send() == (
        control(m.WINDOW_ACK_SIZE, u32(2500000))
        + control(m.SET_PEER_BANDWIDTH, u32(2500000) + b"\x01")
        + control(m.USER_CONTROL, b"\x00\x00" + u32(1))
        + control(m.SET_CHUNK_SIZE, u32(4096))
        + chunk(m.CSID_COMMAND, m.COMMAND_AMF0, amf0.encode("onStatus", 0.0, None, {"code": "c"}),
                stream_id=1))
    assert probe.writer.chunk_size == 4096
    assert probe.data_to_send() == b""
