"""lal's relay-pull API: start_relay_pull, stop_relay_pull and the ``pull`` part of
the stat group, against two live servers (origin and edge)."""

from __future__ import annotations

import time
from pathlib import Path

from apitools import api, api_server
from conftest import FPS, Media, start_server, stop_server
from mediatools import finish, probe, pull, push, wait_for


def _subs(port: int, name: str) -> list[dict]:
    status, body = api(port, f"/api/stat/group?stream_name={name}")
    return (body.get("data") or {}).get("subs", []) if status == 200 else []


def _pushs(port: int, name: str) -> list[dict]:
    status, body = api(port, f"/api/stat/group?stream_name={name}")
    return (body.get("data") or {}).get("pushs", []) if status == 200 else []


def test_start_and_stop_relay_pull(media: Media, tmp_path: Path) -> None:
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    with api_server(tmp_path / "origin") as origin, api_server(tmp_path / "edge") as edge:
        publisher = push(media.long_av, origin.server.rtmp_url("a1"), loop=True)
        try:
            origin.server.wait_live("a1", 15)
            assert _subs(origin.api_port, "a1") == []
            url = f"rtmp://127.0.0.1:{origin.server.rtmp_port}/live/a1"
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url, "stream_name": "renamed", "pull_retry_num": 0})
            assert status == 200 and body["error_code"] == 0, body
            assert body["data"]["stream_name"] == "renamed"
            session_id = body["data"]["session_id"]
            assert session_id.startswith("RTMPPULL")
            # Pulled even with no player here (lal's auto_stop default: never).
            assert wait_for(lambda: len(_subs(origin.api_port, "a1")) == 1, 10)
            status, group = api(edge.api_port, "/api/stat/group?stream_name=renamed")
            data = group["data"]
            assert data["app_name"] == "live" and data["stream_name"] == "renamed"
            assert data["pull"]["session_id"] == session_id, data
            assert data["pull"]["remote_addr"] == f"127.0.0.1:{origin.server.rtmp_port}"
            assert data["pub"]["session_id"] == ""
            assert wait_for(lambda: api(edge.api_port, "/api/stat/group?stream_name=renamed")
                            [1]["data"]["pull"]["read_bytes_sum"] > 10000, 10)
            out = tmp_path / "renamed.flv"
            code, err = finish(pull(edge.server.rtmp_url("renamed"), out, 2.0))
            assert code == 0, err
            info = probe(out)
            assert info.first_video_key and info.decode_errors == ""
            assert info.video_frames >= 1.4 * FPS
            # The same stream again, and bad requests.
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url, "stream_name": "renamed"})
            assert (status, body["error_code"]) == (200, 2001), body
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull", {"stream_name": "x"})
            assert (status, body["error_code"]) == (400, 1002), body
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull",
                               {"url": "ftp://example.com/live/x"})
            assert (status, body["error_code"]) == (200, 2001), body
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url, "pull_retry_num": "many"})
            assert (status, body["error_code"]) == (400, 1002), body
            # Stop it: the origin's player (the edge's pull) goes away.
            status, body = api(edge.api_port, "/api/ctrl/stop_relay_pull?stream_name=renamed",
                               method="POST", raw=b"")
            assert (status, body["error_code"]) == (200, 0), body
            assert body["data"]["session_id"] == session_id
            assert wait_for(lambda: _subs(origin.api_port, "a1") == [], 10)
            status, body = api(edge.api_port, "/api/ctrl/stop_relay_pull?stream_name=renamed",
                               method="POST", raw=b"")
            assert body["error_code"] == 1001, body
            status, body = api(edge.api_port, "/api/ctrl/stop_relay_pull", method="POST",
                               raw=b"")
            assert (status, body["error_code"]) == (400, 1002), body
        finally:
            publisher.kill()
            finish(publisher)


def test_static_pull_seen_from_the_origin_api(media: Media, tmp_path: Path) -> None:
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    with api_server(tmp_path / "origin") as origin:
        edge = start_server(tmp_path / "edge", static_relay_pull={
            "enable": True, "addr": f"127.0.0.1:{origin.server.rtmp_port}",
            "auto_stop_pull_after_no_out_ms": 500})
        publisher = push(media.long_av, origin.server.rtmp_url("a2"), loop=True)
        try:
            origin.server.wait_live("a2", 15)
            time.sleep(1.0)
            assert _subs(origin.api_port, "a2") == []  # no player at the edge: no pull
            player = pull(edge.rtmp_url("a2"), tmp_path / "p.flv", 4.0)
            assert wait_for(lambda: len(_subs(origin.api_port, "a2")) == 1, 10)
            code, err = finish(player)
            assert code == 0, err
            assert wait_for(lambda: _subs(origin.api_port, "a2") == [], 10)
        finally:
            publisher.kill()
            finish(publisher)
            stop_server(edge)


def test_a_push_can_be_kicked(media: Media, tmp_path: Path) -> None:
    import re

    (tmp_path / "target").mkdir()
    (tmp_path / "origin").mkdir()
    target = start_server(tmp_path / "target")
    try:
        with api_server(tmp_path / "origin", relay_push={
                "enable": True, "addr_list": [f"127.0.0.1:{target.rtmp_port}"]}) as origin:
            publisher = push(media.long_av, origin.server.rtmp_url("k"), loop=True)
            try:
                target.wait_live("k", 15)
                found = re.search(r"relay push (RTMPPUSH\d+) live/k", origin.server.log())
                assert found, origin.server.log()
                # lal's "pushs" of the stat group lists it, with its session fields.
                assert wait_for(lambda: _pushs(origin.api_port, "k") and _pushs(
                    origin.api_port, "k")[0]["wrote_bytes_sum"] > 10000, 10)
                pushs = _pushs(origin.api_port, "k")
                assert len(pushs) == 1, pushs
                entry = pushs[0]
                assert entry["session_id"] == found.group(1), entry
                assert (entry["protocol"], entry["base_type"]) == ("RTMP", "PUSH"), entry
                assert entry["remote_addr"] == f"127.0.0.1:{target.rtmp_port}", entry
                assert entry["start_time"] and entry["read_bytes_sum"] == 0, entry
                status, body = api(origin.api_port, "/api/stat/all_group")
                (group,) = [g for g in body["data"]["groups"] if g["stream_name"] == "k"]
                assert [p["session_id"] for p in group["pushs"]] == [found.group(1)], group
                assert group["subs"] == [], group  # a push is not a player
                status, body = api(origin.api_port, "/api/ctrl/kick_session",
                                   {"stream_name": "k", "session_id": found.group(1)})
                assert body["error_code"] == 0, body
                assert wait_for(lambda: "stream live/k unpublished" in target.log(), 10)
                assert wait_for(lambda: _pushs(origin.api_port, "k") == [], 5)
                time.sleep(2.0)  # and it is not retried
                assert target.log().count("publishing live/k started") == 1
                assert "kicked by the HTTP API" in origin.server.log()
            finally:
                publisher.kill()
                finish(publisher)
    finally:
        stop_server(target)
