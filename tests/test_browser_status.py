"""The status page in headless Chromium: it lists a live stream from the API
and its preview plays (mpegts.js, from the ``player_site`` origin, checked by
its integrity hash); a tampered mpegts.js is refused and never runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from apitools import api_server
from browser import PLAYER_FILES, PlayerSite, static_site
from conftest import Media
from mediatools import finish, push, wait_for

from lal_twisted.api.status import PLAYER_JS

# What the page's mpegts.js left behind (its <script> element and the global).
LOADED_MPEGTS = """() => {
  const s = document.querySelector("script[src$='/mpegts.js']");
  return {integrity: s ? s.integrity : null, crossOrigin: s ? s.crossOrigin : null,
          mpegts: typeof window.mpegts};
}"""


def _open(chromium: Any, url: str) -> tuple[Any, list[str]]:
    page = chromium.new_page(viewport={"width": 1280, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


def test_status_page_lists_streams_and_plays_a_preview(
        tmp_path: Path, media: Media, chromium: Any, player_site: PlayerSite) -> None:
    with api_server(tmp_path, status_page={"player_js_base_url": player_site.url}) as s:
        srv = s.server
        publisher = push(media.long_av, srv.rtmp_url("test"), loop=True)
        try:
            page, errors = _open(chromium, f"http://127.0.0.1:{srv.http_port}/")
            page.wait_for_selector("tr[data-key='live/test']", timeout=15000)
            # listed as soon as the publisher is; its tracks show at the next refresh
            assert wait_for(lambda: "H264" in page.inner_text("tr[data-key='live/test']"), 10)
            row = page.inner_text("tr[data-key='live/test']")
            assert "H264" in row and "320×240" in row and "AAC" in row, row
            assert page.inner_text("#n-streams") == "1"
            page.click("tr[data-key='live/test'] button[data-kind='flv']")
            advanced = 0.0
            deadline = time.monotonic() + 20
            start = None
            while time.monotonic() < deadline:
                now = page.evaluate("document.getElementById('video').currentTime")
                if now > 0 and start is None:
                    start = now
                if start is not None:
                    advanced = now - start
                    if advanced >= 3.0:
                        break
                time.sleep(0.25)
            frames = page.evaluate(
                "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames")
            assert advanced >= 3.0 and frames > 0, (advanced, frames, errors)
            # it ran as checked: the pinned hash, loaded without credentials
            assert page.evaluate(LOADED_MPEGTS) == {
                "integrity": PLAYER_JS["mpegts.js"].integrity, "crossOrigin": "anonymous",
                "mpegts": "object"}
            # the page counts its own player (the refresh every 2 s)
            assert wait_for(lambda: "FLV 1" in page.inner_text("tr[data-key='live/test']"), 6)
            # bitrates are measured every 5 s
            assert wait_for(lambda: "kbit/s" in page.inner_text("tr[data-key='live/test']"), 10)
            page.screenshot(path=str(tmp_path / "status-page.png"))
            assert errors == []
            page.close()
            # lal's /lal.html on the API listener is the same page, reading the same API
            page, errors = _open(chromium, f"http://127.0.0.1:{s.api_port}/lal.html")
            page.wait_for_selector("tr[data-key='live/test']", timeout=15000)
            page.click("tr[data-key='live/test'] button[data-kind='flv']")
            assert wait_for(lambda: page.evaluate(
                "document.getElementById('video').currentTime") > 1.0, 20)
            assert errors == []
            page.close()
        finally:
            publisher.kill()
            finish(publisher)



def _play_tampered(chromium: Any, url: str, js_url: str, integrity: bool) -> None:
    page, errors = _open(chromium, url)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    button = "tr[data-key='live/test'] button[data-kind='flv']:not([disabled])"
    page.wait_for_selector(button, timeout=15000)
    page.click(button)

    def state() -> str:
        return str(page.inner_text("#player-state"))

    if not integrity:
        assert wait_for(lambda: state().startswith("playing"), 10), state()
        assert page.evaluate("window.tampered") is True
        assert page.evaluate(LOADED_MPEGTS)["mpegts"] == "object"
    else:
        assert wait_for(lambda: state().startswith("cannot load"), 10), state()
        assert state() == (f"cannot load {js_url}/mpegts.js (unreachable, no CORS header, "
                           "or not mpegts.js 1.8.2: the integrity check)")
        assert page.evaluate(LOADED_MPEGTS) == {
            "integrity": None, "crossOrigin": None, "mpegts": "undefined"}
        assert page.evaluate("typeof window.tampered") == "undefined"
        # refused for its bytes (Chromium names the digest), not as unreachable
        assert any("integrity" in line and "mpegts.js" in line for line in console), console
        time.sleep(1.0)
        assert page.evaluate("document.getElementById('video').currentTime") == 0
        assert state().startswith("cannot load"), state()
    assert errors == []
    page.close()


@pytest.mark.parametrize("integrity", [True, False], ids=["checked", "unchecked"])
def test_status_page_refuses_a_tampered_player_script(
        tmp_path: Path, media: Media, chromium: Any, integrity: bool) -> None:
    """One line appended to mpegts.js: with the integrity check the browser
    refuses it on both pages (the player says so, none of the file ran, nothing
    plays); with the check off (``player_js_integrity: false``) the same file
    runs, so the marker would have shown."""
    site = tmp_path / "js"
    site.mkdir()
    genuine = PLAYER_FILES["/mpegts.js"].read_bytes()
    (site / "mpegts.js").write_bytes(genuine + b"\nwindow.tampered = true;\n")
    shutil.copy(PLAYER_FILES["/hls.min.js"], site / "hls.min.js")
    with static_site(site) as js_url, api_server(tmp_path, status_page={
            "player_js_base_url": js_url, "player_js_integrity": integrity}) as s:
        publisher = push(media.long_av, s.server.rtmp_url("test"), loop=True)
        try:
            for url in (f"http://127.0.0.1:{s.server.http_port}/",
                        f"http://127.0.0.1:{s.api_port}/lal.html"):
                _play_tampered(chromium, url, js_url, integrity)
        finally:
            publisher.kill()
            finish(publisher)
