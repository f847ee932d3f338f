"""The sans-IO RTMP sessions: a ClientSession and a ServerSession talking in memory,
and a ServerSession driven by hand-built chunk bytes."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lal_twisted.media import amf0
from lal_twisted.media.amf0 import AMF0Error
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import ChunkError, ChunkReader, ChunkWriter
from lal_twisted.rtmp.client_session import (
    ClientError,
    ClientSession,
    Ready,
    RtmpUrl,
    RtmpUrlError,
    Status,
)
from lal_twisted.rtmp.handshake import ClientHandshake, ServerHandshake
from lal_twisted.rtmp.message import Message, RtmpProtocolError
from lal_twisted.rtmp.session import (
    ConnectRequest,
    PlayRequest,
    PublishRequest,
    ServerSession,
    SessionError,
    StreamClosed,
    encode_media,
    split_query,
)

METADATA = amf0.encode("onMetaData", amf0.ECMAArray(
    {"width": 320.0, "height": 180.0, "videocodecid": 7.0, "audiocodecid": 10.0}))


def media() -> list[AVPacket]:
    """Metadata, sequence headers and frames, some bigger than any chunk size used
    here, some with timestamps that need the extended timestamp field, the last
    past 2**32 ms."""
    return [
        AVPacket(DATA, 0, METADATA),
        AVPacket(VIDEO, 0, b"\x17\x00\x00\x00\x00" + bytes(range(40))),
        AVPacket(AUDIO, 0, b"\xaf\x00\x12\x10"),
        AVPacket(VIDEO, 40, b"\x17\x01\x00\x00\x00" + os.urandom(10000)),
        AVPacket(AUDIO, 46, b"\xaf\x01" + os.urandom(300)),
        AVPacket(VIDEO, 80, b"\x27\x01\x00\x00\x00" + os.urandom(4091)),  # exactly 4096
        AVPacket(VIDEO, 0xFFFFFE, b"\x27\x01\x00\x00\x00" + os.urandom(200)),
        AVPacket(VIDEO, 0xFFFFFF, b"\x27\x01\x00\x00\x00" + os.urandom(9000)),
        AVPacket(AUDIO, 0x1000000, b"\xaf\x01" + os.urandom(150)),
        # Time runs on (steps under 2**31 ms) to the top of 32 bits and past it:
        # the sessions give the wide times back, the wire carries their low 32 bits.
        AVPacket(VIDEO, 0x70000000, b"\x27\x01\x00\x00\x00" + os.urandom(100)),
        AVPacket(VIDEO, 0xE0000000, b"\x27\x01\x00\x00\x00" + os.urandom(100)),
        AVPacket(VIDEO, 0xFFFFFFFF, b"\x17\x01\x00\x00\x00" + os.urandom(5000)),
        AVPacket(DATA, (1 << 32) + 90000, amf0.encode("onCuePoint", {"name": "x"})),
    ]


def triples(packets: list[Any]) -> list[tuple[int, int, bytes]]:
    return [(p.kind, p.dts, p.payload) for p in packets if isinstance(p, AVPacket)]


class Link:
    """A ClientSession wired to a ServerSession in memory."""

    def __init__(self, url: str | RtmpUrl, mode: str, client_chunk_size: int = 4096,
                 server_chunk_size: int = 4096, complex_handshake: bool = True) -> None:
        parsed = url if isinstance(url, RtmpUrl) else RtmpUrl.parse(url)
        self.client = ClientSession(parsed, mode, chunk_size=client_chunk_size,
                                    complex_handshake=complex_handshake)
        self.server = ServerSession(chunk_size=server_chunk_size)
        self.server_events: list[Any] = []
        self.client_events: list[Any] = []
        self.client.start()

    def pump(self) -> None:
        for _ in range(100):
            c2s = self.client.data_to_send()
            if c2s:
                self.server_events += self.server.receive(c2s)
            s2c = self.server.data_to_send()
            if s2c:
                self.client_events += self.client.receive(s2c)
            if not c2s and not s2c:
                return
        raise AssertionError("the sessions never went quiet")

    def take_server_events(self) -> list[Any]:
        events, self.server_events = self.server_events, []
        return events

    def take_client_events(self) -> list[Any]:
        events, self.client_events = self.client_events, []
        return events


# -- publish --------------------------------------------------------------------------

@pytest.mark.parametrize("complex_handshake", [True, False])
@pytest.mark.parametrize("client_chunk_size", [128, 4096, 60000])
def test_publish_flow(client_chunk_size: int, complex_handshake: bool) -> None:
    link = Link("rtmp://127.0.0.1:1935/live/test?token=abc", "publish",
                client_chunk_size=client_chunk_size, complex_handshake=complex_handshake)
    link.pump()
    assert link.take_server_events() == [
        ConnectRequest(app="live", tc_url="rtmp://127.0.0.1:1935/live", query=""),
        PublishRequest(app="live", name="test", query="token=abc", publish_type="live"),
    ]
    assert link.server.app == "live"
    assert link.server.stream_name == "test"
    assert link.server.query == "token=abc"
    assert link.take_client_events() == []
    assert not link.client.ready
    assert link.client.stream_id == 1

    link.server.accept_publish()
    link.pump()
    events = link.take_client_events()
    assert [e for e in events if isinstance(e, Ready)] == [Ready("NetStream.Publish.Start")]
    statuses = [e for e in events if isinstance(e, Status)]
    assert [(s.level, s.code) for s in statuses] == [("status", "NetStream.Publish.Start")]
    assert "test" in statuses[0].description
    assert link.client.ready

    packets = media()
    for packet in packets:
        link.client.send_packet(packet)
    link.pump()
    received = link.take_server_events()
    assert all(type(e) is AVPacket for e in received)
    assert triples(received) == triples(packets)
    assert received[0].payload.startswith(amf0.encode("onMetaData"))
    assert link.take_client_events() == []


def test_publish_metadata_goes_out_wrapped_and_comes_in_bare() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "publish")
    link.pump()
    link.server.accept_publish()
    link.pump()
    wire = link.client.encode_packet(AVPacket(DATA, 0, METADATA))
    # On the wire the client sends "@setDataFrame" in front, as ffmpeg and OBS do.
    assert amf0.encode("@setDataFrame", "onMetaData") in wire
    events = link.server.receive(wire)
    assert triples(events) == [(DATA, 0, METADATA)]
    assert amf0.decode(events[0].payload)[0] == "onMetaData"


def test_media_before_publish_is_accepted_is_dropped() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "publish")
    link.pump()
    link.take_server_events()
    link.client.send_packet(AVPacket(VIDEO, 0, b"\x17\x01\x00\x00\x00abc"))
    link.client.send_packet(AVPacket(DATA, 0, METADATA))
    link.pump()
    assert link.take_server_events() == []


def test_publish_close_stream() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "publish")
    link.pump()
    link.server.accept_publish()
    link.pump()
    link.take_server_events()
    link.client.close_stream()
    link.pump()
    assert link.take_server_events() == [StreamClosed("FCUnpublish"),
                                         StreamClosed("deleteStream")]


def test_reject_publish_raises_client_error() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "publish")
    link.pump()
    link.server.reject_publish("stream live/test is already being published")
    with pytest.raises(ClientError) as info:
        link.pump()
    assert "NetStream.Publish.BadName" in str(info.value)
    assert "already being published" in str(info.value)
    assert not link.client.ready


def test_query_on_the_app_is_kept() -> None:
    # ffmpeg puts a query given on the app into the app and tcUrl.
    link = Link(RtmpUrl("127.0.0.1", 1935, "live?k=v", "test", "rtmp://127.0.0.1:1935/live?k=v"),
                "publish")
    link.pump()
    assert link.take_server_events() == [
        ConnectRequest(app="live", tc_url="rtmp://127.0.0.1:1935/live?k=v", query="k=v"),
        PublishRequest(app="live", name="test", query="k=v", publish_type="live"),
    ]


# -- play -----------------------------------------------------------------------------

def test_play_flow() -> None:
    link = Link("rtmp://127.0.0.1:19350/live/test", "play")
    link.pump()
    assert link.take_server_events() == [
        ConnectRequest(app="live", tc_url="rtmp://127.0.0.1:19350/live", query=""),
        PlayRequest(app="live", name="test", query="", start=-2.0, duration=-1.0, reset=True),
    ]
    assert link.take_client_events() == []

    link.server.accept_play()
    link.pump()
    events = link.take_client_events()
    assert [e for e in events if isinstance(e, Ready)] == [Ready("NetStream.Play.Start")]
    assert [e.code for e in events if isinstance(e, Status)] == [
        "NetStream.Play.Reset", "NetStream.Play.Start"]
    # |RtmpSampleAccess is protocol chatter, not media.
    assert not [e for e in events if isinstance(e, AVPacket)]

    packets = media()
    received: list[Any] = []
    for packet in packets:
        received += link.client.receive(encode_media(packet, link.server.out_chunk_size))
    assert triples(received) == triples(packets)

    link.server.play_unpublish_notify()
    link.pump()
    events = link.take_client_events()
    assert [(e.level, e.code) for e in events if isinstance(e, Status)] == [
        ("status", "NetStream.Play.UnpublishNotify")]

    link.server.play_publish_notify()
    link.pump()
    events = link.take_client_events()
    assert [e.code for e in events if isinstance(e, Status)] == ["NetStream.Play.PublishNotify"]
    assert not [e for e in events if isinstance(e, Ready)]  # already playing


def test_play_without_reset_sends_no_reset_status() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "play")
    link.pump()
    link.server.accept_play(reset=False)
    link.pump()
    assert [e.code for e in link.take_client_events() if isinstance(e, Status)] == [
        "NetStream.Play.Start"]


def test_media_shared_encoding_matches_server_chunk_size() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "play", server_chunk_size=128)
    link.pump()
    link.server.accept_play()
    link.pump()
    packet = AVPacket(VIDEO, 1234, b"\x17\x01\x00\x00\x00" + os.urandom(1000))
    data = encode_media(packet, link.server.out_chunk_size)
    assert encode_media(packet, link.server.out_chunk_size) is data  # encoded once
    assert triples(link.client.receive(data)) == [(VIDEO, 1234, packet.payload)]


def test_play_media_before_start_is_not_delivered() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "play")
    link.pump()
    packet = AVPacket(VIDEO, 0, b"\x17\x01\x00\x00\x00abc")
    assert link.client.receive(encode_media(packet, link.server.out_chunk_size)) == []


def test_play_stream_not_found_raises_client_error() -> None:
    link = Link("rtmp://127.0.0.1/live/test", "play")
    link.pump()
    # What a server without the stream answers to play (chunk size 4096 is in force).
    status = amf0.encode("onStatus", 0.0, None, {
        "level": "error", "code": "NetStream.Play.StreamNotFound", "description": "no stream"})
    with pytest.raises(ClientError, match="NetStream.Play.StreamNotFound"):
        link.client.receive(ChunkWriter(4096).encode(m.CSID_COMMAND, m.COMMAND_AMF0, 1, 0,
                                                     status))


# -- hand-built client bytes -------------------------------------------------------------

class RawPeer:
    """A client written from the RTMP specification's pieces, not ClientSession."""

    def __init__(self, server: ServerSession | None = None) -> None:
        self.server = server or ServerSession()
        self.writer = ChunkWriter(128)
        self.reader = ChunkReader()
        self.sent = 0  # chunk-stream bytes sent after the handshake
        handshake = ClientHandshake(complex=False)
        assert self.server.receive(handshake.start()) == []
        c2 = handshake.receive(self.server.data_to_send())
        assert handshake.done
        assert self.server.receive(c2) == []
        assert self.server.data_to_send() == b""

    def send_bytes(self, data: bytes) -> list[Any]:
        self.sent += len(data)
        return self.server.receive(data)

    def send(self, type_id: int, payload: bytes, csid: int = m.CSID_COMMAND,
             stream_id: int = 0, timestamp: int = 0) -> list[Any]:
        return self.send_bytes(self.writer.encode(csid, type_id, stream_id, timestamp, payload))

    def command(self, *values: Any, stream_id: int = 0) -> list[Any]:
        return self.send(m.COMMAND_AMF0, amf0.encode(*values), stream_id=stream_id)

    def replies(self) -> list[Message]:
        return self.reader.feed(self.server.data_to_send())

    def commands(self) -> list[list[Any]]:
        return [amf0.decode(msg.payload) for msg in self.replies()
                if msg.type_id == m.COMMAND_AMF0]

    def connect(self, app: str = "live", **props: Any) -> list[Any]:
        obj = {"app": app, "tcUrl": f"rtmp://127.0.0.1:1935/{app}", **props}
        events = self.command("connect", 1.0, obj)
        self.replies()
        return events

    def publish(self, name: str = "test") -> None:
        self.connect()
        self.command("createStream", 2.0, None)
        self.replies()
        events = self.command("publish", 0.0, None, name, "live", stream_id=1)
        assert [type(e) for e in events] == [PublishRequest]
        self.server.accept_publish()
        self.replies()


