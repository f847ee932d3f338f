"""WebSocket-FLV in a browser: mpegts.js in headless Chromium plays
``ws://HOST/APP/STREAM.flv``, the page served from another origin."""

from __future__ import annotations

from typing import Any

from browser import PlayerSite, assert_played, watch
from conftest import Media, Server
from mediatools import finish, push


def test_chromium_plays_websocket_flv_with_mpegts_js(server: Server, media: Media,
                                                    chromium: Any,
                                                    player_site: PlayerSite) -> None:
    publisher = push(media.long_av, server.rtmp_url("wsbrowser"), loop=True)
    try:
        url = server.flv_url("wsbrowser").replace("http://", "ws://")
        seen = watch(chromium, player_site, "ws-flv", url, seconds=9)
        assert_played(seen)
    finally:
        publisher.kill()
        finish(publisher)
    assert "wsflv session" in server.log()
