"""End to end: what an HTTP client may send the real server (bodies, slow headers,
methods), over raw sockets on 127.0.0.1."""

from __future__ import annotations

import socket

from conftest import Server


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


def test_head_and_unknown_methods_answer_at_once(server: Server) -> None:
    with connect(server) as s:  # one keep-alive connection for all of them
        s.sendall(b"HEAD /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, _ = read_response(s, head_only=True)
        assert status == 200
        assert headers["content-type"] == "video/x-flv"
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
