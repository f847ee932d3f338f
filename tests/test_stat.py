"""lal's JSON shapes built from sessions and streams (no sockets)."""

from __future__ import annotations

import re
from datetime import datetime

from twisted.internet.testing import MemoryReactorClock

from lal_twisted.api import stat
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.hub.session import Role, Session


def test_lal_time_is_gos_layout_with_trimmed_milliseconds() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 120000).astimezone().timestamp()
    text = stat.lal_time(when)
    assert re.fullmatch(r"2026-01-02 03:04:05\.12 [+-]\d{4} \S+", text), text
    whole = datetime(2026, 1, 2, 3, 4, 5).astimezone().timestamp()
    assert re.fullmatch(r"2026-01-02 03:04:05 [+-]\d{4} \S+", stat.lal_time(whole))


def test_protocol_and_base_type_names() -> None:
    s = Session("RTMPPUBSUB1", "rtmp", "1.2.3.4:5")
    assert (stat.protocol_name(s), stat.base_type(s)) == ("RTMP", "PUBSUB")
    for role, name in ((Role.PUBLISH, "PUB"), (Role.PLAY, "SUB"), (Role.RELAY_PULL, "PULL"),
                       (Role.RELAY_PUSH, "PUSH")):
        s.role = role
        assert stat.base_type(s) == name
    for protocol, name in (("httpflv", "FLV"), ("httpts", "TS"), ("rtsp", "RTSP"),
                           ("webrtc", "WEBRTC")):
        assert stat.protocol_name(Session("X1", protocol, "")) == name


def test_protocol_names_are_the_strings_lal_users_parse() -> None:
    from lal_twisted.protocols import ProtocolName

    # ours: metrics labels, session stats, simple_auth's keys; lal's: API and notify
    assert {str(p): p.lal_name for p in ProtocolName} == {
        "rtmp": "RTMP", "httpflv": "FLV", "wsflv": "FLV", "httpts": "TS", "hls": "HLS",
        "rtsp": "RTSP"}
    s = Session("FLVSUB1", ProtocolName.HTTP_FLV, "1.2.3.4:5")
    assert stat.session_stat(s)["protocol"] == "FLV" and s.stats()["protocol"] == "httpflv"


class Pull:
    description = "pull"

    def close(self, reason: str) -> None:
        pass


def test_a_relay_pull_fills_pull_and_leaves_pub_empty() -> None:
    clock = MemoryReactorClock()
    registry = StreamRegistry(reactor=clock)
    session = registry.new_session("RTMPPULL", "rtmp", "10.0.0.1:1935")
    session.app, session.stream = "live", "cam"
    registry.publish(session, Pull(), role=Role.RELAY_PULL)
    group = stat.all_groups(registry)[0]
    assert group["pub"] == stat.session_stat(None)
    assert (group["pull"]["session_id"], group["pull"]["base_type"]) == (session.id, "PULL")
    assert (group["stream_name"], group["app_name"], group["subs"]) == ("cam", "live", [])
    assert stat.find_stream(registry, "cam") is stat.find_stream(registry, "live/cam")
    assert stat.find_stream(registry, "nope") is None


def test_frame_rates_count_video_packets_per_second() -> None:
    from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket

    clock = MemoryReactorClock()
    registry = StreamRegistry(reactor=clock)
    session = registry.new_session("RTMPPUBSUB", "rtmp", "")
    session.app, session.stream = "live", "t"
    stream = registry.publish(session, Pull()).result  # type: ignore[attr-defined]
    now = [1000.0]
    rates = stat.FrameRates(registry, clock, clock=lambda: now[0])
    rates.start()
    for second in range(3):
        for i in range(25):
            stream.feed(AVPacket(VIDEO, second * 1000 + i * 40, b"\x27\x01\x00\x00\x00x"))
            stream.feed(AVPacket(AUDIO, second * 1000 + i * 40, b"\xaf\x01x"))
        now[0] += 1
        clock.advance(1.0)
    assert rates.of("live/t") == [{"unix_sec": 1002, "v": 25}, {"unix_sec": 1001, "v": 25}]
    rates.stop()
