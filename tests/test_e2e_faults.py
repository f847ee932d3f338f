"""End to end: bad peers against the real server must harm nobody else."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from conftest import FPS, Media, Server
from mediatools import finish, http_flv_bytes, probe, pull, push, wait_for

from lal_twisted.media.flv import FlvReader
from lal_twisted.rtmp.client_session import ClientSession, Ready, RtmpUrl


def stalled_socket(port: int) -> socket.socket:
    """A TCP socket with a tiny receive buffer, connected to 127.0.0.1:port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def rtmp_play_then_stall(url: str) -> socket.socket:
    """Start playing over RTMP with the project's client session, then stop reading."""
    parsed = RtmpUrl.parse(url)
    sock = stalled_socket(parsed.port)
    sock.settimeout(5)
    session = ClientSession(parsed, "play")
    session.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.sendall(session.data_to_send())
        events = session.receive(sock.recv(4096))
        sock.sendall(session.data_to_send())
        if any(isinstance(e, Ready) for e in events):
            return sock
    raise AssertionError("play was not accepted")


def test_stalled_players_are_isolated_and_disconnected(server: Server, media: Media,
                                                       tmp_path: Path) -> None:
    # ~10 Mbit/s, so a player that stops reading fills the kernel's socket
    # buffers (up to 4 MiB on loopback) within seconds.
    publisher = push(media.noisy, server.rtmp_url("slow"))
    try:
        server.wait_live("slow")
        flv_stall = stalled_socket(server.http_port)
        flv_stall.sendall(b"GET /live/slow.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        rtmp_stall = rtmp_play_then_stall(server.rtmp_url("slow"))
        out = tmp_path / "good.flv"
        good = pull(server.rtmp_url("slow"), out, 8.0)
        code, err = finish(good)
        assert code == 0, err
        # both stalled players were cut off (stall timeout is 3 s in the test config)
        assert wait_for(lambda: server.log().count("player stalled") >= 2, timeout=10)
        assert publisher.poll() is None, "the publisher must not be affected"
    finally:
        publisher.kill()
        finish(publisher)
        flv_stall.close()
        rtmp_stall.close()
    info = probe(out)
    assert abs(info.video_frames - 8 * FPS) <= 0.1 * 8 * FPS, info
    assert info.decode_errors == ""


def test_garbage_leaves_the_server_serving(server: Server, media: Media, tmp_path: Path) -> None:
    publisher = push(media.long_av, server.rtmp_url("live1"))
    out = tmp_path / "during.flv"
    try:
        server.wait_live("live1")
        player = pull(server.flv_url("live1"), out, 4.0)
        attacks = [
            os.urandom(5000),                                  # garbage handshake
            b"GET /live/x HTTP/1.1\r\n\r\n",                    # HTTP on the RTMP port
            # a simple handshake, then a type-1 header on a chunk stream never opened
            b"\x03" + bytes(1536) + bytes(1536) + b"\x47" + os.urandom(64),
        ]
        for payload in attacks:
            with socket.create_connection(("127.0.0.1", server.rtmp_port), timeout=5) as s:
                s.sendall(payload)
                s.settimeout(5)
                try:
                    while s.recv(65536):
                        pass  # the server answers, then closes the connection
                except (ConnectionResetError, TimeoutError):
                    pass
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as s:
            s.sendall(b"\x00\xff garbage\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")
        code, err = finish(player)
        assert code == 0, err
        assert publisher.poll() is None
        # new clients are still served
        headers, body = http_flv_bytes(server.flv_url("live1"), 1.0)
        assert body.startswith(b"FLV")
    finally:
        publisher.kill()
        finish(publisher)
    info = probe(out)
    assert abs(info.video_frames - 4 * FPS) <= 0.1 * 4 * FPS and info.decode_errors == ""
    assert server.log().count("closing connection") >= 3
    assert server.alive()


def test_publisher_reconnect_continues_to_players(server: Server, media: Media) -> None:
    import threading

    result: dict[str, bytes] = {}

    def reader() -> None:
        result["body"] = http_flv_bytes(server.flv_url("again"), 30.0, idle=4.0)[1]

    t = threading.Thread(target=reader)
    t.start()
    server.wait_players("again")
    assert "waiting for publisher" in server.log()
    for n in range(1, 3):
        code, err = finish(push(media.av, server.rtmp_url("again"), realtime=False))
        assert code == 0, err
        assert wait_for(lambda n=n: server.log().count("stream live/again unpublished") == n)
    t.join(40)
    tags = FlvReader().feed(result["body"])
    video = [t for t in tags if t.tag_type == 9]
    headers = [t for t in video if t.payload[1] == 0]
    assert len(headers) == 2, "the player got the second publisher's sequence header"
    frames = [t for t in video if t.payload[1] == 1]
    assert len(frames) == 2 * 6 * FPS
    stamps = [t.timestamp for t in frames]
    # decode timestamps never go back, across the publisher change too
    assert all(b >= a for a, b in zip(stamps, stamps[1:], strict=False)), stamps
