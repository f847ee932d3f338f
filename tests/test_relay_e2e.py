"""End to end: two servers as origin and edge, relay pull on demand and relay push.

ffmpeg publishes to the origin; ffmpeg and ``lal pull`` play from the edge,
which pulls the stream from the origin only while someone plays it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, FPS, Media, Server, start_server, stop_server
from mediatools import finish, probe, pull, push, read_tags, wait_for
from relaytools import http_status

from lal_twisted.media import flv

WINDOW = 4.0


def _no_traceback(*servers: Server) -> None:
    for s in servers:
        assert "Traceback" not in s.log(), s.log()


@pytest.fixture
def origin(server: Server) -> Server:
    """The server the edges pull from."""
    return server


def _edge(tmp_path: Path, addr: str, name: str = "edge", **pull: object) -> Server:
    d = tmp_path / name
    d.mkdir()
    settings = {"enable": True, "addr": addr, "auto_stop_pull_after_no_out_ms": 500, **pull}
    return start_server(d, static_relay_pull=settings)


def _pull_tool(url: str, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "lal"), "pull", url, str(out), "--duration",
                             str(seconds), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count(log: str, text: str) -> int:
    return log.count(text)


def _check_decodes(out: Path, seconds: float) -> None:
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}, info
    assert info.first_video_key, info
    assert info.decode_errors == "", info.decode_errors
    expected = seconds * FPS
    assert info.video_frames >= 0.7 * expected, info


@pytest.mark.parametrize("scheme", ["rtmp", "http"])
def test_edge_pulls_on_demand_from_origin(origin: Server, media: Media, tmp_path: Path,
                                          scheme: str) -> None:
    addr = (f"127.0.0.1:{origin.rtmp_port}" if scheme == "rtmp"
            else f"http://127.0.0.1:{origin.http_port}")
    edge = _edge(tmp_path, addr)
    publisher = push(media.long_av, origin.rtmp_url("s1"), loop=True)
    try:
        origin.wait_live("s1", 10)
        time.sleep(1.0)
        # Nobody plays at the edge: the origin has no player.
        assert "playing live/s1 started" not in origin.log()
        outs = [tmp_path / "ffmpeg-rtmp.flv", tmp_path / "ffmpeg-http.flv",
                tmp_path / "tool-rtmp.flv", tmp_path / "tool-http.flv"]
        players = [pull(edge.rtmp_url("s1"), outs[0], WINDOW),
                   pull(edge.flv_url("s1"), outs[1], WINDOW),
                   _pull_tool(edge.rtmp_url("s1"), outs[2], WINDOW + 1),
                   _pull_tool(edge.flv_url("s1"), outs[3], WINDOW + 1)]
        for p in players:
            code, err = finish(p)
            assert code == 0, err
        for out in outs[:2]:
            _check_decodes(out, WINDOW)
        for out in outs[2:]:
            tags = read_tags(out)
            video = [t for t in tags if t.tag_type == 9]
            assert video[0].payload[0] >> 4 == 1 and video[0].payload[1] == 0  # AVC header
            assert video[1].payload[0] >> 4 == 1  # then a keyframe
            _check_decodes(out, WINDOW - 1)
        # While they played the origin had exactly one player: the edge's pull.
        log = origin.log()
        assert _count(log, "playing live/s1 started") == 1, log
        # All players gone: the edge stops pulling, the origin's player leaves.
        assert wait_for(lambda: "stream=live/s1" in origin.log().split(
            "playing live/s1 started", 1)[1], 10), origin.log()
        assert "relay pull live/s1" in edge.log() and "no players for" in edge.log()
        # A new player: a new pull.
        out = tmp_path / "again.flv"
        code, err = finish(pull(edge.rtmp_url("s1"), out, 2.0))
        assert code == 0, err
        _check_decodes(out, 2.0)
        assert _count(origin.log(), "playing live/s1 started") == 2
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(edge)
    _no_traceback(origin, edge)


def test_origin_publisher_stops_edge_players_told_then_resume(origin: Server, media: Media,
                                                               tmp_path: Path) -> None:
    edge = _edge(tmp_path, f"127.0.0.1:{origin.rtmp_port}")
    publisher = push(media.long_av, origin.rtmp_url("s2"), loop=True)
    try:
        origin.wait_live("s2", 10)
        out = tmp_path / "long.flv"
        # A player asks for far more than it will get.
        player = pull(edge.rtmp_url("s2"), out, 60, timeout=20)
        assert wait_for(lambda: "relay pull live/s2 from" in edge.log()
                        and "started" in edge.log(), 10)
        time.sleep(2.0)
        publisher.kill()
        finish(publisher)
        # The edge's pull ends and its player is told: ffmpeg ends well before 60 s.
        start = time.monotonic()
        code, err = finish(player, 30)
        assert time.monotonic() - start < 20
        assert "giving up" in edge.log(), edge.log()
        info = probe(out)
        assert info.video_frames > FPS and info.first_video_key and info.decode_errors == ""
        # A player of the stream while nobody publishes at the origin is told at once.
        assert http_status(edge.flv_url("s2"), 20) == 404
        # A new publish resumes.
        publisher = push(media.long_av, origin.rtmp_url("s2"), loop=True)
        assert wait_for(lambda: origin.log().count("publishing live/s2 started") == 2, 10)
        out2 = tmp_path / "resumed.flv"
        code, err = finish(pull(edge.flv_url("s2"), out2, 2.0))
        assert code == 0, err
        _check_decodes(out2, 2.0)
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(edge)
    _no_traceback(origin, edge)


def test_pulled_stream_pushed_on_not_back_and_local_publisher_takes_over(
        origin: Server, media: Media, tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    target = start_server(tmp_path / "target")
    # The edge pulls from the origin and pushes what it has to the origin and a target.
    (tmp_path / "edge").mkdir()
    edge = start_server(tmp_path / "edge", static_relay_pull={
        "enable": True, "addr": f"127.0.0.1:{origin.rtmp_port}"}, relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{origin.rtmp_port}",
                                      f"127.0.0.1:{target.rtmp_port}"]})
    publisher = push(media.long_av, origin.rtmp_url("t1"), loop=True)
    local = None
    try:
        origin.wait_live("t1", 10)
        out = tmp_path / "across.flv"
        player = _pull_tool(edge.rtmp_url("t1"), out, 6.0)
        target.wait_live("t1", 15)
        # Not pushed back to the origin it came from.
        assert origin.log().count("publishing live/t1 started") == 1
        assert "relay push" not in origin.log()
        # A publisher arriving at the edge takes over from the pull; the player stays.
        time.sleep(1.0)
        local = push(media.av, edge.rtmp_url("t1"), loop=True)
        assert wait_for(lambda: "took over" in edge.log(), 10), edge.log()
        time.sleep(1.0)
        assert local.poll() is None, finish(local)
        code, err = finish(player, 60)
        assert code == 0, err
        # The file holds the new publisher's onMetaData mid-stream, which ffprobe
        # reads as a text stream (and has crashed on): probe the audio and video.
        av = tmp_path / "across-av.flv"
        av.write_bytes(flv.file_header() + b"".join(
            flv.encode_tag(t.tag_type, t.timestamp, t.payload) for t in read_tags(out)
            if t.tag_type in (8, 9)))
        info = probe(av)
        # The frames decode; at the switch the muxer may note one repeated dts (the
        # hub's timeline rebase on a takeover), which is no decoding error.
        errors = [line for line in info.decode_errors.splitlines()
                  if "non monotonically increasing dts" not in line]
        assert info.first_video_key and errors == [], info
        assert info.video_frames >= 0.7 * 6 * FPS, info  # before and after the takeover
        # A push to where the stream now has its own publisher is refused there.
        assert "relay push" in edge.log() and "BadName" in edge.log()
    finally:
        for p in (publisher, local):
            if p is not None:
                p.kill()
                finish(p)
        stop_server(edge)
        stop_server(target)
    _no_traceback(origin, edge, target)


@pytest.mark.parametrize("scheme", ["rtmp", "http"])
def test_a_stream_name_with_a_space_is_relayed(origin: Server, media: Media, tmp_path: Path,
                                                scheme: str) -> None:
    addr = (f"127.0.0.1:{origin.rtmp_port}" if scheme == "rtmp"
            else f"http://127.0.0.1:{origin.http_port}")
    edge = _edge(tmp_path, addr)
    publisher = subprocess.Popen([str(BIN / "lal"), "push", "-q", "--loop", "--duration", "20",
                                  str(media.long_av), origin.rtmp_url("sp ace")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        origin.wait_live("sp ace", 10)
        out = tmp_path / "space.flv"
        code, err = finish(pull(f"http://127.0.0.1:{edge.http_port}/live/sp%20ace.flv", out,
                                2.0))
        assert code == 0, (err, edge.log())
        _check_decodes(out, 2.0)
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(edge)
    _no_traceback(origin, edge)
