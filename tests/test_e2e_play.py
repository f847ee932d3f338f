"""End to end: ffmpeg publishes to the real server, ffmpeg and HTTP clients play."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import BIN, FPS, Media, Server, require
from mediatools import decode_errors, finish, http_flv_bytes, probe, pull, push, read_tags

from lal_twisted.media.flv import FlvReader

WINDOW = 4.0

# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


def test_publish_and_play_rtmp_and_httpflv_concurrently(server: Server, media: Media,
                                                        tmp_path: Path) -> None:
    rtmp_out, flv_out = tmp_path / "rtmp.flv", tmp_path / "http.flv"
    publisher = push(media.long_av, server.rtmp_url("test"))
    server.wait_live("test")
    players = [pull(server.rtmp_url("test"), rtmp_out, WINDOW),
               pull(server.flv_url("test"), flv_out, WINDOW)]
    for p in players:
        code, err = finish(p)
        assert code == 0, err
    publisher.kill()
    finish(publisher)
    expected = WINDOW * FPS
    for out in (rtmp_out, flv_out):
        info = probe(out)
        assert info.codecs == {"video": "h264", "audio": "aac"}
        assert (info.width, info.height) == (320, 240)
        assert abs(info.video_frames - expected) <= 0.1 * expected, info
        assert info.audio_frames > 0
        assert info.decode_errors == ""
        assert info.first_video_key


def test_httpflv_headers_and_cors(server: Server, media: Media) -> None:
    publisher = push(media.long_av, server.rtmp_url("cors"))
    try:
        server.wait_live("cors")
        headers, body = http_flv_bytes(server.flv_url("cors"), 1.0)
    finally:
        publisher.kill()
        finish(publisher)
    assert headers["content-type"] == "video/x-flv"
    assert headers["access-control-allow-origin"] == "*"
    assert headers.get("transfer-encoding") == "chunked"
    assert body[:3] == b"FLV"
    tags = FlvReader().feed(body)
    assert tags[0].tag_type == 18  # onMetaData first
    assert {t.tag_type for t in tags} >= {8, 9}


@pytest.mark.serial  # first frame within 1 s
def test_late_joiner_gets_a_picture_at_once(server: Server, media: Media, tmp_path: Path) -> None:
    publisher = push(media.long_av, server.rtmp_url("late"))
    try:
        time.sleep(3.3)  # join mid-GOP
        for url in (server.rtmp_url("late"), server.flv_url("late")):
            # Time to the first decoded video frame, with ffmpeg's input probing
            # off so what is measured is the server's answer, not the probe.
            t0 = time.monotonic()
            done = subprocess.run(
                ["ffmpeg", "-v", "error", "-nostdin", "-analyzeduration", "0", "-probesize",
                 "32", "-i", url, "-frames:v", "1", "-f", "null", "-"],
                capture_output=True, timeout=20)
            elapsed = time.monotonic() - t0
            assert done.returncode == 0, done.stderr
            assert elapsed < 1.0, f"first frame took {elapsed:.2f}s from {url}"
            # and what a late joiner gets starts with a keyframe and decodes cleanly
            out = tmp_path / "late.flv"
            code, err = finish(pull(url, out, 1.0))
            assert code == 0, err
            info = probe(out)
            assert info.first_video_key and info.decode_errors == ""
    finally:
        publisher.kill()
        finish(publisher)


def test_players_waiting_before_publisher(server: Server, media: Media, tmp_path: Path) -> None:
    outs = [tmp_path / "a.flv", tmp_path / "b.flv"]
    players = [pull(server.rtmp_url("early"), outs[0], 3.0),
               pull(server.flv_url("early"), outs[1], 3.0)]
    server.wait_players("early", 2)
    assert server.log().count("waiting for publisher") >= 2
    publisher = push(media.av, server.rtmp_url("early"))
    for p in players:
        code, err = finish(p)
        assert code == 0, err
    publisher.kill()
    finish(publisher)
    for out in outs:
        info = probe(out)
        assert abs(info.video_frames - 3 * FPS) <= 0.1 * 3 * FPS, info
        assert info.decode_errors == ""


def test_byte_exact_round_trip_httpflv(server: Server, media: Media) -> None:
    import threading

    result: dict[str, bytes] = {}

    def reader() -> None:
        result["body"] = http_flv_bytes(server.flv_url("exact"), 20.0, idle=3.0)[1]

    t = threading.Thread(target=reader)
    t.start()
    server.wait_players("exact")
    assert "waiting for publisher" in server.log()
    code, err = finish(push(media.av, server.rtmp_url("exact"), realtime=False))
    assert code == 0, err
    t.join(20)
    pulled = [t for t in FlvReader().feed(result["body"]) if t.tag_type in (8, 9)]
    source = [t for t in read_tags(media.av) if t.tag_type in (8, 9)]
    assert len(pulled) == len(source)
    assert [t.payload for t in pulled] == [t.payload for t in source]
    base_p, base_s = pulled[0].timestamp, source[0].timestamp
    assert [t.timestamp - base_p for t in pulled] == [t.timestamp - base_s for t in source]


def test_audio_only_and_video_only(server: Server, media: Media, tmp_path: Path) -> None:
    for name, src, codecs in (("aonly", media.audio_only, {"audio": "aac"}),
                              ("vonly", media.video_only, {"video": "h264"})):
        out = tmp_path / f"{name}.flv"
        publisher = push(src, server.rtmp_url(name))
        server.wait_live(name)
        # ffmpeg probes 5 s of an audio-only FLV by default; shorten that.
        code, err = finish(pull(server.flv_url(name), out, 2.0,
                                input_opts=["-analyzeduration", "500000"]))
        publisher.kill()
        finish(publisher)
        assert code == 0, err
        info = probe(out)
        assert info.codecs == codecs
        assert info.decode_errors == ""
        if "video" in codecs:
            assert abs(info.video_frames - 2 * FPS) <= 0.1 * 2 * FPS
        else:
            # AAC at 44.1 kHz: 1024 samples a frame, about 43 frames a second
            assert info.audio_frames >= 0.9 * 2 * 44100 / 1024


def test_duplicate_publisher_refused(server: Server, media: Media, tmp_path: Path) -> None:
    first = push(media.long_av, server.rtmp_url("dup"))
    server.wait_live("dup")
    second = push(media.av, server.rtmp_url("dup"))
    code, err = finish(second, 20)
    assert code != 0
    assert first.poll() is None, "the first publisher must be untouched"
    assert "already being published" in server.log()
    out = tmp_path / "dup.flv"
    rc, perr = finish(pull(server.rtmp_url("dup"), out, 2.0))
    first.kill()
    finish(first)
    assert rc == 0, perr
    info = probe(out)
    assert abs(info.video_frames - 2 * FPS) <= 0.1 * 2 * FPS
    assert info.decode_errors == ""


def test_librtmp_player_rtmpdump(server: Server, media: Media, tmp_path: Path) -> None:
    """rtmpdump speaks librtmp, the RTMP code behind OBS's and many players' clients.
    The server ignores the play's duration (-B), so rtmpdump reads to the end of
    the 6 s publish."""
    out = tmp_path / "rtmpdump.flv"
    publisher = push(media.av, server.rtmp_url("lib"))
    try:
        server.wait_live("lib")
        done = subprocess.run(
            [require("rtmpdump"), "-q", "-r", server.rtmp_url("lib"), "--live", "-B", "4",
             "-o", str(out)], capture_output=True, timeout=30)
    finally:
        publisher.kill()
        finish(publisher)
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}, done.stderr
    assert info.video_frames >= 4 * FPS * 0.9 and info.decode_errors == ""
    assert info.first_video_key


def test_publisher_timestamps_starting_late_pass_through(server: Server, media: Media,
                                                          tmp_path: Path) -> None:
    """A publisher whose clock starts at one hour: passed through, players decode."""
    out = tmp_path / "offset.flv"
    publisher = push(media.long_av, server.rtmp_url("offset"),
                     extra=["-output_ts_offset", "3600"])
    try:
        server.wait_live("offset")
        code, err = finish(pull(server.rtmp_url("offset"), out, 3.0))
        _, body = http_flv_bytes(server.flv_url("offset"), 1.0)
    finally:
        publisher.kill()
        finish(publisher)
    assert code == 0, err
    media_tags = [t for t in FlvReader().feed(body) if t.tag_type == 9 and t.payload[1] == 1]
    assert media_tags and media_tags[0].timestamp >= 3_600_000
    info = probe(out)
    assert abs(info.video_frames - 3 * FPS) <= 0.1 * 3 * FPS and info.decode_errors == ""


@pytest.mark.serial  # VLC's start-up counts in its 4 s run time
def test_vlc_plays_rtmp_and_httpflv(server: Server, media: Media, tmp_path: Path) -> None:
    """VLC (cvlc, headless) plays both and remuxes what it got to MPEG-TS."""
    try:
        _vlc_plays(server, media, tmp_path)
    finally:
        for leftover in Path(tempfile.gettempdir()).glob("lals-vlc-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _vlc_plays(server: Server, media: Media, tmp_path: Path) -> None:
    cvlc = require("cvlc")
    as_user: list[str] = []
    if os.geteuid() == 0:  # VLC refuses to run as root: run it as nobody
        as_user = ["runuser", "-u", "nobody", "--"]
        tmp_path = Path(tempfile.mkdtemp(prefix="lals-vlc-"))
        tmp_path.chmod(0o777)
    publisher = push(media.long_av, server.rtmp_url("vlc"))
    outs = {url: tmp_path / f"vlc{i}.ts"
            for i, url in enumerate((server.rtmp_url("vlc"), server.flv_url("vlc")))}
    try:
        server.wait_live("vlc")
        # VLC joins a stream a second under way, as it did before the waits on
        # the stat API: one that VLC joins at its very first packets sometimes
        # comes out of VLC's TS remux without the PPS before the first slice,
        # whatever the server's version (left for its own look).
        time.sleep(1.0)
        for url, out in outs.items():
            subprocess.run(
                [*as_user, cvlc, "-q", "-I", "dummy", url, "--sout",
                 f"#std{{access=file,mux=ts,dst={out}}}", "--run-time", "4", "vlc://quit"],
                capture_output=True, timeout=30)
    finally:
        publisher.kill()
        finish(publisher)
    for out in outs.values():
        info = probe(out)
        assert info.codecs == {"video": "h264", "audio": "aac"}
        assert (info.width, info.height) == (320, 240)
        # --run-time counts VLC's own start-up: at least 2.5 of the 4 s is media
        assert info.video_frames >= 2.5 * FPS, info
        assert decode_errors(out, after_input=["-map", "0:v"], timeout=60) == ""


def test_percent_encoded_http_path_is_the_rtmp_stream_name(server: Server, media: Media,
                                                           tmp_path: Path) -> None:
    """rtmp://h/live/a b and http://h/live/a%20b.flv are the same stream.  (ffmpeg
    cuts an RTMP URL at a space, so the project's own client publishes.)"""
    publisher = subprocess.Popen(
        [str(BIN / "lal"), "push", "-q", "--loop", str(media.av), server.rtmp_url("a b")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        server.wait_live("a b")
        out = tmp_path / "space.flv"
        code, err = finish(pull(server.flv_url("a%20b"), out, 2.0))
        assert code == 0, err
    finally:
        publisher.kill()
        finish(publisher)
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"} and info.decode_errors == ""
    assert "publishing live/a b started" in server.log()
