"""A small blocking WebSocket client for the tests: the handshake, unmasked
frames from the server, masked control frames to it.  Written out here so a
test can also misbehave (stop reading, send a bad upgrade)."""

from __future__ import annotations

import base64
import os
import socket
import struct
from urllib.parse import urlsplit


class WsClosed(Exception):
    """The server closed the WebSocket (``code`` and ``reason`` are its close
    frame's, or None and '' when the connection ended without one)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


def masked_frame(first: int, payload: bytes = b"") -> bytes:
    """A client's frame: ``first`` is its first byte (FIN, RSV bits, opcode)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        head = bytes([first, 0x80 | size])
    else:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", size)
    return head + mask + masked


class WsClient:
    def __init__(self, url: str, timeout: float = 10.0, rcvbuf: int = 0,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": parts.netloc, "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
        fields.update(headers or {})
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in fields.items() if v) + "\r\n"
        self.sock.sendall(request.encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1")
        self.body = b""
        if self.status != 101:
            length = 0
            for line in self.head.split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            self.body = self._exactly(length)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise WsClosed(None)
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def frame(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload).  Pings are answered."""
        while True:
            b0, b1 = self._exactly(2)
            size = b1 & 0x7F
            if size == 126:
                (size,) = struct.unpack(">H", self._exactly(2))
            elif size == 127:
                (size,) = struct.unpack(">Q", self._exactly(8))
            assert not b1 & 0x80, "server frames are not masked"
            payload = self._exactly(size)
            opcode = b0 & 0x0F
            if opcode == 9:
                self.send(0xA, payload)
                continue
            if opcode == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise WsClosed(code, payload[2:].decode("utf-8", "replace"))
            return opcode, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        self.sock.sendall(masked_frame(0x80 | opcode, payload))

    def close(self, code: int = 1000) -> None:
        try:
            self.send(8, struct.pack(">H", code))
        finally:
            self.sock.close()
