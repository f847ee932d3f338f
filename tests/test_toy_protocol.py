"""The seam, proved: a protocol that lives only in this file plugs into the hub.

"Toy" is raw H.264 Annex-B over TCP.  Its input listener takes a connection
(ffmpeg sending ``-f h264`` to ``tcp://``), announces the stream's track from
the first SPS and publishes it as ``live/toy``: FLV packets (an AVC sequence
header, then one AVCC frame per access unit, 25 fps timestamps).  Its output
listener plays a stream (``live/cam``) to each connection as Annex-B, with
the parameter sets before every keyframe.  Both are entries of the listener
table given to ``make_service``; nothing in ``lal_twisted/hub`` knows them.

Checked with real clients: the toy stream plays over RTMP and HLS (ffprobe
decodes every frame without an error), and a stream published over RTMP by
ffmpeg comes out of the toy output as H.264 that ffmpeg decodes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted
from conftest import FPS, free_port, require
from mediatools import decode_errors, made_by, probe
from twisted.internet import defer, protocol, reactor, task, threads
from zope.interface import implementer

from lal_twisted.config import load
from lal_twisted.hub.ports import IPublisher, ISink, StreamView
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.hub.session import Session
from lal_twisted.media import avc, convert
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import Tracks, VideoTrack
from lal_twisted.service import ListenerSpec, make_service, stream_listener

START = b"\x00\x00\x00\x01"
FRAME_MS = 1000 // FPS
MAX_BUFFER = 4 * 1024 * 1024  # a peer that sends no start code cannot grow it without bound


# -- the toy input: Annex-B in, FLV packets to the hub ----------------------------------
class AccessUnits:
    """Annex-B bytes in, access units (lists of NAL units) out.  A unit ends
    where the next one's first slice (first_mb_in_slice 0) or a parameter
    set, SEI or AUD after a slice begins; the NAL unit after the last start
    code waits for more bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.current: list[bytes] = []
        self.has_slice = False

    def feed(self, data: bytes, final: bool = False) -> list[list[bytes]]:
        self.buffer += data
        whole = bytes(self.buffer)
        cut = len(whole)
        if not final:
            cut = whole.rfind(b"\x00\x00\x01")
            if cut > 0 and whole[cut - 1] == 0:
                cut -= 1
            if cut <= 0:
                return []
        self.buffer = bytearray(whole[cut:])
        units: list[list[bytes]] = []
        for nal in convert.split_annexb(whole[:cut]):
            kind = nal[0] & 0x1F
            is_slice = kind in (1, 5)
            begins = (nal[1] & 0x80 if is_slice and len(nal) > 1 else kind in (6, 7, 8, 9))
            if self.has_slice and begins:
                units.append(self.current)
                self.current, self.has_slice = [], False
            self.current.append(nal)
            self.has_slice = self.has_slice or is_slice
        if final and self.current:
            units.append(self.current)
            self.current = []
        return units


@implementer(IPublisher)
class ToyInput(protocol.Protocol):
    def __init__(self, registry: StreamRegistry, key: tuple[str, str]) -> None:
        self.registry = registry
        self.app, self.name = key
        self.units = AccessUnits()
        self.stream: Any = None
        self.session: Session | None = None
        self.frames = 0
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.description = "toy input"

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        session = self.session = self.registry.new_session("TOYPUB", "toy",
                                                           f"{peer.host}:{peer.port}")
        session.app, session.stream = self.app, self.name
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.registry.publish(session, self).addCallbacks(self._publishing, self._refused)

    def _publishing(self, stream: Any) -> None:
        self.stream = stream
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def _refused(self, failure: Any) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        units = self.units.feed(data)
        if len(self.units.buffer) > MAX_BUFFER:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for unit in units:
            self._unit(unit)

    def _unit(self, nals: list[bytes]) -> None:
        frame: list[bytes] = []
        keyframe = False
        for nal in nals:
            kind = nal[0] & 0x1F
            if kind == 7:
                self.sps = nal
            elif kind == 8:
                self.pps = nal
            elif kind in (1, 5, 6):
                frame.append(nal)
                keyframe = keyframe or kind == 5
        if self.stream is None or self.sps is None or self.pps is None or not frame:
            return
        if self.frames == 0:
            info = avc.parse_sps(self.sps)
            # What the protocol said before any media: announced tracks.
            self.stream.announce(Tracks(VideoTrack(Codec.H264, width=info.width,
                                                   height=info.height, sps=[self.sps],
                                                   pps=[self.pps])))
            record = avc.build_decoder_config([self.sps], [self.pps])
            self.stream.feed(AVPacket(VIDEO, 0, convert.video_sequence_start(Codec.H264, record)))
        if self.frames == 0 and not keyframe:
            return  # a stream starts at a keyframe
        body = convert.video_body(Codec.H264, keyframe, convert.avcc(frame))
        self.stream.feed(AVPacket(VIDEO, self.frames * FRAME_MS, body))
        self.frames += 1

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if self.stream is not None and self.session is not None:
            for unit in self.units.feed(b"", final=True):
                self._unit(unit)
            self.registry.unpublish(self.session, self)
        if self.session is not None:
            self.session.ended = True

    def close(self, reason: str) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class ToyInputFactory(protocol.Factory):
    def __init__(self, registry: StreamRegistry, key: tuple[str, str]) -> None:
        self.registry, self.key = registry, key

    def buildProtocol(self, addr: Any) -> ToyInput:  # noqa: N802
        return ToyInput(self.registry, self.key)


