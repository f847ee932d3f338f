"""Enhanced RTMP end to end with real tools: the newer ffmpeg publishes HEVC, AV1
and VP9 with AAC or Opus (and a multitrack stream); the same ffmpeg plays them
back over RTMP and HTTP-FLV, a WebSocket client over WebSocket-FLV; what each
player gets is the published packets byte for byte, from a keyframe on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from codectools import (
    FFMPEG,
    assert_played_run,
    framemd5_bytes,
    framemd5_of,
    framemd5_pull,
    make_media,
    need_encoders,
    parse_framemd5,
    push,
    wait_pull,
    ws_collect,
)
from conftest import Server, assert_no_traceback, start_server, stop_server
from mediatools import decode_errors, finish, made_by, wait_for

from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import VIDEO, AVPacket

MIN_VIDEO = 25  # packets: a second at least


# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    # Players are closed a second after their publisher leaves, so each plays to
    # the end of the stream and exits by itself.
    return {"subscriber": {"publisher_wait_timeout_ms": 1000}}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("codecs-media")


def keyframe_times(path: Path) -> set[int]:
    return {p.dts for p in (AVPacket(t.tag_type, t.timestamp, t.payload)
                            for t in FlvReader().feed(path.read_bytes()))
            if p.kind == VIDEO and p.is_keyframe and not p.is_sequence_header}


def play_all_three(server: Server, name: str, pusher: subprocess.Popen[bytes]
                   ) -> tuple[dict, dict, bytes]:
    """Play ``name`` over RTMP and HTTP-FLV (ffmpeg framemd5) and WebSocket-FLV
    (the FLV bytes), joining now, until the publisher is done and the server
    closes the players."""
    rtmp = framemd5_pull(server.rtmp_url(name))
    http = framemd5_pull(server.flv_url(name))
    ws_messages: list[bytes] = []
    thread = ws_collect(server.flv_url(name).replace("http://", "ws://"), ws_messages)
    code, err = finish(pusher)
    assert code == 0, err
    results = [wait_pull(rtmp), wait_pull(http)]
    thread.join(30)
    assert not thread.is_alive(), "the WebSocket player was not closed"
    return parse_framemd5(results[0]), parse_framemd5(results[1]), b"".join(ws_messages)


COMBOS = [("hevc", "aac"), ("av1", "opus"), ("vp9", "opus"), ("hevc", "opus")]
LAL_NAMES = {"hevc": "H265", "av1": "AV1", "vp9": "VP9", "aac": "AAC", "opus": "OPUS"}


@pytest.mark.parametrize(("video", "audio"), COMBOS, ids=[f"{v}+{a}" for v, a in COMBOS])
def test_enhanced_rtmp_round_trip_over_rtmp_httpflv_and_websocket(
        server: Server, media_dir: Path, video: str, audio: str) -> None:
    src = make_media(media_dir / f"{video}_{audio}.flv", video, audio)
    published = framemd5_of(src)
    keys = keyframe_times(src)
    name = f"{video}_{audio}"
    pusher = push(src, server.rtmp_url(name))
    try:
        # Join late: the GOP cache holds the second that started at a keyframe.
        server.wait_live(name)
        time.sleep(1.5)
        group = server.group(name)
        assert group is not None
        rtmp, http, ws = play_all_three(server, name, pusher)
    finally:
        pusher.kill()
        finish(pusher)
    ws_played = framemd5_bytes(ws)
    for played in (rtmp, http, ws_played):
        assert_played_run(played, published, MIN_VIDEO)
        video_name = next(n for n in played if n in ("hevc", "av1", "vp9"))
        assert played[video_name][0][0] in keys, "a late joiner starts at a keyframe"
        assert played[video_name][0][0] > 0, "joined late, not at the first keyframe"
    # The WebSocket player's bytes: FLV header, the sequence headers before any
    # frame, and they decode cleanly from the first byte.
    assert ws[:3] == b"FLV"
    tags = FlvReader().feed(ws)
    packets = [AVPacket(t.tag_type, t.timestamp, t.payload) for t in tags]
    first_frame = next(i for i, p in enumerate(packets) if not p.is_sequence_header
                       and p.kind != 18)
    assert any(p.kind == VIDEO and p.is_sequence_header and p.header_key is None
               for p in packets[:first_frame])
    first_video = next(p for p in packets if p.kind == VIDEO and not p.is_sequence_header)
    assert first_video.is_keyframe
    assert decode_errors(ws, ffmpeg=FFMPEG) == ""
    # What the server tells of the stream: codec names in lal's style, size, rate.
    assert (group["video_codec"], group["audio_codec"]) == (LAL_NAMES[video], LAL_NAMES[audio])
    assert (group["video_width"], group["video_height"]) == (320, 240)
    log = server.log()
    assert f"stream live/{name} video: {LAL_NAMES[video]}" in log
    assert "320x240" in log.split(f"stream live/{name} video: ")[1].splitlines()[0]
    assert f"stream live/{name} audio: {LAL_NAMES[audio]}" in log
    assert "48000Hz 2ch" in log.split(f"stream live/{name} audio: ")[1].splitlines()[0]


def test_connect_negotiation_answered_and_ffmpeg_publishes_enhanced(
        server: Server, media_dir: Path) -> None:
    """ffmpeg sends fourCcList in connect; the reply names what the server takes and
    the HEVC that follows is enhanced RTMP (hvc1), played back as published."""
    src = make_media(media_dir / "hevc_aac.flv", "hevc", "aac")
    pusher = push(src, server.rtmp_url("negotiated"))
    try:
        server.wait_live("negotiated")
        assert "stream live/negotiated video: H265 Main 320x240" in server.log(), server.log()
        assert pusher.poll() is None, "ffmpeg accepted the connect reply and publishes"
    finally:
        pusher.kill()
        finish(pusher)


def test_multitrack_stream_round_trip(server: Server, media_dir: Path) -> None:
    """ffmpeg writes a second video (AV1) and audio (Opus) track as multitrack
    packets (track 1) beside HEVC and AAC on track 0; a late joiner gets every
    track's sequence header and all four tracks byte for byte."""
    need_encoders("libx265", "libsvtav1", "aac", "libopus")
    src = media_dir / "multi.flv"
    made_by([
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
        "-t", "6", "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-pix_fmt", "yuv420p",
        "-c:v:0", "libx265", "-preset:v:0", "ultrafast",
        "-x265-params", "log-level=error:keyint=25:min-keyint=25:scenecut=0:bframes=0",
        "-c:v:1", "libsvtav1", "-preset:v:1", "12", "-g", "25",
        "-c:a:0", "aac", "-c:a:1", "libopus", "-f", "flv"], src, timeout=300)
    published = framemd5_of(src)
    assert set(published) == {"hevc", "av1", "aac", "opus"}
    pusher = push(src, server.rtmp_url("multi"))
    try:
        server.wait_live("multi")
        time.sleep(1.5)
        rtmp, http, ws = play_all_three(server, "multi", pusher)
    finally:
        pusher.kill()
        finish(pusher)
    for played in (rtmp, http, framemd5_bytes(ws)):
        assert_played_run(played, published, MIN_VIDEO)
    packets = [AVPacket(t.tag_type, t.timestamp, t.payload) for t in FlvReader().feed(ws)]
    headers = {(p.kind, p.codec) for p in packets if p.is_sequence_header}
    assert {(9, "h265"), (9, "av1"), (8, "aac"), (8, "opus")} <= headers