def test_connect_replies() -> None:
    peer = RawPeer(ServerSession(chunk_size=4096, window_ack_size=5000000))
    events = peer.command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live",
                                           "objectEncoding": 0.0, "flashVer": "x" * 300})
    assert events == [ConnectRequest(app="live", tc_url="rtmp://h/live", query="")]
    replies = peer.replies()
    assert [(r.type_id, r.payload) for r in replies[:3]] == [
        (m.WINDOW_ACK_SIZE, (5000000).to_bytes(4, "big")),
        (m.SET_PEER_BANDWIDTH, (5000000).to_bytes(4, "big") + b"\x02"),
        (m.SET_CHUNK_SIZE, (4096).to_bytes(4, "big")),
    ]
    # The _result comes after Set Chunk Size, encoded with the new chunk size.
    assert peer.reader.chunk_size == 4096
    assert len(replies) == 4
    result = amf0.decode(replies[3].payload)
    assert result[:2] == ["_result", 1.0]
    assert result[3]["code"] == "NetConnection.Connect.Success"
    assert result[3]["level"] == "status"
    assert result[3]["objectEncoding"] == 0.0


def test_connect_result_uses_the_new_chunk_size() -> None:
    peer = RawPeer()
    peer.command("connect", 1.0, {"app": "live"})
    out = peer.server.data_to_send()
    messages = ChunkReader().feed(out)
    assert [msg.type_id for msg in messages] == [
        m.WINDOW_ACK_SIZE, m.SET_PEER_BANDWIDTH, m.SET_CHUNK_SIZE, m.COMMAND_AMF0]
    result = messages[-1].payload
    assert len(result) > 128
    # One type-0 chunk (1-byte basic header + 11-byte message header) carries it all:
    # the server switched to 4096 right after announcing it.
    assert out.endswith(result)
    assert out[-len(result) - 12] == m.CSID_COMMAND
    assert amf0.decode(result)[0] == "_result"


