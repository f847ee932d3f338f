"""The HTTP router: mounting, precedence, conflicts, percent-decoding, 404s;
and the listeners the service builds from its table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource
from twisted.web.client import Agent, readBody
from twisted.web.test.requesthelper import DummyRequest

from lal_twisted import log as lal_log
from lal_twisted.config import ConfigError, from_dict
from lal_twisted.service import LISTENERS, ROUTES, make_service
from lal_twisted.web.router import RouteConflict, Router, route_path


class Echo(resource.Resource):
    """Answers with its name and the decoded path it was given."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request: Any) -> bytes:
        return f"{self.name} {route_path(request)}".encode()


def get(router: Router, raw_path: bytes) -> tuple[int, bytes]:
    request = DummyRequest([])
    request.path = raw_path
    body = router.render(request)
    assert isinstance(body, bytes)
    return request.responseCode or 200, body


def test_routes_by_prefix_suffix_and_exact_path() -> None:
    router = Router()
    router.mount("httpflv.url_pattern", "/", Echo("flv"), suffix=".flv")
    router.mount("httpts.url_pattern", "/", Echo("ts"), suffix=".ts")
    router.mount("hls.url_pattern", "/hls/", Echo("hls"))
    router.mount("metrics", "/metrics", Echo("metrics"), exact=True)
    router.mount("status_page", "/", Echo("status"), exact=True)
    assert get(router, b"/live/test.flv") == (200, b"flv /live/test.flv")
    assert get(router, b"/live/test.ts") == (200, b"ts /live/test.ts")
    assert get(router, b"/hls/test.m3u8") == (200, b"hls /hls/test.m3u8")
    assert get(router, b"/hls/test/1.ts") == (200, b"hls /hls/test/1.ts")  # longer prefix wins
    assert get(router, b"/metrics") == (200, b"metrics /metrics")
    assert get(router, b"/") == (200, b"status /")
    code, body = get(router, b"/metrics/x")
    assert code == 404 and body == b"not found: /metrics/x\n"


def test_paths_are_percent_decoded_before_matching() -> None:
    router = Router()
    router.mount("httpflv.url_pattern", "/", Echo("flv"), suffix=".flv")
    assert get(router, b"/live/a%20b.flv") == (200, b"flv /live/a b.flv")
    assert get(router, b"/live/caf%C3%A9%2Eflv") == (200, "flv /live/café.flv".encode())
    code, body = get(router, b"/live/%ff.flv")
    assert code == 400 and body.count(b"\n") == 1


def test_two_features_on_the_same_paths_is_an_error_naming_both() -> None:
    router = Router()
    router.mount("httpflv.url_pattern", "/live/", Echo("a"), suffix=".flv")
    router.mount("httpts.url_pattern", "/live/", Echo("b"), suffix=".ts")  # other paths: fine
    with pytest.raises(RouteConflict) as info:
        router.mount("other.url_pattern", "/live/", Echo("c"), suffix=".flv")
    assert "httpflv.url_pattern and other.url_pattern both claim /live/*.flv" in str(info.value)
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ConfigError, match="must start with '/'"):
        router.mount("x.url_pattern", "live/", Echo("d"))


def test_embedding_code_mounting_on_httpflv_paths_is_refused() -> None:
    lals = make_service(from_dict({"rtmp": {"addr": "127.0.0.1:0"},
                                   "default_http": {"http_listen_addr": "127.0.0.1:0"}}))
    with pytest.raises(RouteConflict, match="httpflv.url_pattern and mine"):
        lals.routers["http"].mount("mine", "/", Echo("x"), suffix=".flv")
    lals.routers["http"].mount("mine", "/mine/", Echo("x"))


