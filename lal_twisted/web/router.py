"""The HTTP router: one twisted.web root per HTTP listener, features mounted on it.

Each feature mounts a resource under its configured ``url_pattern`` with lal's
meaning: the pattern is a path prefix, and a feature may also require a
suffix (HTTP-FLV serves ``PATTERN...APP/STREAM.flv``, HTTP-TS ``.ts``).  An
exact route (``/metrics``) matches one path only.  A request goes to the exact
route for its path, else to the longest prefix whose suffix matches (routes
with a suffix before a catch-all at the same prefix).  Two features claiming
the same paths is a configuration error naming both keys.

Paths are percent-decoded (UTF-8) before matching, and the decoded path is
what resources read (:func:`route_path`), so ``/live/a%20b.flv`` is the stream
``live/a b``.  An unknown path is a 404 with a one-line text body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web import resource
from twisted.web.http import BAD_REQUEST, NOT_ALLOWED, NOT_FOUND
from twisted.web.iweb import IRequest

from lal_twisted.errors import ConfigError

__all__ = ["Route", "RouteConflict", "Router", "plain_error", "route_path"]


class RouteConflict(ConfigError):
    """Two features claim the same paths."""


@dataclass(frozen=True)
class Route:
    """``key`` names the config key the route comes from (for errors)."""

    key: str
    prefix: str
    suffix: str
    exact: bool
    target: resource.IResource

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.prefix
        return path.startswith(self.prefix) and path.endswith(self.suffix)

    def claims(self) -> tuple[str, str, bool]:
        return (self.prefix, self.suffix, self.exact)

    def describe(self) -> str:
        return self.prefix if self.exact else f"{self.prefix}*{self.suffix}"


def route_path(request: IRequest) -> str:
    """The request's percent-decoded path, as the router matched it."""
    return getattr(request, "lal_path", "")


def plain_error(request: IRequest, code: int, text: str) -> bytes:
    """A one-line text/plain error body with status ``code``."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    return (text.replace("\n", " ")[:500] + "\n").encode("utf-8", "replace")


_READ_METHODS = (b"GET", b"HEAD", b"OPTIONS")
_READ_ALLOW = b", ".join(_READ_METHODS)


class ReadOnlyResource(resource.Resource):
    """A resource that answers GET, HEAD and a CORS preflight (OPTIONS), and a
    one-line 405 naming the allowed methods to anything else."""

    def render(self, request: Any) -> Any:
        if request.method not in _READ_METHODS:
            request.setHeader(b"Allow", _READ_ALLOW)
            method = request.method.decode("ascii", "replace")
            return plain_error(request, NOT_ALLOWED,
                               f"method {method} not allowed (allowed: {_READ_ALLOW.decode()})")
        return super().render(request)

    def render_OPTIONS(self, request: Any) -> bytes:  # noqa: N802 - twisted.web
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Access-Control-Allow-Methods", _READ_ALLOW)
        request.setHeader(b"Access-Control-Allow-Headers", b"*")
        request.setResponseCode(204)
        return b""


class Router(resource.Resource):
    """The root resource of an HTTP listener."""

    isLeaf = True

    def __init__(self, name: str = "http") -> None:
        super().__init__()
        self.name = name
        self.routes: list[Route] = []

    def mount(self, key: str, pattern: str, target: resource.IResource, suffix: str = "",
              exact: bool = False) -> Route:
        """Serve paths under ``pattern`` (ending in ``suffix``) with ``target``.

        Raises :class:`RouteConflict`, naming both config keys, when another
        feature already serves the same paths."""
        if not pattern.startswith("/"):
            raise ConfigError(f"{key}: must start with '/', got {pattern!r}")
        route = Route(key, pattern, suffix, exact, target)
        for other in self.routes:
            if other.claims() == route.claims():
                raise RouteConflict(
                    f"{other.key} and {key} both claim {route.describe()} on the "
                    f"{self.name} listener; give one of them another url_pattern")
        self.routes.append(route)
        # Exact routes first, then the longest prefix, then a suffix before a catch-all.
        self.routes.sort(key=lambda r: (not r.exact, -len(r.prefix), not r.suffix))
        return route

    def find(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def fast_handler(self) -> Any:
        """The site's ``fast_get`` when a route's resource answers polled GETs
        without a twisted.web request (HLS), else None (then it costs nothing)."""
        if not any(hasattr(r.target, "fast_get") for r in self.routes):
            return None
        return self._fast_get

    def _fast_get(self, uri: bytes, headers: dict[bytes, bytes],
                  channel: Any) -> Callable[[], list[bytes] | None] | None:
        raw, _, query = uri.partition(b"?")
        try:
            path = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        route = self.find(path)
        fast = getattr(route.target, "fast_get", None) if route is not None else None
        if fast is None:
            return None
        return fast(path, query.decode("utf-8", "replace"), headers, channel)  # type: ignore[no-any-return]

    def render(self, request: IRequest) -> bytes | int:  # type: ignore[override]
        raw = request.path  # type: ignore[attr-defined]
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return plain_error(request, BAD_REQUEST, "bad request: the path is not UTF-8")
        route = self.find(path)
        if route is None:
            return plain_error(request, NOT_FOUND, f"not found: {path}")
        request.lal_path = path  # type: ignore[attr-defined]
        return route.target.render(request)  # type: ignore[no-any-return]
