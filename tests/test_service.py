"""make_service composed into another Twisted application, in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application import service
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent

from lal_twisted import log as lal_log
from lal_twisted.config import from_dict
from lal_twisted.media import amf0, ts
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp.client import connect
from lal_twisted.service import LalService, make_service


def config(log_file: Path, level: str = "info", **sections: Any) -> Any:
    return from_dict({
        "rtmp": {"addr": "127.0.0.1:0", "read_batch_ms": 20},
        "default_http": {"http_listen_addr": "127.0.0.1:0"},
        "log": {"level": level, "filename": str(log_file), "is_to_stdout": False},
        **sections,
    })


def packets() -> list[AVPacket]:
    return [
        AVPacket(DATA, 0, amf0.encode("onMetaData", {"videocodecid": 7.0, "audiocodecid": 10.0})),
        AVPacket(VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x00\x00"),
        AVPacket(AUDIO, 0, b"\xaf\x00\x12\x10"),
        AVPacket(VIDEO, 0, b"\x17\x01\x00\x00\x00" + b"K" * 3000),
        AVPacket(AUDIO, 20, b"\xaf\x01" + b"A" * 100),
        AVPacket(VIDEO, 40, b"\x27\x01\x00\x00\x00" + b"P" * 500),
    ]


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_make_service_inside_another_application(tmp_path: Path) -> Any:
    log_file = tmp_path / "logs" / "lals.log"
    application = service.MultiService()  # stands in for an existing app
    lals = make_service(config(log_file))
    assert isinstance(lals, LalService)
    lals.setServiceParent(application)
    application.startService()
    try:
        assert lals.rtmp is not None and lals.rtmp.port is not None
        assert lals.http is not None and lals.http.port is not None
        rtmp_port = lals.rtmp.port.getHost().port  # type: ignore[attr-defined]
        http_port = lals.http.port.getHost().port  # type: ignore[attr-defined]
        url = f"rtmp://127.0.0.1:{rtmp_port}/live/embedded?token=abc"
        got: list[AVPacket] = []
        player = yield connect(reactor, url, "play", on_packet=got.append)
        publisher = yield connect(reactor, url, "publish")
        sent = packets()
        for p in sent:
            publisher.send_packet(AVPacket(p.kind, p.dts, p.payload))
        for _ in range(50):
            if len(got) >= len(sent):
                break
            yield sleep(0.02)
        assert [(p.kind, p.dts, p.payload) for p in got] == [
            (p.kind, p.dts, p.payload) for p in sent]

        # the registry is reachable from the service, and the stream is in it
        stream = lals.registry.get("live/embedded")
        assert stream is not None and stream.publisher is not None
        assert len(stream.sinks) == 1

        # HTTP-FLV from the same service
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{http_port}/live/embedded.flv".encode())
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [b"video/x-flv"]
        assert response.headers.getRawHeaders(b"access-control-allow-origin") == [b"*"]
        response._transport.loseConnection()
        player.stop()
        publisher.stop()
        yield sleep(0.1)
    finally:
        yield application.stopService()
        lal_log.reset()
    text = log_file.read_text()
    assert "rtmp listening on 127.0.0.1" in text
    assert "publishing live/embedded started" in text
    assert "rtmp session" in text and "ended" in text


@pytest_twisted.inlineCallbacks
def test_log_level_filters_the_file(tmp_path: Path) -> Any:
    log_file = tmp_path / "warn.log"
    lals = make_service(config(log_file, level="warn"))
    lals.startService()
    try:
        rtmp_port = lals.rtmp.port.getHost().port  # type: ignore[union-attr]
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        proto = Protocol()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", rtmp_port), proto)
        proto.transport.write(b"GET / HTTP/1.1\r\n\r\n")  # type: ignore[union-attr]
        yield sleep(0.2)
    finally:
        yield lals.stopService()
        lal_log.reset()
    text = log_file.read_text()
    assert "looks like an HTTP request" in text  # a warning: kept
    assert "listening on" not in text            # info: filtered out


@pytest.mark.parametrize("packer", ["compiled", "python"])
@pytest_twisted.inlineCallbacks
def test_start_tells_when_ts_is_packed_by_the_python_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packer: str) -> Any:
    monkeypatch.setattr(ts, "PACKER", packer)
    logs = []
    for name, extra in (("hls", {"hls": {"enable": True, "use_memory_as_disk_flag": True}}),
                        ("plain", {"hls": {"enable": False}, "httpts": {"enable": False}})):
        log_file = tmp_path / f"{name}.log"
        lals = make_service(config(log_file, **extra))
        lals.startService()
        yield lals.stopService()
        lal_log.reset()
        logs.append(log_file.read_text())
    with_hls, plain = logs
    assert ("MPEG-TS is packed by the Python fallback" in with_hls) == (packer == "python")
    assert "Python fallback" not in plain  # nothing writes TS: no word of it


@pytest.mark.serial  # a steady bitrate for 5 s of wall clock
@pytest_twisted.inlineCallbacks
def test_publisher_reads_are_batched_after_five_seconds(tmp_path: Path) -> Any:
    """rtmp.read_batch_ms: after 5 s at ~50 kB/s the batcher reads the publisher
    (its socket wakes the reactor only for 16 KiB), and players still get every
    packet."""
    import socket

    lals = make_service(config(tmp_path / "batch.log"))
    lals.startService()
    try:
        port = lals.rtmp.port.getHost().port  # type: ignore[union-attr]
        url = f"rtmp://127.0.0.1:{port}/live/batched"
        got: list[AVPacket] = []
        player = yield connect(reactor, url, "play", on_packet=got.append)
        publisher = yield connect(reactor, url, "publish")
        for p in packets()[:4]:
            publisher.send_packet(p)
        sent = 0
        for i in range(56):  # 5 kB every 0.1 s: 50 kB/s for 5.6 s
            publisher.send_packet(AVPacket(VIDEO, 40 + i * 100, b"\x27\x01\x00\x00\x00" +
                                           bytes([i]) * 5000))
            sent += 1
            yield sleep(0.1)
        stream = lals.registry.get("live/batched")
        assert stream is not None
        server_side = stream.publisher
        assert server_side in server_side.factory.batcher
        sock = server_side.transport.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 16384
        for _ in range(50):
            if len([p for p in got if p.payload[:1] == b"\x27"]) >= sent:
                break
            yield sleep(0.05)
        assert len([p for p in got if p.payload[:1] == b"\x27"]) == sent
        player.stop()
        publisher.stop()
        yield sleep(0.1)
    finally:
        yield lals.stopService()
        lal_log.reset()


@pytest.mark.serial  # latency judged in milliseconds
@pytest_twisted.inlineCallbacks
def test_batched_reads_add_at_most_read_batch_ms_when_the_bitrate_drops(
        tmp_path: Path) -> Any:
    """After 5 s at ~250 kB/s reads are batched (SO_RCVLOWAT above 1); then
    112-byte packets every 100 ms must still reach a player about read_batch_ms
    (20) after being sent (median within 20 + 30 ms; none later than 20 + 150 ms,
    which leaves room for a busy machine's scheduling but not for the seconds
    that packets were once held back), and deleteStream must end the batching."""
    import socket
    import time

    lals = make_service(config(tmp_path / "drop.log"))
    lals.startService()
    try:
        port = lals.rtmp.port.getHost().port  # type: ignore[union-attr]
        url = f"rtmp://127.0.0.1:{port}/live/dropping"
        arrived: dict[int, float] = {}

        def on_packet(p: AVPacket) -> None:
            arrived.setdefault(p.dts, time.monotonic())

        player = yield connect(reactor, url, "play", on_packet=on_packet)
        publisher = yield connect(reactor, url, "publish")
        for p in packets()[:4]:
            publisher.send_packet(p)
        ts = 40
        started = time.monotonic()
        while time.monotonic() - started < 5.5:  # 5 kB every 20 ms: ~250 kB/s
            publisher.send_packet(AVPacket(VIDEO, ts, b"\x27\x01\x00\x00\x00" + b"V" * 5000))
            ts += 20
            yield sleep(0.02)
        stream = lals.registry.get("live/dropping")
        assert stream is not None
        server_side = stream.publisher
        sock = server_side.transport.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) > 1
        yield sleep(0.2)

        sent: dict[int, float] = {}
        for _ in range(40):  # 112-byte packets every 100 ms
            ts += 100
            sent[ts] = time.monotonic()
            publisher.send_packet(AVPacket(VIDEO, ts, b"\x27\x01\x00\x00\x00" + b"s" * 107))
            yield sleep(0.1)
        for _ in range(50):  # today's code held some back for seconds
            if len(sent.keys() & arrived.keys()) == len(sent):
                break
            yield sleep(0.1)
        late = sorted(arrived.get(t, float("inf")) - s for t, s in sent.items())
        print(f"small packets late by (ms): min {late[0] * 1000:.1f} "
              f"median {late[len(late) // 2] * 1000:.1f} max {late[-1] * 1000:.1f} "
              f"({len(sent.keys() - arrived.keys())} of {len(sent)} not arrived)")
        assert late[len(late) // 2] <= (20 + 30) / 1000
        assert late[-1] <= (20 + 150) / 1000

        publisher.session.close_stream()  # FCUnpublish + deleteStream; connection stays
        publisher.flush()
        for _ in range(50):
            if stream.publisher is None:
                break
            yield sleep(0.02)
        assert stream.publisher is None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert server_side not in server_side.factory.batcher
        player.stop()
        publisher.stop()
        yield sleep(0.1)
    finally:
        yield lals.stopService()
        lal_log.reset()
