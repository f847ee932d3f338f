"""Access checks and sessions seen through the RTMP protocol (in memory, iosim)."""

from __future__ import annotations

from typing import Any

from test_protocol import URL, Hub, frame, headers, media_payloads
from twisted.internet import defer
from zope.interface import implementer

from lal_twisted.hub.access import IAccessCheck, Refused
from lal_twisted.hub.session import Session

OTHER = "rtmp://127.0.0.1:1935/live/other"


@implementer(IAccessCheck)
class Rules:
    """Refuses what ``refuse`` maps (key, role) to; defers what ``defer`` names."""

    def __init__(self) -> None:
        self.refuse: dict[tuple[str, str], Refused] = {}
        self.deferred: set[str] = set()
        self.pending: list[tuple[Session, defer.Deferred[Any]]] = []
        self.asked: list[tuple[str, str, str, str]] = []

    def check(self, session: Session) -> Any:
        self.asked.append((session.id, session.protocol, str(session.role), session.key))
        if session.key in self.deferred:
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append((session, d))
            return d
        return self.refuse.get((session.key, str(session.role)))


def refused(peer: Any) -> str:
    """The client's error text once the server refused it (its Deferreds consumed)."""
    assert peer.client.error is not None
    peer.client.ready.addErrback(lambda _: None)
    peer.client.done.addErrback(lambda _: None)
    return str(peer.client.error)


def hub_with_rules() -> tuple[Hub, Rules]:
    hub = Hub()
    rules = Rules()
    hub.registry.add_access_check(rules)
    return hub, rules


def test_refused_publisher_gets_unauthorized_and_players_get_nothing() -> None:
    hub, rules = hub_with_rules()
    rules.refuse[("live/test", "publish")] = Refused("bad token")
    player = hub.connect("play")
    good_pub, good_player = hub.connect("publish", OTHER), hub.connect("play", OTHER)
    pub = hub.connect("publish")
    error = refused(pub)
    assert "NetStream.Publish.Unauthorized" in error and "bad token" in error
    assert pub.server.transport.disconnecting or pub.server.transport.disconnected
    pub.client.send_packet(frame(0, True))  # a client that ignores the answer
    hub.flush()
    assert player.packets == []
    assert "NetStream.Play.PublishNotify" not in player.codes
    # the accepted publisher on the other stream is unaffected
    sent = headers() + [frame(0, True), frame(40, False)]
    good_pub.send(*sent)
    assert media_payloads(good_player.packets) == media_payloads(sent)
    assert [a[2:] for a in rules.asked] == [
        ("play", "live/test"), ("publish", "live/other"), ("play", "live/other"),
        ("publish", "live/test")]
    assert all(a[0].startswith("RTMPPUBSUB") and a[1] == "rtmp" for a in rules.asked)


def test_refused_player_gets_play_failed_or_stream_not_found() -> None:
    hub, rules = hub_with_rules()
    rules.refuse[("live/test", "play")] = Refused("not for you")
    rules.refuse[("live/other", "play")] = Refused("no such stream", not_found=True)
    failed, missing = hub.connect("play"), hub.connect("play", OTHER)
    error = refused(failed)
    assert "NetStream.Play.Failed" in error and "not for you" in error
    assert "NetStream.Play.StreamNotFound" in refused(missing)
    assert "NetStream.Play.Start" not in failed.codes
    assert hub.registry.list_sessions() == []


def test_a_deferred_check_holds_the_publish_until_it_answers() -> None:
    hub, rules = hub_with_rules()
    rules.deferred.add("live/test")
    player = hub.connect("play", URL)  # deferred as well: answered below
    pub = hub.connect("publish")
    assert not pub.client.ready.called and not player.client.ready.called
    assert len(rules.pending) == 2
    rules.pending[1][1].callback(True)  # the publisher first
    hub.flush()
    assert pub.client.ready.called
    sent = headers() + [frame(0, True)]
    pub.send(*sent)
    rules.pending[0][1].callback(None)  # then the player: it gets the cache
    hub.flush()
    assert player.client.ready.called
    assert media_payloads(player.packets) == media_payloads(sent)


def test_a_check_that_never_answers_refuses_after_the_timeout() -> None:
    hub, rules = hub_with_rules()
    hub.registry.access_timeout = 3.0
    rules.deferred.add("live/test")
    pub = hub.connect("publish")
    hub.clock.advance(2.9)
    hub.flush()
    assert pub.client.error is None
    hub.clock.advance(0.2)
    hub.flush()
    error = refused(pub)
    assert "NetStream.Publish.Unauthorized" in error and "did not answer within 3s" in error


def test_a_publisher_that_leaves_during_its_check_never_goes_live() -> None:
    hub, rules = hub_with_rules()
    rules.deferred.add("live/test")
    pub = hub.connect("publish")
    pub.client.transport.loseConnection()
    hub.flush()
    pub.client.ready.addErrback(lambda _: None)
    rules.pending[0][1].callback(True)
    assert hub.registry.get("live/test") is None and hub.registry.list_sessions() == []


def test_sessions_carry_the_request_and_kick_ends_the_connection() -> None:
    hub = Hub()
    pub = hub.connect("publish", "rtmp://127.0.0.1:1935/live/test?token=abc")
    player = hub.connect("play")
    sessions = {s.role: s for s in hub.registry.list_sessions()}
    publish, play = sessions["publish"], sessions["play"]
    assert (publish.app, publish.stream, publish.query, publish.protocol) == (
        "live", "test", "token=abc", "rtmp")
    assert publish.url == "rtmp://127.0.0.1:1935/live/test?token=abc"
    assert publish.remote_addr.startswith("127.0.0.1:")
    assert publish.bytes_in > 3000 and publish.bytes_out > 0  # handshake both ways
    sent = headers() + [frame(0, True)]
    pub.send(*sent)
    assert play.total_out() > 6000
    assert hub.registry.kick(play.id, "kicked by test")
    hub.flush()
    assert player.server.close_reason == "kicked by test"
    assert [s.id for s in hub.registry.list_sessions()] == [publish.id]


def test_rtmp_connect_is_an_event_with_app_flash_version_and_tc_url() -> None:
    hub = Hub()
    seen: list[tuple[str, str, str, str, bool]] = []

    class Connects:
        def rtmp_connected(self, session: Session, app: str, flash_ver: str,
                           tc_url: str) -> None:
            seen.append((session.id, app, flash_ver, tc_url,
                         session.id in hub.registry.sessions))

    hub.registry.add_observer(Connects())
    hub.connect("publish")
    assert len(seen) == 1
    sid, app, flash_ver, tc_url, listed = seen[0]
    assert sid.startswith("RTMPPUBSUB") and app == "live" and not listed
    assert tc_url == "rtmp://127.0.0.1:1935/live" and flash_ver
