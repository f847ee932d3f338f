"""The status page: live streams, refreshed from the API, watchable in the page.

Served at ``/`` on the HTTP listener and at lal's ``/lal.html`` on the API
listener.  The page is static HTML with its settings inlined as JSON: where
the stat endpoints are (same origin on both listeners), how to build each
stream's HTTP-FLV (and, when it is served, HLS) URL, and where the player
scripts come from (``status_page.player_js_base_url``: ``BASE/mpegts.js`` and
``BASE/hls.min.js``, the files of the npm packages' ``dist/`` folders; empty:
jsDelivr).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.web import resource
from twisted.web.http import NOT_ALLOWED
from twisted.web.iweb import IRequest

from lal_twisted.web.router import plain_error

if TYPE_CHECKING:
    from lal_twisted.api.plane import ControlPlane

__all__ = ["DEFAULT_PLAYER_JS", "StatusPage"]

# The npm packages' dist files on jsDelivr, pinned to a major version.
DEFAULT_PLAYER_JS = {
    "mpegts.js": "https://cdn.jsdelivr.net/npm/mpegts.js@1/dist/mpegts.js",
    "hls.min.js": "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js",
}
_REFRESH_MS = 2000


def _template() -> str:
    return resources.files("lal_twisted.api").joinpath("status.html").read_text("utf-8")


class StatusPage(resource.Resource):
    isLeaf = True

    def __init__(self, plane: ControlPlane, listener: str) -> None:
        super().__init__()
        self.plane = plane
        self.listener = listener
        self.template = _template()

    def page_config(self) -> dict[str, Any]:
        lals, config = self.plane.lals, self.plane.config
        http = lals.listeners.get("http")
        port = 0
        if http is not None and http.port is not None:
            port = getattr(http.port.getHost(), "port", 0)
        if self.listener == "http":
            port = 0  # the page's own origin
        outputs = []
        router = lals.routers.get("http")
        routes = {r.key: r for r in router.routes} if router is not None else {}
        if "httpflv.url_pattern" in routes and http is not None:
            outputs.append({"kind": "flv", "label": "HTTP-FLV", "port": port,
                            "prefix": routes["httpflv.url_pattern"].prefix, "suffix": ".flv"})
        if "hls.url_pattern" in routes and http is not None:
            outputs.append({"kind": "hls", "label": "HLS", "port": port,
                            "prefix": routes["hls.url_pattern"].prefix, "suffix": ".m3u8"})
        return {
            "api": "",
            "server_id": config.server_id,
            "outputs": outputs,
            "js_base": config.status_page.player_js_base_url,
            "js_default": DEFAULT_PLAYER_JS,
            "refresh_ms": _REFRESH_MS,
        }

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return plain_error(request, NOT_ALLOWED, "method not allowed (GET, HEAD)")
        inline = json.dumps(self.page_config()).replace("</", "<\\/")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.template.replace("/*CONFIG*/null", inline).encode("utf-8")
