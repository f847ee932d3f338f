"""HEAD on every live HTTP output answers what a GET would (the name check,
simple_auth, the hook; 404 when nobody publishes), without a body or a player."""

from __future__ import annotations

import http.client
from pathlib import Path

from apitools import api_server, callback_server
from conftest import Media
from mediatools import finish, push, wait_for

from lal_twisted.api.auth import lal_secret

KEY = "q191201771"


def head(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("HEAD", path)
        response = conn.getresponse()
        body = response.read()  # http.client reads no body for HEAD
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def test_head_answers_what_get_would(tmp_path: Path, media: Media) -> None:
    with callback_server(answer=lambda path: 403 if "deny" in path else 200) as cb, \
            api_server(tmp_path, simple_auth={"key": KEY, "sub_httpflv_enable": True,
                                              "sub_httpts_enable": True,
                                              "hls_m3u8_enable": True},
                       hls={"enable": True, "fragment_duration_ms": 1000,
                            "use_memory_as_disk_flag": True},
                       http_hook={"enable": True, "on_play": cb.url("/on_play")}) as s:
        srv = s.server
        port = srv.http_port
        pub = push(media.long_av, srv.rtmp_url("h"), loop=True)
        good = f"lal_secret={lal_secret(KEY, 'h')}"
        try:
            srv.wait_live("h", 15)
            for suffix, kind in ((".flv", "video/x-flv"), (".ts", "video/mp2t")):
                status, headers, body = head(port, f"/live/h{suffix}?{good}")
                assert status == 200 and body == b"", (suffix, status)
                assert headers["content-type"] == kind
                assert headers["access-control-allow-origin"] == "*"
                assert head(port, f"/live/h{suffix}")[0] == 403  # no lal_secret
                assert head(port, f"/live/h{suffix}?lal_secret=00")[0] == 403
                nobody = f"lal_secret={lal_secret(KEY, 'nobody')}"
                assert head(port, f"/live/nobody{suffix}?{nobody}")[0] == 404
                assert head(port, f"/live/.x{suffix}")[0] == 400
                assert head(port, f"/{suffix}")[0] == 404
            # HLS: a playlist HEAD without a token is sent to one; with it, checked.
            status, headers, _ = head(port, f"/hls/h.m3u8?{good}")
            assert wait_for(lambda: head(port, f"/hls/h.m3u8?{good}")[0] == 302, 15)
            location = head(port, f"/hls/h.m3u8?{good}")[1]["location"]
            assert wait_for(lambda: head(port, location)[0] == 200, 10)
            assert head(port, "/hls/h.m3u8")[0] == 302
            denied = head(port, "/hls/h.m3u8")[1]["location"]
            assert head(port, denied)[0] == 403
            # No player was made by any HEAD.
            assert "playing live/h started" not in srv.log()
            assert cb.of("/on_play"), "the hook is asked as for a GET"
        finally:
            pub.kill()
            finish(pub)
