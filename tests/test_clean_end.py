"""A player whose stream ended sees a clean end: an HTTP-FLV or HTTP-TS chunked response
ends with its terminating chunk and the connection closes without a reset;
WebSocket-FLV gets a close frame (1001, going away) before the connection
closes.  A player that stopped reading is still reset (its buffer never
drains), which test_e2e_faults covers."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import pytest
from conftest import Media, Server
from mediatools import finish, push
from wsclient import WsClient, WsClosed

from lal_twisted.media.flv import FlvReader

pytestmark = pytest.mark.shared_server


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    return {"subscriber": {"publisher_wait_timeout_ms": 1000}, "httpts": {"enable": True}}


def raw_http(server: Server, path: str, out: dict[str, object]) -> threading.Thread:
    """Read a whole HTTP-FLV or HTTP-TS response on a plain socket: the bytes,
    and how the connection ended (``"eof"`` or ``"reset"``)."""
    def run() -> None:
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = bytearray()
        try:
            while chunk := sock.recv(65536):
                data += chunk
            out["end"] = "eof"
        except ConnectionResetError:
            out["end"] = "reset"
        finally:
            sock.close()
        out["data"] = bytes(data)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's data, and whether it ended with the terminating chunk."""
    out = bytearray()
    pos = 0
    while True:
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            return bytes(out), False
        size = int(body[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            return bytes(out), body[pos:pos + 2] == b"\r\n"
        if pos + size + 2 > len(body):
            return bytes(out), False
        out += body[pos:pos + size]
        pos += size + 2


def test_http_flv_and_ts_players_see_the_end_of_the_response(server: Server, media: Media) -> None:
    pub = push(media.av, server.rtmp_url("ends"))
    try:
        server.wait_live("ends")
        result: dict[str, object] = {}
        reader = raw_http(server, "/live/ends.flv", result)
        ts_result: dict[str, object] = {}
        ts_reader = raw_http(server, "/live/ends.ts", ts_result)
        # urllib too reads to a clean end, no ConnectionResetError.
        with urllib.request.urlopen(server.flv_url("ends"), timeout=30) as response:
            body = response.read()
        assert finish(pub)[0] == 0
    finally:
        pub.kill()
        finish(pub)
    reader.join(30)
    ts_reader.join(30)
    assert not reader.is_alive() and not ts_reader.is_alive()
    assert result["end"] == "eof" and ts_result["end"] == "eof"
    ts_raw = ts_result["data"]
    assert isinstance(ts_raw, bytes)
    ts_head, _, ts_chunked = ts_raw.partition(b"\r\n\r\n")
    assert b"video/mp2t" in ts_head.lower()
    ts_data, ts_terminated = dechunk(ts_chunked)
    assert ts_terminated and len(ts_data) > 100 * 188 and len(ts_data) % 188 == 0
    raw = result["data"]
    assert isinstance(raw, bytes)
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    data, terminated = dechunk(chunked)
    assert terminated, chunked[-40:]
    for flv in (data, body):
        assert flv.startswith(b"FLV")
        tags = FlvReader().feed(flv)
        assert len(tags) > 100
    ended = [line for line in server.log().splitlines() if "ended: stream=live/ends " in line]
    assert ["reason=no publisher for 1s" in line for line in ended] == [True] * 3, ended


def test_websocket_flv_player_gets_a_close_frame(server: Server, media: Media) -> None:
    pub = push(media.av, server.rtmp_url("wsends"))
    try:
        server.wait_live("wsends")
        client = WsClient(server.flv_url("wsends").replace("http://", "ws://"), timeout=30)
        assert client.status == 101
        frames = 0
        with pytest.raises(WsClosed) as closed:
            while True:
                opcode, _ = client.frame()
                assert opcode == 2
                frames += 1
        assert finish(pub)[0] == 0
    finally:
        pub.kill()
        finish(pub)
    assert closed.value.code == 1001
    assert frames > 100
    # The client answers the close as RFC 6455 says; the server then closes the
    # connection: an end, no reset.
    client.send(8, (1001).to_bytes(2, "big"))
    client.sock.settimeout(10)
    started = time.monotonic()
    try:
        rest = client.sock.recv(65536)
    except ConnectionResetError:
        rest = None
    finally:
        client.sock.close()
    assert rest == b"" and time.monotonic() - started < 5
