"""HTTP notify against a real callback server: events in order with lal's
payloads, on_update every interval, and a callback server that hangs or is down
costs the media nothing while the queue stays bounded."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from apitools import api_server, callback_server, endless_head_server, http, metrics, vm_kib
from conftest import FPS, Media, free_port
from mediatools import finish, probe, pull, push, wait_for

EVENTS = ("on_server_start", "on_update", "on_pub_start", "on_pub_stop", "on_sub_start",
          "on_sub_stop", "on_relay_pull_start", "on_relay_pull_stop", "on_rtmp_connect",
          "on_hls_make_ts")
SESSION_EVENT_FIELDS = {"server_id", "session_id", "protocol", "base_type", "remote_addr",
                        "url", "app_name", "stream_name", "url_param", "has_in_session",
                        "has_out_session", "read_bytes_sum", "wrote_bytes_sum"}


def notify_config(base: str, **extra: object) -> dict:
    return {"enable": True, "update_interval_sec": 1,
            **{event: f"{base}/{event}" for event in EVENTS}, **extra}


def test_events_arrive_in_order_with_lal_payloads(tmp_path: Path, media: Media) -> None:
    with callback_server() as cb, api_server(
            tmp_path, server_id="node-3", http_notify=notify_config(cb.url(""))) as s:
        srv = s.server
        start = cb.wait("/on_server_start")[0]
        assert start["server_id"] == "node-3" and start["api_version"]
        publisher = push(media.av, srv.rtmp_url("test") + "?k=v")
        pub_start = cb.wait("/on_pub_start")[0]
        player = pull(srv.flv_url("test") + "?p=1", tmp_path / "out.flv", 2)
        code, err = finish(player)
        assert code == 0, err
        cb.wait("/on_sub_stop")
        finish(publisher)
        cb.wait("/on_pub_stop")
        stopped = max(r.at for r in cb.received if r.path == "/on_pub_stop")
        # one more update, with no stream
        assert wait_for(lambda: any(r.path == "/on_update" and r.at > stopped
                                    and r.body["groups"] == [] for r in list(cb.received)), 5)
        paths = cb.paths()

    order = [p for p in paths if p != "/on_update"]
    assert order == ["/on_server_start", "/on_rtmp_connect", "/on_pub_start",
                     "/on_sub_start", "/on_sub_stop", "/on_pub_stop"], paths
    connect = cb.of("/on_rtmp_connect")[0]
    assert set(connect) == {"server_id", "session_id", "remote_addr", "app", "flashVer",
                            "tcUrl"}
    assert connect["session_id"] == pub_start["session_id"] and connect["app"] == "live"
    assert connect["tcUrl"] == f"rtmp://127.0.0.1:{srv.rtmp_port}/live"
    assert connect["flashVer"].startswith("FMLE/3.0")  # what ffmpeg sends

    assert set(pub_start) == SESSION_EVENT_FIELDS
    assert re.fullmatch(r"RTMPPUBSUB\d+", pub_start["session_id"])
    assert (pub_start["server_id"], pub_start["protocol"], pub_start["base_type"]) == (
        "node-3", "RTMP", "PUB")
    assert (pub_start["app_name"], pub_start["stream_name"], pub_start["url_param"]) == (
        "live", "test", "k=v")
    assert pub_start["url"] == f"rtmp://127.0.0.1:{srv.rtmp_port}/live/test?k=v"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", pub_start["remote_addr"])
    assert (pub_start["has_in_session"], pub_start["has_out_session"]) == (True, False)

    sub_start, sub_stop = cb.of("/on_sub_start")[0], cb.of("/on_sub_stop")[0]
    assert set(sub_start) == SESSION_EVENT_FIELDS
    assert re.fullmatch(r"FLVSUB\d+", sub_start["session_id"])
    assert (sub_start["protocol"], sub_start["base_type"], sub_start["url_param"]) == (
        "FLV", "SUB", "p=1")
    assert sub_start["url"] == f"http://127.0.0.1:{srv.http_port}/live/test.flv?p=1"
    assert (sub_start["has_in_session"], sub_start["has_out_session"]) == (True, True)
    assert sub_stop["session_id"] == sub_start["session_id"]
    assert sub_stop["wrote_bytes_sum"] > 10_000  # what the player was sent
    pub_stop = cb.of("/on_pub_stop")[0]
    assert pub_stop["session_id"] == pub_start["session_id"]
    assert pub_stop["read_bytes_sum"] > 100_000 and pub_stop["has_in_session"] is False

    updates = [r for r in cb.received if r.path == "/on_update"]
    assert len(updates) >= 5, paths  # every second of the ~7 s run
    gaps = [b.at - a.at for a, b in zip(updates, updates[1:], strict=False)]
    assert all(0.3 <= g <= 2.5 for g in gaps), gaps
    assert all(set(u.body) == {"server_id", "groups"} for u in updates)
    live = [u.body["groups"] for u in updates if u.body["groups"]]
    assert live and live[0][0]["stream_name"] == "test"
    assert live[0][0]["pub"]["session_id"] == pub_start["session_id"]
    assert updates[-1].body["groups"] == []


def _hanging_port() -> tuple[socket.socket, int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("backend", ["hanging", "down"])
def test_a_slow_or_dead_callback_server_costs_media_nothing(
        tmp_path: Path, media: Media, backend: str) -> None:
    hang, port = _hanging_port() if backend == "hanging" else (None, free_port())
    queue_max = 4
    try:
        with api_server(tmp_path, http_notify=notify_config(
                f"http://127.0.0.1:{port}", queue_max=queue_max, timeout_ms=1000)) as s:
            srv = s.server
            publisher = push(media.long_av, srv.rtmp_url("test"))
            try:
                srv.wait_live("test")
                out = tmp_path / "out.flv"
                player = pull(srv.flv_url("test"), out, 6)
                # more events than the queue holds: short-lived players elsewhere
                for i in range(8):
                    try:
                        http(f"http://127.0.0.1:{srv.http_port}/live/none{i}.flv",
                             timeout=0.2)
                    except OSError:
                        pass
                code, err = finish(player)
                assert code == 0, err
                seen = metrics(srv.http_port)
            finally:
                publisher.kill()
                finish(publisher)
            info = probe(out)
            expected = 6 * FPS
            assert abs(info.video_frames - expected) <= 0.1 * expected, info
            assert info.decode_errors == ""
            assert seen["lals_notify_queue_length"] <= queue_max, seen
            if backend == "hanging":
                assert seen["lals_notify_dropped_total"] >= 1, seen
                assert wait_for(lambda: "events dropped" in srv.log(), 5), srv.log()
                assert "failed: no answer within 1s" in srv.log()
            else:
                assert seen["lals_notify_failed_total"] >= 3, seen
                assert wait_for(lambda: "failed: Connection was refused" in srv.log(), 5)
                # One line for the outage, not one per event; the rest are summed up.
                assert srv.log().count("failed: Connection was refused") == 1, srv.log()
    finally:
        if hang is not None:
            hang.close()


def test_an_answer_with_endless_headers_is_a_failure(tmp_path: Path, media: Media) -> None:
    with endless_head_server(300_000) as eh:
        url = eh.url("/cb")
        with api_server(tmp_path, http_notify={
                "enable": True, "on_rtmp_connect": url, "on_pub_start": url,
                "timeout_ms": 15000}) as s:
            srv = s.server
            rss, hwm = vm_kib(srv.proc.pid), vm_kib(srv.proc.pid, "VmHWM")
            publisher = push(media.long_av, srv.rtmp_url("test"))
            try:
                assert wait_for(lambda: metrics(srv.http_port)["lals_notify_failed_total"] >= 2,
                                20), (metrics(srv.http_port), srv.log())
                grew = vm_kib(srv.proc.pid) - rss, vm_kib(srv.proc.pid, "VmHWM") - hwm
                # notify never stands in the media's way
                assert "publishing live/test started" in srv.log()
                assert publisher.poll() is None
            finally:
                publisher.kill()
                finish(publisher)
            log = srv.log()
        assert (f"http notify on_rtmp_connect to {url} failed: the answer's status line "
                "and headers pass") in log, log
        assert grew[0] < 30 * 1024 and grew[1] < 30 * 1024, f"RSS, peak grew {grew} KiB"
        assert wait_for(lambda: len(eh.sent) == 2, 10), eh  # both answers were cut short
        assert eh.asked == 2 and max(eh.sent) < 300_000, eh
