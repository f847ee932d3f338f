"""HLS viewers as an attacker and a NAT would make them: every playlist request
carries proof (the secret, or the token the secret bought), one client cannot
make sessions by the thousand, the hook is asked once per viewer, and segments
can be made to need the token too.  The real server, ffmpeg, a real callback
server."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from apitools import api_server, callback_server
from conftest import Media, Server, start_server, stop_server
from mediatools import decode_errors, finish, push, wait_for
from test_hls import fetch, file_name, get

from lal_twisted.api.auth import lal_secret

KEY = "q191201771"
FORMS = ("s.m3u8", "s/playlist.m3u8", "s/record.m3u8")


def _hls(tmp: Path, **extra: dict) -> Server:
    hls = {"enable": True, "fragment_duration_ms": 1000, "fragment_num": 4,
           "use_memory_as_disk_flag": True, **extra.pop("hls", {})}
    return start_server(tmp, hls=hls, **extra)


def _url(srv: Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.http_port}/hls/{path}"


def _viewers(srv: Server) -> list[str]:
    return [line for line in srv.log().splitlines()
            if "hls session" in line and "started" in line]


def _ffmpeg_plays(url: str) -> None:
    """ffmpeg plays 3 s of ``url`` without an error."""
    errors = decode_errors(url, after_input=["-t", "3"], timeout=60)
    assert errors == "", errors


def _follow(url: str) -> tuple[int, str, bytes]:
    """A fresh player (every request here has urllib's address and User-Agent):
    the first request, then where it was sent."""
    status, headers, body = fetch(url)
    if status != 302:
        return status, url, body
    target = url.split("/hls/")[0] + headers["location"]
    status, _, body = fetch(target)
    return status, target, body


def test_every_playlist_request_carries_proof(tmp_path: Path, media: Media) -> None:
    srv = _hls(tmp_path, simple_auth={"key": KEY, "hls_m3u8_enable": True})
    pub = push(media.long_av, srv.rtmp_url("s"), loop=True)
    secret = f"lal_secret={lal_secret(KEY, 's')}"
    try:
        assert wait_for(lambda: get(_url(srv, f"s.m3u8?{secret}"))[0] == 200, 20), srv.log()
        # A fresh client without the secret is refused on every form.
        for form in FORMS:
            status, _, body = _follow(_url(srv, form))
            assert status == 403 and b"simple_auth" in body, (form, status, body)
        # One client is let in with the secret ...
        status, admitted, body = _follow(_url(srv, f"s.m3u8?{secret}"))
        assert status == 200 and body.startswith(b"#EXTM3U")
        token = admitted.partition("session_id=")[2]
        # ... and a request with the same address (and User-Agent) without the secret
        # or its token is still refused, on every form.
        for form in FORMS:
            status, _, body = _follow(_url(srv, form))
            assert status == 403, (form, status, body)
        # Its token is the proof: every form of that stream's playlist, no secret needed.
        for form in FORMS:
            status, _, body = fetch(_url(srv, f"{form}?session_id={token}"))
            assert status == 200 and body.startswith(b"#EXTM3U"), (form, status)
        # A forged token, or the token of another stream, buys nothing.
        for bad in ("0" * 32, token[:-1] + ("0" if token[-1] != "0" else "1"), "x"):
            status, _, body = _follow(_url(srv, f"s.m3u8?session_id={bad}"))
            assert status == 403, (bad, status, body)
        # Segments are not checked (as lal): without a token they are served.
        status, _, body = fetch(_url(srv, f"s.m3u8?session_id={token}"))
        segment = next(line for line in body.decode().splitlines() if line.endswith(token))
        assert fetch(_url(srv, file_name(segment)))[0] == 200
        # ffmpeg with the secret plays it all (it follows the redirect, then the token).
        _ffmpeg_plays(_url(srv, f"s.m3u8?{secret}"))
    finally:
        pub.kill()
        finish(pub)
        stop_server(srv)
    assert "Traceback" not in srv.log()


def test_segments_can_need_the_token_too(tmp_path: Path, media: Media) -> None:
    srv = _hls(tmp_path, hls={"segments_need_session": True},
               simple_auth={"key": KEY, "hls_m3u8_enable": True})
    pub = push(media.long_av, srv.rtmp_url("s"), loop=True)
    secret = f"lal_secret={lal_secret(KEY, 's')}"
    try:
        assert wait_for(lambda: get(_url(srv, f"s.m3u8?{secret}"))[0] == 200, 20)
        status, admitted, body = _follow(_url(srv, f"s/playlist.m3u8?{secret}"))
        token = admitted.partition("session_id=")[2]
        segment = next(line for line in body.decode().splitlines() if line.endswith(token))
        assert fetch(_url(srv, f"s/{segment}"))[0] == 200
        for bare in (file_name(segment), f"{file_name(segment)}?session_id={'0' * 32}",
                     f"{file_name(segment)}?{secret}"):
            status, _, text = fetch(_url(srv, f"s/{bare}"))
            assert status == 403 and b"hls.segments_need_session" in text, (bare, text)
        # Players need nothing new: ffmpeg plays with the secret alone.
        _ffmpeg_plays(_url(srv, f"s.m3u8?{secret}"))
    finally:
        pub.kill()
        finish(pub)
        stop_server(srv)


def test_one_client_cannot_make_sessions_by_the_thousand(tmp_path: Path, media: Media) -> None:
    with callback_server() as cb:
        with api_server(tmp_path, hls={"enable": True, "fragment_duration_ms": 1000,
                                       "use_memory_as_disk_flag": True},
                        http_hook={"enable": True, "on_play": cb.url("/on_play")},
                        http_notify={"enable": True, "on_sub_start": cb.url("/on_sub_start")}
                        ) as s:
            srv = s.server
            pub = push(media.long_av, srv.rtmp_url("s"), loop=True)
            try:
                assert wait_for(lambda: fetch(_url(srv, "s.m3u8"))[0] == 302, 20)
                # 2000 playlist requests, each with another User-Agent, on one connection.
                conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
                for i in range(2000):
                    conn.request("GET", "/hls/s.m3u8", headers={"User-Agent": f"ua{i}"})
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 302
                conn.close()
                time.sleep(1.0)
                assert _viewers(srv) == [] and cb.paths() == []  # no session, no hook, no event
                # A player polling with its token is one viewer, asked about once.
                status, target, _ = _follow(_url(srv, "s.m3u8"))
                assert status == 200
                for _ in range(20):
                    assert fetch(target)[0] == 200
                time.sleep(0.5)
                assert len(_viewers(srv)) == 1
                assert len(cb.of("/on_play")) == 1 and len(cb.of("/on_sub_start")) == 1
                # Loopback (a reverse proxy on this machine) is not capped by
                # hls.max_viewers_per_addr (100 by default): every player is let in.
                codes = [_follow(_url(srv, "s.m3u8"))[0] for _ in range(120)]
                assert codes == [200] * 120, codes
            finally:
                pub.kill()
                finish(pub)


def test_a_refused_viewer_is_asked_about_once(tmp_path: Path, media: Media) -> None:
    with callback_server(answer=lambda path: 403) as cb:
        with api_server(tmp_path, hls={"enable": True, "fragment_duration_ms": 1000,
                                       "use_memory_as_disk_flag": True},
                        http_hook={"enable": True, "on_play": cb.url("/on_play")}) as s:
            srv = s.server
            pub = push(media.long_av, srv.rtmp_url("s"), loop=True)
            try:
                assert wait_for(lambda: fetch(_url(srv, "s.m3u8"))[0] == 302, 20)
                status, target, body = _follow(_url(srv, "s.m3u8"))
                assert status == 403 and b"http_hook" in body, body
                for _ in range(10):
                    assert fetch(target)[0] == 403
                assert len(cb.of("/on_play")) == 1
            finally:
                pub.kill()
                finish(pub)


def test_viewers_per_address_are_capped(tmp_path: Path) -> None:
    """hls.max_viewers_per_addr counts viewers by address (an IPv6 /64, an IPv4
    client of a dual-stack listener as its IPv4 address), for the HTTP and
    HTTPS resources together; loopback is not counted."""
    from twisted.internet.task import Clock

    from lal_twisted.config import HlsConfig
    from lal_twisted.hls.manager import HlsManager
    from lal_twisted.hub.registry import StreamRegistry

    config = HlsConfig(enable=True, use_memory_as_disk_flag=True, max_viewers_per_addr=3)
    manager = HlsManager(StreamRegistry(reactor=Clock()), config, Clock())
    for host in ("203.0.113.9", "::ffff:203.0.113.9", "203.0.113.9"):
        assert manager.viewer_allowed(host)
        manager.viewer_came(host)
    assert not manager.viewer_allowed("203.0.113.9")
    assert manager.viewer_allowed("203.0.113.10")  # another address
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3"):
        manager.viewer_came(host)
    assert not manager.viewer_allowed("2001:db8:1:2:ffff::9")  # the same /64
    assert manager.viewer_allowed("2001:db8:1:3::1")
    for _ in range(1000):
        manager.viewer_came("127.0.0.1")
        manager.viewer_came("::1")
    assert manager.viewer_allowed("127.0.0.1") and manager.viewer_allowed("::1")
    manager.viewer_left("203.0.113.9")
    assert manager.viewer_allowed("203.0.113.9")
    assert "127.0.0.1" not in manager.viewers_by_addr


def test_a_kicked_viewer_stays_out(tmp_path: Path, media: Media) -> None:
    from apitools import api

    with api_server(tmp_path, hls={"enable": True, "fragment_duration_ms": 1000,
                                   "use_memory_as_disk_flag": True}) as s:
        srv = s.server
        pub = push(media.long_av, srv.rtmp_url("s"), loop=True)
        try:
            assert wait_for(lambda: fetch(_url(srv, "s.m3u8"))[0] == 302, 20)
            status, target, _ = _follow(_url(srv, "s.m3u8"))
            assert status == 200
            (group,) = api(s.api_port, "/api/stat/all_group")[1]["data"]["groups"]
            (viewer,) = [x for x in group["subs"] if x["session_id"].startswith("HLSSUB")]
            status, body = api(s.api_port, "/api/ctrl/kick_session",
                               {"stream_name": "s", "session_id": viewer["session_id"]})
            assert body["error_code"] == 0, body
            status, _, text = fetch(target)
            assert status == 403 and b"kicked" in text, (status, text)
            (group,) = api(s.api_port, "/api/stat/all_group")[1]["data"]["groups"]
            assert group["subs"] == []
        finally:
            pub.kill()
            finish(pub)
