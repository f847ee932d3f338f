"""lal's HTTP API against a live server: a real publisher (ffmpeg over RTMP) and
real players (ffmpeg over RTMP and HTTP-FLV), checked field by field against
lal's shapes (docs/control-plane.md)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from apitools import api, api_server, http
from conftest import Media
from mediatools import finish, pull, push, wait_for

# lal's time format: Go "2006-01-02 15:04:05.999 Z0700 MST".
LAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,3})? [+-]\d{4} \S+$")
SESSION_FIELDS = {"session_id", "protocol", "base_type", "remote_addr", "start_time",
                  "read_bytes_sum", "wrote_bytes_sum", "bitrate_kbits", "read_bitrate_kbits",
                  "write_bitrate_kbits"}
GROUP_FIELDS = {"stream_name", "app_name", "audio_codec", "video_codec", "video_width",
                "video_height", "pub", "subs", "pull", "pushs", "in_frame_per_sec"}
EMPTY_SESSION = {"session_id": "", "protocol": "", "base_type": "", "remote_addr": "",
                 "start_time": "", "read_bytes_sum": 0, "wrote_bytes_sum": 0,
                 "bitrate_kbits": 0, "read_bitrate_kbits": 0, "write_bitrate_kbits": 0}


def _group(port: int, name: str) -> dict:
    status, body = api(port, f"/api/stat/group?stream_name={name}")
    assert status == 200 and body["error_code"] == 0 and body["desp"] == "succ", body
    return body["data"]


def test_stat_endpoints_describe_publisher_and_players_field_by_field(
        tmp_path: Path, media: Media) -> None:
    with api_server(tmp_path, server_id="edge-7") as s:
        port = s.api_port
        status, info = api(port, "/api/stat/lal_info")
        assert status == 200 and info["error_code"] == 0 and info["desp"] == "succ"
        assert set(info["data"]) == {"server_id", "bin_info", "lal_version", "api_version",
                                     "notify_version", "WebUiVersion", "start_time"}
        assert info["data"]["server_id"] == "edge-7"
        assert LAL_TIME.match(info["data"]["start_time"]), info
        assert api(port, "/api/stat/all_group")[1] == {
            "error_code": 0, "desp": "succ", "data": {"groups": []}}

        publisher = push(media.long_av, s.server.rtmp_url("test") + "?token=abc", loop=True)
        rtmp_player = flv_player = None
        try:
            assert wait_for(lambda: api(port, "/api/stat/all_group")[1]["data"]["groups"], 15)
            rtmp_player = pull(s.server.rtmp_url("test"), tmp_path / "rtmp.flv", 25)
            flv_player = pull(s.server.flv_url("test"), tmp_path / "flv.flv", 25)
            # bitrates are refreshed every 5 s: wait for every session to have one
            assert wait_for(lambda: (lambda g: len(g["subs"]) == 2 and g["pub"]["bitrate_kbits"]
                                     and all(x["bitrate_kbits"] for x in g["subs"]))(
                _group(port, "test")), 20), _group(port, "test")
            group = _group(port, "test")
            assert set(group) == GROUP_FIELDS
            assert (group["stream_name"], group["app_name"]) == ("test", "live")
            assert (group["audio_codec"], group["video_codec"]) == ("AAC", "H264")
            assert (group["video_width"], group["video_height"]) == (320, 240)
            pub = group["pub"]
            assert set(pub) == SESSION_FIELDS
            assert re.fullmatch(r"RTMPPUBSUB\d+", pub["session_id"])
            assert (pub["protocol"], pub["base_type"]) == ("RTMP", "PUB")
            assert re.fullmatch(r"127\.0\.0\.1:\d+", pub["remote_addr"])
            assert LAL_TIME.match(pub["start_time"])
            assert pub["read_bytes_sum"] > 50_000 and pub["wrote_bytes_sum"] > 0
            # the file is ~200 kbit/s of video and 64 kbit/s of audio, sent in real time
            assert 150 <= pub["read_bitrate_kbits"] <= 600, pub
            assert pub["bitrate_kbits"] == pub["read_bitrate_kbits"]
            subs = sorted(group["subs"], key=lambda x: x["protocol"])
            assert [(x["protocol"], x["base_type"]) for x in subs] == [("FLV", "SUB"),
                                                                      ("RTMP", "SUB")]
            assert re.fullmatch(r"FLVSUB\d+", subs[0]["session_id"])
            assert re.fullmatch(r"RTMPPUBSUB\d+", subs[1]["session_id"])
            for sub in subs:
                assert set(sub) == SESSION_FIELDS and LAL_TIME.match(sub["start_time"])
                assert sub["wrote_bytes_sum"] > 50_000
                assert 100 <= sub["write_bitrate_kbits"] <= 800, sub
                assert sub["bitrate_kbits"] == sub["write_bitrate_kbits"]
            assert group["pull"] == EMPTY_SESSION
            assert group["pushs"] == []
            fps = group["in_frame_per_sec"]
            assert fps and all(set(x) == {"unix_sec", "v"} for x in fps)
            assert [x["unix_sec"] for x in fps] == sorted((x["unix_sec"] for x in fps),
                                                          reverse=True)
            assert any(20 <= x["v"] <= 30 for x in fps), fps  # 25 fps
            # all_group holds the same group; stream_name may also be "app/name"
            groups = api(port, "/api/stat/all_group")[1]["data"]["groups"]
            assert [(g["stream_name"], g["pub"]["session_id"]) for g in groups] == [
                ("test", pub["session_id"])]
            assert _group(port, "live/test")["pub"]["session_id"] == pub["session_id"]
            # the status page's read-only copy on the public HTTP listener: same
            # shapes, no client addresses, no control
            public = api(s.server.http_port, "/api/stat/group?stream_name=test")[1]["data"]
            assert public["pub"]["session_id"] == pub["session_id"]
            assert {x["remote_addr"] for x in [public["pub"], *public["subs"]]} == {""}
            status, _, _ = http(f"http://127.0.0.1:{s.server.http_port}/api/ctrl/kick_session",
                                b'{"stream_name":"test","session_id":"%s"}'
                                % pub["session_id"].encode(), "POST")
            assert status == 404 and publisher.poll() is None
        finally:
            publisher.kill()
            finish(publisher)
            for player in (rtmp_player, flv_player):
                if player is not None:
                    player.kill()
                    finish(player)


def test_unknown_stream_missing_parameter_and_unknown_path(tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        port = s.api_port
        assert api(port, "/api/stat/group?stream_name=nope") == (
            200, {"error_code": 1001, "desp": "group not found", "data": None})
        for path in ("/api/stat/group", "/api/stat/group?stream_name="):
            status, body = api(port, path)
            assert status == 400 and body["error_code"] == 1002, body
            assert body["desp"].startswith("param missing")
        for path in ("/api/stat/nothing", "/", "/api/ctrl/start_relay_pull_x"):
            status, body = api(port, path)
            assert status == 404 and body["error_code"] == 404, body
            assert body["desp"].startswith("page not found")
        # stat is GET, ctrl is POST
        assert api(port, "/api/ctrl/kick_session", method="GET")[0] == 405
        assert api(port, "/api/stat/all_group", body={}, method="POST")[0] == 405


def test_kick_session_ends_that_session_only(tmp_path: Path, media: Media) -> None:
    with api_server(tmp_path) as s:
        port = s.api_port
        publisher = push(media.long_av, s.server.rtmp_url("test"), loop=True)
        other = push(media.long_av, s.server.rtmp_url("other"), loop=True)
        players = []
        try:
            assert wait_for(lambda: len(api(port, "/api/stat/all_group")[1]["data"]["groups"])
                            == 2, 15)
            rtmp_player = pull(s.server.rtmp_url("test"), tmp_path / "rtmp.flv", 30)
            flv_player = pull(s.server.flv_url("test"), tmp_path / "flv.flv", 30)
            players = [rtmp_player, flv_player]
            assert wait_for(lambda: len(_group(port, "test")["subs"]) == 2, 15)
            group = _group(port, "test")
            flv_id = next(x["session_id"] for x in group["subs"] if x["protocol"] == "FLV")
            rtmp_id = next(x["session_id"] for x in group["subs"] if x["protocol"] == "RTMP")
            other_pub = _group(port, "other")["pub"]["session_id"]
            # wrong stream, unknown session, a session of another stream
            assert api(port, "/api/ctrl/kick_session",
                       {"stream_name": "nope", "session_id": flv_id}) == (
                200, {"error_code": 1001, "desp": "group not found"})
            assert api(port, "/api/ctrl/kick_session",
                       {"stream_name": "test", "session_id": "FLVSUB999999"}) == (
                200, {"error_code": 1003, "desp": "session not found"})
            assert api(port, "/api/ctrl/kick_session",
                       {"stream_name": "test", "session_id": other_pub})[1]["error_code"] == 1003
            assert api(port, "/api/ctrl/kick_session",
                       {"stream_name": "test", "session_id": flv_id}) == (
                200, {"error_code": 0, "desp": "succ"})
            assert wait_for(lambda: flv_player.poll() is not None, 10), "kicked player still runs"
            time.sleep(1.0)
            group = _group(port, "test")
            assert [x["session_id"] for x in group["subs"]] == [rtmp_id]
            assert group["pub"]["session_id"] and rtmp_player.poll() is None
            assert _group(port, "other")["pub"]["session_id"] == other_pub
            # kicking the publisher ends the publish (ffmpeg's player may leave with it,
            # at the end of the stream, and the group with them)
            pub_id = group["pub"]["session_id"]
            assert api(port, "/api/ctrl/kick_session",
                       {"stream_name": "test", "session_id": pub_id})[1]["error_code"] == 0

            def publishers() -> list[str]:
                groups = api(port, "/api/stat/all_group")[1]["data"]["groups"]
                return [g["pub"]["session_id"] for g in groups]

            assert wait_for(lambda: pub_id not in publishers(), 10), publishers()
            assert other_pub in publishers()  # the other stream plays on
        finally:
            for proc in (publisher, other, *players):
                proc.kill()
                finish(proc)


def test_bad_kick_bodies_are_lal_errors_with_400(tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        port = s.api_port
        for raw in (b"", b"{", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe",
                    b'{"stream_name": "test"}', b'{"session_id": "X"}',
                    b'{"stream_name": 1, "session_id": "X"}',
                    b'{"stream_name": "test", "session_id": ["X"]}',
                    b'{"stream_name": null, "session_id": "X"}'):
            status, body = api(port, "/api/ctrl/kick_session", raw=raw, method="POST")
            assert status == 400, (raw, status, body)
            assert body["error_code"] == 1002 and body["desp"].startswith("param missing"), body
        # a body past the site's limit is refused before it is read
        status, text, _ = http(f"http://127.0.0.1:{port}/api/ctrl/kick_session",
                               b"{" + b" " * 200_000 + b"}", "POST")
        assert status == 413, text
        # the server is still fine
        assert api(port, "/api/stat/lal_info")[1]["error_code"] == 0