AUDIO_ONLY = ["flac", "ac3", "eac3", "mp3"]


@pytest.mark.parametrize("audio", AUDIO_ONLY)
def test_enhanced_audio_codecs_round_trip(server: Server, media_dir: Path, audio: str) -> None:
    """FLAC, AC-3 and E-AC-3 (enhanced-RTMP FourCCs) and MP3 (legacy id) beside
    H.264: played back byte for byte, described with rate and channels."""
    src = make_media(media_dir / f"h264_{audio}.flv", "h264", audio)
    published = framemd5_of(src)
    name = f"h264_{audio}"
    pusher = push(src, server.rtmp_url(name))
    try:
        server.wait_live(name)
        time.sleep(1.5)
        rtmp = framemd5_pull(server.rtmp_url(name))
        finish(pusher)
        played = parse_framemd5(wait_pull(rtmp))
    finally:
        pusher.kill()
        finish(pusher)
    assert_played_run(played, published, MIN_VIDEO)
    assert wait_for(lambda: f"stream live/{name} audio: {audio.upper()} 48000Hz 2ch"
                    in server.log(), 5), server.log()


def test_lal_push_and_pull_carry_enhanced_rtmp_byte_for_byte(media_dir: Path,
                                                             tmp_path: Path) -> None:
    """The project's own client tools: ``lal pull`` waiting over RTMP and HTTP-FLV,
    ``lal push`` of an AV1+Opus file; both files hold every tag as published.
    The players wait while ``lal push`` starts (a Python process, slow to start
    on a busy machine): on a server of its own that waits 10 s for a publisher."""
    src = make_media(media_dir / "av1_opus.flv", "av1", "opus")
    lal = [sys.executable, "-m", "lal_twisted.tools.cli"]
    outs = [tmp_path / "rtmp.flv", tmp_path / "http.flv"]
    server = start_server(tmp_path, subscriber={"publisher_wait_timeout_ms": 10000})
    try:
        pullers = [subprocess.Popen([*lal, "pull", "-q", url, str(out), "--duration", "12"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for url, out in zip((server.rtmp_url("tools"), server.flv_url("tools")),
                                       outs, strict=True)]
        server.wait_players("tools", 2)
        assert server.log().count("live/tools started (waiting for publisher)") == 2, \
            server.log()
        done = subprocess.run([*lal, "push", "-q", str(src), server.rtmp_url("tools")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for proc in pullers:
            finish(proc)  # at the end of their 12 s
    finally:
        stop_server(server)
    assert_no_traceback(server)
    # A player starts at the first keyframe: only headers go before it.
    source, started = [], False
    for tag in FlvReader().feed(src.read_bytes()):
        packet = AVPacket(tag.tag_type, tag.timestamp, tag.payload)
        started = started or (packet.kind == VIDEO and packet.is_keyframe
                              and not packet.is_sequence_header)
        if tag.tag_type in (8, 9) and (started or packet.is_sequence_header):
            source.append((tag.tag_type, tag.timestamp, tag.payload))
    for out in outs:
        got = [(t.tag_type, t.timestamp, t.payload) for t in FlvReader().feed(out.read_bytes())
               if t.tag_type in (8, 9)]
        assert got == source, out.name
