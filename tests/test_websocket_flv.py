"""WebSocket-FLV against the real server with a WebSocket client written from
RFC 6455: the upgrade, FLV in binary messages from a keyframe, ping/pong,
close, a stalled reader dropped alone, bad upgrades answered 400, a player
that breaks the protocol closed with a close frame naming why."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from itertools import pairwise

import pytest
from conftest import Media, Server
from hypothesis import given
from hypothesis import strategies as st
from mediatools import finish, push, wait_for
from wsclient import WsClient, WsClosed, masked_frame

from lal_twisted.httpflv.websocket import INBOUND_BURST, FrameLengths, ws_frame
from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket

# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


def ws_url(server: Server, name: str) -> str:
    return server.flv_url(name).replace("http://", "ws://")


def read_flv(client: WsClient, seconds: float) -> bytes:
    data = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        opcode, payload = client.frame()
        assert opcode == 2  # binary
        data.append(payload)
    return b"".join(data)


def test_ws_frame_lengths() -> None:
    for size in (0, 125, 126, 65535, 65536):
        frame = ws_frame(bytes(size))
        header = len(frame) - size
        assert header == (2 if size < 126 else 4 if size < 65536 else 10)
        assert frame[0] == 0x82


def client_frame(size: int, masked: bool) -> bytes:
    """A frame header declaring ``size`` bytes, and that many bytes."""
    mask = 0x80 if masked else 0
    if size < 126:
        head = bytes([0x82, mask | size])
    elif size < 0x10000:
        head = bytes([0x82, mask | 126]) + struct.pack(">H", size)
    else:
        head = bytes([0x82, mask | 127]) + struct.pack(">Q", size)
    return head + (b"mask" if masked else b"") + bytes(size)


@given(st.lists(st.tuples(st.integers(0, 70000), st.booleans()), min_size=1, max_size=4),
       st.lists(st.integers(1, 50000), max_size=8))
def test_frame_lengths_in_any_split(frames: list[tuple[int, bool]], cuts: list[int]) -> None:
    """Each frame's length is learnt from its header however the bytes arrive."""
    data = b"".join(client_frame(size, masked) for size, masked in frames)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    lengths = FrameLengths()
    seen = [lengths.feed(data[a:b]) for a, b in pairwise(bounds)]
    assert max(seen) == max(size for size, _ in frames)
    # A frame's length is known from its header alone.
    size, masked = frames[0]
    frame = client_frame(size, masked)
    assert FrameLengths().feed(frame[:len(frame) - size]) == size


def test_late_joiner_starts_at_a_keyframe_and_ping_close_work(server: Server,
                                                             media: Media) -> None:
    pusher = push(media.long_av, server.rtmp_url("ws"))
    try:
        server.wait_live("ws")
        time.sleep(1.5)
        client = WsClient(ws_url(server, "ws"))
        assert client.status == 101
        assert "sec-websocket-accept" in client.head.lower()
        data = read_flv(client, 2.0)
        client.send(0x9, b"are you there")  # ping
        while True:
            opcode, payload = client.frame()
            if opcode == 0xA:
                assert payload == b"are you there"
                break
        client.send(0x8, struct.pack(">H", 1000))  # close
        with pytest.raises(WsClosed) as closed:
            while True:
                client.frame()
        assert closed.value.code in (1000, None)
        client.sock.close()
    finally:
        pusher.kill()
        finish(pusher)
    assert data[:3] == b"FLV"
    packets = [AVPacket(t.tag_type, t.timestamp, t.payload) for t in FlvReader().feed(data)]
    first_video = next(p for p in packets if p.kind == VIDEO and not p.is_sequence_header)
    assert first_video.is_keyframe and first_video.dts > 0
    headers = [p for p in packets[:packets.index(first_video)] if p.is_sequence_header]
    assert {p.kind for p in headers} == {AUDIO, VIDEO}
    assert wait_for(lambda: any("wsflv session" in line and "ended: stream=live/ws " in line
                                for line in server.log().splitlines()), 5), server.log()