@pytest.mark.parametrize("values", [
    ("createStream", 2.0, None),
    ("publish", 0.0, None, "test", "live"),
    ("play", 0.0, None, "test"),
    ("releaseStream", 2.0, None, "test"),
])
def test_command_before_connect_is_a_session_error(values: tuple[Any, ...]) -> None:
    peer = RawPeer()
    with pytest.raises(SessionError, match="before connect"):
        peer.command(*values)


def test_connect_twice_is_a_session_error() -> None:
    peer = RawPeer()
    peer.connect()
    with pytest.raises(SessionError, match="connect sent twice"):
        peer.connect()


@pytest.mark.parametrize("values", [("connect", 1.0), ("connect", 1.0, None),
                                    ("connect", 1.0, "live")])
def test_connect_without_command_object(values: tuple[Any, ...]) -> None:
    with pytest.raises(SessionError, match="without a command object"):
        RawPeer().command(*values)


@pytest.mark.parametrize("values", [(), (1.0, 2.0), ("connect",), (None, 1.0)])
def test_command_without_name(values: tuple[Any, ...]) -> None:
    peer = RawPeer()
    with pytest.raises(SessionError, match="without a command name"):
        peer.send(m.COMMAND_AMF0, amf0.encode(*values))


def test_connect_app_and_query_from_tc_url() -> None:
    peer = RawPeer()
    events = peer.command("connect", 1.0, {"tcUrl": "rtmp://h:1935/live?token=abc"})
    assert events == [ConnectRequest(app="live", tc_url="rtmp://h:1935/live?token=abc",
                                     query="token=abc")]


