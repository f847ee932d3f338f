"""What a browser user sees: HTTP-FLV played by mpegts.js in headless Chromium,
the page served from another origin than the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser import PlayerSite, assert_played, watch
from conftest import Media, Server
from mediatools import finish, push


def test_chromium_plays_httpflv_with_mpegts_js(server: Server, media: Media,
                                               chromium: Any, player_site: PlayerSite,
                                               tmp_path: Path) -> None:
    publisher = push(media.long_av, server.rtmp_url("browser"), loop=True)
    try:
        seen = watch(chromium, player_site, "flv", server.flv_url("browser"), seconds=9)
        assert_played(seen)
    finally:
        publisher.kill()
        finish(publisher)
