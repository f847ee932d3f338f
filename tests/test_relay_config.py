"""Relay and TLS configuration: lal's keys, ours, and one clear error per mistake;
relay addresses and the loop marker."""

from __future__ import annotations

import pytest

from lal_twisted.config import ConfigError, from_dict
from lal_twisted.relay.upstream import (
    LOOP_REFUSAL,
    MAX_HOPS,
    UpstreamError,
    is_loop_refusal,
    parse_base,
    relay_via,
    with_via,
)


def test_defaults() -> None:
    c = from_dict({})
    assert not c.relay_push.enable and c.relay_push.addr_list == []
    assert not c.static_relay_pull.enable and c.static_relay_pull.pull_retry_num == 0
    assert c.static_relay_pull.pull_timeout_ms == 10000
    assert c.static_relay_pull.auto_stop_pull_after_no_out_ms == 3000
    assert c.tls_client.verify and c.tls_client.ca_file == ""
    assert not c.rtmp.rtmps_enable and c.rtmp.rtmps_addr == "tcp:4935"
    assert c.default_http.https_listen_addr == "tcp:4433" and not c.httpflv.enable_https
    assert c.warnings == []


def test_lal_relay_sections_load() -> None:
    c = from_dict({"relay_push": {"enable": True, "addr_list": ["127.0.0.1:19351",
                                                                "rtmps://push.example"]},
                   "static_relay_pull": {"enable": True, "addr": "https://origin:8443/base",
                                         "pull_retry_num": -1}})
    assert c.relay_push.addr_list == ["127.0.0.1:19351", "rtmps://push.example"]
    assert c.static_relay_pull.pull_retry_num == -1
    assert c.warnings == []


@pytest.mark.parametrize(("data", "message"), [
    ({"relay_push": {"enable": True}}, "relay_push.addr_list: relay_push is enabled"),
    ({"relay_push": {"addr_list": "127.0.0.1:1935"}}, "relay_push.addr_list: expected a list"),
    ({"relay_push": {"addr_list": [""]}}, "relay_push.addr_list: expected a list"),
    ({"relay_push": {"addr_list": ["http://x:80"]}}, "relay_push.addr_list: 'http://x:80': use"),
    ({"relay_push": {"addr_list": ["rtmp://x:port"]}}, "relay_push.addr_list: cannot read"),
    ({"relay_push": {"addr_list": ["h:1"], "retry_min_ms": 0}}, "relay_push.retry_min_ms"),
    ({"relay_push": {"max_backlog_bytes": 10}}, "relay_push.max_backlog_bytes"),
    ({"static_relay_pull": {"enable": True}}, "static_relay_pull.addr: static_relay_pull is"),
    ({"static_relay_pull": {"addr": "ftp://x"}}, "static_relay_pull.addr: 'ftp://x': use"),
    ({"static_relay_pull": {"addr": "rtmp://x/a?b=1"}}, "takes no query"),
    ({"static_relay_pull": {"pull_retry_num": -2}}, "static_relay_pull.pull_retry_num: must "
                                                     "not be negative"),
    ({"static_relay_pull": {"pull_timeout_ms": 0}}, "static_relay_pull.pull_timeout_ms"),
    ({"tls_client": {"verify": "no"}}, "tls_client.verify: expected true or false"),
    ({"rtmp": {"rtmps_addr": "nowhere"}}, "rtmp.rtmps_addr: cannot read address"),
])
def test_mistakes_are_one_clear_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(data)
    assert message in str(e.value)


def test_addresses_and_urls() -> None:
    base = parse_base("10.0.0.1:19350")
    assert str(base) == "rtmp://10.0.0.1:19350"
    assert base.url("live", "a b", ["ab12cd34"]) == \
        "rtmp://10.0.0.1:19350/live/a b?lal_relay_via=ab12cd34"
    http = parse_base("https://cdn.example/edge/")
    assert (http.port, http.secure, http.is_http) == (443, True, True)
    assert http.url("live", "s", ["a", "b"]) == \
        "https://cdn.example:443/edge/live/s.flv?lal_relay_via=a.b"
    assert http.url("my app", "a b", []) == \
        "https://cdn.example:443/edge/my%20app/a%20b.flv?lal_relay_via="
    assert parse_base("rtmps://h").port == 443 and parse_base("http://h").port == 80
    with pytest.raises(UpstreamError):
        parse_base("http://h", push=True)


def test_relay_marker() -> None:
    assert relay_via("") == []
    assert relay_via("token=1") == []
    assert relay_via("a=1&lal_relay_via=ab.cd") == ["ab", "cd"]
    assert relay_via("lal_relay_via=") == ["?"]  # a mangled marker still counts
    assert len(relay_via("lal_relay_via=" + ".".join("x" * 100))) <= MAX_HOPS * 4


def test_marker_added_to_any_url() -> None:
    assert with_via("rtmp://h:1935/live/s", ["ab12"]) == "rtmp://h:1935/live/s?lal_relay_via=ab12"
    # Other query parameters stay; a marker already there is replaced, not doubled.
    url = with_via("http://h/live/s.flv?token=x&lal_relay_via=zz&b=1", ["a", "b"])
    assert url == "http://h/live/s.flv?token=x&b=1&lal_relay_via=a.b"
    assert relay_via(url.split("?", 1)[1]) == ["a", "b"]


def test_loop_refusals_are_recognised() -> None:
    assert is_loop_refusal("server refused publish: NetStream.Publish.Unauthorized "
                           f"{LOOP_REFUSAL} live/x was relayed through this server already")
    assert not is_loop_refusal("server refused publish: NetStream.Publish.BadName busy")
    assert not is_loop_refusal("Connection refused")


def test_pull_timeout_sec() -> None:
    assert from_dict({}).rtmp.pull_timeout_sec == 30
    c = from_dict({"rtmp": {"pull_timeout_sec": 0}})
    assert c.rtmp.pull_timeout_sec == 0 and c.warnings == []
    with pytest.raises(ConfigError, match="rtmp.pull_timeout_sec: must not be negative"):
        from_dict({"rtmp": {"pull_timeout_sec": -1}})
    c = from_dict({"hls": {"enable_https": True}, "httpts": {"enable_https": True}})
    assert c.hls.enable_https and c.httpts.enable_https and c.warnings == []
