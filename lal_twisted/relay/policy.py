"""What a relay pull started through the HTTP API may do.

lal's ``start_relay_pull`` dials whatever URL a caller names, as often and
for as long as the caller asks.  On a server whose API is reachable that is a
way into the network behind it (and a way to hold sockets), so pulls started
by the API are checked here before the API answers:

- the URL must be one the server can pull (``rtmp://``, ``rtmps://``,
  ``http(s)://.../APP/STREAM.flv``), with a host, a port from 1 to 65535, an
  app and a stream name that are valid names, and (HTTP) nothing in it that
  could bend the request line: no spaces, control or non-ASCII characters;
- it names a host, not a unix socket (``rtmp://unix:/PATH:/...``, the link
  between the workers of a node, is the server's own: not the API's);
- the host must be in ``relay.allowed_upstreams`` when that list is set
  (host names compared as written, IP literals against addresses and
  networks); link-local (a cloud's metadata service), unspecified and
  multicast addresses only when listed;
- the numbers are bounded (:data:`MAX_PULL_TIMEOUT_MS`,
  :data:`MAX_PULL_RETRY_NUM`, :data:`MAX_AUTO_STOP_MS`) and at most
  ``relay.max_api_pulls`` run at once (the manager counts them).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from lal_twisted.hub.session import check_names
from lal_twisted.target import DEFAULT_PORTS, names_unix

__all__ = ["MAX_AUTO_STOP_MS", "MAX_PULL_RETRY_NUM", "MAX_PULL_TIMEOUT_MS", "AllowList",
           "PullTarget", "PullUrlError", "check_pull_url"]

# lal's pull_timeout_ms 0 means "no timeout"; here it means this, the longest a
# pull may take to connect, be accepted and bring its first media.
MAX_PULL_TIMEOUT_MS = 600_000
# Retries of one pull (-1, lal's "forever", is allowed: such a pull is listed in
# the stat group and stopped with stop_relay_pull).
MAX_PULL_RETRY_NUM = 10_000
# A day: longer than that, "never" (-1) says what is meant.
MAX_AUTO_STOP_MS = 86_400_000

_SCHEMES = ("rtmp", "rtmps", "http", "https")
# What may appear in an HTTP pull URL (RFC 3986's characters, % escapes).
_HTTP_URL = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


class PullUrlError(ValueError):
    """A pull URL the server will not use; the message says why."""


@dataclass(frozen=True)
class PullTarget:
    """Where a pull goes: scheme, host, port, and the stream it brings."""

    scheme: str
    host: str
    port: int
    app: str
    stream: str


def check_pull_url(url: str) -> PullTarget:
    """Read and check a pull URL; :class:`PullUrlError` names what is wrong."""
    if not url.strip():
        raise PullUrlError("url is empty")
    if any(ord(c) < 0x20 or c == "\x7f" for c in url):
        raise PullUrlError("the URL contains control characters")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise PullUrlError(f"cannot read the URL: {e}") from None
    try:
        port = parts.port
    except ValueError:
        raise PullUrlError("the URL's port is not a port to pull from (1-65535)") from None
    scheme = parts.scheme.lower()
    if scheme == "rtsp" or scheme == "rtsps":
        raise PullUrlError(f"{scheme}:// pulls are not supported (yet): use rtmp://, rtmps://, "
                           "http:// or https://")
    if scheme not in _SCHEMES:
        raise PullUrlError(f"the URL must start with rtmp://, rtmps://, http:// or https://, "
                           f"not {parts.scheme or '(no scheme)'}")
    host = parts.hostname or ""
    if not host:
        raise PullUrlError("the URL has no host")
    if names_unix(url):
        raise PullUrlError("a unix socket is not pulled through the API: name a host")
    if port is not None and not 1 <= port <= 65535:
        raise PullUrlError(f"port {port} is not a port to pull from (1-65535)")
    if parts.fragment:
        raise PullUrlError("the URL has a fragment (#...)")
    path = parts.path.strip("/")
    if scheme in ("http", "https"):
        if not _HTTP_URL.match(url):
            raise PullUrlError("an http(s):// URL must be percent-encoded: it contains spaces "
                               "or characters outside RFC 3986")
        if not path.endswith(".flv"):
            raise PullUrlError("an HTTP-FLV URL ends in .flv: http://HOST[:PORT]/APP/STREAM.flv")
        try:
            path = unquote(path[:-4], errors="strict")
        except UnicodeDecodeError:
            raise PullUrlError("the URL's path is not UTF-8 once percent-decoded") from None
        app, _, stream = path.rpartition("/")
    else:
        app, _, stream = path.rpartition("/")
        if not app or not stream:
            raise PullUrlError("the URL names no app: an RTMP URL is "
                               "rtmp://HOST[:PORT]/APP/STREAM")
    problem = check_names(app, stream)
    if problem is not None:
        raise PullUrlError(problem)
    return PullTarget(scheme, host.lower(), port or DEFAULT_PORTS[scheme], app, stream)


class AllowList:
    """``relay.allowed_upstreams``: host names, IP addresses and networks.

    Empty allows every host.  A host name in a URL matches an entry spelt the
    same (case-insensitive; ``*.example.com`` matches its subdomains); an IP
    address matches an address or a network that holds it.  A name is not
    resolved to be compared with networks: list the names you allow."""

    def __init__(self, entries: list[str]) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip().lower().strip("[]")
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                self.names.add(entry.rstrip("."))

    @classmethod
    def check_entries(cls, entries: list[str]) -> str | None:
        """Why one of ``entries`` is not a host, address or network, or None."""
        for entry in entries:
            text = entry.strip().lower().strip("[]")
            if "/" in text:
                try:
                    ipaddress.ip_network(text, strict=False)
                except ValueError as e:
                    return f"{entry!r} is not a network: {e}"
            elif not re.match(r"^(\*\.)?[a-z0-9_.:-]+$", text):
                return f"{entry!r} is not a host name, an IP address or a network"
        return None

    @property
    def open(self) -> bool:
        return not (self.names or self.suffixes or self.networks)

    def allows(self, host: str) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return self.open or host in self.names or any(host.endswith(s) for s in self.suffixes)
        if any(address in net for net in self.networks):
            return True
        # Even with no list: not link-local addresses (a cloud's metadata service
        # at 169.254.169.254), "any" or multicast, unless listed.
        mapped = getattr(address, "ipv4_mapped", None) or address
        if mapped.is_link_local or mapped.is_unspecified or mapped.is_multicast:
            return False
        return self.open