def test_connect_app_with_query() -> None:
    peer = RawPeer()
    events = peer.command("connect", 1.0, {"app": "/live/?sign=1", "tcUrl": "rtmp://h/live"})
    assert events == [ConnectRequest(app="live", tc_url="rtmp://h/live", query="sign=1")]


def test_connect_with_unparsable_tc_url_is_a_session_error() -> None:
    peer = RawPeer()
    with pytest.raises(SessionError, match="tcUrl"):
        peer.command("connect", 1.0, {"tcUrl": "rtmp://[::1/live"})


def test_unknown_command_gets_error() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command("setSomething", 7.0, None, "x") == []
    [reply] = peer.commands()
    assert reply[:3] == ["_error", 7.0, None]
    assert reply[3]["level"] == "error"
    assert reply[3]["code"] == "NetConnection.Call.Failed"
    assert "setSomething" in reply[3]["description"]


def test_unknown_command_without_transaction_gets_no_reply() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command("setSomething", 0.0, None) == []
    assert peer.server.data_to_send() == b""


def test_unknown_command_with_a_huge_name_is_answered() -> None:
    """A name that fills a command up to its limit gets a short _error."""
    peer = RawPeer(ServerSession(max_message_size=0xFFFFFF))
    peer.connect()
    peer.send(m.SET_CHUNK_SIZE, (1 << 20).to_bytes(4, "big"), csid=m.CSID_PROTOCOL)
    peer.writer.chunk_size = 1 << 20
    name = "x" * (m.MAX_COMMAND_SIZE - 32)
    peer.send(m.COMMAND_AMF0, amf0.encode(name, 3.0, None))
    [reply] = peer.commands()
    assert reply[:2] == ["_error", 3.0]
    assert reply[3]["code"] == "NetConnection.Call.Failed"


def test_command_over_the_limit_is_refused_before_it_is_buffered() -> None:
    """4 MiB of AMF0 nulls before connect: refused by the message header, with the
    reason; neither buffered nor decoded."""
    peer = RawPeer()
    wire = peer.writer.encode(m.CSID_COMMAND, m.COMMAND_AMF0, 0, 0, b"\x05" * (4 << 20))
    with pytest.raises(RtmpProtocolError, match=r"^command message \(type 20\) of 4194304 "
                                                r"bytes is over the limit of 65536 for its type$"):
        peer.send_bytes(wire[:4096])
    assert peer.server.reader.buffered_bytes < 4096


