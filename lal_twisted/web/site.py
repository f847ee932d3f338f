"""The twisted.web Site of every HTTP listener, with limits on what a client sends.

twisted.web alone spools any request body to a temporary file however large it
is, and lets a client take as long as it likes over its request headers as long
as a byte arrives now and then.  :class:`LalSite` (with :class:`LalChannel` and
:class:`LalRequest`) adds:

- A ``GET`` or ``HEAD`` with a body (``Content-Length`` above 0, or chunked) is
  refused with 400; any other body past ``max_body_bytes`` with 413, as soon as
  ``Content-Length`` announces it or the chunks received pass it.  The answer is
  a one-line text body, then the connection closes; the rest of the body is
  never read.
- Request headers must be complete within ``request_header_timeout`` seconds,
  counted from the connection and again from the end of each response on a
  keep-alive connection; past it the connection is closed with one log line.

Only HTTP/1.1 (and 1.0) is spoken: the limits live in the HTTP/1 parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from lal_twisted.log import Logger, redact
from lal_twisted.net import EagerServer, FileSpan, as_bytes

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_REQUEST_HEADER_TIMEOUT", "LalChannel",
           "LalRequest", "LalSite"]

log = Logger("lal_twisted.web.site")

# No endpoint takes a request body today; lal's HTTP API, when it comes, takes
# small JSON documents (a listener serving it can pass a larger bound).
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Go's net/http has no default and nginx allows 60 s (client_header_timeout); a
# real client sends its headers at once, so 30 s is a wide margin that still
# bounds how long a slow client holds a connection.
DEFAULT_REQUEST_HEADER_TIMEOUT = 30.0
# After refusing a request, the connection is half-closed and left this long
# before it is reset, so the client can read the answer first (closing a socket
# with unread input resets it at once, and the reset can overtake the answer).
# Go's net/http waits 500 ms for the same reason (rstAvoidanceDelay).
_LINGER = 0.5
_NO_BODY_METHODS = (b"GET", b"HEAD")
# A fast-path request's bytes, its responder (the response's pieces, or None for
# the ordinary way) and whether the connection closes after it.
_FastMemo = tuple[bytes, Callable[[], "list[bytes | FileSpan] | None"], bool]
_REASONS = {400: b"Bad Request", 413: b"Content Too Large"}


class LalChannel(http.HTTPChannel):
    """An HTTP/1 connection with a request-header deadline and a body bound."""

    site: LalSite
    refused = False
    _header_timer: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None
    # The last two fast-path requests on this connection with their responders.
    _fast_memo: _FastMemo | None = None
    _fast_memo_2: _FastMemo | None = None
    _fast_at = 0.0  # when the last fast-path response was sent (the site's clock)

    @property
    def max_body_bytes(self) -> int:
        return self.site.max_body_bytes

    def connectionMade(self) -> None:  # noqa: N802 - Twisted interface
        super().connectionMade()
        self._start_header_clock()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        if self.refused:
            return
        if (self.site.fast_get is not None and data.startswith(b"GET ")
                and data.endswith(b"\r\n\r\n") and self._idle()
                and self._fast_get(data)):
            return
        super().dataReceived(data)

    def _idle(self) -> bool:
        """Between requests, with nothing buffered (then a whole request may be
        answered without twisted.web's request machinery)."""
        return bool(not self.requests and not self._buffer and self.line_mode
                    and not self._handlingRequest
                    and self._HTTPChannel__first_line == 1)  # type: ignore[attr-defined]

    def _fast_get(self, data: bytes) -> bool:
        """Answer one complete, simple HTTP/1.1 GET through ``site.fast_get``
        (polled resources: HLS playlists and segments); False leaves it to
        twisted.web (anything else: a body, pipelining, HTTP/1.0, no answer).

        ``site.fast_get`` gives a responder (a callable making the response
        now, or None to leave it to twisted.web); the channel keeps the last
        two with their request bytes, so a player asking the same thing again
        on this connection (its playlist, every second, with a segment fetched
        in between) skips the parsing and the routing.  The responder checks
        all the rest (session, stream, file) every time."""
        memo = self._fast_memo
        if memo is None or memo[0] != data:
            other = self._fast_memo_2
            if other is not None and other[0] == data:
                self._fast_memo, self._fast_memo_2 = other, memo
                memo = other
            else:
                memo = self._fast_route(data)
                if memo is None:
                    return False
                self._fast_memo, self._fast_memo_2 = memo, self._fast_memo
        _, responder, close = memo
        response = responder()
        if response is None:
            self._fast_memo = None
            return False
        # The idle timeout and the header clock count from here; they look at
        # this when they fire rather than being moved on every request.
        self._fast_at = self.site.reactor.seconds()
        transport: Any = self.transport
        if type(response[-1]) is not bytes and not isinstance(transport, EagerServer):
            response = [as_bytes(piece) for piece in response]  # TLS: no sendfile
        if close:
            transport.writeSequence(response)
            self._stop_header_clock()
            transport.loseConnection()
        else:
            if self._header_timer is None:
                self._start_header_clock()
            transport.writeSequence(response)
        return True

    def _fast_route(self, data: bytes) -> _FastMemo | None:
        """Parse a request for the fast path: (request bytes, responder, close
        after it), or None to leave it to twisted.web."""
        end = data.find(b"\r\n\r\n")
        if end != len(data) - 4:
            return None  # pipelined requests
        lines = data[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1":
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in b" \t" or name[:1] in b" \t":
                return None  # malformed or folded: twisted.web answers it
            headers[name.lower()] = value.strip()
        if b"content-length" in headers or b"transfer-encoding" in headers:
            return None
        close = headers.get(b"connection", b"").lower() == b"close"
        responder = self.site.fast_get(parts[1], headers, self)
        if responder is None:
            return None
        return (data, responder, close)

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted interface
        period = self.timeOut
        if period:
            left = self._fast_at + period - self.site.reactor.seconds()
            if left > 0:  # a fast-path request came since the timeout started
                self.setTimeout(left)
                self.timeOut = period  # what later requests reset it to
                return
        super().timeoutConnection()

    def rawDataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        if not self.refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802 - Twisted interface
        self._stop_header_clock()
        method = self._command
        # self.length: 0 without a body, None when chunked, else Content-Length.
        if self.length != 0 and method in _NO_BODY_METHODS:
            self.refuse(400, f"bad request: {method.decode('ascii', 'replace')} "
                             "requests take no body")
        elif self.length is not None and self.length > self.max_body_bytes:
            self.refuse(413, f"request body too large: {self.length} bytes, at most "
                             f"{self.max_body_bytes}")
        else:
            super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 - Twisted interface
        if not self.refused:
            super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 - Twisted interface
        # Started before the buffered next request (if any) is parsed, which stops it.
        if self.persistent:
            self._start_header_clock()
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted interface
        self._stop_header_clock()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        super().connectionLost(reason)

    def refuse(self, code: int, text: str) -> None:
        """Answer ``code`` with a one-line text body and close, reading no more."""
        if self.refused or self.transport is None:
            return
        self.refused = True
        self._stop_header_clock()
        log.info("http {peer}: {code} {text}; closing connection", peer=self._peer(),
                 code=code, text=text)
        body = (text + "\n").encode("utf-8", "replace")
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                % (code, _REASONS.get(code, b"Error"), len(body)))
        transport: Any = self.transport
        transport.write(head + body)
        # What the client still sends stays in the kernel's buffers (bounded)
        # until the reset; none of it is read.  Unregistered, the channel
        # cannot resume reading when the answer is flushed.
        transport.unregisterProducer()
        transport.pauseProducing()
        transport.loseWriteConnection()
        self._abort_call = self.callLater(_LINGER, transport.abortConnection)

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        timeout = self.site.request_header_timeout
        if timeout:
            self._header_timer = self.callLater(timeout, self._header_timed_out)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        left = self._fast_at + self.site.request_header_timeout - self.site.reactor.seconds()
        if left > 0:  # a fast-path response ended since the clock started
            self._header_timer = self.callLater(left, self._header_timed_out)
            return
        log.info("http {peer}: no complete request headers within {secs:g} s; "
                 "closing connection", peer=self._peer(),
                 secs=self.site.request_header_timeout)
        transport: Any = self.transport
        self.loseConnection()
        # A client that does not read could hold a close that waits for our
        # buffered output; it is reset after the grace twisted.web gives it too.
        self._abort_call = self.callLater(self.abortTimeout, transport.abortConnection)

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


class LalRequest(server.Request):
    """A request whose (chunked) body is counted against the channel's bound, and
    whose status line and headers leave in one send with the first body bytes
    (twisted.web writes them separately: two system calls, and with Nagle's
    algorithm the body of a small response waits for the client's ACK)."""

    body_bytes = 0

    def write(self, data: bytes) -> None:
        channel = self.channel
        transport = channel.transport if channel is not None else None
        if self.startedWriting or not data or not isinstance(transport, EagerServer):
            super().write(data)
            return
        transport.cork()
        try:
            super().write(data)
        finally:
            transport.uncork()

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        channel = self.channel
        if isinstance(channel, LalChannel):
            if channel.refused:
                return
            self.body_bytes += len(data)
            if self.body_bytes > channel.max_body_bytes:
                channel.refuse(413, f"request body too large: more than "
                                    f"{channel.max_body_bytes} bytes")
                return
        super().handleContentChunk(data)


def _redacted_log_line(timestamp: str, request: Any) -> str:
    """twisted.web's access-log line, with the credentials in its URL masked
    (``?lal_secret=***``), as every project log line has them."""
    return redact(http.combinedLogFormatter(timestamp, request))


class LalSite(server.Site):
    """A Site with the limits above; ``max_body_bytes`` and
    ``request_header_timeout`` (seconds, 0 for none) are per site."""

    protocol = LalChannel  # type: ignore[assignment]
    requestFactory = LalRequest
    noisy = False
    displayTracebacks = False
    # (path, lower-cased headers, channel) -> a responder (called, it gives a
    # whole HTTP response as pieces, or None for the ordinary way), or None;
    # set from the router when a route offers one.
    fast_get: Any = None

    def __init__(self, resource: IResource, *,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 request_header_timeout: float = DEFAULT_REQUEST_HEADER_TIMEOUT,
                 **kwargs: Any) -> None:
        kwargs.setdefault("logFormatter", _redacted_log_line)
        super().__init__(resource, **kwargs)
        self.max_body_bytes = max_body_bytes
        self.request_header_timeout = request_header_timeout
        fast = getattr(resource, "fast_handler", None)
        self.fast_get = fast() if fast is not None else None

    def log(self, request: Any) -> None:
        # Polled resources (HLS playlists and segments: a request per player every
        # second or so) set lal_quiet: their sessions are logged instead.
        if not getattr(request, "lal_quiet", False):
            super().log(request)

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted interface
        # Never negotiate HTTP/2 over TLS: its connection has none of these limits.
        return [b"http/1.1"]
