"""End to end: what an HTTP client may send the real server (bodies, slow headers,
methods), over raw sockets on 127.0.0.1."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
from conftest import FPS, Media, Server, start_server, stop_server
from mediatools import finish, probe, pull, push, wait_for


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def connect(server: Server, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=timeout)


def read_response(sock: socket.socket, head_only: bool = False
                  ) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names) and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed inside a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def keep_sending(sock: socket.socket, seconds: float) -> int:
    """Send body bytes until the server stops taking them; the bytes sent."""
    sock.settimeout(0.5)
    chunk = bytes(64 * 1024)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sent += sock.send(chunk)
    except OSError:  # reset, broken pipe, or the kernel's buffers are full
        pass
    return sent


@pytest.mark.serial  # answered within 1 s
def test_request_bodies_are_refused_unread(server: Server) -> None:
    pid = server.proc.pid
    before = rss_bytes(pid)
    refused = []
    for method, code in ((b"GET", 400), (b"HEAD", 400), (b"POST", 413)):
        with connect(server) as s:
            started = time.monotonic()
            s.sendall(method + b" /live/x.flv HTTP/1.1\r\nHost: a\r\n"
                      b"Content-Length: 4000000000\r\n\r\n")
            status, headers, body = read_response(s)
            assert time.monotonic() - started < 1.0
            assert (status, headers["connection"]) == (code, "close"), (method, status)
            assert headers["content-type"].startswith("text/plain")
            assert body.count(b"\n") == 1 and b"body" in body, body
            # The rest of the body is never read: the client can push what the
            # kernel buffers hold (a few MB on loopback), then it is reset.
            sent = keep_sending(s, 3.0)
            assert sent < 64 * 1024 * 1024, sent
            refused.append(sent)
    grown = rss_bytes(pid) - before
    assert grown < 4 * 1024 * 1024, (grown, refused)

    # Chunked: refused with 413 once the chunks pass 64 KiB, not before.
    with connect(server) as s:
        s.sendall(b"POST /live/x.flv HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):  # 8 x 8 KiB: at the bound, still accepted
            s.sendall(b"2000\r\n" + bytes(0x2000) + b"\r\n")
        s.settimeout(0.3)
        try:
            early = s.recv(100)
        except TimeoutError:
            early = b""
        assert early == b"", early
        s.settimeout(2.0)
        s.sendall(b"1\r\nx\r\n")
        status, headers, body = read_response(s)
        assert (status, headers["connection"]) == (413, "close")
        assert body == b"request body too large: more than 65536 bytes\n"
        assert closed_by_server(s, 2.0)

    # A small body is read, and the request answered (405: no endpoint takes POST).
    with connect(server) as s:
        s.sendall(b"POST /live/x.flv HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        assert read_response(s)[0] == 405
    log = server.log()
    assert log.count("requests take no body; closing connection") == 2
    assert log.count("413 request body too large") == 2


@pytest.mark.serial  # cut off within windows of half a second
def test_slow_request_headers_are_cut_off_and_players_play(tmp_path: Path,
                                                           media: Media) -> None:
    server = start_server(tmp_path, default_http={"read_header_timeout_ms": 2000})
    publisher = push(media.long_av, server.rtmp_url("slow"))
    try:
        time.sleep(0.5)
        out = tmp_path / "player.flv"
        player = pull(server.flv_url("slow"), out, 5.0)
        assert wait_for(lambda: "httpflv session" in server.log())
        started = time.monotonic()
        # 50 clients sending their headers one byte every 0.5 s (each byte
        # would reset twisted.web's idle timeout) ...
        slow = [connect(server) for _ in range(50)]
        for s in slow:
            s.sendall(b"GET /live/slow.flv HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        # ... and a keep-alive client whose clock starts again after its response.
        keep = connect(server)
        closed: dict[socket.socket, float] = {}
        sent_head = False
        next_byte = started + 0.5
        while time.monotonic() - started < 5.0 and len(closed) < len(slow) + 1:
            now = time.monotonic()
            if not sent_head and now - started > 1.2:
                keep.sendall(b"HEAD /live/slow.flv HTTP/1.1\r\nHost: a\r\n\r\n")
                assert read_response(keep, head_only=True)[0] == 200
                sent_head = True
            if now >= next_byte:
                next_byte += 0.5
                for s in slow:
                    if s not in closed:
                        try:
                            s.send(b"a")
                        except OSError:
                            pass
            waiting = [s for s in [*slow, keep] if s not in closed]
            readable, _, _ = select.select(waiting, [], [], 0.05)
            for s in readable:
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data  # closed without an answer
                closed[s] = time.monotonic() - started
        times = sorted(closed.get(s, 99.0) for s in slow)
        assert 1.8 <= times[0] and times[-1] <= 3.0, times
        assert 3.0 <= closed.get(keep, 99.0) <= 4.5, closed.get(keep)
        code, err = finish(player)
        assert code == 0, err
        assert publisher.poll() is None
    finally:
        for s in [*slow, keep]:
            s.close()
        publisher.kill()
        finish(publisher)
        stop_server(server)
    info = probe(out)
    assert abs(info.video_frames - 5 * FPS) <= 0.1 * 5 * FPS, info
    log = server.log()
    assert log.count("no complete request headers within 2 s") == len(slow) + 1
    assert "Traceback" not in log


def test_head_and_unknown_methods_answer_at_once(server: Server) -> None:
    with connect(server) as s:  # one keep-alive connection for all of them
        # what a GET would get: nobody publishes live/x (tests/test_http_head.py)
        s.sendall(b"HEAD /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert status == 404 and int(headers["content-length"]) > 0
        assert headers["access-control-allow-origin"] == "*"
        # the same path parsing as GET: not a stream, 404 (the length a GET gets)
        s.sendall(b"HEAD /live/.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert status == 404 and int(headers["content-length"]) > 0
        for method in (b"DELETE", b"PUT", b"PURGE"):
            s.sendall(method + b" /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body = read_response(s)
            assert status == 405, (method, status)
            assert headers["allow"] == "GET, HEAD, OPTIONS"
            assert body.count(b"\n") == 1 and method in body
        s.sendall(b"OPTIONS /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = read_response(s)
        assert status == 204 and "HEAD" in headers["access-control-allow-methods"]
    # HEAD made no player session
    assert "httpflv session" not in server.log()
