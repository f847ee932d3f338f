"""End to end: HTTP-TS (live MPEG-TS over chunked HTTP) from the real server to
ffmpeg and raw sockets."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import FPS, Media, Server
from mediatools import decode_errors, finish, http_flv_bytes, probe, push, wait_for
from test_e2e_faults import stalled_socket
from tsparse import parse

from lal_twisted.media.ts import AUDIO_PID, PMT_PID, VIDEO_PID

# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


def ts_url(server: Server, name: str, app: str = "live") -> str:
    return f"http://127.0.0.1:{server.http_port}/{app}/{name}.ts"


def pull_ts(url: str, out: Path, seconds: float, timeout: float = 10.0
            ) -> subprocess.Popen[bytes]:
    """Record ``seconds`` of an HTTP-TS stream into ``out`` with ffmpeg (-c copy)."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout",
           str(int(timeout * 1e6)), "-i", url, "-map", "0", "-c", "copy", "-t", str(seconds),
           "-f", "mpegts", "-y", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_ffmpeg_plays_httpts_and_decodes_cleanly(server: Server, media: Media,
                                                 tmp_path: Path) -> None:
    publisher = push(media.long_av, server.rtmp_url("ts1"))
    try:
        server.wait_live("ts1")
        # Three players at once: raw bytes, a recording, and a live decode.
        out = tmp_path / "play.ts"
        recording = pull_ts(ts_url(server, "ts1"), out, 4.0)
        decoded: list[str] = []
        decoder = threading.Thread(target=lambda: decoded.append(
            decode_errors(ts_url(server, "ts1"), after_input=["-t", "3"], timeout=60)))
        decoder.start()
        headers, body = http_flv_bytes(ts_url(server, "ts1"), 1.0)
        code, err = finish(recording)
        assert code == 0, err
        decoder.join(60)
        live = decoded[0]
    finally:
        publisher.kill()
        finish(publisher)
    assert headers["content-type"] == "video/mp2t"
    assert headers["access-control-allow-origin"] == "*"
    assert headers.get("transfer-encoding") == "chunked"
    info = parse(body[:len(body) // 188 * 188])
    assert info.streams == {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}
    assert info.cc_errors == []
    assert live == "", live  # decodes live, silently
    played = probe(out)
    assert played.codecs == {"video": "h264", "audio": "aac"}
    assert (played.width, played.height) == (320, 240)
    assert played.decode_errors == ""
    assert played.first_video_key
    assert abs(played.video_frames - 4 * FPS) <= 0.1 * 4 * FPS, played
    assert played.audio_frames > 0
    log = server.log()
    assert "httpts session TSSUB" in log and "Traceback" not in log


def test_late_joiner_gets_pat_pmt_then_a_keyframe(server: Server, media: Media,
                                                  tmp_path: Path) -> None:
    publisher = push(media.long_av, server.rtmp_url("late"))
    try:
        time.sleep(2.5)  # well into the stream: the GOP cache holds a GOP from a keyframe
        started = time.monotonic()
        _, body = http_flv_bytes(ts_url(server, "late"), 0.3)
        first_bytes = time.monotonic() - started
        out = tmp_path / "late.ts"
        code, err = finish(pull_ts(ts_url(server, "late"), out, 2.0))
        assert code == 0, err
    finally:
        publisher.kill()
        finish(publisher)
    data = body[:len(body) // 188 * 188]
    pids = [((data[i + 1] & 0x1F) << 8) | data[i + 2] for i in range(0, 2 * 188, 188)]
    assert pids == [0, PMT_PID]  # PAT, then PMT, before any media
    info = parse(data)
    first_video = next(p for p in info.pes if p.pid == VIDEO_PID)
    assert first_video.random_access  # the first picture is a keyframe...
    assert first_video.index <= min(p.index for p in info.pes)  # ...and nothing before it
    assert first_bytes < 2.0  # the cached GOP, at once
    played = probe(out)
    assert played.first_video_key and played.decode_errors == ""


def test_pat_pmt_before_every_keyframe_so_a_mid_stream_join_plays(server: Server,
                                                                   media: Media,
                                                                   tmp_path: Path) -> None:
    """Every video keyframe comes right after a PAT and a PMT: a reader that starts
    anywhere in the stream (a player joining through a proxy, resyncing after a
    loss) finds the program at the next keyframe and decodes from there."""
    publisher = push(media.long_av, server.rtmp_url("resync"))
    try:
        server.wait_live("resync")
        _, body = http_flv_bytes(ts_url(server, "resync"), 4.5)
    finally:
        publisher.kill()
        finish(publisher)
    data = body[:len(body) // 188 * 188]
    info = parse(data)
    assert info.cc_errors == []  # the PSI counters run on from keyframe to keyframe
    keyframes = [p for p in info.pes if p.pid == VIDEO_PID and p.random_access]
    assert len(keyframes) >= 4  # one a second
    for key in keyframes:
        pids = [((data[i + 1] & 0x1F) << 8) | data[i + 2]
                for i in range(188 * (key.index - 2), 188 * key.index, 188)]
        assert pids == [0, PMT_PID], key.index
    # A reader that starts in the middle of the second GOP (a player joining
    # through a relay, or resyncing after a loss) learns the program at the
    # next keyframe, and its first picture is that keyframe.
    cut = (keyframes[1].index + keyframes[2].index) // 2
    tail = parse(data[188 * cut:])
    assert tail.streams == {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}
    assert tail.pes[0].pid == VIDEO_PID and tail.pes[0].random_access
    assert tail.pes[0].index == keyframes[2].index - cut
    # ffmpeg plays from that PAT on: both tracks, a keyframe first, no error.
    joined = tmp_path / "joined.ts"
    joined.write_bytes(data[188 * (keyframes[2].index - 2):])
    played = probe(joined)
    assert played.codecs == {"video": "h264", "audio": "aac"}
    assert played.first_video_key and played.decode_errors == ""
    frames_after = sum(1 for p in info.pes if p.pid == VIDEO_PID
                       and p.index >= keyframes[2].index)
    assert played.video_frames >= frames_after - 1  # the last PES may be cut short


def test_stalled_httpts_player_is_dropped_without_harming_another(server: Server, media: Media,
                                                                  tmp_path: Path) -> None:
    # ~10 Mbit/s, so a player that stops reading fills the socket buffers within seconds.
    publisher = push(media.noisy, server.rtmp_url("slowts"))
    try:
        server.wait_live("slowts")
        stall = stalled_socket(server.http_port)
        stall.sendall(b"GET /live/slowts.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        out = tmp_path / "good.ts"
        code, err = finish(pull_ts(ts_url(server, "slowts"), out, 8.0))
        assert code == 0, err
        # the stalled player was cut off (stall timeout is 3 s in the test config)
        assert wait_for(lambda: "player stalled" in server.log(), timeout=10), server.log()
        assert publisher.poll() is None, "the publisher must not be affected"
    finally:
        publisher.kill()
        finish(publisher)
        stall.close()
    stalled = [line for line in server.log().splitlines() if "player stalled" in line]
    assert len(stalled) == 1 and "httpts session TSSUB" in stalled[0], stalled
    info = probe(out)
    assert abs(info.video_frames - 8 * FPS) <= 0.1 * 8 * FPS, info
    assert info.decode_errors == ""


def test_unknown_path_and_head(server: Server) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(ts_url(server, "nobody"), method="HEAD")
    try:  # what a GET would get, at once: nobody publishes it (tests/test_http_head.py)
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404 and e.headers["Access-Control-Allow-Origin"] == "*"
    else:
        raise AssertionError("expected 404")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/.ts", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404 and b"APP/STREAM.ts" in e.read()
    else:
        raise AssertionError("expected 404")


def test_backed_up_httpts_player_drops_to_a_keyframe_and_decodes_on(tmp_path: Path,
                                                                     media: Media) -> None:
    import http.client
    import socket

    from conftest import start_server, stop_server

    # A stall timeout longer than the pause below: the player is dropped from, not closed.
    srv = start_server(tmp_path, subscriber={"stall_timeout_ms": 10000,
                                             "max_backlog_bytes": 262144})
    publisher = push(media.noisy, srv.rtmp_url("backed"))
    try:
        srv.wait_live("backed")
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port)
        conn.sock = stalled_socket(srv.http_port)
        conn.request("GET", "/live/backed.ts")
        response = conn.getresponse()
        body = bytearray()
        for pause in (0.0, 3.0, 0.0):
            time.sleep(pause)
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                body += response.read1(65536)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(srv)
    assert "Traceback" not in srv.log()
    data = bytes(body[:len(body) // 188 * 188])
    info = parse(data)
    # Cut before the last picture, which the reader stopped inside of.
    last = max(p.index for p in info.pes if p.pid == VIDEO_PID)
    out = tmp_path / "backed.ts"
    out.write_bytes(data[:last * 188])
    frames = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "packet=dts_time,flags", "-of", "csv=p=0", str(out)],
        capture_output=True, text=True, check=True, timeout=60).stdout.split()
    times = [float(line.split(",")[0]) for line in frames]
    gaps = [i for i in range(1, len(times)) if times[i] - times[i - 1] > 0.5]
    assert gaps, "the player was never dropped from (the pause did not back it up)"
    for i in gaps:
        assert "K" in frames[i].split(",")[1], frames[i - 1:i + 1]  # it resumed at a keyframe
    errors = decode_errors(out, after_input=["-map", "0:v"], timeout=60)
    assert errors == "", errors
