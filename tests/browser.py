"""Headless Chromium for the browser tests: what a viewer's browser plays.

``scripts/test.sh`` installs Debian's ``chromium`` and the players from npm
(``tests/web/package.json``: hls.js and mpegts.js).  The fixtures here:

- ``chromium``: a Playwright ``Browser`` driving /usr/bin/chromium (no download);
- ``player_site``: a static HTTP server on its own port (so another origin than
  the server under test) serving ``player.html``, ``hls.min.js`` and
  ``mpegts.js`` with ``Access-Control-Allow-Origin: *`` (the status page loads
  them with ``crossorigin``); its URL is what ``status_page.player_js_base_url``
  points at;
- ``static_site(directory)``: the same kind of server for a directory of files;
- ``watch(chromium, player_site, kind, url, seconds)`` opens the test page,
  plays ``url`` with hls.js (``kind="hls"``) or mpegts.js (``"flv"``,
  ``"ws-flv"``, ``"ts"``) and reports how far ``currentTime`` advanced and how
  many frames were decoded.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

WEB = Path(__file__).parent / "web"
CHROMIUM = "/usr/bin/chromium"
# What the page loads, by the name a CDN serves it under (the packages' dist files).
PLAYER_FILES = {
    "/hls.min.js": WEB / "node_modules" / "hls.js" / "dist" / "hls.min.js",
    "/mpegts.js": WEB / "node_modules" / "mpegts.js" / "dist" / "mpegts.js",
}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]


class _StaticHandler(SimpleHTTPRequestHandler):
    """Files for any origin's pages (a script with ``crossorigin`` needs CORS)."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Handler(_StaticHandler):
    def translate_path(self, path: str) -> str:
        bare = path.split("?", 1)[0]
        if bare in PLAYER_FILES:
            return str(PLAYER_FILES[bare])
        return super().translate_path(path)


@dataclass
class PlayerSite:
    url: str  # http://127.0.0.1:PORT (no trailing slash)

    def page(self, kind: str, src: str) -> str:
        return f"{self.url}/player.html?kind={kind}&src={quote(src, safe='')}"


@contextmanager
def _serve(handler: Any) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def static_site(directory: Path) -> AbstractContextManager[str]:
    """A context manager serving ``directory`` on its own port; yields its URL."""
    return _serve(partial(_StaticHandler, directory=str(directory)))


@pytest.fixture(scope="session")
def player_site() -> Iterator[PlayerSite]:
    for path in PLAYER_FILES.values():
        if not path.is_file():
            pytest.fail(f"{path} is missing: scripts/test.sh installs it (npm, tests/web)")
    with _serve(partial(_Handler, directory=str(WEB))) as url:
        yield PlayerSite(url)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    advanced: float = 0.0  # seconds currentTime moved while watched
    frames: int = 0  # frames the browser decoded
    width: int = 0
    height: int = 0
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


def watch(browser: Any, site: PlayerSite, kind: str, url: str,
          seconds: float = 9.0, screenshot: Path | None = None) -> Watched:
    """Play ``url`` in a fresh page for ``seconds`` from when playback starts
    (waiting at most ``seconds`` for it to start) and report what was seen."""
    page = browser.new_page()
    out = Watched()
    page.on("console", lambda m: out.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: out.errors.append(f"page error: {e}"))
    try:
        page.goto(site.page(kind, url))
        deadline = time.monotonic() + seconds
        first = page.evaluate("window.sample()")
        while not first["started"] and time.monotonic() < deadline and not first["errors"]:
            time.sleep(0.2)
            first = page.evaluate("window.sample()")
        end = time.monotonic() + seconds
        last = first
        while time.monotonic() < end and not last["errors"]:
            time.sleep(0.5)
            last = page.evaluate("window.sample()")
        out.advanced = last["currentTime"] - first["currentTime"]
        out.frames = last["frames"]
        out.width, out.height = last["width"], last["height"]
        out.errors += last["errors"]
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
    finally:
        page.close()
    return out


def assert_played(seen: Watched, size: tuple[int, int] = (320, 240)) -> None:
    """What a viewer must have seen: no player error, at least 4 s of playback
    in the 9 s watched, decoded frames, and the picture at ``size``."""
    print(seen)
    assert seen.errors == [], (seen.errors, seen.console[-10:])
    assert seen.advanced >= 4.0, seen
    assert seen.frames > 0, seen
    assert (seen.width, seen.height) == size, seen
