"""Where a connection goes: host:port or a unix socket, read from URLs and relay
addresses (the grammar alone; tests/test_unix_links.py dials them)."""

from __future__ import annotations

import pytest

from lal_twisted.config import ConfigError, from_dict
from lal_twisted.relay.address import UpstreamError, parse_base
from lal_twisted.relay.policy import PullUrlError, check_pull_url
from lal_twisted.rtmp.client_session import RtmpUrl, RtmpUrlError
from lal_twisted.target import Target, TargetError, split_unix, target_of


@pytest.mark.parametrize(("url", "target"), [
    ("rtmp://example.com/live/a", Target("example.com", 1935)),
    ("rtmps://example.com/live/a", Target("example.com", 443, secure=True)),
    ("http://[::1]:8080/live/a.flv", Target("::1", 8080)),
    ("https://Origin.Example/a.flv", Target("origin.example", 443, secure=True)),
    ("rtmp://unix:/run/lals/w1.sock:/live/a", Target("localhost", 1935, unix="/run/lals/w1.sock")),
    ("http://unix:/run/a.sock:/live/a.flv?x=1", Target("localhost", 80, unix="/run/a.sock")),
    ("rtmp://unix:/run/a.sock", Target("localhost", 1935, unix="/run/a.sock")),
])
def test_target_of_a_url(url: str, target: Target) -> None:
    assert target_of(url) == target


def test_netloc_is_the_urls_authority() -> None:
    assert Target("::1", 1935).netloc == "[::1]:1935"
    assert Target("localhost", 1935, unix="/run/a.sock").netloc == "unix:/run/a.sock:"


@pytest.mark.parametrize(("url", "problem"), [
    ("rtmp://unix:run/a.sock:/live/a", "absolute path"),
    ("rtmp://unix::/live/a", "absolute path"),
    ("rtmp://unix:/run/a.sock:live/a", "after unix:PATH: comes the URL's path"),
    ("rtmps://unix:/run/a.sock:/live/a", "without TLS; use rtmp://"),
    ("https://unix:/run/a.sock:/live/a.flv", "without TLS; use http://"),
])
def test_unix_mistakes_are_explained(url: str, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        split_unix(url)


def test_an_rtmp_url_over_a_unix_socket() -> None:
    url = RtmpUrl.parse("rtmp://unix:/run/lals/w1.sock:/live/a?k=1")
    assert (url.app, url.stream, url.unix) == ("live", "a?k=1", "/run/lals/w1.sock")
    assert url.tc_url == "rtmp://localhost/live"  # the peer is told localhost
    assert url.target == Target("localhost", 1935, unix="/run/lals/w1.sock")
    with pytest.raises(RtmpUrlError, match="the socket's path ends at a colon"):
        RtmpUrl.parse("rtmp://unix:/run/lals/w1.sock/live/a")
    with pytest.raises(RtmpUrlError, match="without TLS"):
        RtmpUrl.parse("rtmps://unix:/run/lals/w1.sock:/live/a")


def test_relay_addresses_name_unix_sockets() -> None:
    base = parse_base("unix:/run/lals/a.sock")  # lal's host:port key, a socket instead
    assert (base.scheme, base.unix, base.prefix) == ("rtmp", "/run/lals/a.sock", "")
    assert base.url("live", "a", ["ab12cd34"]) == \
        "rtmp://unix:/run/lals/a.sock:/live/a?lal_relay_via=ab12cd34"
    assert target_of(base.url("live", "a", [])) == base.target
    http = parse_base("http://unix:/run/lals/a.sock:/edge")
    assert http.url("live", "a b", []).startswith("http://unix:/run/lals/a.sock:/edge/live/a%20b.flv")
    assert str(http) == "http://unix:/run/lals/a.sock:/edge"
    with pytest.raises(UpstreamError, match="without TLS"):
        parse_base("rtmps://unix:/run/lals/a.sock", push=True)


def test_the_config_takes_unix_relay_addresses() -> None:
    c = from_dict({"relay_push": {"enable": True, "addr_list": ["unix:/run/lals/b.sock"]},
                   "static_relay_pull": {"enable": True, "addr": "http://unix:/run/lals/a.sock"}})
    assert c.warnings == []
    with pytest.raises(ConfigError, match="static_relay_pull.addr"):
        from_dict({"static_relay_pull": {"enable": True, "addr": "unix:relative.sock"}})


def test_the_api_does_not_pull_from_a_unix_socket() -> None:
    with pytest.raises(PullUrlError, match="a unix socket is not pulled through the API"):
        check_pull_url("rtmp://unix:/run/lals/a.sock:/live/a")
    assert check_pull_url("rtmp://127.0.0.1/live/a").port == 1935