def test_metadata_over_the_limit_is_refused() -> None:
    peer = RawPeer()
    peer.publish()
    big = amf0.encode("@setDataFrame", "onMetaData", {"x": "y" * m.MAX_DATA_SIZE})
    with pytest.raises(RtmpProtocolError, match=r"^data message \(type 18\) of \d+ bytes "
                                                r"is over the limit of 1048576"):
        peer.send(m.DATA_AMF0, big, csid=m.CSID_DATA, stream_id=1)


def test_metadata_at_the_limit_is_published() -> None:
    peer = RawPeer()
    peer.publish()
    meta = amf0.encode("onMetaData", {"x": "y" * (m.MAX_DATA_SIZE - 40)})
    assert len(meta) <= m.MAX_DATA_SIZE
    [packet] = peer.send(m.DATA_AMF0, meta, csid=m.CSID_DATA, stream_id=1)
    assert packet.kind == DATA and packet.payload == meta


def test_client_refuses_an_oversized_command_from_the_server() -> None:
    """The client session shares the connection core, so the same limit."""
    client = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/test"), "play")
    client.start()
    server = ServerHandshake()
    client.receive(server.receive(client.data_to_send()))
    server.receive(client.data_to_send())
    wire = ChunkWriter(128).encode(3, m.COMMAND_AMF0, 0, 0, bytes(m.MAX_COMMAND_SIZE + 1))
    with pytest.raises(RtmpProtocolError, match="command message"):
        client.receive(wire[:200])


@pytest.mark.parametrize("command", ["publish", "play"])
def test_huge_stream_name_is_answered(command: str) -> None:
    peer = RawPeer(ServerSession(max_message_size=0xFFFFFF))
    peer.connect()
    peer.send(m.SET_CHUNK_SIZE, (1 << 20).to_bytes(4, "big"), csid=m.CSID_PROTOCOL)
    peer.writer.chunk_size = 1 << 20
    name = "x" * (m.MAX_COMMAND_SIZE - 40)
    [event] = peer.command(command, 0.0, None, name, stream_id=1)
    assert event.name == name
    if command == "publish":
        peer.server.accept_publish()
        expected = "NetStream.Publish.Start"
    else:
        peer.server.accept_play()
        expected = "NetStream.Play.Start"
    codes = [values[3]["code"] for values in peer.commands() if values[0] == "onStatus"]
    assert codes[-1] == expected


@pytest.mark.parametrize(("name", "txn", "value"), [
    ("getStreamLength", 4.0, 0.0),
    ("releaseStream", 2.0, amf0.UNDEFINED),
    ("FCPublish", 3.0, amf0.UNDEFINED),
    ("FCSubscribe", 9.0, amf0.UNDEFINED),
    ("_checkbw", 5.0, amf0.UNDEFINED),
    ("createStream", 6.0, 1.0),
])
def test_commands_get_result_with_same_transaction(name: str, txn: float, value: Any) -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command(name, txn, None, "test") == []
    assert peer.commands() == [["_result", txn, None, value]]


@pytest.mark.parametrize("name", ["releaseStream", "FCPublish", "_checkbw"])
def test_notifications_without_transaction_get_no_reply(name: str) -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command(name, 0.0, None, "test") == []
    assert peer.server.data_to_send() == b""


@pytest.mark.parametrize("name", ["receiveAudio", "receiveVideo", "pause", "seek", "onBWDone",
                                  "_result", "_error", "onStatus"])
def test_ignored_commands(name: str) -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command(name, 5.0, None, True) == []
    assert peer.server.data_to_send() == b""


def test_fcunpublish_delete_and_close_stream() -> None:
    peer = RawPeer()
    peer.publish()
    assert peer.command("FCUnpublish", 5.0, None, "test") == [StreamClosed("FCUnpublish")]
    assert peer.commands() == [["_result", 5.0, None, None]]
    assert peer.command("closeStream", 0.0, None, stream_id=1) == [StreamClosed("closeStream")]
    assert peer.command("deleteStream", 0.0, None, 1.0) == [StreamClosed("deleteStream")]
    assert peer.server.data_to_send() == b""


def test_play_request_arguments() -> None:
    peer = RawPeer()
    peer.connect()
    events = peer.command("play", 0.0, None, "test?token=abc", 0.0, 5.0, False, stream_id=1)
    assert events == [PlayRequest(app="live", name="test", query="token=abc", start=0.0,
                                  duration=5.0, reset=False)]


def test_play_request_defaults() -> None:
    peer = RawPeer()
    peer.connect()
    events = peer.command("play", 0.0, None, "test", stream_id=1)
    assert events == [PlayRequest(app="live", name="test", query="", start=-2.0,
                                  duration=-1.0, reset=True)]


