"""Helpers for the control-plane tests: call the HTTP API, receive callbacks."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import Server, assert_no_traceback, free_port, start_server, stop_server, wait_port


def http(url: str, body: bytes | None = None, method: str | None = None,
         timeout: float = 10.0, headers: dict[str, str] | None = None,
         ) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of a request; 4xx/5xx answers are returned too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def api(port: int, path: str, body: Any = None, raw: bytes | None = None,
        method: str | None = None, headers: dict[str, str] | None = None,
        ) -> tuple[int, dict[str, Any]]:
    """Call the API as a backend does: a JSON body is sent as application/json."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    status, text, headers = http(f"http://127.0.0.1:{port}{path}", data, method, headers=sent)
    assert headers.get("content-type") == "application/json", (status, text, headers)
    return status, json.loads(text)


@dataclass
class ApiServer:
    server: Server
    api_port: int


@contextmanager
def api_server(tmp: Path, **overrides: dict) -> Iterator[ApiServer]:
    api = overrides.pop("http_api", {})
    for attempt in range(3):
        # The API's port, found free, may be taken by another connection before
        # the server binds it: then the server says so and exits, and it is
        # started again on other ports (as start_server does for its own).
        api_port = free_port()
        srv = start_server(tmp, http_api={"enable": True, "addr": f"127.0.0.1:{api_port}",
                                          **api}, **overrides)
        try:
            wait_port(api_port, srv.proc)
            break
        except RuntimeError:
            stop_server(srv)
            if attempt == 2 or "Address already in use" not in srv.log():
                raise RuntimeError(f"server failed to start:\n{srv.log()}") from None
    try:
        yield ApiServer(srv, api_port)
    finally:
        stop_server(srv)
    assert_no_traceback(srv)


@dataclass
class Received:
    path: str
    body: Any
    at: float


@dataclass
class Callbacks:
    """A real HTTP server that records every POST (path, JSON body, time).

    ``answer(path)`` gives the status to answer with (200 by default);
    ``hang`` holds each request that long before answering."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    answer: Callable[[str], int] = lambda path: 200
    hang: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, path: str) -> list[Any]:
        with self.lock:
            return [r.body for r in self.received if r.path == path]

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.received]

    def wait(self, path: str, count: int = 1, timeout: float = 15.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.of(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{count} x {path} not received within {timeout}s: {self.paths()}")


@contextmanager
def callback_server(**kwargs: Any) -> Iterator[Callbacks]:
    cb = Callbacks(**kwargs)
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server interface
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            with cb.lock:
                cb.received.append(Received(self.path, body, time.monotonic()))
            if cb.hang:
                stop.wait(cb.hang)
            code = cb.answer(self.path)
            payload = b'{"ok":true}'
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    cb.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield cb
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


@dataclass
class EndlessHead:
    """A callback server that answers every request with a status line and then
    ``lines`` header lines, streamed.  ``asked`` counts the requests it read,
    ``sent`` holds the header lines it wrote on each connection before the
    client hung up."""

    port: int = 0
    lines: int = 300_000
    asked: int = 0
    sent: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def endless_head_server(lines: int = 300_000) -> Iterator[EndlessHead]:
    eh = EndlessHead(lines=lines)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()
    eh.port = listener.getsockname()[1]

    def read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        with eh.lock:
            eh.asked += 1

    def answer(conn: socket.socket) -> None:
        sent = 0
        try:
            read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            block = 2000
            for start in range(0, eh.lines, block):
                conn.sendall(b"".join(b"X-Pad-%d: value\r\n" % n
                                      for n in range(start, min(start + block, eh.lines))))
                sent += block
            conn.sendall(b"Connection: close\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass  # the client gave up: what this server is for
        finally:
            with eh.lock:
                eh.sent.append(sent)
            conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield eh
    finally:
        stop.set()
        listener.close()


def vm_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A figure of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


def metrics(port: int) -> dict[str, float]:
    """Every sample of ``/metrics``, parsed with prometheus_client's text parser,
    as {"name{label=value,...}": value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text, headers = http(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), (status, headers)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
