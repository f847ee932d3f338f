"""start_relay_pull as an attacker and as a lal cluster scheduler would use it:
bounded and visible pulls, numbers checked (NaN, infinities, ranges), URLs
checked before the answer, no credentials in the log or the stat answers, and
Go zero values taken with lal's meaning.  Real servers and sockets."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apitools import api, api_server, callback_server
from conftest import FPS, Media, free_port
from mediatools import finish, probe, pull, push, wait_for


@contextmanager
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP listener that accepts and never answers (an internal service, or a
    server that hangs); yields its port and the connections it holds."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)
    lsock.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield lsock.getsockname()[1], held
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        lsock.close()


def _open(conns: list[socket.socket]) -> int:
    """How many of the listener's connections the server still holds open."""
    alive = 0
    for conn in conns:
        conn.setblocking(False)
        try:
            alive += conn.recv(1 << 16) != b""  # bytes (RTMP handshake): still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def _sockets(pid: int) -> int:
    fd_dir = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, fd)).startswith("socket:")
        except FileNotFoundError:
            pass  # closed since the listing
    return count


def _groups(port: int) -> dict[str, dict]:
    status, body = api(port, "/api/stat/all_group")
    assert status == 200, body
    return {g["stream_name"]: g for g in body["data"]["groups"]}


def test_api_pulls_are_capped_listed_and_stopped(tmp_path: Path) -> None:
    with silent_listener() as (port, held), api_server(tmp_path, relay={"max_api_pulls": 5}) as s:
        before = _sockets(s.server.proc.pid)
        ids = {}
        for i in range(5):
            status, body = api(s.api_port, "/api/ctrl/start_relay_pull", {
                "url": f"rtmp://127.0.0.1:{port}/live/s{i}", "pull_timeout_ms": 0,
                "pull_retry_num": -1, "auto_stop_pull_after_no_out_ms": -1})
            assert (status, body["error_code"]) == (200, 0), body
            ids[f"s{i}"] = body["data"]["session_id"]
        status, body = api(s.api_port, "/api/ctrl/start_relay_pull",
                           {"url": f"rtmp://127.0.0.1:{port}/live/s9"})
        assert (status, body["error_code"]) == (200, 2001), body
        assert "relay.max_api_pulls" in body["desp"]
        assert wait_for(lambda: len(held) == 5, 10), len(held)
        # Every pull, connecting to a silent upstream, is in the stat groups.
        groups = _groups(s.api_port)
        for name, session_id in ids.items():
            entry = groups[name]["pull"]
            assert entry["session_id"] == session_id, entry
            assert (entry["state"], entry["base_type"], entry["protocol"]) == (
                "connecting", "PULL", "RTMP"), entry
            assert entry["remote_addr"] == f"127.0.0.1:{port}"
            assert entry["url"].startswith(f"rtmp://127.0.0.1:{port}/live/{name}")
        status, body = api(s.api_port, "/api/stat/group?stream_name=s3")
        assert body["data"]["pull"]["session_id"] == ids["s3"], body
        assert _sockets(s.server.proc.pid) - before <= 5 + 2
        # Stopped in any state: the sockets go, the groups too.
        for name in ids:
            status, body = api(s.api_port, f"/api/ctrl/stop_relay_pull?stream_name={name}",
                               method="POST", raw=b"")
            assert (body["error_code"], body["data"]["session_id"]) == (0, ids[name]), body
        assert wait_for(lambda: _open(held) == 0, 10)
        assert not set(ids) & set(_groups(s.api_port))
        # A pull waiting to retry (its upstream refuses) is listed too.
        closed = free_port()
        status, body = api(s.api_port, "/api/ctrl/start_relay_pull", {
            "url": f"rtmp://127.0.0.1:{closed}/live/r", "pull_retry_num": 3})
        assert body["error_code"] == 0, body
        assert wait_for(lambda: _groups(s.api_port).get("r", {}).get("pull", {}).get("state")
                        == "waiting_to_retry", 10), _groups(s.api_port)
        assert _groups(s.api_port)["r"]["pull"]["attempts"] >= 1


def test_numbers_out_of_range_are_lal_1002_with_400(tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        url = '"rtmp://127.0.0.1:1/live/n"'
        fields = ("pull_timeout_ms", "pull_retry_num", "auto_stop_pull_after_no_out_ms",
                  "rtsp_mode")
        values = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e30", "1.5", '"5"',
                  "true", "[1]", "{}")
        for field in fields:
            for value in values:
                raw = f'{{"url": {url}, "{field}": {value}}}'.encode()
                status, body = api(s.api_port, "/api/ctrl/start_relay_pull", raw=raw,
                                   method="POST")
                assert (status, body["error_code"]) == (400, 1002), (field, value, body)
                assert field in body["desp"], body
        for field, value in (("pull_timeout_ms", -1), ("pull_timeout_ms", 600_001),
                             ("pull_retry_num", 10_001),
                             ("auto_stop_pull_after_no_out_ms", 86_400_001)):
            status, body = api(s.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url.strip('"'), field: value})
            assert (status, body["error_code"]) == (400, 1002), (field, value, body)
            assert "between" in body["desp"], body
        for value in ("NaN", "Infinity", "1e400", "2.5", '"60"'):
            raw = f'{{"ip": "192.0.2.1", "duration_sec": {value}}}'.encode()
            status, body = api(s.api_port, "/api/ctrl/add_ip_blacklist", raw=raw, method="POST")
            assert (status, body["error_code"]) == (400, 1002), (value, body)
        assert "CRITICAL" not in s.server.log() and "critical" not in s.server.log()
        assert api(s.api_port, "/api/stat/lal_info")[1]["error_code"] == 0