def test_stalled_reader_dropped_without_affecting_another(server: Server,
                                                          media: Media) -> None:
    pusher = push(media.noisy, server.rtmp_url("stall"))
    try:
        server.wait_live("stall")
        staller = WsClient(ws_url(server, "stall"), rcvbuf=4096)
        assert staller.status == 101  # and then it reads nothing more
        good = WsClient(ws_url(server, "stall"))
        received: list[int] = []

        def read_good() -> None:
            deadline = time.monotonic() + 7
            reader = FlvReader()
            while time.monotonic() < deadline:
                _, payload = good.frame()
                received.extend(t.timestamp for t in reader.feed(payload))
        thread = threading.Thread(target=read_good)
        thread.start()
        # subscriber.stall_timeout_ms is 3000 in the test config.
        assert wait_for(lambda: "player stalled" in server.log(), 12), server.log()
        thread.join(15)
        good.close()
        staller.sock.close()
    finally:
        pusher.kill()
        finish(pusher)
    assert received and max(received) - min(received) >= 5000, "the other reader kept going"
    stalled = [line for line in server.log().splitlines() if "player stalled" in line]
    assert len(stalled) == 1 and "wsflv" in stalled[0] and "stream=live/stall " in stalled[0]


@pytest.mark.parametrize(("headers", "why"), [
    ({"Sec-WebSocket-Version": "8"}, "Sec-WebSocket-Version"),
    ({"Sec-WebSocket-Key": "not base64!"}, "Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": ""}, "Sec-WebSocket-Key"),
    ({"Connection": "keep-alive"}, "Connection: Upgrade"),
])
def test_bad_upgrade_gets_400(server: Server, headers: dict[str, str], why: str) -> None:
    client = WsClient(ws_url(server, "any"), headers=headers)
    assert client.status == 400
    assert why in client.body.decode()
    client.sock.close()


