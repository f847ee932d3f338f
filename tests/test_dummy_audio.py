"""lal's in_session.add_dummy_audio_*: silent AAC for streams without audio,
checked by decoding it with ffmpeg; streams with audio pass untouched."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Media, Server, require
from mediatools import finish, http_flv_bytes, push, read_tags, wait_for

from lal_twisted.config import from_dict
from lal_twisted.hub.dummy_audio import MAX_HELD_PACKETS, sequence_header, silent_frame
from lal_twisted.hub.stream import Stream
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket


class Collect:
    stream = None

    def __init__(self) -> None:
        self.packets: list[AVPacket] = []

    def start(self, stream: Stream) -> None:
        pass

    def publish_started(self, stream: Stream) -> None:
        pass

    def publish_stopped(self, stream: Stream) -> None:
        pass

    def send(self, packet: AVPacket) -> None:
        self.packets.append(packet)


def stream_with(wait_ms: int) -> tuple[Stream, Collect]:
    stream, sink = Stream("live/x"), Collect()
    stream.add_sink(sink, player=False)  # type: ignore[arg-type]
    stream.start_publish(object())
    stream.add_dummy_audio(wait_ms)
    return stream, sink


def video(dts: int, key: bool = False) -> AVPacket:
    return AVPacket(VIDEO, dts, (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00frame")


def test_config_keys_and_defaults() -> None:
    default = from_dict({})
    assert (default.in_session.add_dummy_audio_enable,
            default.in_session.add_dummy_audio_wait_audio_ms) == (False, 150)
    on = from_dict({"in_session": {"add_dummy_audio_enable": True,
                                   "add_dummy_audio_wait_audio_ms": 300}})
    assert on.in_session.add_dummy_audio_wait_audio_ms == 300
    assert not any("in_session" in w for w in on.warnings)


def test_audio_within_the_wait_passes_everything_unchanged() -> None:
    stream, sink = stream_with(150)
    packets = [AVPacket(DATA, 0, b"\x02\x00\x0aonMetaData"), video(0, key=True), video(40),
               AVPacket(AUDIO, 60, b"\xaf\x01aac"), video(80)]
    for p in packets:
        stream.feed(p)
    assert sink.packets == packets
    assert "feed" not in stream.__dict__, "after the analysis the stream is fed directly"


def test_no_audio_adds_silence_in_timestamp_order() -> None:
    stream, sink = stream_with(150)
    for i in range(50):
        stream.feed(video(i * 40, key=i % 25 == 0))
    audio = [p for p in sink.packets if p.kind == AUDIO]
    assert audio[0].payload == sequence_header() and audio[0].is_sequence_header
    assert all(p.payload == silent_frame() for p in audio[1:])
    dts = [p.dts for p in sink.packets]
    assert dts == sorted(dts)
    # 1024 samples at 44.1 kHz: 23.2 ms a frame, from the first video dts to the last.
    assert len(audio) - 1 == 49 * 40 * 44100 // 1024 // 1000 + 1
    assert stream.tracks.audio is not None and stream.tracks.audio.sample_rate == 44100
    # Late audio from the publisher is dropped: one audio track only.
    stream.feed(AVPacket(AUDIO, 2000, b"\xaf\x01real"))
    assert all(p.payload != b"\xaf\x01real" for p in sink.packets)


def test_analysis_holds_a_bounded_number_of_packets() -> None:
    stream, sink = stream_with(150)
    for _ in range(MAX_HELD_PACKETS):
        stream.feed(video(0))  # timestamps that do not move
    assert len(sink.packets) > MAX_HELD_PACKETS  # decided: silence added, all let out


def test_timestamp_jump_is_not_filled_with_hours_of_silence() -> None:
    stream, sink = stream_with(0)
    stream.feed(video(0, key=True))
    stream.feed(video(40))
    stream.feed(video(3_600_000))
    assert len([p for p in sink.packets if p.kind == AUDIO]) < 10


def test_publisher_gone_during_analysis_flushes_what_was_held() -> None:
    stream, sink = stream_with(150)
    stream.feed(video(0, key=True))
    stream.stop_publish()
    assert [p.dts for p in sink.packets] == [0]


# The end-to-end tests publish streams of their own names to one server.
@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    return {"in_session": {"add_dummy_audio_enable": True,
                           "add_dummy_audio_wait_audio_ms": 150}}


@pytest.mark.shared_server
def test_video_only_stream_gets_silent_aac_that_ffmpeg_decodes(
        server: Server, media: Media, tmp_path: Path) -> None:
    pusher = push(media.video_only, server.rtmp_url("vonly"))
    try:
        assert wait_for(lambda: "adding silent AAC" in server.log(), 15)
        _, body = http_flv_bytes(server.flv_url("vonly"), 3.0)
    finally:
        pusher.kill()
        finish(pusher)
    out = tmp_path / "played.flv"
    out.write_bytes(body)
    probe = subprocess.run(
        [require("ffprobe"), "-v", "error", "-count_frames", "-show_streams", "-of", "json",
         str(out)], capture_output=True, text=True, timeout=60, check=True)
    assert probe.stderr == "", probe.stderr
    streams = {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}
    audio = streams["audio"]
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "44100", 2)
    assert int(audio["nb_read_frames"]) > 2 * 44100 // 1024  # more than 2 s of it
    assert int(streams["video"]["nb_read_frames"]) >= 50
    volume = subprocess.run([require("ffmpeg"), "-hide_banner", "-i", str(out), "-map", "0:a",
                             "-af", "volumedetect", "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert "max_volume: -91.0 dB" in volume.stderr  # silence: the 16-bit floor
    assert "stream live/vonly audio: AAC LC 44100Hz 2ch" in server.log()


@pytest.mark.shared_server
def test_stream_with_audio_is_untouched(server: Server, media: Media) -> None:
    pusher = push(media.av, server.rtmp_url("av"))
    try:
        server.wait_live("av", 15)
        time.sleep(1.0)
        _, body = http_flv_bytes(server.flv_url("av"), 2.0)
    finally:
        pusher.kill()
        finish(pusher)
    out_tags = [(t.tag_type, t.timestamp, t.payload)
                for t in read_tags_bytes(body) if t.tag_type in (AUDIO, VIDEO)]
    source = [(t.tag_type, t.timestamp, t.payload)
              for t in read_tags(media.av) if t.tag_type in (AUDIO, VIDEO)]
    assert out_tags and all(tag in source for tag in out_tags)
    assert "adding silent AAC" not in server.log()


def read_tags_bytes(data: bytes) -> list:  # type: ignore[type-arg]
    from lal_twisted.media.flv import FlvReader
    return FlvReader().feed(data)