def test_urls_are_checked_before_the_answer(tmp_path: Path) -> None:
    with api_server(tmp_path, relay={"allowed_upstreams": ["127.0.0.1", "10.0.0.0/8",
                                                           "*.example.org"]}) as s:
        rtmp = s.server.rtmp_port
        cases = {
            f"rtmp://127.0.0.1:{rtmp}/q": "no app",
            "rtmp://127.0.0.1:0/live/x": "port 0",
            "rtmp://127.0.0.1:70000/live/x": "port",
            "rtmp:///live/x": "no host",
            "ftp://127.0.0.1/live/x": "must start with rtmp://",
            "http://127.0.0.1:8080/live/x": "ends in .flv",
            "http://127.0.0.1:8080/live/a b.flv": "percent-encoded",
            "http://127.0.0.1:8080/live/a\r\nX: y.flv": "control characters",
            "rtsp://127.0.0.1/live/x": "not supported",
            "": "url is empty",
            "rtmp://192.168.1.1/live/x": "relay.allowed_upstreams",
            "rtmp://internal.local/live/x": "relay.allowed_upstreams",
            "rtmp://127.0.0.1/live/..": "starts with '.'",
            "http://169.254.169.254/latest/meta.flv": "relay.allowed_upstreams",
        }
        for url, why in cases.items():
            status, body = api(s.api_port, "/api/ctrl/start_relay_pull", {"url": url})
            assert (status, body["error_code"]) == (200, 2001), (url, body)
            assert why in body["desp"], (url, body)
        assert _groups(s.api_port) == {}
        for url in ("rtmp://10.2.3.4:1/live/ok1", "rtmp://cdn.example.org:1/live/ok2",
                    "http://127.0.0.1:1/live/a%20b.flv"):
            status, body = api(s.api_port, "/api/ctrl/start_relay_pull",
                               {"url": url, "pull_retry_num": -1, "pull_timeout_ms": 300})
            assert body["error_code"] == 0, (url, body)
        status, body = api(s.api_port, "/api/stat/group?stream_name=live/a%20b")
        assert body["error_code"] == 0 and body["data"]["pull"]["protocol"] == "FLV", body
        for name in ("ok1", "ok2", "live/a%20b"):
            status, body = api(s.api_port, f"/api/ctrl/stop_relay_pull?stream_name={name}",
                               method="POST", raw=b"")
            assert body["error_code"] == 0, body


