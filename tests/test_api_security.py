"""The API listener as a hostile web page would try it: cross-site requests,
DNS rebinding, preflights, and the optional token; a backend's requests (JSON,
no Origin) work as lal's do.  Real sockets against the real server."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

from apitools import api, api_server
from conftest import Media
from mediatools import finish, pull, push, wait_for


def raw(port: int, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """A request with exactly these headers (http.client adds Host unless given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = dict(headers or {})
        skip_host = "Host" in headers
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        answer = {k.lower(): v for k, v in resp.getheaders()}
        try:
            parsed: Any = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return resp.status, answer, parsed
    finally:
        conn.close()


def _sessions(port: int, name: str) -> list[str]:
    status, body = api(port, f"/api/stat/group?stream_name={name}")
    data = body.get("data") or {}
    return [s["session_id"] for s in data.get("subs", [])]


def test_no_web_page_can_drive_or_read_the_api(tmp_path: Path, media: Media) -> None:
    with api_server(tmp_path) as s:
        port = s.api_port
        publisher = push(media.long_av, s.server.rtmp_url("t"), loop=True)
        player = None
        try:
            s.server.wait_live("t", 15)
            player = pull(s.server.flv_url("t"), tmp_path / "p.flv", 30)
            assert wait_for(lambda: len(_sessions(port, "t")) == 1, 15)
            (victim,) = _sessions(port, "t")
            kick = json.dumps({"stream_name": "t", "session_id": victim}).encode()
            evil = "http://evil.example"
            # No wildcard CORS anywhere on the API listener.
            status, headers, _ = raw(port, "GET", "/api/stat/all_group", headers={"Origin": evil})
            assert status == 200 and "access-control-allow-origin" not in headers, headers
            # A "simple" cross-site POST (text/plain, no preflight) is not executed ...
            status, headers, body = raw(port, "POST", "/api/ctrl/kick_session", kick,
                                        {"Origin": evil, "Content-Type": "text/plain"})
            assert status == 403 and body["error_code"] == 403, body
            assert "access-control-allow-origin" not in headers
            # ... nor is a form post, an <img> GET or a fetch without Origin from another site.
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", b"a=b", {
                "Origin": evil, "Content-Type": "application/x-www-form-urlencoded"})
            assert status == 403, body
            status, _, body = raw(port, "GET", "/api/ctrl/stop_relay_pull?stream_name=t",
                                  headers={"Sec-Fetch-Site": "cross-site"})
            assert status == 403, body
            # A control GET cannot be told from an <img> of any page (no Origin, no
            # Sec-Fetch-* over plain HTTP to a LAN address): it needs the bearer token.
            status, headers, body = raw(port, "GET", "/api/ctrl/stop_relay_pull?stream_name=t")
            assert status == 405 and headers["allow"] == "POST", body
            assert "use POST" in body["desp"]
            # Deep nesting is a bad body, not a server error.
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", b"[" * 5000,
                                  {"Content-Type": "application/json"})
            assert (status, body["error_code"]) == (400, 1002), body
            # The preflight a page would need first is refused.
            status, headers, _ = raw(port, "OPTIONS", "/api/ctrl/kick_session", headers={
                "Origin": evil, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"})
            assert status == 403 and "access-control-allow-origin" not in headers
            # A body that is not declared JSON is refused even without a browser.
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", kick,
                                  {"Content-Type": "text/plain"})
            assert status == 415 and body["error_code"] == 1002, body
            assert "application/json" in body["desp"]
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", kick,
                                  {"Origin": f"http://127.0.0.1:{port}"})
            assert status == 415, body  # a page of the API's own origin declares it too
            # (A backend that sends no Content-Type and no Origin is not a browser.)
            # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io",
                         "EVIL.example.", "x.evil.example:80"):
                status, _, body = raw(port, "GET", "/api/stat/all_group", headers={"Host": host})
                assert status == 421 and body["error_code"] == 421, (host, body)
                assert "127.0.0.1:" not in json.dumps(body)  # no client address leaked
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", kick,
                                  {"Host": "evil.example", "Content-Type": "application/json"})
            assert status == 421, body
            time.sleep(0.5)
            assert player.poll() is None and _sessions(port, "t") == [victim]
            # Its own names and addresses are answered.
            for host in (f"127.0.0.1:{port}", "localhost", f"localhost:{port}", "[::1]:8083",
                         "lals.localhost", "10.1.2.3", "lal-node-1:8083", socket.gethostname()):
                status, _, body = raw(port, "GET", "/api/stat/lal_info", headers={"Host": host})
                assert status == 200 and body["error_code"] == 0, (host, body)
            # A backend (JSON, no Origin) kicks as with lal.
            status, _, body = raw(port, "POST", "/api/ctrl/kick_session", kick,
                                  {"Content-Type": "application/json; charset=utf-8"})
            assert (status, body["error_code"]) == (200, 0), body
            assert wait_for(lambda: player.poll() is not None, 10)
            # The status page on the API listener still reads the API from its origin.
            status, headers, page = raw(port, "GET", "/lal.html")
            assert status == 200 and headers["content-type"].startswith("text/html")
            status, _, body = raw(port, "GET", "/api/stat/all_group",
                                  headers={"Origin": f"http://127.0.0.1:{port}",
                                           "Sec-Fetch-Site": "same-origin"})
            assert status == 200 and body["error_code"] == 0
        finally:
            for proc in (publisher, player):
                if proc is not None:
                    proc.kill()
                    finish(proc)