# -- the toy output: a stream out as Annex-B ------------------------------------------------
class AnnexB:
    """The stateless encoding: an AVCC frame as Annex-B, the parameter sets
    (from the stream's track) before each keyframe; shared by every player."""

    def __init__(self, stream: StreamView) -> None:
        self.stream = stream

    def encode(self, packet: AVPacket) -> bytes:
        track = self.stream.tracks.video
        if track is None or track.codec != Codec.H264 or not track.sps:
            return b""
        return convert.AnnexBWriter(track).frame(packet)


@implementer(ISink)
class ToySink:
    """The five calls of the sink port and nothing else."""

    encoders: dict[int, AnnexB] = {}

    def __init__(self, proto: ToyOutput) -> None:
        self.proto = proto
        self.encoder: AnnexB | None = None
        self.started = False

    def start(self, stream: StreamView) -> None:
        # One encoder object per stream: its bytes are shared by its players.
        self.encoder = ToySink.encoders.setdefault(id(stream), AnnexB(stream))

    def send(self, packet: AVPacket) -> None:
        assert self.encoder is not None
        if not self.started and not packet.is_keyframe:
            return
        data = packet.encoded(self.encoder)
        if data:
            self.started = True
            self.proto.transport.write(data)  # type: ignore[union-attr]

    def publish_started(self, stream: StreamView) -> None:
        self.started = False

    def publish_stopped(self, stream: StreamView) -> None:
        self.proto.transport.loseConnection()  # type: ignore[union-attr]

    def close(self, reason: str) -> None:
        self.proto.transport.loseConnection()  # type: ignore[union-attr]


class ToyOutput(protocol.Protocol):
    def __init__(self, registry: StreamRegistry, key: tuple[str, str]) -> None:
        self.registry = registry
        self.key = key
        self.session: Session | None = None
        self.sink = ToySink(self)

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        session = self.session = self.registry.new_session("TOYSUB", "toy",
                                                           f"{peer.host}:{peer.port}")
        session.app, session.stream = self.key
        self.registry.play(session, self.sink).addErrback(
            lambda f: self.transport.loseConnection())  # type: ignore[union-attr]

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if self.session is not None:
            self.session.ended = True
            self.registry.stop_play(self.session, self.sink)


class ToyOutputFactory(protocol.Factory):
    def __init__(self, registry: StreamRegistry, key: tuple[str, str]) -> None:
        self.registry, self.key = registry, key

    def buildProtocol(self, addr: Any) -> ToyOutput:  # noqa: N802
        return ToyOutput(self.registry, self.key)


def toy_listeners() -> tuple[ListenerSpec, ...]:
    """The toy protocol's two entries of the listener table."""
    here = "tcp:0:interface=127.0.0.1"
    return (
        ListenerSpec("toy_in", "toy.in_addr", lambda lals: True, stream_listener(
            lambda c: here, lambda lals: ToyInputFactory(lals.registry, ("live", "toy")))),
        ListenerSpec("toy_out", "toy.out_addr", lambda lals: True, stream_listener(
            lambda c: here, lambda lals: ToyOutputFactory(lals.registry, ("live", "cam")))),
    )