def test_credentials_never_reach_the_log_or_the_stat_answers(tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        closed = free_port()
        url = f"rtmp://admin:pa55word@127.0.0.1:{closed}/live/c?lal_secret=0123abcd&token=tkn999"
        status, body = api(s.api_port, "/api/ctrl/start_relay_pull",
                           {"url": url, "pull_retry_num": 2})
        assert body["error_code"] == 0, body
        assert wait_for(lambda: s.server.log().count("relay pull live/c") >= 3, 15)
        entry = _groups(s.api_port)["c"]["pull"]
        assert "pa55word" not in entry["url"] and "***@127.0.0.1" in entry["url"], entry
        assert "lal_secret=***" in entry["url"] and "token=***" in entry["url"], entry
        status, body = api(s.api_port, "/api/ctrl/start_relay_pull",
                           {"url": "rtmp://u:hunter2@127.0.0.1:0/live/d"})
        assert body["error_code"] == 2001 and "hunter2" not in body["desp"], body
        log = s.server.log()
        for secret in ("pa55word", "0123abcd", "tkn999", "hunter2"):
            assert secret not in log, secret


def test_a_lal_cluster_scheduler_drives_relays(media: Media, tmp_path: Path) -> None:
    """A scheduler that follows lal's notify and API: on on_sub_start at a node
    without the stream it calls start_relay_pull there with the owner's URL, a
    marker parameter and Go zero values; the player plays; when it leaves, the
    pull stops (auto_stop 0)."""
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    with callback_server() as cb, api_server(tmp_path / "origin") as origin, \
            api_server(tmp_path / "edge", http_notify={
                "enable": True, "on_sub_start": cb.url("/on_sub_start")}) as edge:
        publisher = push(media.long_av, origin.server.rtmp_url("sched"), loop=True)
        player = None
        try:
            origin.server.wait_live("sched", 15)
            player = pull(edge.server.rtmp_url("sched"), tmp_path / "p.flv", 3.0)
            (event,) = cb.wait("/on_sub_start")
            assert event["stream_name"] == "sched" and event["has_in_session"] is False
            go_zero_values = {
                "url": f"rtmp://127.0.0.1:{origin.server.rtmp_port}/live/sched?from=sched1",
                "stream_name": event["stream_name"], "pull_timeout_ms": 0, "pull_retry_num": 0,
                "auto_stop_pull_after_no_out_ms": 0, "rtsp_mode": 0, "debug_dump_packet": ""}
            status, body = api(edge.api_port, "/api/ctrl/start_relay_pull", go_zero_values)
            assert (status, body["error_code"]) == (200, 0), body
            code, err = finish(player)
            assert code == 0, err
            info = probe(tmp_path / "p.flv")
            assert info.first_video_key and info.decode_errors == ""
            assert info.video_frames >= 2 * FPS, info
            # Nobody plays at the edge any more: the pull stops (auto_stop 0).
            assert wait_for(lambda: "sched" not in _groups(edge.api_port), 10)
            assert wait_for(lambda: _groups(origin.api_port)["sched"]["subs"] == [], 10)
        finally:
            for proc in (publisher, player):
                if proc is not None:
                    proc.kill()
                    finish(proc)


def _refused(port: int, source: str, rtmp: bool) -> bool:
    """Whether a connection from ``source`` to ``port`` is closed unanswered (an
    RTMP handshake or an HTTP request that is otherwise answered at once)."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(3)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(b"\x03" + bytes(1536) if rtmp else
                         b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def test_add_ip_blacklist_covers_every_protocol(media: Media, tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        publisher = push(media.long_av, s.server.rtmp_url("b"), loop=True)
        player = None
        try:
            s.server.wait_live("b", 15)
            player = pull(s.server.rtmp_url("b"), tmp_path / "b.flv", 60)
            assert wait_for(lambda: len(_groups(s.api_port)["b"]["subs"]) == 1, 15)
            for field in ({"ip": "127.0.0.2"}, {"duration_sec": 5},
                          {"ip": "not-an-ip", "duration_sec": 5}):
                status, body = api(s.api_port, "/api/ctrl/add_ip_blacklist", field)
                assert (status, body["error_code"]) == (400, 1002), (field, body)
            status, body = api(s.api_port, "/api/ctrl/add_ip_blacklist",
                               {"ip": "127.0.0.2", "duration_sec": 30})
            assert body == {"error_code": 0, "desp": "succ"}, body
            for port, rtmp in ((s.server.rtmp_port, True), (s.server.http_port, False)):
                assert _refused(port, "127.0.0.2", rtmp), port
                assert not _refused(port, "127.0.0.3", rtmp), port
            assert player.poll() is None  # 127.0.0.1 plays on
            # Blacklisting the player's address ends it; the API still answers.
            status, body = api(s.api_port, "/api/ctrl/add_ip_blacklist",
                               {"ip": "127.0.0.1", "duration_sec": 2})
            assert body["error_code"] == 0
            assert wait_for(lambda: player.poll() is not None, 10)
            assert _refused(s.server.http_port, "127.0.0.1", False)
            assert api(s.api_port, "/api/stat/lal_info")[1]["error_code"] == 0
            time.sleep(2.5)
            assert not _refused(s.server.http_port, "127.0.0.1", False)
            # 0 lifts it at once.
            api(s.api_port, "/api/ctrl/add_ip_blacklist", {"ip": "127.0.0.2", "duration_sec": 0})
            assert not _refused(s.server.rtmp_port, "127.0.0.2", True)
        finally:
            for proc in (publisher, player):
                if proc is not None:
                    proc.kill()
                    finish(proc)


def test_a_kicked_http_flv_player_is_closed_cleanly(media: Media, tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        publisher = push(media.long_av, s.server.rtmp_url("k"), loop=True)
        try:
            s.server.wait_live("k", 15)
            with socket.create_connection(("127.0.0.1", s.server.http_port), timeout=10) as sock:
                sock.sendall(b"GET /live/k.flv HTTP/1.1\r\nHost: x\r\n\r\n")
                got = sock.recv(65536)
                assert got.startswith(b"HTTP/1.1 200"), got[:100]
                assert wait_for(lambda: len(_groups(s.api_port)["k"]["subs"]) == 1, 10)
                (sub,) = _groups(s.api_port)["k"]["subs"]
                status, body = api(s.api_port, "/api/ctrl/kick_session",
                                   {"stream_name": "k", "session_id": sub["session_id"]})
                assert body["error_code"] == 0, body
                tail = got[-64:]
                while True:
                    chunk = sock.recv(1 << 20)  # a reset would raise here
                    if not chunk:
                        break
                    tail = (tail + chunk)[-64:]
                assert tail.endswith(b"\r\n0\r\n\r\n"), tail  # the last chunk, then FIN
            assert "kicked by the HTTP API" in s.server.log()
        finally:
            publisher.kill()
            finish(publisher)
