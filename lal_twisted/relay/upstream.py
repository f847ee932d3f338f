"""Relay addresses, the relay marker, and one connection to another server.

An address is lal's ``host:port`` (RTMP) or a base URL: ``rtmp://``,
``rtmps://`` and, for pulls, ``http://`` / ``https://`` (HTTP-FLV).  A stream
``APP/STREAM`` is relayed to or from ``BASE/APP/STREAM`` (``.flv`` appended
over HTTP); a path in the base URL goes before the app.

Loops.  Every server has a random relay id (8 hex digits, new at each start).
Every relay request carries in its URL query the marker
``lal_relay_via=ID1.ID2...``: the ids of the servers the stream has been
relayed through, this one last; pulls started by the API carry it too.  A
server refuses (as "not found", with a reason that starts ``relay loop:``) a
relayed play or publish whose marker holds its own id, or ``MAX_HOPS`` ids or
more; it never starts a pull for a relayed play it could not serve anyway, does
not let a relayed play wait on a pull of its own that the API started and that
has no media yet, and never pushes a pulled stream back to the server it came
from.  So two servers that pull from each other answer "not found" at once
instead of waiting on each other, and a ring of pushes is refused where it
closes: the push refused that way stops for good (:func:`is_loop_refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from twisted.internet import defer

from lal_twisted.media.packet import AVPacket

__all__ = ["LOOP_REFUSAL", "MAX_HOPS", "RELAY_QUERY", "Base", "Upstream", "UpstreamError",
           "is_loop_refusal", "parse_base", "relay_via", "with_via"]

RELAY_QUERY = "lal_relay_via"
# A stream relayed through this many servers is relayed no further.
MAX_HOPS = 4
# How every loop refusal's reason starts; a peer's refusal carries it back (the
# RTMP onStatus description), so the relay that caused it can stop for good.
LOOP_REFUSAL = "relay loop:"

_PULL_SCHEMES = ("rtmp", "rtmps", "http", "https")
_PUSH_SCHEMES = ("rtmp", "rtmps")


class UpstreamError(ValueError):
    """An address that cannot be used for a relay."""


@dataclass(frozen=True)
class Base:
    """A relay address: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def secure(self) -> bool:
        return self.scheme in ("rtmps", "https")

    @property
    def is_http(self) -> bool:
        return self.scheme in ("http", "https")

    def url(self, app: str, stream: str, via: list[str]) -> str:
        """The URL of ``APP/STREAM`` at this address, with the relay marker."""
        # HTTP paths are percent-decoded by the server; RTMP names are taken as sent
        # (names never hold ? # %, see hub.session.check_names).
        if self.is_http:
            app, stream = quote(app.strip("/")), quote(stream) + ".flv"
        path = "/".join(p for p in (self.prefix, app.strip("/"), stream) if p)
        return f"{self.scheme}://{self.netloc}/{path}?{RELAY_QUERY}={'.'.join(via)}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}" + (f"/{self.prefix}" if self.prefix else "")


_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


def parse_base(addr: str, push: bool = False) -> Base:
    """Read a relay address; :class:`UpstreamError` names what is wrong."""
    addr = addr.strip()
    schemes = _PUSH_SCHEMES if push else _PULL_SCHEMES
    if "://" not in addr:
        addr = f"rtmp://{addr}"
    try:
        parts = urlsplit(addr)
        port = parts.port
    except ValueError as e:
        raise UpstreamError(f"cannot read address {addr!r}: {e}") from None
    if parts.scheme not in schemes:
        raise UpstreamError(f"{addr!r}: use host:port or a "
                            + ", ".join(f"{s}://" for s in schemes) + " URL")
    if not parts.hostname:
        raise UpstreamError(f"{addr!r} has no host")
    if parts.query or parts.fragment:
        raise UpstreamError(f"{addr!r}: a relay address takes no query or fragment")
    return Base(parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme],
                parts.path.strip("/"))


def relay_via(query: str) -> list[str]:
    """The relay ids of a request's marker (empty when it has none)."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == RELAY_QUERY:
            return [v for v in value.split(".") if v][:MAX_HOPS * 4] or ["?"]
    return []


def is_loop_refusal(cause: str) -> bool:
    """Whether a peer's answer is a lals refusal of a relay loop."""
    return LOOP_REFUSAL in cause


def with_via(url: str, via: list[str]) -> str:
    """``url`` with the relay marker ``via`` in its query (replacing one it had)."""
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and p.split("=", 1)[0] != RELAY_QUERY]
    query = "&".join([*kept, f"{RELAY_QUERY}={'.'.join(via)}"])
    return parts._replace(query=query).geturl()


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
        self._connector: Any = None

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
            from lal_twisted.rtmp.client import RTMPClientFactory, RTMPClientProtocol, dial
            from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl

            parsed = RtmpUrl.parse(self.url)
            factory = RTMPClientFactory(lambda: RTMPClientProtocol(
                ClientSession(parsed, "play"), on_packet=self.on_packet,
                on_status=self._status))
            self._connector = dial(self.reactor, parsed, factory, self.timeout, self.tls)
            d = factory.connected
            d.addCallback(self._rtmp_connected)
        return d

    def _status(self, status: Any) -> None:
        # The upstream's publisher left: end here too, so the pull retries or
        # tells its players instead of waiting on an idle connection.
        if status.code == "NetStream.Play.UnpublishNotify" and self._rtmp is not None:
            self.error = "the upstream's publisher stopped"
            self._rtmp.transport.loseConnection()

    def _rtmp_connected(self, proto: Any) -> defer.Deferred[Upstream]:
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
        elif self._connector is not None and getattr(self._connector, "state", "") == "connecting":
            self._connector.stopConnecting()
        if self._http is not None:
            self._http.stop()
