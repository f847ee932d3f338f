"""Who may talk to the API listener: no web page unless allowed, no foreign Host.

lal's API answers everyone, with ``Access-Control-Allow-Origin: *`` on every
answer.  A page on any site could then read the session table (the clients'
addresses) and, with a "simple" cross-site request (a ``text/plain`` POST or an
``<img>`` GET, which browsers send without asking), kick sessions and start
relay pulls; with DNS rebinding (a name of the attacker's that resolves to
127.0.0.1) it could read every answer too.  :class:`ApiGuard` closes those
doors while a backend (curl, Go's http client: no ``Origin``, no
``Sec-Fetch-*`` headers) sees lal's API unchanged:

- ``Host`` must be an IP address, ``localhost`` (or a ``.localhost`` name), a
  name of one label (``lal-node-1``: a container's or a LAN host's, which no
  one can register in the public DNS), this machine's own host names, or one
  of ``http_api.allowed_hosts`` (``"*"``: any); else 421.  A rebinding page's
  requests carry its own (public) name.  A request with the bearer token
  passes whatever its Host: a page cannot know the token.
- With ``http_api.auth_token`` set, every request needs it, as a bearer
  token or as the password of Basic auth (any user name, so a browser can
  open the status page at ``/lal.html``); else 401.  A preflight carries no
  credentials and is judged by its origin alone.
- CORS headers only for ``http_api.cors_allowed_origins``; a preflight from
  any other origin is refused (403).
- Control endpoints (``/api/ctrl/*``) refuse a request a browser sent for a
  page of another origin (``Origin`` not allowed, or ``Sec-Fetch-Site`` other
  than ``same-origin`` / ``none``): 403.  A body a browser sends (with an
  ``Origin``) must be declared ``Content-Type: application/json`` (415),
  which no page can do across origins without a preflight.  A ``GET`` cannot
  be told from one a page makes with an ``<img>``, so control endpoints
  answer it only with the bearer token (else 405: use POST).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.web import resource
from twisted.web.iweb import IRequest

from lal_twisted.config import HttpApiConfig
from lal_twisted.web.router import plain_error

__all__ = ["ApiGuard", "GuardedPage", "Refusal"]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and a one-line reason."""

    status: int
    reason: str


def _host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8083`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _own_names() -> set[str]:
    """This machine's host names (its hostname and fully qualified name)."""
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return {n.rstrip(".") for n in names if n}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ApiGuard:
    """The checks above, for one API listener."""

    def __init__(self, config: HttpApiConfig) -> None:
        self.token = config.auth_token.encode("utf-8")
        hosts = {h.strip().lower().rstrip(".") for h in config.allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = (hosts - {"*"}) | _own_names()
        self.origins = {o.strip().rstrip("/").lower() for o in config.cors_allowed_origins}
        self.any_origin = "*" in self.origins

    # -- every request ------------------------------------------------------------
    def check(self, request: IRequest, control: bool) -> Refusal | None:
        """None when ``request`` may go on, else why not."""
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        bearer = self.bearer(request)
        if host and not bearer and not self.host_allowed(_host_name(host)):
            return Refusal(421, f"this API does not answer for the host name {host!r}; "
                                "add it to http_api.allowed_hosts to allow it")
        preflight = request.method == b"OPTIONS" and self._origin(request) is not None
        if self.token and not preflight and not (bearer or self._basic(request)):
            request.setHeader(b"WWW-Authenticate", b'Basic realm="lal-twisted API"')
            return Refusal(401, "this API needs http_api.auth_token: send "
                                "'Authorization: Bearer TOKEN'")
        if control:
            origin = self._origin(request)
            fetch_site = (request.getHeader(b"sec-fetch-site") or b"").decode("latin-1")
            if origin is not None and not self.origin_allowed(origin, host):
                return Refusal(403, f"the control API does not take requests from pages of "
                                    f"{origin} (http_api.cors_allowed_origins)")
            if origin is None and fetch_site.lower() not in ("", "same-origin", "none"):
                return Refusal(403, "the control API does not take requests a browser sends "
                                    "for another site's page")
        return None

    def check_body(self, request: IRequest) -> Refusal | None:
        """A control request's body must be declared JSON (a backend that sends
        no Content-Type and no Origin is not a browser, and is let be)."""
        kind = (request.getHeader(b"content-type") or b"").decode("latin-1")
        if not kind and self._origin(request) is None:
            return None
        if kind.split(";")[0].strip().lower() != "application/json":
            shown = kind or "none"
            return Refusal(415, f"the body must be sent as Content-Type: application/json "
                                f"(got {shown})")
        return None

    def host_allowed(self, name: str) -> bool:
        name = name.rstrip(".")
        return (self.any_host or _is_ip(name) or "." not in name
                or name.endswith(".localhost") or name in self.hosts)

    def origin_allowed(self, origin: str, host: str) -> bool:
        if self.any_origin or origin in self.origins:
            return True
        # The API's own pages (the status page at /lal.html) are same-origin.
        return urlsplit(origin).netloc == host.strip().lower()

    # -- CORS ------------------------------------------------------------------------
    def cors(self, request: IRequest) -> bool:
        """Add the CORS headers when the request comes from a page of an origin
        in ``http_api.cors_allowed_origins``; whether it did."""
        origin = self._origin(request)
        if origin is None or not (self.any_origin or origin in self.origins):
            return False
        request.setHeader(b"Access-Control-Allow-Origin", origin.encode("latin-1"))
        request.setHeader(b"Vary", b"Origin")
        if self.token:
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")
        return True

    @staticmethod
    def _origin(request: IRequest) -> str | None:
        origin = request.getHeader(b"origin")
        if origin is None:
            return None
        return origin.decode("latin-1").strip().rstrip("/").lower()

    def bearer(self, request: IRequest) -> bool:
        """Whether the request carries the token as a bearer token (which a
        browser never adds by itself, unlike cached Basic credentials)."""
        scheme, value = self._authorization(request)
        return bool(self.token) and scheme == b"bearer" and hmac.compare_digest(
            value, self.token)

    def _basic(self, request: IRequest) -> bool:
        scheme, value = self._authorization(request)
        if not self.token or scheme != b"basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded.partition(b":")[2], self.token)

    @staticmethod
    def _authorization(request: IRequest) -> tuple[bytes, bytes]:
        header = (request.getHeader(b"authorization") or b"").strip()
        scheme, _, value = header.partition(b" ")
        return scheme.lower(), value.strip()


class GuardedPage(resource.Resource):
    """A page of the API listener other than the API itself (the status page at
    ``/lal.html``) behind the same Host and token checks."""

    isLeaf = True

    def __init__(self, guard: ApiGuard, target: resource.IResource) -> None:
        super().__init__()
        self.guard = guard
        self.target = target

    def render(self, request: Any) -> Any:
        refusal = self.guard.check(request, control=False)
        if refusal is not None:
            return plain_error(request, refusal.status, refusal.reason)
        return self.target.render(request)
