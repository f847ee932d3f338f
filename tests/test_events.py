"""Typed events: subscribers by type, a feature's own events, failures isolated,
and observer objects beside typed subscribers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from test_hub_seams import Collector, Publisher, make, result, session
from test_protocol import Hub
from twisted.internet import defer

from lal_twisted import log as lal_log
from lal_twisted.hls.manager import HlsSegmentMade
from lal_twisted.hls.segmenter import HlsMakeTsInfo
from lal_twisted.hub.access import Refused
from lal_twisted.hub.events import (
    Event,
    EventBus,
    Observer,
    PlayStarted,
    PublishStarted,
    PublishStopped,
    SessionEvent,
    SessionRefused,
    SessionStarted,
    SessionStopped,
)
from lal_twisted.protocols import ProtocolName
from lal_twisted.rtmp.server import RtmpConnected


@dataclass(frozen=True)
class ThumbnailMade(Event):
    """An event of a feature the hub knows nothing of (defined here, as a
    feature package defines its own)."""

    key: str
    path: str
    observer_method: ClassVar[str] = "thumbnail_made"


def segment(sequence: int = 0) -> HlsSegmentMade:
    return HlsSegmentMade(HlsMakeTsInfo(
        event="close", stream_name="cam", cwd="/srv", ts_file=f"cam-{sequence}.ts",
        live_m3u8_file="cam/playlist.m3u8", record_m3u8_file="cam/record.m3u8",
        id=sequence, duration=2.0))


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    lal_log.publisher.addObserver(events.append)
    yield events
    lal_log.publisher.removeObserver(events.append)


def failures(logged: list[dict[str, Any]]) -> list[str]:
    return [f"{e['subscriber']} {e['event']}" for e in logged if "subscriber" in e]


def test_a_feature_event_reaches_only_its_subscribers() -> None:
    registry, clock = make()
    thumbnails: list[ThumbnailMade] = []
    segments: list[HlsSegmentMade] = []
    publishes: list[PublishStarted] = []
    registry.events.subscribe(ThumbnailMade, thumbnails.append)
    registry.events.subscribe(HlsSegmentMade, segments.append)
    registry.events.subscribe(PublishStarted, publishes.append)

    pub = session(registry)
    result(registry.publish(pub, Publisher()))
    registry.events.emit(ThumbnailMade("live/test", "/tmp/test.jpg"))
    registry.events.emit(segment(1))

    assert thumbnails == [ThumbnailMade("live/test", "/tmp/test.jpg")]
    assert segments == [segment(1)]
    assert publishes == [PublishStarted(pub)]


def test_a_subscriber_of_a_base_class_gets_its_subclasses() -> None:
    registry, clock = make()
    started: list[Event] = []
    about_sessions: list[Event] = []
    everything: list[Event] = []
    registry.events.subscribe(SessionStarted, started.append)
    registry.events.subscribe(SessionEvent, about_sessions.append)
    registry.events.subscribe(Event, everything.append)

    pub, player = session(registry), session(registry, "FLVSUB")
    publisher, sink = Publisher(), Collector(clock)
    result(registry.publish(pub, publisher))
    result(registry.play(player, sink))
    busy = session(registry)
    assert result(registry.publish(busy, Publisher())).check(Refused)
    registry.events.emit(ThumbnailMade("live/test", "t.jpg"))
    registry.unpublish(pub, publisher)

    assert [type(e) for e in started] == [PublishStarted, PlayStarted]
    assert [type(e) for e in about_sessions] == [PublishStarted, PlayStarted, SessionRefused,
                                                 PublishStopped]
    assert all(isinstance(e, SessionStopped) for e in about_sessions[3:])
    assert [type(e) for e in everything] == [PublishStarted, PlayStarted, SessionRefused,
                                             ThumbnailMade, PublishStopped]
    refused = about_sessions[2]
    assert isinstance(refused, SessionRefused) and refused.session is busy
    assert refused.refusal.reason == "stream live/test is already being published"


def test_a_failing_subscriber_does_not_stop_the_others(logged: list[dict[str, Any]]) -> None:
    bus = EventBus()
    seen: list[str] = []

    def raises(event: ThumbnailMade) -> None:
        raise RuntimeError("subscriber bug")

    def fails_later(event: ThumbnailMade) -> defer.Deferred[None]:
        return defer.fail(RuntimeError("async subscriber bug"))

    bus.subscribe(ThumbnailMade, lambda e: seen.append(f"first {e.path}"))
    bus.subscribe(ThumbnailMade, raises)
    bus.subscribe(ThumbnailMade, fails_later)
    bus.subscribe(ThumbnailMade, lambda e: seen.append(f"last {e.path}"))

    bus.emit(ThumbnailMade("live/a", "a.jpg"))
    bus.emit(ThumbnailMade("live/b", "b.jpg"))

    assert seen == ["first a.jpg", "last a.jpg", "first b.jpg", "last b.jpg"]
    where = "test_a_failing_subscriber_does_not_stop_the_others.<locals>"
    assert failures(logged) == [f"{where}.raises ThumbnailMade",
                                f"{where}.fails_later ThumbnailMade"] * 2


def test_observer_objects_and_typed_subscribers_are_told_in_subscription_order() -> None:
    registry, _ = make()
    order: list[str] = []

    class Audit(Observer):
        def publish_started(self, session: Any) -> None:
            order.append(f"observer publish_started {session.id}")

        def thumbnail_made(self, key: str, path: str) -> None:
            order.append(f"observer thumbnail_made {key} {path}")

    registry.events.subscribe(PublishStarted, lambda e: order.append("typed before"))
    audit = Audit()
    registry.add_observer(audit)
    registry.events.subscribe(PublishStarted, lambda e: order.append("typed after"))

    pub = session(registry)
    result(registry.publish(pub, Publisher()))
    registry.events.emit(ThumbnailMade("live/test", "t.jpg"))
    assert order == ["typed before", f"observer publish_started {pub.id}", "typed after",
                     "observer thumbnail_made live/test t.jpg"]

    registry.events.remove_observer(audit)
    order.clear()
    registry.events.emit(ThumbnailMade("live/test", "u.jpg"))
    assert order == []


def test_an_observer_object_gets_lals_fields_of_a_segment_as_a_dict() -> None:
    bus = EventBus()
    infos: list[dict[str, Any]] = []

    class Segments:
        def hls_segment_made(self, info: dict[str, Any]) -> None:
            infos.append(info)

    bus.add_observer(Segments())
    bus.add_observer(object())  # no method for any event: ignored
    bus.emit(segment(3))
    assert infos == [{"event": "close", "stream_name": "cam", "cwd": "/srv",
                      "ts_file": "cam-3.ts", "live_m3u8_file": "cam/playlist.m3u8",
                      "record_m3u8_file": "cam/record.m3u8", "id": 3, "duration": 2.0}]


def test_unsubscribe_stops_the_callback() -> None:
    bus = EventBus()
    seen: list[ThumbnailMade] = []
    bus.subscribe(ThumbnailMade, seen.append)
    bus.emit(ThumbnailMade("k", "1"))
    bus.unsubscribe(ThumbnailMade, seen.append)
    bus.emit(ThumbnailMade("k", "2"))
    assert [e.path for e in seen] == ["1"] and len(bus) == 0


def test_rtmp_connect_is_an_rtmp_event_with_the_clients_fields() -> None:
    hub = Hub()
    connects: list[RtmpConnected] = []
    publishes: list[PublishStarted] = []
    hub.registry.events.subscribe(RtmpConnected, connects.append)
    hub.registry.events.subscribe(PublishStarted, publishes.append)
    hub.connect("publish")

    [connect] = connects
    assert connect.session.protocol == ProtocolName.RTMP
    assert (connect.app, connect.tc_url) == ("live", "rtmp://127.0.0.1:1935/live")
    assert connect.flash_ver
    assert [e.session for e in publishes] == [connect.session]
