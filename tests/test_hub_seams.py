"""The registry's seams: the session table, the access chain and the events."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from lal_twisted.hub.access import IAccessCheck, Refused
from lal_twisted.hub.events import Event, Observer
from lal_twisted.hub.ports import IPublisher
from lal_twisted.hub.registry import StreamBusy, StreamRegistry
from lal_twisted.hub.session import Role, Session
from lal_twisted.hub.sink import Sink
from lal_twisted.hub.stream import Stream
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.rtmp.session import media_encoder


class Collector(Sink):
    """A sink that keeps what it is sent (an in-process player)."""

    protocol_name = "test"

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.encoder = media_encoder(4096)
        self.data: list[bytes] = []
        self.closed_with: str | None = None

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def disconnect(self, reason: str) -> None:
        self.closed_with = reason


@implementer(IPublisher)
class Publisher:
    description = "test publisher"

    def __init__(self) -> None:
        self.closed_with: str | None = None

    def close(self, reason: str) -> None:
        self.closed_with = reason


def keyframe(ts: int = 0) -> AVPacket:
    return AVPacket(VIDEO, ts, b"\x17\x01\x00\x00\x00key")


class Recorder(Observer):
    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name = name
        self.log = log

    def _note(self, event: str, *args: Any) -> None:
        self.log.append((self.name, event, *[getattr(a, "id", a) for a in args]))

    def publish_started(self, session: Session) -> None:
        self._note("publish_started", session)

    def publish_stopped(self, session: Session) -> None:
        self._note("publish_stopped", session)

    def play_started(self, session: Session) -> None:
        self._note("play_started", session)

    def play_stopped(self, session: Session) -> None:
        self._note("play_stopped", session)

    def relay_pull_started(self, session: Session) -> None:
        self._note("relay_pull_started", session)

    def relay_pull_stopped(self, session: Session) -> None:
        self._note("relay_pull_stopped", session)

    def stream_wanted(self, key: str, session: Session) -> None:
        self._note("stream_wanted", key, session)

    def stream_unwatched(self, key: str) -> None:
        self._note("stream_unwatched", key)

    def periodic_update(self, registry: StreamRegistry) -> None:
        self._note("periodic_update", str(len(registry.sessions)))

    def server_started(self, server: Any) -> None:
        self._note("server_started", server)


def make(**kwargs: Any) -> tuple[StreamRegistry, MemoryReactorClock]:
    clock = MemoryReactorClock()
    return StreamRegistry(reactor=clock, **kwargs), clock


def session(registry: StreamRegistry, prefix: str = "RTMPPUBSUB", stream: str = "test",
            query: str = "") -> Session:
    s = registry.new_session(prefix, "rtmp", "127.0.0.1:5000")
    s.app, s.stream, s.query = "live", stream, query
    return s


def result(d: defer.Deferred[Any]) -> Any:
    """The result of an already fired Deferred (its Failure when it failed)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


# -- sessions ---------------------------------------------------------------------------


def test_session_ids_are_unique_across_prefixes_in_lal_style() -> None:
    registry, _ = make()
    ids = [registry.new_session(p, "x", "a").id for p in ("RTMPPUBSUB", "FLVSUB", "RTMPPUBSUB")]
    assert ids == ["RTMPPUBSUB1", "FLVSUB2", "RTMPPUBSUB3"]


def test_session_table_lists_finds_and_kicks() -> None:
    registry, _ = make()
    pub, player = session(registry), session(registry, "FLVSUB", query="token=a&x=1")
    closed: list[str] = []
    player._closer = closed.append
    stream = result(registry.publish(pub, Publisher()))
    assert isinstance(stream, Stream)
    sink = Collector(registry.reactor)
    assert result(registry.play(player, sink)) is stream
    assert {s.id for s in registry.list_sessions()} == {pub.id, player.id}
    assert registry.find_session(player.id) is player
    assert (player.role, pub.role) == (Role.PLAY, Role.PUBLISH)
    assert player.query_params == {"token": "a", "x": "1"}
    assert registry.kick("NOSUCH1") is False
    assert registry.kick(player.id, "too many") is True
    assert closed == ["too many"]
    registry.stop_play(player, sink)
    registry.unpublish(pub, stream.publisher)
    assert registry.list_sessions() == [] and registry.streams == {}


