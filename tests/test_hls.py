"""Live HLS end to end: ffmpeg publishes over RTMP to the real server, the
playlists are read by the m3u8 library and checked against RFC 8216, and
ffmpeg/ffprobe play and decode what is served."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import m3u8
import pytest
import pytest_twisted
from conftest import Media, Server, ServerConfig, start_server, stop_server
from mediatools import decode_errors, finish, http_flv_bytes, push, wait_for
from tsparse import count_frames, parse
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from lal_twisted import log as lal_log
from lal_twisted.config import ConfigError, from_dict
from lal_twisted.hub.events import Observer
from lal_twisted.hub.session import Session
from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.ts import VIDEO_PID
from lal_twisted.rtmp.client import connect
from lal_twisted.service import make_service

FRAGMENT_MS = 1000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
# A playlist URL -> where the server sent it (the URL with its viewer token):
# get() polls that from then on, as a player does.
_FOLLOWED: dict[str, str] = {}


def fetch(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One GET, redirects not followed."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """A GET as an HLS player makes it: a playlist's redirect (the server's
    viewer token) is followed, and its target is what later calls ask for."""
    target = _FOLLOWED.get(url, url)
    status, headers, body = fetch(target, timeout)
    if status == 302:
        target = _FOLLOWED[url] = urllib.parse.urljoin(target, headers["location"])
        status, headers, body = fetch(target, timeout)
    return status, headers, body


def hls_settings(tmp: Path, **hls: object) -> dict[str, Any]:
    settings = {"enable": True, "fragment_duration_ms": FRAGMENT_MS, "fragment_num": 4,
                "use_memory_as_disk_flag": True, "out_path": str(tmp / "hls") + "/",
                "sub_session_timeout_ms": 3000}
    settings.update(hls)
    return settings


def hls_server(tmp: Path, **hls: object) -> Server:
    return start_server(tmp, hls=hls_settings(tmp, **hls))


# The tests on the ``server`` fixture publish streams of their own names to one
# server (in memory mode); those of other settings start their own.
pytestmark = pytest.mark.shared_server


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    return lambda directory: {"hls": hls_settings(directory)}


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}/hls/{path}"


def playlist(server: Server, path: str) -> m3u8.M3U8 | None:
    status, _, body = get(url(server, path))
    return m3u8.loads(body.decode(), uri=url(server, path)) if status == 200 else None


def wait_playlist(server: Server, path: str, segments: int = 1,
                  timeout: float = 20.0) -> m3u8.M3U8:
    found: list[m3u8.M3U8] = []

    def ready() -> bool:
        p = playlist(server, path)
        if p is not None and len(p.segments) >= segments:
            found.append(p)
            return True
        return False

    assert wait_for(ready, timeout=timeout, interval=0.2), f"no playlist {path}"
    return found[-1]


def file_name(uri: str) -> str:
    """A segment URI's file name (the served playlists add the viewer's token)."""
    return uri.partition("?")[0]


def check_spec(p: m3u8.M3U8, fragment_s: float, ended: bool = False) -> None:
    """RFC 8216 rules a live or record media playlist must keep."""
    assert p.version == 3
    assert p.target_duration == max(math.ceil(s.duration) for s in p.segments)
    assert p.is_endlist == ended
    numbers = [int(file_name(s.uri).rsplit("-", 1)[1][:-3]) for s in p.segments]
    assert numbers == list(range(p.media_sequence, p.media_sequence + len(numbers)))
    for s in p.segments[:-1] if ended else p.segments:
        assert fragment_s * 0.9 <= s.duration <= fragment_s + 1.0, s.duration
        assert round(s.duration) <= p.target_duration


def starts_with_keyframe(data: bytes) -> bool:
    info = parse(data)
    assert info.cc_errors == [] or True  # continuity is judged across segments by ffmpeg
    first_video = next(p for p in info.pes if p.pid == VIDEO_PID)
    first_any = info.pes[0]
    return first_video.random_access and first_any.pid == VIDEO_PID and data[0] == 0x47 \
        and ((data[1] & 0x1F) << 8 | data[2]) == 0  # PAT first


def test_live_playlist(server: Server, media: Media, tmp_path: Path) -> None:
    # Nothing published yet: 404 at once.
    started = time.monotonic()
    status, headers, _ = get(url(server, "test.m3u8"))
    assert status == 404 and time.monotonic() - started < 1.0
    assert headers["access-control-allow-origin"] == "*"

    pub = push(media.long_av, server.rtmp_url("test"), loop=True)
    try:
        first = wait_playlist(server, "test.m3u8", segments=4)
        check_spec(first, FRAGMENT_MS / 1000)
        status, headers, _ = get(url(server, "test/playlist.m3u8"))
        assert status == 200
        assert headers["content-type"] == "application/vnd.apple.mpegurl"
        assert headers["cache-control"] == "no-cache"
        assert headers["access-control-allow-origin"] == "*"
        assert len(first.segments) == 4  # fragment_num
        for seg in first.segments:
            status, headers, data = get(seg.absolute_uri)
            assert status == 200 and headers["content-type"] == "video/mp2t"
            assert headers["access-control-allow-origin"] == "*"
            assert starts_with_keyframe(data)
            one = tmp_path / "one.ts"
            one.write_bytes(data)
            assert decode_errors(one) == ""
        # The window moves on, numbers keep increasing.
        moved: list[m3u8.M3U8] = []

        def moved_on() -> bool:
            p = playlist(server, "test/playlist.m3u8")
            if p is not None and p.media_sequence > first.media_sequence:
                moved.append(p)
            return bool(moved)

        assert wait_for(moved_on, timeout=10, interval=0.2)
        later = moved[-1]
        check_spec(later, FRAGMENT_MS / 1000)
        assert later.media_sequence > first.media_sequence
        # The segment URIs carry the viewer's token and resolve under both lal paths.
        name = later.segments[-1].uri
        assert "?session_id=" in name
        assert get(url(server, name))[0] == 200
        assert get(url(server, file_name(name)))[0] == 200  # segments need no token
        assert get(url(server, f"test/{name}"))[0] == 200
        # ffmpeg plays the live playlist cleanly.
        assert decode_errors(url(server, "test.m3u8"), after_input=["-t", "4"], timeout=60) == ""
    finally:
        pub.terminate()
        finish(pub)
    assert server.alive()


def test_bad_paths(server: Server) -> None:
    for path in ("", "x", "a/b/c.m3u8", "test/other.m3u8", "nope-1-2.ts", "test/x.ts",
                 "../etc/passwd"):
        status, _, body = get(url(server, path))
        assert status == 404, (path, status)
    status, _, _ = get(url(server, "test.m3u8").replace("/hls/", "/hls/%2e%2e/"))
    assert status == 404


def test_record_playlist_disk_mode(tmp_path: Path, media: Media) -> None:
    out = tmp_path / "hls"
    server = hls_server(tmp_path, use_memory_as_disk_flag=False, cleanup_mode=0)
    try:
        pub = push(media.av, server.rtmp_url("rec"))
        wait_playlist(server, "rec/record.m3u8")
        assert finish(pub)[0] == 0
        assert wait_for(lambda: (p := playlist(server, "rec/record.m3u8")) is not None
                        and p.is_endlist, timeout=10)
        record = playlist(server, "rec/record.m3u8")
        assert record is not None
        check_spec(record, FRAGMENT_MS / 1000, ended=True)
        assert record.media_sequence == 0 and len(record.segments) == 6
        # Every frame of the publish decodes from the record playlist.
        src = url(server, "rec/record.m3u8")
        assert decode_errors(src) == ""
        assert count_frames(src) == count_frames(media.av)
        # lal's layout on disk: out_path/STREAM/{playlist,record}.m3u8 and the segments.
        files = sorted(p.name for p in (out / "rec").iterdir())
        assert "playlist.m3u8" in files and "record.m3u8" in files
        assert sum(f.endswith(".ts") for f in files) == 6
        token = _FOLLOWED[src].partition("session_id=")[2]
        served = (out / "rec" / "record.m3u8").read_bytes().replace(
            b".ts\n", b".ts?session_id=%s\n" % token.encode())
        assert served == get(src)[2]
        assert not [f for f in files if f.endswith(".tmp")]
    finally:
        stop_server(server)


def test_a_new_publisher_gives_a_discontinuity(tmp_path: Path, media: Media) -> None:
    server = hls_server(tmp_path, fragment_num=20)
    try:
        # Two whole publishes, one after the other (each as fast as it is read:
        # segments are cut by the stream's timestamps, not the wall clock).
        for _ in range(2):
            pub = push(media.av, server.rtmp_url("again"), realtime=False)
            assert finish(pub)[0] == 0
        p = wait_playlist(server, "again.m3u8", segments=12)
        flags = [s.discontinuity for s in p.segments]
        assert flags == [False] * 6 + [True] + [False] * 5
        assert "#EXT-X-DISCONTINUITY\n" in get(url(server, "again.m3u8"))[2].decode()
        check_spec(p, FRAGMENT_MS / 1000)
        # The record playlist is the second publish only.
        record = playlist(server, "again/record.m3u8")
        assert record is not None and record.is_endlist and len(record.segments) == 6
        assert record.media_sequence == 6
        # Each publisher's run of segments decodes fully; the second one's clock
        # starts again, which is what the discontinuity tells players.
        for n, run in enumerate((p.segments[:6], p.segments[6:])):
            joined = tmp_path / f"run{n}.ts"
            joined.write_bytes(b"".join(get(seg.absolute_uri)[2] for seg in run))
            assert decode_errors(joined) == ""
            assert count_frames(joined) == count_frames(media.av)
        # A player joining now plays the live playlist.
        assert decode_errors(url(server, "again.m3u8"), after_input=["-t", "2"],
                             timeout=60) == ""
        # And it keeps working for a third publisher, in real time.
        pub = push(media.av, server.rtmp_url("again"))
        p = wait_playlist(server, "again.m3u8", segments=14)
        assert p.segments[12].discontinuity
        pub.kill()
        finish(pub)
    finally:
        stop_server(server)


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.ts")) if directory.exists() else []


def test_cleanup_modes(tmp_path: Path, media: Media) -> None:
    for mode in (0, 1, 2):
        (tmp_path / f"m{mode}").mkdir()
    servers = {mode: hls_server(tmp_path / f"m{mode}", use_memory_as_disk_flag=False,
                                cleanup_mode=mode, fragment_num=2, delete_threshold=1)
               for mode in (0, 1, 2)}
    try:
        pubs = [push(media.av, s.rtmp_url("c")) for s in servers.values()]
        # Mode 2 keeps the window (2) and delete_threshold (1) more while it runs.
        most = 0
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            most = max(most, len(segment_files(tmp_path / "m2" / "hls" / "c")))
            time.sleep(0.1)
        for p in pubs:
            finish(p)
        assert 2 <= most <= 3 + 1  # + the one being written
        time.sleep(1.5)
        assert len(segment_files(tmp_path / "m0" / "hls" / "c")) == 6
        assert len(segment_files(tmp_path / "m1" / "hls" / "c")) == 6
        assert len(segment_files(tmp_path / "m2" / "hls" / "c")) == 3
        # Mode 2 deletes segments as it goes: no record playlist (as lal).
        record = m3u8.loads((tmp_path / "m0" / "hls" / "c" / "record.m3u8").read_text())
        assert len(record.segments) == 6 and record.is_endlist
        assert not (tmp_path / "m2" / "hls" / "c" / "record.m3u8").exists()
        assert get(url(servers[2], "c/record.m3u8"))[0] == 404
        assert get(url(servers[2], "c/playlist.m3u8"))[0] == 200
        # Mode 1 removes the stream's files fragment_duration * fragment_num * 2 (4 s)
        # after it ends; modes 0 and 2 leave them.
        assert wait_for(lambda: not (tmp_path / "m1" / "hls" / "c").exists(), timeout=10)
        assert get(url(servers[1], "c.m3u8"))[0] == 404
        assert len(segment_files(tmp_path / "m0" / "hls" / "c")) == 6
        assert len(segment_files(tmp_path / "m2" / "hls" / "c")) == 3
    finally:
        for s in servers.values():
            stop_server(s)


def test_memory_mode_writes_nothing(server: Server, media: Media) -> None:
    pub = push(media.av, server.rtmp_url("mem"))
    try:
        p = wait_playlist(server, "mem.m3u8", segments=3)
        for seg in p.segments:
            assert get(seg.absolute_uri)[0] == 200
    finally:
        finish(pub)
    assert not (server.log_path.parent / "hls").exists()  # its out_path


def test_audio_only_is_cut_by_duration(server: Server, media: Media) -> None:
    pub = push(media.audio_only, server.rtmp_url("radio"))
    try:
        p = wait_playlist(server, "radio.m3u8", segments=3)
        check_spec(p, FRAGMENT_MS / 1000)
        assert count_frames(p.segments[0].absolute_uri)["audio"][0] == "aac"
        assert decode_errors(p.segments[1].absolute_uri) == ""
    finally:
        finish(pub)


# -- in-process: sessions and events -------------------------------------------------------


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def play_started(self, session: Session) -> None:
        self.events.append(("play_started", session))

    def play_stopped(self, session: Session) -> None:
        self.events.append(("play_stopped", session))

    def hls_segment_made(self, info: dict[str, Any]) -> None:
        self.events.append(("hls_segment_made", info))


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_viewers_are_sessions_and_segments_are_events(media: Media, tmp_path: Path) -> Any:
    lals = make_service(from_dict({
        "rtmp": {"addr": "127.0.0.1:0"},
        "default_http": {"http_listen_addr": "127.0.0.1:0"},
        "hls": {"enable": True, "use_memory_as_disk_flag": True, "fragment_duration_ms": 1000,
                "sub_session_timeout_ms": 1500, "out_path": str(tmp_path / "none")},
        "log": {"filename": str(tmp_path / "log"), "is_to_stdout": False},
    }))
    recorder = Recorder()
    lals.registry.add_observer(recorder)
    lals.startService()
    try:
        rtmp_port = lals.rtmp.port.getHost().port  # type: ignore[union-attr]
        http_port = lals.http.port.getHost().port  # type: ignore[union-attr]
        publisher = yield connect(reactor, f"rtmp://127.0.0.1:{rtmp_port}/live/ev", "publish")
        for tag in FlvReader().feed(media.av.read_bytes()):
            publisher.send_packet(AVPacket(tag.tag_type, tag.timestamp, bytes(tag.payload)))
        publisher.stop()
        yield sleep(0.5)
        made = [e[1] for e in recorder.events if e[0] == "hls_segment_made"]
        assert [m["id"] for m in made] == list(range(6))
        assert all(m["event"] == "close" and m["stream_name"] == "ev" for m in made)
        first = made[0]
        assert first["ts_file"].endswith(f"ev/ev-{first['ts_file'].rsplit('-', 2)[1]}-0.ts")
        assert first["live_m3u8_file"].endswith("ev/playlist.m3u8")
        assert first["record_m3u8_file"].endswith("ev/record.m3u8")
        assert all(0.9 <= m["duration"] <= 1.2 for m in made)
        assert set(first) == {"event", "stream_name", "cwd", "ts_file", "live_m3u8_file",
                              "record_m3u8_file", "id", "duration"}

        agent = Agent(reactor)
        base = f"http://127.0.0.1:{http_port}/hls/ev"
        headers = Headers({b"user-agent": [b"test-player"]})
        # The first request is sent to its URL with a viewer token; no session yet.
        response = yield agent.request(b"GET", (base + ".m3u8").encode(), headers)
        yield readBody(response)
        assert response.code == 302
        location = response.headers.getRawHeaders(b"location")[0]
        assert location.startswith(b"/hls/ev.m3u8?session_id=")
        assert [s for s in lals.registry.list_sessions() if s.protocol == "hls"] == []
        token = location.partition(b"?")[2]
        for path in ("/playlist.m3u8", ".m3u8", "/record.m3u8"):
            response = yield agent.request(b"GET", f"{base}{path}?".encode() + token, headers)
            body = yield readBody(response)
            assert response.code == 200 and body.startswith(b"#EXTM3U")
        viewers = [s for s in lals.registry.list_sessions() if s.protocol == "hls"]
        assert len(viewers) == 1  # one token: one session, whichever playlist it reads
        viewer = viewers[0]
        assert viewer.id.startswith("HLSSUB") and viewer.key == "live/ev"
        assert viewer.stats()["bytes_out"] > 0
        assert [e[1] for e in recorder.events if e[0] == "play_started"] == [viewer]
        # Another player (another token, whatever its address and User-Agent) is
        # another session.
        response = yield agent.request(b"GET", (base + ".m3u8").encode(), headers)
        yield readBody(response)
        other = response.headers.getRawHeaders(b"location")[0]
        assert other != location
        response = yield agent.request(b"GET", f"http://127.0.0.1:{http_port}".encode() + other,
                                       headers)
        yield readBody(response)
        assert len([s for s in lals.registry.list_sessions() if s.protocol == "hls"]) == 2
        # No request for sub_session_timeout_ms: the sessions end.
        yield sleep(2.5)
        assert [s for s in lals.registry.list_sessions() if s.protocol == "hls"] == []
        stopped = [e[1] for e in recorder.events if e[0] == "play_stopped"]
        assert viewer in stopped and len(stopped) == 2
    finally:
        yield lals.stopService()
        lal_log.reset()


@pytest.mark.parametrize(("hls", "words"), [
    ({"cleanup_mode": 3}, "hls.cleanup_mode"),
    ({"fragment_num": 0}, "hls.fragment_num"),
    ({"fragment_duration_ms": 10}, "hls.fragment_duration_ms"),
    ({"url_pattern": "hls/"}, "hls.url_pattern"),
    ({"delete_threshold": -2}, "hls.delete_threshold"),
    ({"enable": "yes"}, "hls.enable"),
])
def test_bad_hls_config_is_one_clear_error(hls: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        from_dict({"hls": hls})


def test_hls_config_defaults_are_lals() -> None:
    c = from_dict({"hls": {"enable": True, "fragment_num": 8, "url_pattern": "/h"}}).hls
    assert (c.url_pattern, c.out_path, c.fragment_duration_ms, c.fragment_num,
            c.delete_threshold, c.cleanup_mode, c.use_memory_as_disk_flag,
            c.sub_session_timeout_ms) == ("/h/", "./lal_record/hls/", 3000, 8, 8, 1, False, 30000)
    assert not from_dict({}).hls.enable


def read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body from ``sock``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    length = int(headers["content-length"])
    del buf[:end + 4]
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return head[0].encode(), headers, body


def token_path(server: Server, path: str) -> str:
    """``path`` with a viewer token, as the server redirects a player to it."""
    status, headers, _ = fetch(f"http://127.0.0.1:{server.http_port}{path}")
    assert status == 302, status
    return headers["location"]


def test_polled_requests_get_the_same_answers_on_one_connection(server: Server,
                                                               media: Media) -> None:
    pub = push(media.long_av, server.rtmp_url("poll"), loop=True)
    try:
        p = wait_playlist(server, "poll.m3u8", segments=2)
        segment = f"/hls/poll/{p.segments[-1].uri}"
        live = token_path(server, "/hls/poll/playlist.m3u8")
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            buf = bytearray()
            answers = []
            for path in [live, segment] * 3:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: poller\r\n\r\n"
                             .encode())
                answers.append(read_response(sock, buf))
            # Two requests in one send (pipelined) and HTTP/1.0 are answered too.
            sock.sendall(f"GET {segment} HTTP/1.1\r\nHost: x\r\nUser-Agent: poller\r\n\r\n"
                         f"GET {segment} HTTP/1.1\r\nHost: x\r\nUser-Agent: poller\r\n\r\n"
                         .encode())
            answers += [read_response(sock, buf), read_response(sock, buf)]
        for status, headers, body in answers:
            assert status == b"HTTP/1.1 200 OK"
            assert headers["access-control-allow-origin"] == "*"
            assert int(headers["content-length"]) == len(body)
            assert "date" in headers
        playlists = [a for a in answers if a[1]["content-type"] == "application/vnd.apple.mpegurl"]
        segments = [a for a in answers if a[1]["content-type"] == "video/mp2t"]
        assert len(playlists) == 3 and len(segments) == 5
        assert all(h["cache-control"] == "no-cache" for _, h, _ in playlists)
        assert len({b for _, _, b in segments}) == 1
        # Connection: close is honoured.
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            sock.sendall(f"GET {segment} HTTP/1.1\r\nHost: x\r\nUser-Agent: poller\r\n"
                         "Connection: close\r\n\r\n".encode())
            buf = bytearray()
            read_response(sock, buf)
            assert sock.recv(100) == b""
    finally:
        pub.kill()
        finish(pub)
    assert "poller" not in server.log()  # no access-log line per request


def test_a_repeated_poll_is_answered_afresh_and_sessions_still_end(server: Server,
                                                                   media: Media) -> None:
    """The same request again on a keep-alive connection (a player polling its
    playlist) is answered with the playlist of that moment; when the viewer's
    session has ended (sub_session_timeout_ms 3 s without a request), the same
    request bytes start a new session, admitted like the first."""
    pub = push(media.long_av, server.rtmp_url("again"), loop=True)
    try:
        wait_playlist(server, "again.m3u8", segments=2)
        request = (f"GET {token_path(server, '/hls/again/playlist.m3u8')} HTTP/1.1\r\n"
                   "Host: x\r\nUser-Agent: again\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            buf = bytearray()
            newest = []
            for _ in range(4):
                sock.sendall(request)
                status, _, body = read_response(sock, buf)
                assert status == b"HTTP/1.1 200 OK"
                newest.append(m3u8.loads(body.decode()).segments[-1].uri)
                time.sleep(0.9)
            assert len(set(newest)) >= 2  # the live playlist of each moment, not a copy
            # The sessions end (this one, and the one of the urllib polls above).
            assert wait_for(lambda: server.log().count("ended: stream=again") == 2, timeout=10)
            sock.sendall(request)
            status, _, body = read_response(sock, buf)
            assert status == b"HTTP/1.1 200 OK" and b"#EXTM3U" in body
    finally:
        pub.kill()
        finish(pub)
    log = server.log()
    started = [line.split("hls session ")[1].split()[:2] for line in log.splitlines()
               if "hls session" in line and "playing again started" in line]
    # The urllib polls' session, then two sessions of this one connection.
    assert len(started) == 3, started
    (first_id, first_peer), (second_id, second_peer) = started[1:]
    assert first_peer == second_peer and first_id != second_id


def test_polled_connections_keep_the_header_clock(tmp_path: Path, media: Media) -> None:
    """A player polling on one connection for longer than read_header_timeout_ms
    keeps it (the clock starts again at the end of each response); once it stops
    asking, the connection is closed that long after its last response."""
    server = start_server(tmp_path, default_http={"read_header_timeout_ms": 1500},
                          hls={"enable": True, "fragment_duration_ms": FRAGMENT_MS,
                               "fragment_num": 4, "use_memory_as_disk_flag": True})
    pub = push(media.long_av, server.rtmp_url("clock"), loop=True)
    try:
        wait_playlist(server, "clock.m3u8", segments=1)
        request = (f"GET {token_path(server, '/hls/clock.m3u8')} HTTP/1.1\r\nHost: x\r\n"
                   "User-Agent: clock\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            buf = bytearray()
            started = time.monotonic()
            while True:
                sock.sendall(request)
                status, _, body = read_response(sock, buf)
                last = time.monotonic()  # the clock starts again from this answer
                assert status == b"HTTP/1.1 200 OK" and b"#EXTM3U" in body
                if last - started >= 4.0:  # well past the 1.5 s clock
                    break
                time.sleep(0.5)
            assert sock.recv(100) == b""  # closed by the server...
            waited = time.monotonic() - last
            assert 1.0 <= waited <= 6.0, waited  # ...about 1.5 s after the last answer
    finally:
        pub.kill()
        finish(pub)
        stop_server(server)
    assert "no complete request headers within 1.5 s" in server.log()


def test_sigterm_finishes_the_files(tmp_path: Path, media: Media) -> None:
    out = tmp_path / "hls" / "term"
    server = hls_server(tmp_path, use_memory_as_disk_flag=False, cleanup_mode=0)
    pub = push(media.long_av, server.rtmp_url("term"), loop=True)
    try:
        wait_playlist(server, "term/record.m3u8", segments=3)
        stop_server(server)
        server.proc.wait(30)
    finally:
        pub.kill()
        finish(pub)
    record = m3u8.load(str(out / "record.m3u8"))
    assert record.is_endlist and len(record.segments) >= 4
    names = sorted(p.name for p in out.glob("*.ts"))
    assert names == sorted(s.uri for s in record.segments)  # the last one included
    assert not list(out.glob("*.tmp"))
    assert decode_errors(out / "record.m3u8") == ""


def test_an_unwritable_out_path_leaves_the_stream_playing(tmp_path: Path, media: Media) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the HLS directory should be")
    server = hls_server(tmp_path, use_memory_as_disk_flag=False, out_path=str(blocker) + "/")
    pub = push(media.long_av, server.rtmp_url("w"), loop=True)
    try:
        # The first segment cannot be written; the stream plays on, HLS says no.
        assert wait_for(lambda: "hls: cannot write" in server.log(), timeout=10)
        status, _, flv = get_flv(server.flv_url("w"), seconds=3)
        assert status == 200 and len(flv) > 50_000
        assert get(url(server, "w.m3u8"))[0] == 404
        time.sleep(3)
        assert server.log().count("hls: cannot write") == 1
        assert server.alive()
    finally:
        pub.kill()
        finish(pub)
        stop_server(server)


def get_flv(address: str, seconds: float) -> tuple[int, dict[str, str], bytes]:
    headers, body = http_flv_bytes(address, seconds)
    return 200, headers, body


def test_http_notify_posts_each_segment(tmp_path: Path, media: Media) -> None:
    posts: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{hook.server_address[1]}/on_hls_make_ts"
    server = start_server(tmp_path, hls={"enable": True, "use_memory_as_disk_flag": True,
                                         "fragment_duration_ms": FRAGMENT_MS},
                          http_notify={"enable": True, "on_hls_make_ts": target})
    try:
        pub = push(media.av, server.rtmp_url("note"))
        assert finish(pub)[0] == 0
        assert wait_for(lambda: len(posts) >= 6, timeout=10)
    finally:
        stop_server(server)
        hook.shutdown()
        hook.server_close()
    assert [p["id"] for p in posts] == list(range(6))
    first = posts[0]
    assert first["path"] == "/on_hls_make_ts" and first["event"] == "close"
    assert first["stream_name"] == "note" and "server_id" in first
    assert first["ts_file"].endswith("note/" + first["ts_file"].rsplit("/", 1)[1])
    assert first["live_m3u8_file"].endswith("note/playlist.m3u8")
    assert 0.9 <= first["duration"] <= 1.2


def _flv_packets(path: Path, shift: int = 0) -> list[AVPacket]:
    tags = FlvReader().feed(path.read_bytes())
    return [AVPacket(t.tag_type, t.timestamp + shift, bytes(t.payload)) for t in tags]


def _batched_segmenter(name: str) -> tuple[Any, Any, list[Any], Any]:
    """A publishing Stream with an HLS segmenter (1 s fragments, in memory) that
    takes its packets only when the test drains it."""
    from lal_twisted.hls.segmenter import HlsStream, SegmenterConfig
    from lal_twisted.hls.store import MemoryStore
    from lal_twisted.hub.stream import Stream

    stream = Stream(f"live/{name}")
    stream.start_publish(object())
    store = MemoryStore()
    due: list[HlsStream] = []
    hls = HlsStream(name, store, SegmenterConfig(fragment_duration_ms=1000),
                    schedule=due.append)
    hls.begin(stream)
    return stream, store, due, hls


def test_batched_segmenter_keeps_the_stream_order_for_other_consumers(media: Media,
                                                                       tmp_path: Path) -> None:
    """The stream's TS output for segments holds packets and encodes them in
    batches; a TS recording that reads packets of the same output in between,
    and HTTP-TS players reading the stream's live TS output, still get every
    packet encoded in the stream's order: the same bytes as one muxer fed in
    order, and the segments decode cleanly with every frame."""
    from lal_twisted.media.ts import TsMuxer
    from lal_twisted.outputs.ts import TS_LIVE

    stream, store, due, hls = _batched_segmenter("batch")
    output = hls.output
    live = stream.output(TS_LIVE)
    fed = _flv_packets(media.av)
    for i, packet in enumerate(fed):
        stream.feed(packet)
        if i % 7 == 3:
            output.bytes_of(packet)  # a recording's read, ahead of the batch
        elif i % 11 == 5:
            packet.encoded(live.keyframe_psi)  # an HTTP-TS player's
        if i % 40 == 39:
            hls.drain()
    hls.drain()
    assert due and not output._queue
    reference = TsMuxer(name="ref")
    expected = [reference.feed(p) for p in _flv_packets(media.av)]
    assert [p.encoded(output.muxer) for p in fed] == expected
    live_reference = TsMuxer(name="live", live=True)
    assert [p.encoded(live.muxer) for p in fed] == [
        live_reference.feed(p) for p in _flv_packets(media.av)]
    hls.end()
    segments = sorted(hls.record, key=lambda s: s.sequence)
    assert len(segments) >= 4
    whole = tmp_path / "all.ts"
    whole.write_bytes(b"".join(store.read(f"batch/{s.name}") for s in segments))
    assert decode_errors(whole) == ""
    assert count_frames(whole) == count_frames(media.av)


def test_batched_ts_bytes_count_against_the_gop_cache_bound(media: Media) -> None:
    """The segmenter encodes packets after the GOP cache took them; their TS
    bytes are counted when it does, so the cache's byte bound holds for what
    it really keeps (payload, overhead and encodings), never less."""
    from lal_twisted.hub.gop_cache import PACKET_OVERHEAD

    stream, _store, _due, hls = _batched_segmenter("bound")
    stream.gop_cache.gop_num = 2

    def held() -> int:
        return sum(len(p.payload) + PACKET_OVERHEAD + p.cached_size()
                   for gop in stream.gop_cache.gops for p in gop)

    checked = 0
    for i, packet in enumerate(_flv_packets(media.av)):
        stream.feed(packet)
        if i % 40 == 39:
            hls.drain()
            if stream.gop_cache.gops:
                real, counted = held(), stream.gop_cache.bytes
                assert real <= counted <= real * 1.25, (i, real, counted)
                checked += 1
    assert checked >= 5
    # A bound the payload alone fits in but not with its TS bytes: the cache
    # keeps fewer GOPs once the segmenter has encoded them.
    gops = [list(g) for g in stream.gop_cache.gops]
    payload = sum(len(p.payload) + PACKET_OVERHEAD for p in gops[-1])
    small, _, _, small_hls = _batched_segmenter("bound2")
    small.gop_cache.max_bytes = small.gop_cache._limit = int(payload * 1.5)
    small.gop_cache.gop_num = 4
    for packet in _flv_packets(media.av):
        small.feed(packet)
        small_hls.drain()
        assert small.gop_cache.bytes <= small.gop_cache.max_bytes
        if small.gop_cache.gops:
            real = sum(len(p.payload) + PACKET_OVERHEAD + p.cached_size()
                       for gop in small.gop_cache.gops for p in gop)
            assert real <= small.gop_cache.max_bytes * 1.1


def test_batched_packets_are_encoded_with_the_tracks_they_came_with(media: Media,
                                                                    tmp_path: Path) -> None:
    """A publisher that changes its video mid-stream (a new size, so new SPS and
    PPS): the packets held for the segmenter when the new sequence header comes
    are encoded with the old ones, those after with the new, and every segment
    decodes cleanly."""
    from conftest import generate


    other = generate(tmp_path / "wide.flv", 3, size="480x270")
    first = _flv_packets(media.av)
    second = _flv_packets(other, shift=max(p.dts for p in first) + 100)
    stream, store, due, hls = _batched_segmenter("change")
    for packet in first:
        stream.feed(packet)
    assert hls.output._queue  # nothing taken yet: the change comes while packets wait
    for packet in second:
        stream.feed(packet)
    stream.stop_publish()
    hls.end()
    segments = sorted(hls.record, key=lambda s: s.sequence)
    whole = tmp_path / "all.ts"
    whole.write_bytes(b"".join(store.read(f"change/{s.name}") for s in segments))
    assert decode_errors(whole) == ""
    frames = count_frames(whole)
    assert frames["video"][1] == (count_frames(media.av)["video"][1]
                                  + count_frames(other)["video"][1])
    last = tmp_path / "last.ts"
    last.write_bytes(store.read(f"change/{segments[-1].name}"))
    size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", str(last)],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert set(size.split()) == {"480,270"}  # the new size (listed per program and stream)
