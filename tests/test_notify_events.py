"""Notify for the events no protocol of this server raises yet (a relay pull, an
HLS segment): the registry's events reach a real callback server in lal's
shapes, in process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest_twisted
from apitools import callback_server
from twisted.internet import reactor, task

from lal_twisted import log as lal_log
from lal_twisted.config import from_dict
from lal_twisted.hls.manager import HlsSegmentMade
from lal_twisted.hls.segmenter import HlsMakeTsInfo
from lal_twisted.hub.session import RTMP_PULL, Role
from lal_twisted.service import make_service


class Pull:
    description = "relay pull"

    def close(self, reason: str) -> None:
        pass


@pytest_twisted.inlineCallbacks
def test_relay_pull_and_hls_segment_events(tmp_path: Path) -> Any:
    with callback_server() as cb:
        lals = make_service(from_dict({
            "server_id": "r1",
            "rtmp": {"addr": "127.0.0.1:0"},
            "default_http": {"http_listen_addr": "127.0.0.1:0"},
            "http_notify": {"enable": True,
                            "on_relay_pull_start": cb.url("/pull_start"),
                            "on_relay_pull_stop": cb.url("/pull_stop"),
                            "on_hls_make_ts": cb.url("/ts")},
            "log": {"filename": str(tmp_path / "l.log"), "is_to_stdout": False},
        }))
        lals.startService()
        try:
            registry = lals.registry
            session = registry.new_session(RTMP_PULL, "rtmp", "10.0.0.9:1935")
            session.app, session.stream = "live", "cam"
            session.url = "rtmp://10.0.0.9:1935/live/cam"
            pull = Pull()
            yield registry.publish(session, pull, role=Role.RELAY_PULL)
            registry.events.emit(HlsSegmentMade(HlsMakeTsInfo(
                event="close", stream_name="cam", cwd="/srv", ts_file="cam-1.ts",
                live_m3u8_file="cam/playlist.m3u8", record_m3u8_file="cam/record.m3u8",
                id=1, duration=3.0)))
            registry.unpublish(session, pull)
            deadline = time.monotonic() + 10
            while len(cb.received) < 3 and time.monotonic() < deadline:
                yield task.deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        finally:
            yield lals.stopService()
            lal_log.reset()
    assert cb.paths() == ["/pull_start", "/ts", "/pull_stop"]
    start = cb.of("/pull_start")[0]
    assert (start["server_id"], start["session_id"], start["protocol"], start["base_type"]) == (
        "r1", session.id, "RTMP", "PULL")
    assert start["url"] == "rtmp://10.0.0.9:1935/live/cam" and start["has_in_session"]
    assert cb.of("/ts")[0] == {"server_id": "r1", "event": "close", "stream_name": "cam",
                               "cwd": "/srv", "ts_file": "cam-1.ts",
                               "live_m3u8_file": "cam/playlist.m3u8",
                               "record_m3u8_file": "cam/record.m3u8", "id": 1,
                               "duration": 3.0}
    assert cb.of("/pull_stop")[0]["has_in_session"] is False


@pytest_twisted.inlineCallbacks
def test_a_hanging_backend_keeps_one_update_waiting(tmp_path: Path) -> Any:
    import socket

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    url = f"http://127.0.0.1:{hang.getsockname()[1]}"
    lals = make_service(from_dict({
        "rtmp": {"addr": "127.0.0.1:0"},
        "default_http": {"http_listen_addr": "127.0.0.1:0"},
        "http_notify": {"enable": True, "update_interval_sec": 1, "timeout_ms": 60000,
                        "on_update": f"{url}/u", "on_pub_start": f"{url}/p"},
        "log": {"filename": str(tmp_path / "l.log"), "is_to_stdout": False},
    }))
    lals.startService()
    try:
        yield task.deferLater(reactor, 3.6, lambda: None)  # type: ignore[arg-type]
        notify = lals.control.notify
        assert notify is not None
        # the first update is in flight (never answered), later ones replaced each other
        assert [event for event, _, _ in notify.queue] == ["on_update"]
        assert notify.dropped >= 1 and notify.sent == 0
    finally:
        yield lals.stopService()
        lal_log.reset()
        hang.close()
    # stopping abandoned the request in flight: nothing is left to fire later
    assert notify.queue_length == 0 and notify._inflight is None
    assert "failed" not in (tmp_path / "l.log").read_text()
