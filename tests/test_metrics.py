"""Prometheus metrics of a live server, parsed with prometheus_client's parser:
gauges follow sessions as they come and go, counters only move up."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from apitools import http, metrics
from conftest import Media, Server
from mediatools import finish, pull, push, wait_for


def test_metrics_follow_sessions(server: Server, media: Media, tmp_path: Path) -> None:
    before = metrics(server.http_port)
    assert before["lals_streams_live"] == 0
    status, _, headers = http(f"http://127.0.0.1:{server.http_port}/metrics", b"x", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert before["lals_received_bytes_total"] == 0
    assert "process_cpu_seconds_total" in before and before["process_resident_memory_bytes"] > 0
    assert before["lals_notify_queue_length"] == 0 and before["lals_notify_dropped_total"] == 0

    publisher = push(media.long_av, server.rtmp_url("test"))
    try:
        assert wait_for(lambda: metrics(server.http_port)["lals_streams_live"] == 1, 10)
        player = pull(server.flv_url("test"), tmp_path / "out.flv", 3)
        assert wait_for(lambda: metrics(server.http_port).get(
            "lals_sessions{protocol=httpflv,role=play}") == 1, 10)
        # the publisher's first second may still be on its way in
        assert wait_for(lambda: metrics(server.http_port)["lals_received_bytes_total"] > 10_000,
                        10)
        during = metrics(server.http_port)
        assert during["lals_sessions{protocol=rtmp,role=publish}"] == 1
        assert during["lals_sessions_started_total{protocol=rtmp,role=publish}"] == 1
        assert during["lals_sessions_started_total{protocol=httpflv,role=play}"] == 1
        assert during["lals_received_bytes_total"] > 10_000
        assert during["lals_sent_bytes_total"] > 0
        assert during["lals_gop_cache_bytes"] > 0
        # a refused play is counted by reason
        status, _, _ = http(f"http://127.0.0.1:{server.http_port}/live/.hidden.flv")
        assert status == 400
        code, err = finish(player)
        assert code == 0, err
        time.sleep(0.5)
        later = metrics(server.http_port)
        assert later["lals_sessions_refused_total{reason=bad_name}"] == 1
        assert later["lals_received_bytes_total"] > during["lals_received_bytes_total"]
        assert later["lals_sent_bytes_total"] >= during["lals_sent_bytes_total"]
        assert "lals_sessions{protocol=httpflv,role=play}" not in later
    finally:
        publisher.kill()
        finish(publisher)
    assert wait_for(lambda: metrics(server.http_port)["lals_streams_live"] == 0, 10)
    after = metrics(server.http_port)
    assert after["lals_sessions_started_total{protocol=httpflv,role=play}"] == 1
    assert after["lals_received_bytes_total"] >= later["lals_received_bytes_total"]
    assert after["lals_gop_cache_bytes"] == 0


def test_stalled_player_counts_drops_and_a_stall(server: Server, media: Media) -> None:
    publisher = push(media.noisy, server.rtmp_url("slow"))
    sock = socket.socket()
    try:
        time.sleep(0.5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.http_port))
        sock.sendall(b"GET /live/slow.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        # stall timeout is 3 s in the test config
        assert wait_for(lambda: metrics(server.http_port)[
            "lals_player_stall_disconnects_total"] == 1, 15)
        seen = metrics(server.http_port)
        assert seen["lals_player_dropped_packets_total"] > 0
    finally:
        sock.close()
        publisher.kill()
        finish(publisher)