def test_play_without_name_gets_stream_not_found() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command("play", 0.0, None, "", stream_id=1) == []
    [status] = peer.commands()
    assert status[0] == "onStatus"
    assert status[3]["code"] == "NetStream.Play.StreamNotFound"


def test_publish_without_name_gets_bad_name() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.command("publish", 0.0, None, None, "live", stream_id=1) == []
    [status] = peer.commands()
    assert status[3]["level"] == "error"
    assert status[3]["code"] == "NetStream.Publish.BadName"


def test_publish_type_is_reported() -> None:
    peer = RawPeer()
    peer.connect()
    events = peer.command("publish", 0.0, None, "test", "record", stream_id=1)
    assert events == [PublishRequest(app="live", name="test", query="", publish_type="record")]


def test_accept_publish_on_the_wire() -> None:
    peer = RawPeer()
    peer.connect()
    peer.command("publish", 0.0, None, "test", "live", stream_id=1)
    peer.server.accept_publish()
    replies = peer.replies()
    assert (replies[0].type_id, replies[0].payload) == (
        m.USER_CONTROL, m.user_control_payload(m.STREAM_BEGIN, 1))
    status = amf0.decode(replies[1].payload)
    assert replies[1].stream_id == 1
    assert status[0] == "onStatus"
    assert status[3]["code"] == "NetStream.Publish.Start"


def test_ping_request_gets_ping_response() -> None:
    peer = RawPeer()
    peer.connect()
    payload = m.user_control_payload(m.PING_REQUEST, 0xDEADBEEF)
    assert peer.send(m.USER_CONTROL, payload, csid=m.CSID_PROTOCOL) == []
    [reply] = peer.replies()
    assert reply.type_id == m.USER_CONTROL
    assert m.parse_user_control(reply.payload) == (m.PING_RESPONSE, 0xDEADBEEF, None)


def test_set_buffer_length_and_stream_begin_are_quiet() -> None:
    peer = RawPeer()
    peer.connect()
    peer.send(m.USER_CONTROL, m.user_control_payload(m.SET_BUFFER_LENGTH, 1, 3000),
              csid=m.CSID_PROTOCOL)
    peer.send(m.USER_CONTROL, m.user_control_payload(m.STREAM_BEGIN, 1), csid=m.CSID_PROTOCOL)
    assert peer.server.data_to_send() == b""


@pytest.mark.parametrize("type_id", [m.USER_CONTROL, m.WINDOW_ACK_SIZE])
def test_short_control_payload_is_a_protocol_error(type_id: int) -> None:
    peer = RawPeer()
    peer.connect()
    with pytest.raises(RtmpProtocolError):
        peer.send(type_id, b"\x00\x06", csid=m.CSID_PROTOCOL)


def test_acknowledgement_after_window() -> None:
    window = 5000
    peer = RawPeer()
    peer.connect()
    peer.send(m.WINDOW_ACK_SIZE, window.to_bytes(4, "big"), csid=m.CSID_PROTOCOL)
    assert peer.sent < window
    assert peer.replies() == []
    last_acked = 0
    acks = 0
    while acks < 3:
        # Audio before publish is not media for the server, but its bytes count.
        peer.send(m.AUDIO, b"\xaf\x01" + bytes(700), csid=m.CSID_AUDIO, stream_id=1)
        replies = [(r.type_id, r.payload) for r in peer.replies()]
        if peer.sent - last_acked >= window:
            assert replies == [(m.ACK, peer.sent.to_bytes(4, "big"))]
            last_acked = peer.sent
            acks += 1
        else:
            assert replies == []


def test_no_acknowledgement_without_window() -> None:
    peer = RawPeer()
    peer.connect()
    for _ in range(20):
        peer.send(m.AUDIO, bytes(1000), csid=m.CSID_AUDIO, stream_id=1)
    assert peer.replies() == []