def test_session_bitrate_from_bytes_moved_since_the_last_update() -> None:
    registry, clock = make(update_interval=5.0)
    pub = session(registry)
    result(registry.publish(pub, Publisher()))
    registry.startService()
    pub.bytes_in += 500_000  # 4 Mbit in 5 s
    clock.advance(5)
    assert pub.bitrate_in_kbits == 800 and pub.stats()["bitrate_in_kbits"] == 800
    clock.advance(5)
    assert pub.bitrate_in_kbits == 0
    registry.stopService()


def test_a_second_publisher_is_refused_as_busy() -> None:
    registry, _ = make()
    first = Publisher()
    result(registry.publish(session(registry), first))
    failure = result(registry.publish(session(registry), Publisher()))
    assert isinstance(failure, Failure) and failure.check(StreamBusy)
    assert registry.streams["live/test"].publisher is first


# -- access checks ------------------------------------------------------------------------


@implementer(IAccessCheck)
class TokenCheck:
    def check(self, s: Session) -> Any:
        return s.query_params.get("token") == "good"


@implementer(IAccessCheck)
class Later:
    """Answers when the test says so."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []

    def check(self, s: Session) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


def test_sync_allow_and_refuse() -> None:
    registry, _ = make()
    assert verifyObject(IAccessCheck, TokenCheck())
    registry.add_access_check(TokenCheck())
    assert isinstance(result(registry.publish(session(registry, query="token=good"),
                                              Publisher())), Stream)
    failure = result(registry.publish(session(registry, stream="b", query="token=bad"),
                                      Publisher()))
    assert failure.check(Refused) and "TokenCheck" in failure.value.reason
    assert "live/b" not in registry.streams or registry.streams["live/b"].publisher is None


def test_the_first_refusal_wins_and_later_checks_are_not_asked() -> None:
    registry, _ = make()
    asked: list[str] = []

    @implementer(IAccessCheck)
    class Named:
        def __init__(self, name: str, answer: Any) -> None:
            self.name, self.answer = name, answer

        def check(self, s: Session) -> Any:
            asked.append(self.name)
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    for check in (Named("a", None), Named("b", Refused("no such stream", not_found=True)),
                  Named("c", True)):
        registry.add_access_check(check)
    failure = result(registry.play(session(registry), Collector(registry.reactor)))
    assert failure.check(Refused) and failure.value.not_found
    assert asked == ["a", "b"]


def test_deferred_allow_and_refuse() -> None:
    registry, _ = make()
    later = Later()
    registry.add_access_check(later)
    allowed = registry.publish(session(registry), Publisher())
    refused = registry.play(session(registry, stream="other"), Collector(registry.reactor))
    assert not allowed.called and not refused.called
    assert registry.list_sessions() == []  # nobody is in before the answer
    later.pending[0].callback(True)
    later.pending[1].errback(Refused("not allowed here"))
    assert isinstance(result(allowed), Stream)
    assert result(refused).value.reason == "not allowed here"


def test_a_check_that_does_not_answer_in_time_refuses() -> None:
    registry, clock = make(access_timeout=2.0)
    later = Later()
    registry.add_access_check(later)
    d = registry.publish(session(registry), Publisher())
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.2)
    failure = result(d)
    assert failure.check(Refused) and "did not answer within 2s" in failure.value.reason
    assert registry.list_sessions() == []


def test_a_check_that_raises_refuses_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry, _ = make()

    @implementer(IAccessCheck)
    class Broken:
        def check(self, s: Session) -> Any:
            raise KeyError("oops")

    registry.add_access_check(Broken())
    failure = result(registry.publish(session(registry), Publisher()))
    assert failure.check(Refused) and "Broken failed" in failure.value.reason


def test_a_session_that_ends_during_its_check_is_not_added() -> None:
    registry, _ = make()
    later = Later()
    registry.add_access_check(later)
    s = session(registry)
    d = registry.publish(s, Publisher())
    s.ended = True
    later.pending[0].callback(True)
    assert result(d).check(Exception)
    assert registry.list_sessions() == [] and "live/test" not in registry.streams


# -- observers ------------------------------------------------------------------------------


def test_observers_are_told_in_order_and_a_raising_one_harms_nobody() -> None:
    registry, clock = make(update_interval=1.0)
    log: list[tuple[str, ...]] = []

    class Raising(Observer):
        def publish_started(self, session: Session) -> None:
            raise RuntimeError("observer bug")

        def play_started(self, session: Session) -> defer.Deferred[None]:
            return defer.fail(RuntimeError("async observer bug"))

    first = Recorder("first", log)
    registry.add_observer(first)
    registry.add_observer(Raising())
    registry.add_observer(Recorder("second", log))
    registry.startService()

    player, pub = session(registry, "FLVSUB"), session(registry)
    sink = Collector(clock)
    result(registry.play(player, sink))
    publisher = Publisher()
    result(registry.publish(pub, publisher))
    registry.streams["live/test"].feed(keyframe())
    assert sink.data, "media reaches the player although an observer raised"
    clock.advance(1.0)
    registry.stop_play(player, sink)
    registry.unpublish(pub, publisher)
    registry.stopService()

    events = [e for e in log if e[0] == "first"]
    assert events == [
        ("first", "play_started", player.id),
        ("first", "stream_wanted", "live/test", player.id),
        ("first", "publish_started", pub.id),
        ("first", "periodic_update", "2"),
        ("first", "play_stopped", player.id),
        ("first", "stream_unwatched", "live/test"),
        ("first", "publish_stopped", pub.id),
    ]
    assert [e[1:] for e in log if e[0] == "second"] == [e[1:] for e in events]
    # each event reached both recorders before the next event was sent
    assert [e[1] for e in log[:2]] == ["play_started", "play_started"]
    assert set(observer_methods()) == {"server_started", "publish_started", "publish_stopped",
                           "play_started", "play_stopped", "relay_pull_started",
                           "relay_pull_stopped", "stream_wanted", "stream_unwatched",
                           "periodic_update", "record_finished",
                           "rtmp_connected", "hls_segment_made", "session_refused"}


def observer_methods() -> list[str]:
    """The observer methods the event classes name, the features' too."""
    import lal_twisted.hls.manager
    import lal_twisted.record.recorder
    import lal_twisted.rtmp.server  # noqa: F401

    names, todo = [], [Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        named = vars(cls).get("observer_method")
        if named and cls.__module__.startswith("lal_twisted."):
            names.append(named)
    assert len(names) == len(set(names)), "two event classes name one method"
    return names


def test_stream_wanted_only_for_the_first_player_of_an_unpublished_stream() -> None:
    registry, clock = make()
    log: list[tuple[str, ...]] = []
    registry.add_observer(Recorder("r", log))
    result(registry.publish(session(registry, stream="live1"), Publisher()))
    a, b, c = (session(registry, "FLVSUB", stream=s) for s in ("live1", "idle", "idle"))
    for s in (a, b, c):
        result(registry.play(s, Collector(clock)))
    assert [e[2:] for e in log if e[1] == "stream_wanted"] == [("live/idle", b.id)]


def test_relay_pull_sessions_have_their_own_events() -> None:
    registry, _ = make()
    log: list[tuple[str, ...]] = []
    registry.add_observer(Recorder("r", log))
    pull, publisher = session(registry, "RTMPPULL"), Publisher()
    result(registry.publish(pull, publisher, role=Role.RELAY_PULL))
    registry.unpublish(pull, publisher)
    assert [e[1] for e in log] == ["relay_pull_started", "relay_pull_stopped"]
