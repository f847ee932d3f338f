"""HTTP-FLV pull client: GET an ``http(s)://.../STREAM.flv`` URL, packets out.

A lean streaming client: one small Protocol writes the GET, parses the status
line and headers, then reads the body (chunked or not) and feeds it straight to
an incremental :class:`~lal_twisted.media.flv.FlvReader`.  A general HTTP
client (``twisted.web.client.Agent``) builds its response machinery and a call
chain per received HTTP chunk; a live FLV body is an endless run of small
chunks (one per tag), so that machinery was most of what ``lal pull`` cost.

Used by ``lal pull`` and by relay pulls from an HTTP-FLV upstream.  The
tags' 32-bit timestamps become the hub's wide time
(:class:`~lal_twisted.media.clock.WideClock`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from lal_twisted.dial import dial
from lal_twisted.media.clock import WideClock
from lal_twisted.media.flv import FlvError, FlvReader
from lal_twisted.media.packet import AVPacket
from lal_twisted.target import DEFAULT_PORTS, split_unix, target_of

__all__ = ["HttpFlvError", "HttpFlvPull", "check_url"]

# A status line and headers longer than this are not an FLV server's answer.
_MAX_HEADER_BYTES = 16 * 1024
# A chunk-size line (hex digits and extensions) longer than this is garbage.
_MAX_CHUNK_LINE = 1024
_CONNECTION_DONE = Failure(ConnectionDone())


class HttpFlvError(Exception):
    """The server answered with something other than an FLV stream."""


def check_url(url: str) -> str:
    """``url`` if it is an ``http(s)://`` URL with a host (or a unix socket);
    ValueError otherwise."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s):// URL: {url!r}")
    target_of(url)  # a TargetError (a ValueError) says what is wrong
    return url


