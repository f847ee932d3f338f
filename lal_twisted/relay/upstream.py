"""One connection to another server, for a relay: an RTMP(S) or HTTP(S)-FLV
play (:class:`Upstream`).  The addresses, the relay marker and the loop rules'
names are in :mod:`lal_twisted.relay.address` (re-exported here).

The loop rules: a server never starts a pull for a relayed play it could not
serve anyway, does not let a relayed play wait on a pull of its own that the API
started and that has no media yet, and never pushes a pulled stream back to the
server it came from.  So two servers that pull from each other answer "not
found" at once instead of waiting on each other, and a ring of pushes is refused
where it closes: the push refused that way stops for good
(:func:`is_loop_refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from lal_twisted.dial import dial
from lal_twisted.media.packet import AVPacket
from lal_twisted.relay.address import (
    LOOP_REFUSAL,
    MAX_HOPS,
    RELAY_QUERY,
    Base,
    UpstreamError,
    is_loop_refusal,
    parse_base,
    relay_via,
    with_via,
)

__all__ = ["LOOP_REFUSAL", "MAX_HOPS", "RELAY_QUERY", "Base", "Upstream", "UpstreamError",
           "is_loop_refusal", "parse_base", "relay_via", "with_via"]


class Upstream:
    """Plays one stream from another server over RTMP(S) or HTTP(S)-FLV.

    ``start()`` fires once the server accepted the play (errbacks with the
    cause); packets go to ``on_packet``; ``done`` fires when the connection
    ends, ``error`` saying why when it was not ``stop()``.
    """

    def __init__(self, reactor: Any, url: str, on_packet: Callable[[AVPacket], None],
                 timeout: float, tls: Any = None) -> None:
        self.reactor = reactor
        self.url = url
        self.on_packet = on_packet
        self.timeout = timeout
        self.tls = tls
        self.done: defer.Deferred[None] = defer.Deferred()
        self.error: str | None = None
        self._rtmp: Any = None
        self._http: Any = None
        self._stopped = False
        self._connecting: defer.Deferred[Any] | None = None

    @property
    def bytes_in(self) -> int:
        conn = self._rtmp or self._http
        return conn.bytes_in if conn is not None else 0

    def start(self) -> defer.Deferred[Upstream]:
        if self.url.startswith(("http://", "https://")):
            from lal_twisted.httpflv.client import HttpFlvPull

            self._http = HttpFlvPull(self.reactor, self.url, self.on_packet,
                                     timeout=self.timeout, tls=self.tls)
            d = self._http.start()
            d.addCallback(self._http_ready)
        else:
            from lal_twisted.rtmp.client import RTMPClientFactory, RTMPClientProtocol
            from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl

            parsed = RtmpUrl.parse(self.url)
            factory = RTMPClientFactory(lambda: RTMPClientProtocol(
                ClientSession(parsed, "play"), on_packet=self.on_packet,
                on_status=self._status))
            self._connecting = dial(self.reactor, parsed.target, factory, timeout=self.timeout,
                                    tls=self.tls)
            d = self._connecting
            d.addCallback(self._rtmp_connected)
        return d

    def _status(self, status: Any) -> None:
        # The upstream's publisher left: end here too, so the pull retries or
        # tells its players instead of waiting on an idle connection.
        if status.code == "NetStream.Play.UnpublishNotify" and self._rtmp is not None:
            self.error = "the upstream's publisher stopped"
            self._rtmp.transport.loseConnection()

    def _rtmp_connected(self, proto: Any) -> defer.Deferred[Upstream]:
        self._connecting = None
        self._rtmp = proto
        proto.done.addBoth(self._ended)
        if self._stopped:
            proto.transport.abortConnection()
        return proto.ready.addCallback(lambda _: self)

    def _http_ready(self, pull: Any) -> Upstream:
        pull.done.addBoth(self._ended)
        if self._stopped:
            pull.stop()
        return self

    def _ended(self, result: Any) -> None:
        if self.error is None and not self._stopped:
            conn = self._rtmp or self._http
            cause = getattr(conn, "error", None)
            if cause is None and isinstance(result, defer.Failure):
                cause = result.getErrorMessage()
            self.error = cause or "the server closed the connection"
        if not self.done.called:
            self.done.callback(None)

    def stop(self) -> None:
        self._stopped = True
        if self._rtmp is not None and self._rtmp.transport is not None:
            self._rtmp.transport.abortConnection()
        elif self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()  # abandons the connection attempt
        if self._http is not None:
            self._http.stop()
