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
    ("live", "x" * (MAX_NAME_LENGTH + 1), "129 bytes long in UTF-8, at most 128"),
    ("l" * 1024 * 1024, "x", "the app name is 1048576 bytes long in UTF-8, at most 128"),
])
def test_invalid_names(app: str, stream: str, why: str) -> None:
    problem = check_names(app, stream)
    assert problem is not None and why in problem


# Names become file names (recordings, HLS), whose limit is 255 bytes: the
# limit is in bytes of UTF-8, not in characters.
GRIN = "\U0001F600"  # 4 bytes in UTF-8
HAN = "\U00020000"  # 4 bytes, outside the BMP
EURO = "\u20ac"  # 3 bytes


@pytest.mark.parametrize(("app", "stream"), [
    ("live", GRIN * 32), ("live", HAN * 32), ("live", "x" * 128), ("live", GRIN * 31 + "abcd"),
    ("live", EURO * 42 + "é"), (GRIN * 32, "x"), (f"{GRIN * 16}/{HAN * 15}", "s"),
], ids=["32-grin", "32-han", "128-ascii", "mixed", "42-euro+e", "app-32-grin", "app-2-segments"])
def test_names_of_128_bytes_in_utf8_are_valid(app: str, stream: str) -> None:
    assert len(stream.encode()) <= MAX_NAME_LENGTH and len(app.encode()) <= MAX_NAME_LENGTH
    assert check_names(app, stream) is None


@pytest.mark.parametrize(("app", "stream", "why"), [
    ("live", GRIN * 33, "the stream name is 132 bytes long in UTF-8, at most 128"),
    ("live", HAN * 128, "the stream name is 512 bytes long in UTF-8, at most 128"),
    ("live", "x" * 129, "the stream name is 129 bytes long in UTF-8, at most 128"),
    ("live", GRIN * 32 + "x", "the stream name is 129 bytes long in UTF-8, at most 128"),
    ("live", EURO * 43, "the stream name is 129 bytes long in UTF-8, at most 128"),
    ("live", "é" * 65, "the stream name is 130 bytes long in UTF-8, at most 128"),
    (GRIN * 33, "x", "the app name is 132 bytes long in UTF-8, at most 128"),
    (f"{GRIN * 16}/{HAN * 16}", "x", "the app name is 129 bytes long in UTF-8, at most 128"),
    ("live", "a\ud800b", "not valid UTF-8"),
    ("li\udcffve", "a", "not valid UTF-8"),
], ids=["33-grin", "128-han", "129-ascii", "32-grin+x", "43-euro", "65-e", "app-33-grin",
        "app-2-segments", "lone-surrogate", "app-escaped-byte"])
def test_names_over_128_bytes_in_utf8_are_refused(app: str, stream: str, why: str) -> None:
    problem = check_names(app, stream)
    assert problem is not None and why in problem, problem


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