def test_amf3_command_is_understood() -> None:
    peer = RawPeer()
    events = peer.send(m.COMMAND_AMF3, b"\x00" + amf0.encode(
        "connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "objectEncoding": 3.0}))
    assert events == [ConnectRequest(app="live", tc_url="rtmp://h/live", query="")]
    result = peer.commands()[-1]
    assert result[:2] == ["_result", 1.0]
    assert result[3]["objectEncoding"] == 3.0
    assert peer.send(m.COMMAND_AMF3, b"\x00" + amf0.encode("createStream", 2.0, None)) == []
    assert peer.commands() == [["_result", 2.0, None, 1.0]]
    events = peer.send(m.COMMAND_AMF3, b"\x00" + amf0.encode("publish", 0.0, None, "s", "live"),
                       stream_id=1)
    assert events == [PublishRequest(app="live", name="s", query="", publish_type="live")]


def test_amf3_and_amf0_data_while_publishing() -> None:
    peer = RawPeer()
    peer.publish()
    events = peer.send(m.DATA_AMF3, b"\x00" + METADATA, csid=m.CSID_DATA, stream_id=1,
                       timestamp=5)
    assert triples(events) == [(DATA, 5, METADATA)]
    wrapped = amf0.encode("@setDataFrame") + METADATA
    events = peer.send(m.DATA_AMF0, wrapped, csid=m.CSID_DATA, stream_id=1, timestamp=6)
    assert triples(events) == [(DATA, 6, METADATA)]


def test_media_is_only_reported_while_publishing() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.send(m.VIDEO, b"\x17\x01abc", csid=m.CSID_VIDEO, stream_id=1) == []
    assert peer.send(m.DATA_AMF0, METADATA, csid=m.CSID_DATA, stream_id=1) == []
    peer.command("publish", 0.0, None, "test", "live", stream_id=1)
    peer.server.accept_publish()
    events = peer.send(m.VIDEO, b"\x17\x01abc", csid=m.CSID_VIDEO, stream_id=1, timestamp=9)
    assert triples(events) == [(VIDEO, 9, b"\x17\x01abc")]


def flv_tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    header = (bytes([tag_type]) + len(body).to_bytes(3, "big")
              + (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24])
              + b"\x00\x00\x00")
    return header + body + (11 + len(body)).to_bytes(4, "big")


def test_aggregate_is_split() -> None:
    peer = RawPeer()
    peer.publish()
    bodies = [b"\x17\x01\x00\x00\x00" + os.urandom(3000), b"\xaf\x01" + os.urandom(200),
              b"\x27\x01\x00\x00\x00" + os.urandom(50)]
    aggregate = (flv_tag(VIDEO, 500, bodies[0]) + flv_tag(AUDIO, 520, bodies[1])
                 + flv_tag(VIDEO, 540, bodies[2]))
    events = peer.send(m.AGGREGATE, aggregate, csid=m.CSID_VIDEO, stream_id=1, timestamp=1000)
    assert triples(events) == [(VIDEO, 1000, bodies[0]), (AUDIO, 1020, bodies[1]),
                               (VIDEO, 1040, bodies[2])]


def test_aggregate_with_extended_sub_timestamps() -> None:
    peer = RawPeer()
    peer.publish()
    first = 0x01000010
    aggregate = (flv_tag(AUDIO, first, b"\xaf\x01a") + flv_tag(DATA, first + 5, METADATA)
                 + flv_tag(AUDIO, first + 0x00FFFFFF, b"\xaf\x01b"))
    events = peer.send(m.AGGREGATE, aggregate, csid=m.CSID_AUDIO, stream_id=1,
                       timestamp=0x00FFFFF0)
    assert triples(events) == [(AUDIO, 0x00FFFFF0, b"\xaf\x01a"),
                               (DATA, 0x00FFFFF5, METADATA),
                               (AUDIO, 0x00FFFFF0 + 0x00FFFFFF, b"\xaf\x01b")]


def test_aggregate_ignores_unknown_tags_and_a_missing_last_back_pointer() -> None:
    peer = RawPeer()
    peer.publish()
    aggregate = flv_tag(7, 100, b"zz") + flv_tag(VIDEO, 110, b"\x27\x01v")[:-4]
    events = peer.send(m.AGGREGATE, aggregate, csid=m.CSID_VIDEO, stream_id=1, timestamp=0)
    assert triples(events) == [(VIDEO, 10, b"\x27\x01v")]


def test_truncated_aggregate_is_a_session_error() -> None:
    peer = RawPeer()
    peer.publish()
    with pytest.raises(SessionError, match="truncated"):
        peer.send(m.AGGREGATE, flv_tag(VIDEO, 0, b"\x17\x01" + bytes(100))[:60],
                  csid=m.CSID_VIDEO, stream_id=1)


def test_aggregate_before_publish_is_dropped() -> None:
    peer = RawPeer()
    peer.connect()
    assert peer.send(m.AGGREGATE, flv_tag(VIDEO, 0, b"\x17\x01x"), csid=m.CSID_VIDEO,
                     stream_id=1) == []


def test_garbage_after_handshake_is_a_chunk_error() -> None:
    peer = RawPeer()
    peer.connect()
    # A type-1 header on a chunk stream never opened with a type-0 header.
    with pytest.raises(ChunkError):
        peer.send_bytes(b"\x47" + bytes(20))


def test_invalid_amf_command_is_an_amf_error() -> None:
    peer = RawPeer()
    with pytest.raises(AMF0Error):
        peer.send(m.COMMAND_AMF0, b"\x02\x00\x07connect\x00\x3f")


MESSAGE_TYPES = [m.SET_CHUNK_SIZE, m.ABORT, m.ACK, m.USER_CONTROL, m.WINDOW_ACK_SIZE,
                 m.SET_PEER_BANDWIDTH, m.AUDIO, m.VIDEO, m.DATA_AMF3, m.COMMAND_AMF3,
                 m.DATA_AMF0, m.COMMAND_AMF0, m.AGGREGATE, 0, 7, 255]

amf_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
command_payloads = st.builds(
    lambda name, txn, rest: amf0.encode(name, txn, *rest),
    st.sampled_from(["connect", "createStream", "publish", "play", "deleteStream",
                     "FCUnpublish", "releaseStream", "getStreamLength", "x"]),
    st.floats(), st.lists(amf_values, max_size=4))
payloads = st.binary(max_size=300) | command_payloads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=1, max_size=600), publishing=st.booleans())
def test_random_bytes_raise_only_protocol_errors(garbage: bytes, publishing: bool) -> None:
    peer = RawPeer()
    if publishing:
        peer.publish()
    else:
        peer.connect()
    try:
        peer.send_bytes(garbage)
    except (RtmpProtocolError, AMF0Error):
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(st.sampled_from(MESSAGE_TYPES), payloads,
                                   st.integers(0, 0xFFFFFFFF)), max_size=6),
       publishing=st.booleans(), cut=st.integers(0, 50), flip=st.integers(0, 255))
