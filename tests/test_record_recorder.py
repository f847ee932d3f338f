"""The recorder in process: a publish fed packet by packet becomes a file that
ffprobe decodes, and observers hear of it once the file is closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import FPS, generate
from mediatools import probe
from threadclock import ThreadedClock
from zope.interface import implementer

from lal_twisted.hub.events import Observer
from lal_twisted.hub.ports import IPublisher
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.media.packet import AVPacket
from lal_twisted.record.recorder import FLV, Recorded, Recorder
from lal_twisted.tools.flvfile import iter_file


@implementer(IPublisher)
class Publisher:
    description = "test publisher"

    def close(self, reason: str) -> None:
        pass


class Finished(Observer):
    def __init__(self) -> None:
        self.records: list[Recorded] = []

    def record_finished(self, record: Any) -> None:
        self.records.append(record)


def publish_file(registry: StreamRegistry, path: Path, name: str) -> None:
    session = registry.new_session("RTMPPUBSUB", "rtmp", "127.0.0.1:1")
    session.app, session.stream = "live", name
    publisher = Publisher()
    streams: list[Any] = []
    registry.publish(session, publisher).addCallback(streams.append)
    stream = streams[0]
    for tag in iter_file(str(path)):
        stream.feed(AVPacket(tag.tag_type, tag.timestamp, tag.payload))
    registry.unpublish(session, publisher)


def test_a_publish_becomes_a_file_and_an_event(tmp_path: Path) -> None:
    source = generate(tmp_path / "src.flv", 3)
    clock = ThreadedClock()
    registry = StreamRegistry(reactor=clock, update_interval=0)
    finished = Finished()
    registry.add_observer(finished)
    recorder = Recorder(registry, [(FLV, str(tmp_path / "rec"))], clock)
    recorder.startService()
    publish_file(registry, source, "cam")
    clock.run(lambda: bool(finished.records))
    [record] = finished.records
    assert (record.key, record.format, record.error) == ("live/cam", "flv", None)
    assert Path(record.path).parent == tmp_path / "rec"
    assert Path(record.path).name.startswith("cam-") and record.path.endswith(".flv")
    assert record.bytes == Path(record.path).stat().st_size > 0
    assert abs(record.duration_ms - 3000) <= 100
    assert registry.streams == {}  # the recording let go of the stream
    info = probe(Path(record.path))
    assert info.decode_errors == "" and info.video_frames == 3 * FPS
    assert info == probe(source)  # every frame, as published
    stopped = recorder.stopService()
    clock.run(lambda: stopped.called)


def test_nothing_is_attached_when_recording_is_off() -> None:
    from lal_twisted.config import from_dict
    from lal_twisted.service import make_service

    off = make_service(from_dict({"rtmp": {"addr": "127.0.0.1:0"},
                                  "default_http": {"http_listen_addr": "127.0.0.1:0"}}))
    assert off.recorder is None
    on = make_service(from_dict({"rtmp": {"addr": "127.0.0.1:0"},
                                 "default_http": {"http_listen_addr": "127.0.0.1:0"},
                                 "record": {"enable_flv": True}}))
    assert on.recorder is not None and on.recorder.formats == [(FLV, "./lal_record/flv/")]
    # the recorder's subscriptions: a source (publish or relay pull) started, stopped
    assert len(on.registry.events) == len(off.registry.events) + 2


class Audience(Observer):
    def __init__(self) -> None:
        self.events: list[str] = []

    def stream_unwatched(self, key: str) -> None:
        self.events.append(f"unwatched {key}")


def test_a_recording_is_not_an_audience(tmp_path: Path) -> None:
    from test_hub_seams import Collector

    clock = ThreadedClock()
    registry = StreamRegistry(reactor=clock, update_interval=0)
    audience = Audience()
    registry.add_observer(audience)
    recorder = Recorder(registry, [(FLV, str(tmp_path))], clock)
    recorder.startService()
    publisher_session = registry.new_session("RTMPPUBSUB", "rtmp", "127.0.0.1:1")
    publisher_session.app, publisher_session.stream = "live", "cam"
    registry.publish(publisher_session, Publisher())
    stream = registry.get("live/cam")
    assert stream is not None and len(stream.sinks) == 1  # the recording
    assert stream.stats()["subscribers"] == 0
    player = registry.new_session("FLVSUB", "httpflv", "127.0.0.1:2")
    player.app, player.stream = "live", "cam"
    sink = Collector(clock)
    registry.play(player, sink)
    assert stream.stats()["subscribers"] == 1
    registry.stop_play(player, sink)
    assert audience.events == ["unwatched live/cam"]  # though the recording goes on
    stopped = recorder.stopService()
    clock.run(lambda: stopped.called)