# -- the test -------------------------------------------------------------------------------
def run(*cmd: str, timeout: float = 60) -> defer.Deferred[subprocess.CompletedProcess[bytes]]:
    return threads.deferToThread(subprocess.run, list(cmd), capture_output=True,
                                 timeout=timeout)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_a_protocol_from_outside_the_hub_publishes_and_plays(tmp_path: Path) -> Any:
    ffmpeg, ffprobe = require("ffmpeg"), require("ffprobe")
    # Raw H.264 without B-frames (the toy gives frames their times in order).
    source = made_by([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                      f"testsrc=size=320x240:rate={FPS}", "-t", "6", "-c:v", "libx264",
                      "-preset", "ultrafast", "-bf", "0", "-g", str(FPS), "-pix_fmt", "yuv420p",
                      "-f", "h264"], tmp_path / "src.h264")
    rtmp_port, http_port = free_port(), free_port()
    conf = tmp_path / "lals.json"
    conf.write_text(json.dumps({
        "rtmp": {"addr": f"127.0.0.1:{rtmp_port}"},
        "default_http": {"http_listen_addr": f"127.0.0.1:{http_port}"},
        "hls": {"enable": True, "use_memory_as_disk_flag": True, "fragment_duration_ms": 1000},
        "log": {"filename": str(tmp_path / "lals.log"), "is_to_stdout": False},
    }))
    lals = make_service(load(str(conf)), reactor, listeners=toy_listeners())
    lals.startService()
    try:
        toy_in = lals.listeners["toy_in"].port.getHost().port  # type: ignore[union-attr]
        toy_out = lals.listeners["toy_out"].port.getHost().port  # type: ignore[union-attr]

        # 1. ffmpeg feeds the toy input; the stream plays over RTMP and HLS.
        feeding = run(ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "h264",
                      "-framerate", str(FPS), "-i", str(source), "-c", "copy", "-f", "h264",
                      f"tcp://127.0.0.1:{toy_in}")
        for _ in range(100):
            stream = lals.registry.get("live/toy")
            if stream is not None and stream.publishing and stream.packets_in > 10:
                break
            yield sleep(0.05)
        assert lals.registry.get("live/toy").tracks.video.width == 320  # announced
        described = yield lals.registry.describe(_session(lals.registry, "toy"))
        assert described.video.codec == Codec.H264 and described.video.sps
        rtmp_out = tmp_path / "rtmp.flv"
        hls_out = tmp_path / "hls.ts"
        rtmp_play, hls_play = yield defer.gatherResults([
            run(ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i",
                f"rtmp://127.0.0.1:{rtmp_port}/live/toy", "-t", "2", "-c", "copy", str(rtmp_out)),
            _after(1.5, run, ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i",
                   f"http://127.0.0.1:{http_port}/hls/toy.m3u8", "-t", "1", "-c", "copy",
                   str(hls_out)),
        ])
        assert rtmp_play.returncode == 0, rtmp_play.stderr
        assert hls_play.returncode == 0, hls_play.stderr
        for out in (rtmp_out, hls_out):
            info = probe(out)
            assert info.codecs == {"video": "h264"}, (out, info)
            assert (info.width, info.height) == (320, 240)
            assert info.first_video_key and info.decode_errors == "", (out, info)
            assert info.video_frames >= FPS * 0.8, (out, info)
        yield feeding

        # 2. ffmpeg publishes over RTMP; the frames come out of the toy output.
        publishing = run(ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
                         "-i", f"testsrc=size=160x120:rate={FPS}", "-t", "4", "-c:v", "libx264",
                         "-preset", "ultrafast", "-g", str(FPS), "-pix_fmt", "yuv420p", "-f",
                         "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/cam")
        for _ in range(100):
            cam = lals.registry.get("live/cam")
            if cam is not None and cam.publishing:
                break
            yield sleep(0.05)
        received = bytearray()
        done: defer.Deferred[None] = defer.Deferred()

        class Reader(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                received.extend(data)

            def connectionLost(self, reason: Any) -> None:  # noqa: N802
                done.callback(None)

        endpoint = protocol.ClientCreator(reactor, Reader)
        reader = yield endpoint.connectTCP("127.0.0.1", toy_out)
        yield publishing
        yield done  # the publisher left: the toy output ends its connection
        del reader
        es = tmp_path / "out.h264"
        es.write_bytes(bytes(received))
        assert decode_errors(es) == ""
        count = subprocess.run([ffprobe, "-v", "error", "-f", "h264", "-count_frames",
                                "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(es)],
                               capture_output=True, text=True, timeout=60, check=True)
        width, height, frames = count.stdout.strip().split(",")
        assert (width, height) == ("160", "120")
        assert int(frames) >= FPS * 3
    finally:
        yield lals.stopService()


def _session(registry: StreamRegistry, name: str) -> Session:
    session = registry.new_session("TOYSUB", "toy", "127.0.0.1:1")
    session.app, session.stream = "live", name
    return session


def _after(seconds: float, fn: Any, *args: Any) -> defer.Deferred[Any]:
    return task.deferLater(reactor, seconds, fn, *args).addCallback(lambda d: d)  # type: ignore[arg-type]
