"""What a browser user sees: live HLS played by hls.js in headless Chromium, the
page served from another origin than the server."""

from __future__ import annotations

from typing import Any

import pytest
from browser import PlayerSite, assert_played, watch
from conftest import Media, Server
from mediatools import finish, push, wait_for
from test_hls import get


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    return {"hls": {"enable": True, "use_memory_as_disk_flag": True,
                    "fragment_duration_ms": 1000, "fragment_num": 4}}


def test_chromium_plays_live_hls_with_hls_js(server: Server, media: Media, chromium: Any,
                                            player_site: PlayerSite) -> None:
    publisher = push(media.long_av, server.rtmp_url("browser"), loop=True)
    url = f"http://127.0.0.1:{server.http_port}/hls/browser.m3u8"
    try:
        assert wait_for(lambda: get(url)[0] == 200, timeout=20, interval=0.2)
        seen = watch(chromium, player_site, "hls", url, seconds=9)
        assert_played(seen)
    finally:
        publisher.kill()
        finish(publisher)


def test_hls_js_plays_on_over_a_publisher_reconnect(server: Server, media: Media,
                                                   chromium: Any,
                                                   player_site: PlayerSite) -> None:
    """The publisher drops and a new one publishes the same stream while hls.js
    plays: the playlist gets EXT-X-DISCONTINUITY and currentTime keeps advancing
    over the takeover (watched 14 s with the takeover 4 s in: playback that
    stopped there would advance at most the ~3 s hls.js had buffered more)."""
    import threading

    url = f"http://127.0.0.1:{server.http_port}/hls/takeover.m3u8"
    publishers = [push(media.long_av, server.rtmp_url("takeover"), loop=True)]
    taken_over = threading.Event()

    def reconnect() -> None:
        publishers[0].kill()
        finish(publishers[0])
        publishers.append(push(media.long_av, server.rtmp_url("takeover"), loop=True))
        taken_over.set()

    try:
        assert wait_for(lambda: get(url)[0] == 200, timeout=20, interval=0.2)
        timer = threading.Timer(4.0, reconnect)
        timer.start()
        seen = watch(chromium, player_site, "hls", url, seconds=14)
        timer.join()
        assert taken_over.is_set()
        assert b"#EXT-X-DISCONTINUITY" in get(url)[2]
    finally:
        for publisher in publishers:
            publisher.kill()
            finish(publisher)
    assert seen.errors == [], (seen.errors, seen.console[-10:])
    assert seen.advanced >= 9.0, seen
    assert seen.frames > 0 and (seen.width, seen.height) == (320, 240), seen
