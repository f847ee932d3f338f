"""HTTP-FLV pull client: GET an ``http(s)://.../STREAM.flv`` URL, packets out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from lal_twisted.media.flv import FlvError, FlvReader
from lal_twisted.media.packet import AVPacket


class HttpFlvError(Exception):
    """The server answered with something other than an FLV stream."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s):// URL: {url!r}")
    return url


class _FlvBody(protocol.Protocol):
    """Feeds the response body to an FlvReader and hands out packets."""

    def __init__(self, session: HttpFlvPull) -> None:
        self.session = session
        self.reader = FlvReader()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        session = self.session
        session.bytes_in += len(data)
        try:
            tags = self.reader.feed(data)
        except FlvError as e:
            session.error = f"bad FLV from server: {e}"
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        if not session.header_seen and self.reader.header_parsed:
            session.header_seen = True
            session.has_audio = self.reader.has_audio
            session.has_video = self.reader.has_video
        on_packet = session.on_packet
        for tag in tags:
            on_packet(AVPacket(tag.tag_type, tag.timestamp, tag.payload))

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008,N802
        self.session._finished(reason)


class HttpFlvPull:
    """One HTTP-FLV player connection.

    ``start()`` returns a Deferred that fires once the response headers say
    200 (errbacks otherwise); ``done`` fires when the body ends.
    """

    def __init__(self, reactor: Any, url: str, on_packet: Callable[[AVPacket], None],
                 pool: HTTPConnectionPool | None = None, timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.url = check_url(url)
        self.on_packet = on_packet
        self.agent = Agent(reactor, pool=pool, connectTimeout=timeout)
        self.bytes_in = 0
        self.header_seen = False
        self.has_audio = False
        self.has_video = False
        self.error: str | None = None
        self.done: defer.Deferred[None] = defer.Deferred()
        self._response: IResponse | None = None
        self._body: _FlvBody | None = None
        self._stopping = False

    def start(self) -> defer.Deferred[HttpFlvPull]:
        d = self.agent.request(b"GET", self.url.encode(),
                               Headers({b"User-Agent": [b"lal-twisted"]}))
        return d.addCallback(self._got_response)

    def _got_response(self, response: IResponse) -> HttpFlvPull:
        if response.code != 200:
            response.deliverBody(protocol.Protocol())  # discard the body, free the connection
            raise HttpFlvError(f"server answered {response.code} "
                               f"{response.phrase.decode(errors='replace')}")
        self._response = response
        self._body = _FlvBody(self)
        response.deliverBody(self._body)
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._body is not None and self._body.transport is not None:
            self._body.transport.stopProducing()  # type: ignore[attr-defined]

    def _finished(self, reason: Failure) -> None:
        if self.done.called:
            return
        if self.error is None and not self._stopping and not reason.check(ResponseDone):
            self.error = f"connection lost: {reason.getErrorMessage()}"
        self.done.callback(None)
