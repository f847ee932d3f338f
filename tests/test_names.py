"""Stream names are checked before anything else, and peer text is safe in logs."""

from __future__ import annotations

from typing import Any

import pytest
from test_access_rtmp import refused
from test_protocol import Hub
from twisted.logger import LogLevel, formatEvent

from lal_twisted import log as lal_log
from lal_twisted.hub.session import MAX_NAME_LENGTH, check_names
from lal_twisted.hub.stream import Stream
from lal_twisted.media.packet import AUDIO, AVPacket
from lal_twisted.rtmp.client_session import RtmpUrl


@pytest.mark.parametrize(("app", "stream"), [
    ("live", "test"), ("live", "a b"), ("live/sub", "cam-1_2.x"), ("", "x"), ("live", "café"),
    ("live", "s" * MAX_NAME_LENGTH),
])
def test_valid_names(app: str, stream: str) -> None:
    assert check_names(app, stream) is None


@pytest.mark.parametrize(("app", "stream", "why"), [
    ("live", "", "empty"),
    ("../../etc", "passwd", "starts with '.'"),
    ("live", "..", "starts with '.'"),
    ("live", "a/b", "contains '/'"),
    ("live//x", "a", "empty path segment"),
    ("live", "a\x00b", "'\\x00'"),
    ("live", "a\nb", "'\\n'"),
    ("live", "a%2e", "'%'"),
    ("live", "x" * (MAX_NAME_LENGTH + 1), "longer than 128"),
    ("l" * 1024 * 1024, "x", "longer than 128"),
])
def test_invalid_names(app: str, stream: str, why: str) -> None:
    problem = check_names(app, stream)
    assert problem is not None and why in problem


def test_bad_names_are_refused_over_rtmp_and_keys_stay_unambiguous() -> None:
    hub = Hub()
    bad_publish = hub.connect("publish", "rtmp://127.0.0.1:1935/live/..")
    assert "NetStream.Publish.BadName" in refused(bad_publish)
    only_query = hub.connect("publish", RtmpUrl("127.0.0.1", 1935, "live", "?token=1",
                                                "rtmp://127.0.0.1:1935/live"))
    assert "NetStream.Publish.BadName" in refused(only_query)
    bad_play = hub.connect("play", "rtmp://127.0.0.1:1935/live/a%2Fb")
    assert "NetStream.Play.StreamNotFound" in refused(bad_play)
    # app "live/a" + stream "b" is the key live/a/b; stream "a/b" cannot be named.
    good = hub.connect("publish", "rtmp://127.0.0.1:1935/live/a/b")
    assert good.client.ready.called and good.client.error is None
    assert list(hub.registry.streams) == ["live/a/b"]
    assert hub.registry.list_sessions()[0].app == "live/a"


def test_peer_strings_are_cut_and_escaped_in_log_lines() -> None:
    events: list[dict[str, Any]] = []
    lal_log.publisher.addObserver(events.append)
    try:
        logger = lal_log.Logger("test")
        logger.warn("refused {key}", key="live/x\n2026-01-01 [forged#info] hello")
        logger.warn("refused {key}", key="y" * 1024 * 1024)
    finally:
        lal_log.publisher.removeObserver(events.append)
    forged, huge = (formatEvent(e) for e in events)
    assert "\n" not in forged and "live/x\\x0a2026-01-01" in forged
    assert len(huge) < 400 and huge.endswith("...(1048576 chars)")
    assert events[0]["log_level"] is LogLevel.warn


def test_a_publisher_alternating_headers_cannot_flood_the_log() -> None:
    events: list[dict[str, Any]] = []
    lal_log.publisher.addObserver(events.append)
    try:
        stream = Stream("live/flip")
        stream.start_publish(object())
        for i in range(1000):
            header = b"\xaf\x00\x12\x10" if i % 2 else b"\xaf\x00\x11\x90"  # 44.1 / 48 kHz
            stream.feed(AVPacket(AUDIO, i, header))
    finally:
        lal_log.publisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if e.get("kind") == "audio"]
    assert len(lines) == 1, lines
    assert stream.tracks.audio is not None  # the track still follows every header
