"""Where an outgoing connection goes, read from its URL: the grammar alone, no I/O
(:mod:`lal_twisted.dial` makes the connection).

A URL names a host and a port, ``rtmp://host[:port]/APP/STREAM`` (the port by
scheme from :data:`DEFAULT_PORTS` when it names none), or a unix socket in
nginx's form: the path from ``unix:`` to the next colon, then the URL's path::

    rtmp://unix:/run/lals/w1.sock:/live/test
    http://unix:/run/lals/w1.sock:/live/test.flv
    rtmp://unix:/run/lals/w1.sock                 (a relay base address)

A unix socket links processes of one machine (the workers of a node): it is
dialled without TLS (``rtmps://`` and ``https://`` do not take one), its path
is absolute and holds no colon, and the peer is told the host ``localhost``
(the RTMP tcUrl, the HTTP Host header), as nginx tells its unix upstreams.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "LOCALHOST", "Target", "TargetError", "names_unix", "split_unix",
           "target_of"]

# The port of a URL that names none, by scheme.
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
# The host a peer reached over a unix socket is told.
LOCALHOST = "localhost"
_UNIX = "unix:"
_SECURE = ("rtmps", "https")


class TargetError(ValueError):
    """A URL whose connection cannot be made; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where to connect: ``host``:``port``, or the unix socket at ``unix``
    (``host`` is then :data:`LOCALHOST`); TLS when ``secure``."""

    host: str
    port: int
    secure: bool = False
    unix: str = ""

    @property
    def netloc(self) -> str:
        """``host:port`` (an IPv6 host in brackets), or ``unix:PATH:``: the
        URL's authority, written the same way for every URL of one place."""
        if self.unix:
            return f"{_UNIX}{self.unix}:"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.netloc


def names_unix(url: str) -> bool:
    """Whether ``url``'s authority is a unix socket (``SCHEME://unix:...``)."""
    return url.partition("://")[2].startswith(_UNIX)


def split_unix(url: str) -> tuple[str, str]:
    """``url`` with a unix socket authority replaced by ``localhost``, and the
    socket's path ("" for a URL that names a host: it is returned as is)."""
    if not names_unix(url):
        return url, ""
    scheme, _, rest = url.partition("://")
    body = rest[len(_UNIX):]
    end = next((i for i, c in enumerate(body) if c in ":?#"), len(body))
    path = body[:end]
    tail = body[end + 1:] if body[end:end + 1] == ":" else body[end:]
    if not path.startswith("/") or path == "/":
        raise TargetError(f"{url!r}: a unix socket is named by its absolute path: "
                          f"{scheme}://unix:/PATH:/APP/STREAM")
    if tail and not tail.startswith(("/", "?", "#")):
        raise TargetError(f"{url!r}: after unix:PATH: comes the URL's path, "
                          f"{scheme}://unix:/PATH:/APP/STREAM")
    if scheme.lower() in _SECURE:
        plain = {"rtmps": "rtmp", "https": "http"}[scheme.lower()]
        raise TargetError(f"{url!r}: a unix socket is dialled without TLS; use {plain}://")
    return f"{scheme}://{LOCALHOST}{tail}", path


def target_of(url: str) -> Target:
    """Where ``url``'s connection goes; :class:`TargetError` if it names no
    host, no socket, or a bad port."""
    plain, unix = split_unix(url)
    try:
        parts = urlsplit(plain)
        port = parts.port
    except ValueError as e:
        raise TargetError(f"cannot read {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise TargetError(f"no host in {url!r}")
    if port is None:
        port = DEFAULT_PORTS.get(scheme, 0)
    return Target(parts.hostname, port, scheme in _SECURE, unix)
