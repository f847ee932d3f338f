"""Relay addresses and the relay marker: the grammar alone, no I/O (the
config checks addresses with it; :mod:`lal_twisted.relay.upstream` dials them).

An address is lal's ``host:port`` (RTMP) or a base URL: ``rtmp://``,
``rtmps://`` and, for pulls, ``http://`` / ``https://`` (HTTP-FLV).  A stream
``APP/STREAM`` is relayed to or from ``BASE/APP/STREAM`` (``.flv`` appended
over HTTP); a path in the base URL goes before the app.  In place of
``host:port`` an address may name a unix socket, ``unix:/PATH`` (RTMP) or
``rtmp://unix:/PATH`` / ``http://unix:/PATH`` (:mod:`lal_twisted.target`):
the stream's URL is then ``rtmp://unix:/PATH:/APP/STREAM``.

Loops.  Every server has a random relay id (8 hex digits, new at each start).
Every relay request carries in its URL query the marker
``lal_relay_via=ID1.ID2...``: the ids of the servers the stream has been
relayed through, this one last; pulls started by the API carry it too.  A
server refuses (as "not found", with a reason that starts ``relay loop:``) a
relayed play or publish whose marker holds its own id, or ``MAX_HOPS`` ids or
more (see :mod:`lal_twisted.relay.manager`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from lal_twisted.target import DEFAULT_PORTS, Target, TargetError, split_unix

__all__ = ["DEFAULT_PORTS", "LOOP_REFUSAL", "MAX_HOPS", "RELAY_QUERY", "Base", "UpstreamError",
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
    """A relay address: scheme, host, port (or a unix socket) and an optional
    path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str
    unix: str = ""

    @property
    def target(self) -> Target:
        return Target(self.host, self.port, self.secure, self.unix)

    @property
    def netloc(self) -> str:
        return self.target.netloc

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


def parse_base(addr: str, push: bool = False) -> Base:
    """Read a relay address; :class:`UpstreamError` names what is wrong."""
    addr = addr.strip()
    schemes = _PUSH_SCHEMES if push else _PULL_SCHEMES
    if "://" not in addr:
        addr = f"rtmp://{addr}"
    try:
        plain, unix = split_unix(addr)
        parts = urlsplit(plain)
        port = parts.port
    except TargetError as e:
        raise UpstreamError(str(e)) from None
    except ValueError as e:
        raise UpstreamError(f"cannot read address {addr!r}: {e}") from None
    if parts.scheme not in schemes:
        raise UpstreamError(f"{addr!r}: use host:port or a "
                            + ", ".join(f"{s}://" for s in schemes) + " URL")
    if not parts.hostname:
        raise UpstreamError(f"{addr!r} has no host")
    if parts.query or parts.fragment:
        raise UpstreamError(f"{addr!r}: a relay address takes no query or fragment")
    return Base(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme],
                parts.path.strip("/"), unix)


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
