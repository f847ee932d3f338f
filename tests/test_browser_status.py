"""The status page in headless Chromium: it lists a live stream from the API
and its preview plays (mpegts.js, from the ``player_site`` origin)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from apitools import api_server
from browser import PlayerSite
from conftest import Media
from mediatools import finish, push, wait_for


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