def test_upgrade_over_http_1_0_gets_400(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
        sock.sendall(b"GET /live/x.flv HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") and b"needs HTTP/1.1" in answer


def test_bad_stream_name_is_refused_before_the_upgrade(server: Server) -> None:
    client = WsClient(server.flv_url("bad%00name").replace("http://", "ws://"))
    assert client.status == 400
    client.sock.close()


def closed_by_server(client: WsClient) -> WsClosed:
    """Read until the server's close frame; then the server must end the TCP
    connection (a FIN, not a reset) without sending anything more."""
    with pytest.raises(WsClosed) as closed:
        while True:
            client.frame()
    assert closed.value.code is not None, "the connection ended without a close frame"
    assert client.buf == b"", "bytes after the close frame"
    client.sock.settimeout(5)
    assert client.sock.recv(65536) == b"", "bytes after the close frame"
    return closed.value


def ended_line(server: Server, port: int) -> str:
    """The log line that ends the session of the client on local ``port``."""
    marker = f"127.0.0.1:{port} ended:"
    assert wait_for(lambda: marker in server.log(), 5), server.log()
    return next(line for line in server.log().splitlines() if marker in line)


def test_player_flooding_the_server_is_disconnected(server: Server, media: Media) -> None:
    pusher = push(media.long_av, server.rtmp_url("flood"))
    try:
        server.wait_live("flood")
        client = WsClient(ws_url(server, "flood"))
        assert client.status == 101
        port = client.sock.getsockname()[1]
        for _ in range(2 * INBOUND_BURST // 100 + 10):
            client.send(0x2, bytes(100))
        closed = closed_by_server(client)
        client.sock.close()
        assert closed.code == 1008 and "control frames" in closed.reason
        assert "a player only sends control frames" in ended_line(server, port)
        # The stream and other players are fine.
        other = WsClient(ws_url(server, "flood"))
        assert read_flv(other, 1.0)[:3] == b"FLV"
        other.close()
    finally:
        pusher.kill()
        finish(pusher)


# What a player may get wrong: the bytes it sends, the close code and the words
# of the reason it gets, and what the session's end says.
PROTOCOL_ERRORS = [
    (b"\x82\x05hello", 1002, "unmasked", "protocol error"),
    (masked_frame(0x83), 1002, "opcode", "protocol error"),
    (masked_frame(0xC2, b"x"), 1002, "reserved bit", "protocol error"),
    (masked_frame(0x09, b"x"), 1002, "fragment", "protocol error"),  # a ping without FIN
    (masked_frame(0x80, b"x"), 1002, "continuation", "protocol error"),
    (masked_frame(0x88, struct.pack(">H", 999)), 1002, "invalid code", "protocol error"),
    (masked_frame(0x89, bytes(126)), 1002, "125", "protocol error"),
    (masked_frame(0x81, b"\xc3\x28"), 1007, "utf-8", "protocol error"),
    (bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40) + os.urandom(4), 1009,
     f"frame of {1 << 40} bytes", "message too big"),
]


def test_protocol_errors_get_a_close_frame_and_are_logged(server: Server,
                                                          media: Media) -> None:
    pusher = push(media.long_av, server.rtmp_url("garbage"))
    try:
        server.wait_live("garbage")
        other = WsClient(ws_url(server, "garbage"))
        other_port = other.sock.getsockname()[1]
        for data, code, words, logged in PROTOCOL_ERRORS:
            client = WsClient(ws_url(server, "garbage"))
            assert client.status == 101
            port = client.sock.getsockname()[1]
            client.frame()  # playing
            client.sock.sendall(data)
            closed = closed_by_server(client)
            client.sock.close()
            assert closed.code == code, (data, closed)
            assert words in closed.reason.lower(), (data, closed)
            line = ended_line(server, port)
            assert f"reason=websocket {logged}: " in line, line
            assert closed.reason.lower() in line.lower(), line
        # The other player kept going.
        assert read_flv(other, 1.0)
        other.close()
        assert "reason=player closed" in ended_line(server, other_port)
    finally:
        pusher.kill()
        finish(pusher)


def test_protocol_error_from_a_player_that_does_not_read(server: Server,
                                                         media: Media) -> None:
    """Its close frame cannot be delivered: the connection is reset after a grace."""
    pusher = push(media.noisy, server.rtmp_url("deaf"))
    try:
        server.wait_live("deaf")
        client = WsClient(ws_url(server, "deaf"), rcvbuf=4096)
        assert client.status == 101
        port = client.sock.getsockname()[1]
        client.sock.sendall(b"\x82\x05hello")  # and it reads nothing
        marker = f"127.0.0.1:{port} ended:"
        assert wait_for(lambda: marker in server.log(), 5), server.log()
        assert "reason=websocket protocol error: " in ended_line(server, port)
        client.sock.close()
    finally:
        pusher.kill()
        finish(pusher)


def test_simple_auth_covers_websocket_flv(tmp_path, media: Media) -> None:  # type: ignore[no-untyped-def]
    """lal's sub_httpflv_enable guards WebSocket-FLV too: refused before the upgrade."""
    from conftest import start_server, stop_server

    from lal_twisted.api.auth import lal_secret

    srv = start_server(tmp_path, simple_auth={"key": "k", "sub_httpflv_enable": True})
    try:
        pusher = push(media.long_av, srv.rtmp_url("auth"))
        try:
            srv.wait_live("auth", 15)
            refused = WsClient(ws_url(srv, "auth"))
            assert refused.status == 403
            refused.sock.close()
            allowed = WsClient(ws_url(srv, "auth") + f"?lal_secret={lal_secret('k', 'auth')}")
            assert allowed.status == 101
            assert read_flv(allowed, 1.0)[:3] == b"FLV"
            allowed.close()
        finally:
            pusher.kill()
            finish(pusher)
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log()
