"""Relays that would go round in circles, and upstreams that fall silent.

- A ring of pushes (A pushes to B, B pushes to A): the push that closes the
  ring is refused by the server it would come back to, and stops for good.
- Two servers told by the API to pull the same stream from each other: the
  pulls carry the relay marker and end with a refusal at once.
- ``rtmp.pull_timeout_sec``: a relay pull whose upstream stops sending is
  closed and retried.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from apitools import api, api_server
from conftest import (
    FPS,
    Media,
    Server,
    free_port,
    start_server,
    stop_server,
)
from mediatools import finish, probe, pull, push, wait_for


def _clean(*servers: Server) -> None:
    for s in servers:
        stop_server(s)
    for s in servers:
        assert "Traceback" not in s.log(), s.log()


def _retries(log: str, key: str) -> list[str]:
    return re.findall(rf"relay push \S+ {key} to \S+: .*; retry \d+ in", log)


def test_a_ring_of_pushes_stops_where_it_closes(media: Media, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    # Each one pushes to the other: both RTMP ports must be known before either starts.
    a_port, b_port = free_port(), free_port()
    a = start_server(a_dir, rtmp_port=a_port, relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{b_port}"], "retry_min_ms": 200,
        "retry_max_ms": 1000})
    b = start_server(b_dir, rtmp_port=b_port, relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{a_port}"], "retry_min_ms": 200,
        "retry_max_ms": 1000})
    publisher = push(media.long_av, a.rtmp_url("ring"), loop=True)
    try:
        assert wait_for(lambda: "stopped for good" in b.log(), 15), (a.log(), b.log())
        # B's push back to A was refused as a loop, once, and is not retried ...
        time.sleep(3.0)
        log_b = b.log()
        assert log_b.count("stopped for good: the target refused it as a relay loop") == 1, log_b
        assert _retries(log_b, "live/ring") == [], log_b
        assert "relay loop: live/ring was relayed through this server already" in a.log()
        # ... while A's push to B goes on: B's players get the stream.
        out = tmp_path / "from-b.flv"
        code, err = finish(pull(b.rtmp_url("ring"), out, 3.0))
        assert code == 0, err
        info = probe(out)
        assert info.first_video_key and info.decode_errors == "", info
        assert info.video_frames >= 0.7 * 3 * FPS, info
        assert _retries(a.log(), "live/ring") == [], a.log()
    finally:
        publisher.kill()
        finish(publisher)
        _clean(a, b)



def test_api_pulls_towards_each_other_end_with_a_refusal(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with api_server(tmp_path / "a") as a, api_server(tmp_path / "b") as b:
        start = time.monotonic()
        for here, there in ((a, b), (b, a)):
            url = f"rtmp://127.0.0.1:{there.server.rtmp_port}/live/both"
            status, body = api(here.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url, "pull_retry_num": 0, "pull_timeout_ms": 20000})
            assert (status, body["error_code"]) == (200, 0), body
        # Both pulls end, refused as not found, long before their 20 s timeout.
        for s in (a, b):
            assert wait_for(lambda s=s: "relay pull live/both from" in s.server.log()
                            and "giving up" in s.server.log(), 10), s.server.log()
        assert time.monotonic() - start < 10
        logs = a.server.log() + b.server.log()
        assert "NetStream.Play.StreamNotFound" in logs, logs
        assert "lal_relay_via=" in logs  # the API pulls carry the marker
        assert "no answer within" not in logs and "no media within" not in logs, logs
        time.sleep(2.0)
        for s in (a, b):  # nothing goes on afterwards
            assert s.server.log().count("relay pull live/both from") <= 3, s.server.log()
            assert api(s.api_port, "/api/stat/group?stream_name=both")[1]["data"] is None


def test_pull_timeout_sec_closes_a_silent_upstream(media: Media, tmp_path: Path) -> None:
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    origin = start_server(tmp_path / "origin")
    edge = start_server(tmp_path / "edge", rtmp={"pull_timeout_sec": 1}, static_relay_pull={
        "enable": True, "addr": f"127.0.0.1:{origin.rtmp_port}", "pull_retry_num": -1})
    publisher = push(media.long_av, origin.rtmp_url("quiet"), loop=True)
    player = None
    try:
        origin.wait_live("quiet", 15)
        player = pull(edge.rtmp_url("quiet"), tmp_path / "p.flv", 20.0, timeout=40)
        assert wait_for(lambda: "relay pull RTMPPULL" in edge.log()
                        and " started" in edge.log(), 10), edge.log()
        time.sleep(1.0)
        # The origin's publisher freezes: the origin keeps the stream (its own
        # pub_timeout_sec is 30 s) but sends the edge nothing.
        publisher.send_signal(signal.SIGSTOP)
        stalled = time.monotonic()
        assert wait_for(lambda: "rtmp.pull_timeout_sec 1" in edge.log(), 10), edge.log()
        took = time.monotonic() - stalled
        assert 0.9 <= took <= 6.0, took
        assert re.search(r"no data from the upstream for 1\.\d+s", edge.log()), edge.log()
        assert wait_for(lambda: "retry 1 in" in edge.log(), 5), edge.log()
        publisher.send_signal(signal.SIGCONT)
        # It pulls again and the player, still there, gets media again.
        assert wait_for(lambda: edge.log().count("relay pull RTMPPULL") >= 2, 15), edge.log()
    finally:
        publisher.send_signal(signal.SIGCONT)
        for p in (publisher, player):
            if p is not None:
                p.kill()
                finish(p)
        _clean(origin, edge)