def test_allowed_origins_and_host_names(tmp_path: Path) -> None:
    admin = "https://admin.example.com"
    with api_server(tmp_path, http_api={"cors_allowed_origins": [admin],
                                        "allowed_hosts": ["lal.example.com"],
                                        "auth_token": "t0ken"}) as s:
        port = s.api_port
        # A preflight carries no credentials: judged by its origin alone.
        status, headers, _ = raw(port, "OPTIONS", "/api/ctrl/start_relay_pull", headers={
            "Origin": admin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert status == 204, headers
        assert headers["access-control-allow-origin"] == admin
        assert "content-type" in headers["access-control-allow-headers"].lower()
        assert "POST" in headers["access-control-allow-methods"]
        status, headers, body = raw(port, "POST", "/api/ctrl/kick_session",
                                    b'{"stream_name":"x","session_id":"y"}',
                                    {"Origin": admin, "Content-Type": "application/json",
                                     "Host": "lal.example.com",
                                     "Authorization": "Bearer t0ken"})
        assert (status, body["error_code"]) == (200, 1001), body
        assert headers["access-control-allow-origin"] == admin
        assert headers.get("vary") == "Origin"
        assert headers.get("access-control-allow-credentials") == "true"
        status, _, body = raw(port, "GET", "/api/stat/lal_info",
                              headers={"Host": "other.example.com"})
        assert status == 421, body
        status, _, body = raw(port, "GET", "/api/stat/lal_info",
                              headers={"Host": "lal.example.com"})
        assert status == 401, body


def test_the_token_guards_the_whole_api(tmp_path: Path) -> None:
    token = "s3cret-token"
    with api_server(tmp_path, http_api={"auth_token": token}) as s:
        port = s.api_port
        for path in ("/api/stat/lal_info", "/api/stat/all_group", "/lal.html", "/nothing"):
            status, headers, body = raw(port, "GET", path)
            assert status == 401, (path, body)
            assert headers["www-authenticate"].startswith("Basic ")
        status, _, _ = raw(port, "GET", "/api/stat/lal_info",
                           headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, body = raw(port, "GET", "/api/stat/lal_info",
                              headers={"Authorization": f"Bearer {token}"})
        assert (status, body["error_code"]) == (200, 0)
        basic = base64.b64encode(f"admin:{token}".encode()).decode()
        status, headers, _ = raw(port, "GET", "/lal.html",
                                 headers={"Authorization": f"Basic {basic}"})
        assert status == 200 and headers["content-type"].startswith("text/html")
        status, body = api(port, "/api/ctrl/kick_session", {"stream_name": "a", "session_id": "b"},
                           headers={"Authorization": f"Bearer {token}"})
        assert (status, body["error_code"]) == (200, 1001)
        # The bearer token passes any Host (a page cannot know it), and lets a GET
        # reach a control endpoint; cached Basic credentials do not.
        status, _, body = raw(port, "GET", "/api/ctrl/stop_relay_pull?stream_name=x",
                              headers={"Authorization": f"Bearer {token}",
                                       "Host": "lal.internal.example:8083"})
        assert (status, body["error_code"]) == (200, 1001), body
        status, _, body = raw(port, "GET", "/api/ctrl/stop_relay_pull?stream_name=x",
                              headers={"Authorization": f"Basic {basic}"})
        assert status == 405, body
        # The public copy of the stat endpoints on the HTTP listener needs no token.
        status, headers, body = raw(s.server.http_port, "GET", "/api/stat/all_group")
        assert status == 200 and body["error_code"] == 0
        assert token not in s.server.log()