class _HttpFlvProtocol(protocol.Protocol):
    """Request out; status, headers and an FLV body in."""

    def __init__(self, pull: HttpFlvPull) -> None:
        self.pull = pull
        self.reader = FlvReader()
        self._clock = WideClock()
        self._head = b""  # status line and headers until the blank line
        self._in_body = False
        self._chunked = False
        self._remaining = -1  # identity body bytes still due (-1: until close)
        # Chunked decoding: bytes left in the current chunk, the size line being
        # read, and the CRLF still due after a chunk's data.
        self._chunk_left = 0
        self._line = b""
        self._crlf = 0
        self._last_chunk = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted interface
        pull = self.pull
        self.transport.write(  # type: ignore[union-attr]
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lal-twisted\r\nAccept: */*\r\n"
            b"Connection: close\r\n\r\n" % (pull.target.encode(), pull.host_header.encode()))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        pull = self.pull
        pull.bytes_in += len(data)
        try:
            if not self._in_body:
                data = self._headers(data)
                if not data:
                    return
            if self._chunked:
                self._dechunk(data)
            else:
                if self._remaining >= 0:
                    data = data[:self._remaining]
                    self._remaining -= len(data)
                self._feed(data)
                if self._remaining == 0:
                    self.transport.loseConnection()  # type: ignore[union-attr]
        except (HttpFlvError, FlvError) as e:
            pull.fail(str(e) if isinstance(e, HttpFlvError) else f"bad FLV from server: {e}")

    def _headers(self, data: bytes) -> bytes:
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _MAX_HEADER_BYTES:
                raise HttpFlvError("response headers too long")
            self._head = head
            return b""
        self._head = b""
        lines = head[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpFlvError(f"not an HTTP response: {lines[0][:80]!r}")
        code = int(parts[1])
        phrase = parts[2].decode("latin-1") if len(parts) > 2 else ""
        if code != 200:
            raise HttpFlvError(f"server answered {code} {phrase}".rstrip())
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"content-length" and value.isdigit():
                self._remaining = int(value)
        self._in_body = True
        self.pull.response_started()
        return head[end + 4:]

    def _dechunk(self, data: bytes) -> None:
        pos, n = 0, len(data)
        pieces: list[bytes] = []
        while pos < n:
            if self._chunk_left:
                take = min(self._chunk_left, n - pos)
                pieces.append(data[pos:pos + take] if take != n else data)
                pos += take
                self._chunk_left -= take
                if not self._chunk_left:
                    self._crlf = 2
            elif self._crlf:
                take = min(self._crlf, n - pos)
                pos += take
                self._crlf -= take
            elif self._last_chunk:
                break  # trailers: the body is over
            else:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    self._line += data[pos:]
                    if len(self._line) > _MAX_CHUNK_LINE:
                        raise HttpFlvError("bad chunked encoding: size line too long")
                    break
                line, self._line = self._line + data[pos:eol], b""
                pos = eol + 1
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpFlvError(f"bad chunked encoding: size {size_text[:20]!r}") from None
                if size == 0:
                    self._last_chunk = True
                self._chunk_left = size
        for piece in pieces:
            self._feed(piece)
        if self._last_chunk:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _feed(self, data: bytes) -> None:
        pull = self.pull
        tags = self.reader.feed(data)
        if not pull.header_seen and self.reader.header_parsed:
            pull.header_seen = True
            pull.has_audio = self.reader.has_audio
            pull.has_video = self.reader.has_video
        on_packet = pull.on_packet
        widen = self._clock.widen
        for tag in tags:
            on_packet(AVPacket(tag.tag_type, widen(tag.timestamp), tag.payload))

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:  # noqa: N802
        cut = self._in_body and ((self._chunked and not self._last_chunk)
                                 or self._remaining > 0)
        if cut and self.pull.error is None and not self.pull.stopping:
            self.pull.error = "the server ended the stream mid-body"
        self.pull.finished(reason, self._in_body)


class _Factory(protocol.Factory):
    noisy = False

    def __init__(self, pull: HttpFlvPull) -> None:
        self.pull = pull

    def buildProtocol(self, addr: Any) -> _HttpFlvProtocol:  # noqa: N802
        proto = _HttpFlvProtocol(self.pull)
        self.pull.protocol = proto
        return proto


class HttpFlvPull:
    """One HTTP-FLV player connection.

    ``start()`` returns a Deferred that fires once the response headers say
    200 (errbacks otherwise); ``done`` fires when the body ends (``error``
    says why, when it was not a clean end or ``stop()``).  For ``https://``
    ``tls`` is the client TLS options (:func:`lal_twisted.tls.client_tls`);
    by default the certificate and name are checked against the system store.
    """

    def __init__(self, reactor: Any, url: str, on_packet: Callable[[AVPacket], None],
                 pool: Any = None, timeout: float = 10.0, tls: Any = None) -> None:
        self.reactor = reactor
        self.url = check_url(url)
        self.address = target_of(url)
        plain, _ = split_unix(url)
        parts = urlsplit(plain)
        host = self.address.host
        default_port = self.address.port == DEFAULT_PORTS[parts.scheme]
        self.host_header = parts.netloc.rpartition("@")[2] if not default_port else (
            f"[{host}]" if ":" in host else host)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.on_packet = on_packet
        self.timeout = timeout
        self.tls = tls
        self.bytes_in = 0
        self.header_seen = False
        self.has_audio = False
        self.has_video = False
        self.error: str | None = None
        self.protocol: _HttpFlvProtocol | None = None
        self.done: defer.Deferred[None] = defer.Deferred()
        self._started: defer.Deferred[HttpFlvPull] = defer.Deferred()
        self.stopping = False
        self._dialling: defer.Deferred[Any] | None = None

    def start(self) -> defer.Deferred[HttpFlvPull]:
        d = self._dialling = dial(self.reactor, self.address, _Factory(self),
                                  timeout=self.timeout, tls=self.tls)
        d.addCallbacks(self._connected, self._not_connected)
        return self._started

    def _connected(self, proto: Any) -> None:
        self._dialling = None

    def _not_connected(self, reason: Failure) -> None:
        self._dialling = None
        self.finished(reason, False)

    def response_started(self) -> None:
        if not self._started.called:
            self._started.callback(self)

    def fail(self, cause: str) -> None:
        if self.error is None:
            self.error = cause
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.stopping = True
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()  # type: ignore[attr-defined]
        elif self._dialling is not None:
            dialling, self._dialling = self._dialling, None
            dialling.cancel()  # abandons the connection attempt

    def finished(self, reason: Failure, in_body: bool) -> None:
        if self.error is None and not self.stopping and not reason.check(ConnectionDone):
            self.error = f"connection lost: {reason.getErrorMessage()}"
        if not self._started.called:
            cause = self.error or "connection closed before the response headers"
            self._started.errback(Failure(HttpFlvError(cause)))
        if not self.done.called:
            self.done.callback(None)