def test_random_messages_raise_only_protocol_errors(
        messages: list[tuple[int, bytes, int]], publishing: bool, cut: int, flip: int) -> None:
    peer = RawPeer()
    if publishing:
        peer.publish()
    else:
        peer.connect()
    data = bytearray()
    writer = ChunkWriter(128)
    for type_id, payload, timestamp in messages:
        data += writer.encode(m.CSID_COMMAND + type_id % 3, type_id, 1, timestamp, payload)
    if data and flip:
        data[cut % len(data)] ^= flip
    try:
        peer.send_bytes(bytes(data))
        peer.server.data_to_send()
    except (RtmpProtocolError, AMF0Error):
        pass


# -- URLs and queries -----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("test?token=abc", ("test", "token=abc")),
    ("test", ("test", "")),
    ("test?", ("test", "")),
    ("a?b=1?c=2", ("a", "b=1?c=2")),
    ("", ("", "")),
    ("?x=1", ("", "x=1")),
])
def test_split_query(value: str, expected: tuple[str, str]) -> None:
    assert split_query(value) == expected


@pytest.mark.parametrize(("url", "host", "port", "app", "stream", "tc_url"), [
    ("rtmp://127.0.0.1:1935/live/test", "127.0.0.1", 1935, "live", "test",
     "rtmp://127.0.0.1:1935/live"),
    ("rtmp://example.com/live/test", "example.com", 1935, "live", "test",
     "rtmp://example.com:1935/live"),
    ("rtmp://h:19350/live/test?token=abc", "h", 19350, "live", "test?token=abc",
     "rtmp://h:19350/live"),
    ("rtmp://h/app/inst/stream", "h", 1935, "app/inst", "stream", "rtmp://h:1935/app/inst"),
    ("rtmp://h/live/test/", "h", 1935, "live", "test", "rtmp://h:1935/live"),
    ("rtmp://[::1]:1936/live/test", "::1", 1936, "live", "test", "rtmp://[::1]:1936/live"),
    ("rtmps://h/live/test", "h", 443, "live", "test", "rtmps://h:443/live"),
])
def test_rtmp_url_parse(url: str, host: str, port: int, app: str, stream: str,
                        tc_url: str) -> None:
    parsed = RtmpUrl.parse(url)
    assert (parsed.host, parsed.port, parsed.app, parsed.stream, parsed.tc_url) == (
        host, port, app, stream, tc_url)


@pytest.mark.parametrize(("url", "why"), [
    ("http://h/live/test", "not an rtmp:// or rtmps:// URL"),
    ("rtmpt://h/live/test", "not an rtmp:// or rtmps:// URL"),
    ("h/live/test", "not an rtmp:// or rtmps:// URL"),
    ("rtmp:///live/test", "no host"),
    ("rtmp://h/live", "needs an app and a stream name"),
    ("rtmp://h/live/", "needs an app and a stream name"),
    ("rtmp://h/", "needs an app and a stream name"),
    ("rtmp://h", "needs an app and a stream name"),
    ("rtmp://h:99999/live/test", "bad port"),
    ("rtmp://h:port/live/test", "bad port"),
    ("rtmp://[::1/live/test", "rtmp://"),
])
def test_rtmp_url_errors(url: str, why: str) -> None:
    with pytest.raises(RtmpUrlError) as info:
        RtmpUrl.parse(url)
    assert why in str(info.value)
    assert url in str(info.value)


def test_client_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        ClientSession(RtmpUrl.parse("rtmp://h/live/test"), "pull")
