"""The status page: live streams, refreshed from the API, watchable in the page.

Served at ``/`` on the HTTP listener and at lal's ``/lal.html`` on the API
listener.  The page is static HTML with its settings inlined as JSON: where
the stat endpoints are (same origin on both listeners), how to build each
stream's HTTP-FLV (and, when it is served, HLS) URL, and each player script's
URL and integrity hash.

The page is served in the API's origin, where a script can drive the control
API, so the player scripts are pinned: exact versions on jsDelivr, each loaded
with its ``integrity`` (SRI) hash and ``crossorigin="anonymous"``; the browser
refuses a file whose bytes differ.  ``status_page.player_js_base_url`` loads
``BASE/mpegts.js`` and ``BASE/hls.min.js`` instead (the npm packages' ``dist/``
files, the same versions, checked the same way); ``player_js_integrity: false``
drops the check there, for a copy of other versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.web import resource
from twisted.web.http import NOT_ALLOWED
from twisted.web.iweb import IRequest

from lal_twisted.web.router import plain_error

if TYPE_CHECKING:
    from lal_twisted.api.context import ServerContext

__all__ = ["PLAYER_JS", "PlayerScript", "StatusPage"]


@dataclass(frozen=True)
class PlayerScript:
    """One player script: its npm package and version, and its dist file's hash."""

    package: str
    version: str
    file: str  # the file's name in the package's dist/ folder
    integrity: str  # "sha384-" + base64 of the file's SHA-384

    @property
    def cdn_url(self) -> str:
        return f"https://cdn.jsdelivr.net/npm/{self.package}@{self.version}/dist/{self.file}"


# The versions tests/web/package.json pins (the browser tests load the same bytes,
# and tests/test_status_page.py checks these hashes against them): a new version
# needs its new hash here.
PLAYER_JS = {
    "mpegts.js": PlayerScript(
        "mpegts.js", "1.8.2", "mpegts.js",
        "sha384-sQp+4cJv0jChNCYvgy6W0RSfQZB/w6d3ZTDoIBlY4Uorfw4PLS56T2yM2z47bSkl"),
    "hls.min.js": PlayerScript(
        "hls.js", "1.7.4", "hls.min.js",
        "sha384-p9vgU/7IYJWd3I4STrtqxqR/2cAQlhIX7D/HrTnIMEjjcUox165b7se7sxmm3zDg"),
}
_REFRESH_MS = 2000


def _template() -> str:
    return resources.files("lal_twisted.api").joinpath("status.html").read_text("utf-8")


class StatusPage(resource.Resource):
    isLeaf = True

    def __init__(self, context: ServerContext, listener: str) -> None:
        super().__init__()
        self.context = context
        self.listener = listener
        self.template = _template()

    def page_config(self) -> dict[str, Any]:
        context = self.context
        config = context.config
        http = context.listeners.get("http")
        port = 0
        if http is not None and http.port is not None:
            port = getattr(http.port.getHost(), "port", 0)
        if self.listener == "http":
            port = 0  # the page's own origin
        outputs = []
        router = context.routers.get("http")
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
            "scripts": self.scripts(),
            "refresh_ms": _REFRESH_MS,
        }

    def scripts(self) -> dict[str, dict[str, str]]:
        """Each player script's ``src`` and, when checked, ``integrity`` (the page
        then loads it with ``crossorigin="anonymous"``) and what it must be."""
        page = self.context.config.status_page
        base = page.player_js_base_url
        scripts = {}
        for name, js in PLAYER_JS.items():
            entry = {"src": f"{base.rstrip('/')}/{js.file}" if base else js.cdn_url}
            if page.player_js_integrity or not base:
                entry["integrity"] = js.integrity
                entry["crossorigin"] = "anonymous"
                entry["expected"] = f"{js.package} {js.version}"
            scripts[name] = entry
        return scripts

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return plain_error(request, NOT_ALLOWED, "method not allowed (GET, HEAD)")
        inline = json.dumps(self.page_config()).replace("</", "<\\/")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.template.replace("/*CONFIG*/null", inline).encode("utf-8")
