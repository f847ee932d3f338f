"""simple_auth (lal's keys and algorithm) and the HTTP hook that can refuse:
per protocol switch in the access chain, then end to end with ffmpeg."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from apitools import api_server, callback_server, endless_head_server, http, vm_kib
from conftest import Media, free_port
from mediatools import finish, pull, push, wait_for

from lal_twisted.api.auth import SimpleAuth, lal_secret
from lal_twisted.config import SimpleAuthConfig
from lal_twisted.hub.access import Refused
from lal_twisted.hub.session import Role, Session

KEY = "q191201771"


def test_lal_secret_is_lals_md5_of_key_and_stream_name() -> None:
    # lal's own test vector (pkg/logic/simple_auth_test.go)
    assert lal_secret("q191201771", "test110") == "700997e1595a06c9ffa60ebef79105b0"


SWITCHES = [("pub_rtmp_enable", "rtmp", Role.PUBLISH), ("pub_rtsp_enable", "rtsp", Role.PUBLISH),
            ("sub_rtmp_enable", "rtmp", Role.PLAY), ("sub_httpflv_enable", "httpflv", Role.PLAY),
            ("sub_httpts_enable", "httpts", Role.PLAY), ("sub_rtsp_enable", "rtsp", Role.PLAY),
            ("hls_m3u8_enable", "hls", Role.PLAY)]


def _session(protocol: str, role: Role, query: str, stream: str = "test110") -> Session:
    session = Session("X1", protocol, "127.0.0.1:1")
    session.role, session.app, session.stream, session.query = role, "live", stream, query
    return session


@pytest.mark.parametrize(("switch", "protocol", "role"), SWITCHES)
def test_each_switch_checks_its_protocol_and_direction_only(switch: str, protocol: str,
                                                            role: Role) -> None:
    auth = SimpleAuth(SimpleAuthConfig(key=KEY, dangerous_lal_secret="pengrl",
                                       **{switch: True}))
    right = "lal_secret=700997e1595a06c9ffa60ebef79105b0"
    assert auth.check(_session(protocol, role, right)) is None
    assert auth.check(_session(protocol, role, "a=1&" + right.upper().replace("LAL_SECRET",
                                                                             "lal_secret"))) is None
    assert auth.check(_session(protocol, role, "lal_secret=pengrl")) is None  # dangerous
    for query in ("", "a=1", "lal_secret=", "lal_secret=0123", "lal_secret=PENGRL2",
                  "lal_secret=%C3%A9", "lal_secret=%FF%00", "lal_secret=" + "a" * 5000):
        refusal = auth.check(_session(protocol, role, query))
        assert isinstance(refusal, Refused) and "simple_auth" in refusal.reason, query
    # the right secret of another stream is wrong here
    assert isinstance(auth.check(_session(protocol, role, right, stream="other")), Refused)
    # every other protocol and direction goes unchecked
    for other, other_protocol, other_role in SWITCHES:
        if (other_protocol, other_role) != (protocol, role):
            assert auth.check(_session(other_protocol, other_role, "")) is None, other
    # relays are the server's own sessions
    assert auth.check(_session(protocol, Role.RELAY_PULL, "")) is None


def test_dangerous_secret_is_only_honoured_when_set() -> None:
    auth = SimpleAuth(SimpleAuthConfig(key=KEY, pub_rtmp_enable=True))
    assert isinstance(auth.check(_session("rtmp", Role.PUBLISH, "lal_secret=")), Refused)
    assert isinstance(auth.check(_session("rtmp", Role.PUBLISH, "lal_secret=pengrl")), Refused)


def test_simple_auth_end_to_end(tmp_path: Path, media: Media) -> None:
    secret = lal_secret(KEY, "test")
    with api_server(tmp_path, simple_auth={
            "key": KEY, "dangerous_lal_secret": "letmein", "pub_rtmp_enable": True,
            "sub_httpflv_enable": True}) as s:
        srv = s.server
        for query in ("", "?lal_secret=wrong", f"?lal_secret={lal_secret(KEY, 'other')}"):
            refused = push(media.av, srv.rtmp_url("test") + query)
            code, err = finish(refused, timeout=20)
            assert code != 0, (query, err)
        assert wait_for(lambda: srv.log().count("refused: simple_auth") >= 3, 5), srv.log()
        publisher = push(media.long_av, srv.rtmp_url("test") + f"?lal_secret={secret}")
        try:
            srv.wait_live("test", 10)
            flv = srv.flv_url("test")
            for query in ("", "?lal_secret=wrong"):
                status, body, _ = http(flv + query)
                assert status == 403 and b"simple_auth" in body, (status, body)
            for query in (f"?lal_secret={secret}", f"?lal_secret={secret.upper()}",
                          "?lal_secret=letmein"):
                out = tmp_path / "ok.flv"
                code, err = finish(pull(flv + query, out, 1))
                assert code == 0 and out.stat().st_size > 10_000, (query, err)
            # sub_rtmp_enable is off: RTMP players need no secret
            out = tmp_path / "rtmp.flv"
            code, err = finish(pull(srv.rtmp_url("test"), out, 1))
            assert code == 0 and out.stat().st_size > 10_000, err
        finally:
            publisher.kill()
            finish(publisher)


def _waiting_player(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET /live/{name}.flv HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _received(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""


@pytest.mark.parametrize("hook", ["allow", "deny", "timeout", "down"])
def test_http_hook_decides_publishes(tmp_path: Path, media: Media, hook: str) -> None:
    with callback_server(answer=lambda path: 200 if path == "/allow" else 403,
                         hang=5.0 if hook == "timeout" else 0.0) as cb:
        url = cb.url(f"/{hook}") if hook != "down" else f"http://127.0.0.1:{free_port()}/x"
        with api_server(tmp_path, http_hook={"enable": True, "on_publish": url,
                                             "timeout_ms": 1000}) as s:
            srv = s.server
            player = _waiting_player(srv.http_port, "test")
            assert wait_for(lambda: "waiting for publisher" in srv.log(), 10)
            publisher = push(media.long_av, srv.rtmp_url("test") + "?token=t1")
            try:
                if hook == "allow":
                    data = _received(player, 10)
                    assert data.startswith(b"HTTP/1.1 200") and b"video/x-flv" in data, data
                    srv.wait_live("test", 5)
                else:
                    code, err = finish(publisher, timeout=20)
                    assert code != 0, err
                    assert "refused: http_hook" in srv.log(), srv.log()
                    why = {"deny": "answered 403", "timeout": "did not answer within 1s",
                           "down": "unreachable: Connection was refused"}[hook]
                    assert why in srv.log(), srv.log()
                    # the refused publisher never reached the waiting player
                    assert _received(player, 1.5) == b""
            finally:
                publisher.kill()
                finish(publisher)
                player.close()
            if hook != "down":
                asked = cb.wait(f"/{hook}")[0]
                assert (asked["stream_name"], asked["url_param"], asked["protocol"],
                        asked["base_type"]) == ("test", "token=t1", "RTMP", "PUB")


def test_http_hook_decides_plays(tmp_path: Path, media: Media) -> None:
    with callback_server(answer=lambda path: 204 if path == "/play" else 403) as cb:
        with api_server(tmp_path, http_hook={"enable": True,
                                             "on_play": cb.url("/play")}) as s:
            srv = s.server
            publisher = push(media.long_av, srv.rtmp_url("test"))
            try:
                srv.wait_live("test", 10)
                out = tmp_path / "ok.flv"
                code, err = finish(pull(srv.flv_url("test") + "?u=1", out, 1))
                assert code == 0 and out.stat().st_size > 10_000, err
                assert cb.wait("/play")[0]["url_param"] == "u=1"
                cb.answer = lambda path: 403
                status, body, _ = http(srv.flv_url("test") + "?u=2")
                assert status == 403 and b"http_hook" in body, body
                time.sleep(0.2)
            finally:
                publisher.kill()
                finish(publisher)


# An answer whose status line and headers never end is cut at the bound, not read
# into memory: the hook refuses, and the server stays its size.
HEAD_BOUND = "the answer's status line and headers pass"


def test_http_hook_refuses_an_answer_with_endless_headers(tmp_path: Path,
                                                           media: Media) -> None:
    with endless_head_server(300_000) as eh:
        url = eh.url("/pub")
        # a long timeout: the bound, not the timeout, must end the request
        with api_server(tmp_path, http_hook={"enable": True, "on_publish": url,
                                             "timeout_ms": 15000}) as s:
            srv = s.server
            rss, hwm = vm_kib(srv.proc.pid), vm_kib(srv.proc.pid, "VmHWM")
            publisher = push(media.long_av, srv.rtmp_url("test"))
            try:
                assert wait_for(lambda: "refused: http_hook" in srv.log()
                                or "publishing live/test started" in srv.log(), 20), srv.log()
                code, err = finish(publisher, timeout=10)
            finally:
                publisher.kill()
                finish(publisher)
            grew = vm_kib(srv.proc.pid) - rss, vm_kib(srv.proc.pid, "VmHWM") - hwm
            log = srv.log()
        assert code != 0, err
        assert "publishing live/test started" not in log, log
        warned = [line for line in log.splitlines() if f"http_hook {url} for session" in line]
        assert len(warned) == 1 and HEAD_BOUND in warned[0], log
        assert f"refused: http_hook {url} {HEAD_BOUND}" in log, log
        assert grew[0] < 30 * 1024 and grew[1] < 30 * 1024, f"RSS, peak grew {grew} KiB"
        assert wait_for(lambda: eh.sent, 10), eh  # the answer was cut short
        assert eh.asked == 1 and eh.sent[0] < 300_000, eh