def test_listener_and_route_tables_name_their_config_keys() -> None:
    assert [(spec.name, spec.addr_key) for spec in LISTENERS] == [
        ("rtmp", "rtmp.addr"), ("rtmps", "rtmp.rtmps_addr"),
        ("http", "default_http.http_listen_addr"),
        ("https", "default_http.https_listen_addr"), ("http_api", "http_api.addr")]
    assert [(r.listener, r.pattern_key, r.suffix, r.exact) for r in ROUTES] == [
        ("http", "httpflv.url_pattern", ".flv", False),
        ("http", "httpts.url_pattern", ".ts", False),
        ("http", "hls.url_pattern", "", False),
        ("https", "httpflv.url_pattern", ".flv", False),
        ("https", "httpts.url_pattern", ".ts", False),
        ("https", "hls.url_pattern", "", False),
        ("http_api", "http_api.addr", "", False),
        ("http_api", "status_page.enable", "", True),
        ("http", "metrics.url_path", "", True),
        ("http", "status_page.enable", "", True),
        ("http", "status_page.enable", "", True),
        ("http", "status_page.enable", "", True),
        ("http", "status_page.enable", "", True)]


@pytest_twisted.inlineCallbacks
def test_listeners_bind_in_privileged_start_and_unknown_paths_are_404(tmp_path: Path) -> Any:
    lals = make_service(from_dict({
        "rtmp": {"addr": "127.0.0.1:0"},
        "default_http": {"http_listen_addr": "127.0.0.1:0"},
        "http_api": {"enable": True, "addr": "127.0.0.1:0"},
        "log": {"filename": str(tmp_path / "l.log"), "is_to_stdout": False},
    }))
    assert sorted(lals.listeners) == ["http", "http_api", "rtmp"]
    lals.privilegedStartService()  # what twistd runs before dropping privileges
    try:
        assert all(listener.port is not None for listener in lals.listeners.values())
        lals.startService()
        agent = Agent(reactor)
        port = lals.listeners["http"].port.getHost().port  # type: ignore[union-attr]
        response = yield agent.request(b"GET", f"http://127.0.0.1:{port}/nothing/here".encode())
        body = yield readBody(response)
        assert response.code == 404 and body == b"not found: /nothing/here\n"
        # the API listener answers unknown paths as lal does, in JSON
        port = lals.listeners["http_api"].port.getHost().port  # type: ignore[union-attr]
        response = yield agent.request(b"GET", f"http://127.0.0.1:{port}/api/stat/none".encode())
        body = yield readBody(response)
        assert response.code == 404 and json.loads(body)["error_code"] == 404
    finally:
        yield lals.stopService()
        lal_log.reset()


def test_http_listener_is_off_when_no_http_feature_is_on() -> None:
    lals = make_service(from_dict({"rtmp": {"addr": "127.0.0.1:0"},
                                   "httpflv": {"enable": False}, "httpts": {"enable": False},
                                   "metrics": {"enable": False},
                                   "status_page": {"enable": False}}))
    assert sorted(lals.listeners) == ["rtmp"] and lals.http is None


def test_live_media_paths_answer_preflight_and_refuse_other_methods(tmp_path: Path) -> None:
    """HTTP-FLV, HTTP-TS and HLS paths: OPTIONS is a CORS preflight (204), and a
    method other than GET/HEAD/OPTIONS gets a one-line 405 naming the allowed ones."""
    import http.client

    from conftest import start_server, stop_server

    srv = start_server(tmp_path, hls={"enable": True, "use_memory_as_disk_flag": True})
    try:
        for path in ("/live/x.flv", "/live/x.ts", "/hls/x.m3u8", "/hls/x/playlist.m3u8"):
            for method, code in (("OPTIONS", 204), ("DELETE", 405), ("PUT", 405)):
                conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
                conn.request(method, path)
                response = conn.getresponse()
                body = response.read()
                conn.close()
                assert response.status == code, (method, path, response.status, body)
                assert response.getheader("Access-Control-Allow-Origin") == "*"
                if code == 405:
                    assert response.getheader("Allow") == "GET, HEAD, OPTIONS"
                    assert body == f"method {method} not allowed (allowed: GET, HEAD, " \
                                   f"OPTIONS)\n".encode(), body
                else:
                    assert response.getheader("Access-Control-Allow-Methods") == \
                        "GET, HEAD, OPTIONS"
    finally:
        stop_server(srv)
