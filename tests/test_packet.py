"""The packet and track model: dts/pts, codec ids (legacy and FourCC), flags,
the shared encoding cache, and tracks from real sequence headers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import generate, require
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import to_enhanced

from lal_twisted.hub.stream import Stream
from lal_twisted.media import amf0, flv
from lal_twisted.media.flv import FlvReader, FlvTag
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.media.tags import Codec, TagType
from lal_twisted.media.track import announced_tracks, audio_track, video_track
from lal_twisted.rtmp.session import media_encoder


@pytest.fixture(scope="module")
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("pkt") / "bf.flv", 2, bframes=3)


def tags_of(path: Path) -> list[FlvTag]:
    return FlvReader().feed(path.read_bytes())


def ffprobe_video_packets(path: Path) -> list[tuple[int, int, bool]]:
    out = subprocess.run(
        [require("ffprobe"), "-v", "error", "-select_streams", "v", "-show_entries",
         "packet=pts,dts,flags", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60).stdout
    return [(int(p["dts"]), int(p["pts"]), "K" in p["flags"])
            for p in json.loads(out)["packets"]]


def frames(tags: list[FlvTag]) -> list[AVPacket]:
    packets = [AVPacket(t.tag_type, t.timestamp, t.payload) for t in tags]
    # ffprobe counts neither sequence headers nor ffmpeg's end-of-sequence tag.
    return [p for p in packets if p.kind == VIDEO and not p.is_sequence_header
            and p.payload[1] != 2]


def test_dts_and_pts_of_h264_with_b_frames_match_ffprobe(bframes: Path) -> None:
    packets = frames(tags_of(bframes))
    expected = ffprobe_video_packets(bframes)
    assert [(p.dts, p.pts, p.is_keyframe) for p in packets] == expected
    assert any(p.pts != p.dts for p in packets), "the stream has B-frames"
    assert {p.codec for p in packets} == {Codec.H264}


def test_enhanced_rtmp_fourcc_gives_the_same_packets_as_legacy_ids(bframes: Path) -> None:
    legacy = [AVPacket(t.tag_type, t.timestamp, t.payload) for t in tags_of(bframes)]
    enhanced = [AVPacket(t.tag_type, t.timestamp, t.payload)
                for t in map(to_enhanced, tags_of(bframes))]
    assert any(p.payload[0] & 0x80 for p in enhanced)
    view = [(p.kind, p.dts, p.pts, p.codec, p.is_keyframe, p.is_sequence_header)
            for p in legacy]
    assert view == [(p.kind, p.dts, p.pts, p.codec, p.is_keyframe, p.is_sequence_header)
                    for p in enhanced]
    assert {p.codec for p in legacy if p.kind == AUDIO} == {Codec.AAC}
    assert [p.codec for p in legacy if p.kind == DATA] == [None]


@pytest.mark.parametrize(("kind", "payload", "codec", "key", "seq"), [
    (VIDEO, b"\x17\x00\x00\x00\x00", Codec.H264, True, True),
    (VIDEO, b"\x27\x01\x00\x00\x00", Codec.H264, False, False),
    (VIDEO, b"\x1c\x00\x00\x00\x00", Codec.H265, True, True),  # legacy id 12
    (VIDEO, b"\x22\x00", Codec.H263, False, False),
    (VIDEO, b"\x90hvc1", Codec.H265, True, True),
    (VIDEO, b"\x93hvc1", Codec.H265, True, False),
    (VIDEO, b"\xa1av01", Codec.AV1, False, False),
    (VIDEO, b"\x90vp09", Codec.VP9, True, True),
    (VIDEO, b"\x90xxxx", Codec.UNKNOWN, True, True),
    (AUDIO, b"\xaf\x00\x12\x10", Codec.AAC, False, True),
    (AUDIO, b"\xaf\x01\x00", Codec.AAC, False, False),
    (AUDIO, b"\x2f\xff", Codec.MP3, False, False),
    (AUDIO, b"\x90Opus", Codec.OPUS, False, True),
    (AUDIO, b"\x91Opus", Codec.OPUS, False, False),
    (AUDIO, b"\x90fLaC", Codec.FLAC, False, True),
])
def test_codec_ids_from_legacy_headers_and_fourcc(kind: int, payload: bytes, codec: Codec,
                                                  key: bool, seq: bool) -> None:
    packet = AVPacket(kind, 0, payload)
    assert (packet.codec, packet.is_keyframe, packet.is_sequence_header) == (codec, key, seq)


def test_composition_time_is_signed_and_only_where_the_format_has_one() -> None:
    assert AVPacket(VIDEO, 100, b"\x27\x01\xff\xff\xd8rest").pts == 60  # -40 ms
    assert AVPacket(VIDEO, 100, b"\xa1hvc1\x00\x00\x50rest").pts == 180
    assert AVPacket(VIDEO, 100, b"\xa1hvc1\xff\xff\xffrest").pts == 99
    assert AVPacket(VIDEO, 100, b"\xa3hvc1rest").pts == 100  # CodedFramesX: none
    assert AVPacket(VIDEO, 100, b"\xa1av01\x00\x00\x50").pts == 100  # av01 has no CTS
    assert AVPacket(AUDIO, 100, b"\xaf\x01\x00\x00\x50").pts == 100
    assert AVPacket(VIDEO, 7, b"").pts == 7 and AVPacket(VIDEO, 7, b"").codec is None
    for short in (b"\x27\x01", b"\x27\x01\x00\x01", b"\xa1hvc1\x00", b"\xa1hv", b"\xaf"):
        assert AVPacket(VIDEO, 7, short).pts == 7  # truncated headers: no CTS, no error


def test_encodings_are_cached_per_encoder_and_shared() -> None:
    packet = AVPacket(VIDEO, 40, b"\x27\x01\x00\x00\x00" + bytes(5000))
    small, big = media_encoder(128), media_encoder(4096)
    assert media_encoder(128) is small
    tag = packet.encoded(flv.TAG_ENCODER)
    assert tag == flv.encode_tag(TagType.VIDEO, 40, packet.payload)
    assert packet.encoded(flv.TAG_ENCODER) is tag
    chunks_small, chunks_big = packet.encoded(small), packet.encoded(big)
    assert packet.encoded(small) is chunks_small and packet.encoded(big) is chunks_big
    assert len(chunks_small) > len(chunks_big)  # more chunk headers at 128 bytes


def test_tracks_from_real_sequence_headers_and_metadata(bframes: Path) -> None:
    tags = tags_of(bframes)
    stream = Stream("live/t")
    stream.start_publish(object())
    meta = next(t for t in tags if t.tag_type == DATA)
    stream.feed(AVPacket(DATA, 0, meta.payload))
    announced = stream.tracks
    assert announced.video is not None and announced.video.codec == Codec.H264
    assert (announced.video.width, announced.video.height) == (320, 240)
    assert announced.audio is not None and announced.audio.codec == Codec.AAC
    for t in tags[1:]:
        stream.feed(AVPacket(t.tag_type, t.timestamp, t.payload))
    video, audio = stream.tracks.video, stream.tracks.audio
    assert video is not None and audio is not None
    assert (video.codec, video.width, video.height) == (Codec.H264, 320, 240)
    assert video.profile in ("Main", "High") and video.level > 0
    assert video.sps and video.pps and video.sps[0][0] & 0x1F == 7
    assert video.config[0] == 1  # the AVCDecoderConfigurationRecord as sent
    assert (audio.codec, audio.sample_rate, audio.channels) == (Codec.AAC, 44100, 2)
    assert audio.config[:2] == bytes.fromhex("1210")  # AudioSpecificConfig: LC 44.1 kHz 2ch
    assert stream.stats()["video"] == {"codec": "h264", "codec_name": "H264",
                                       "profile": video.profile, "level": video.level,
                                       "width": 320, "height": 240}
    assert stream.stats()["audio"] == {"codec": "aac", "codec_name": "AAC", "profile": "LC",
                                       "sample_rate": 44100, "channels": 2}


def test_track_parsing_never_raises_on_garbage() -> None:
    assert video_track(b"\x17\x00\x00\x00\x00\x01\x02").error
    assert audio_track(b"\xaf\x00").error
    assert video_track(b"").codec == Codec.UNKNOWN
    assert announced_tracks(b"\x02\x00\x0aonMetaData\x03garbage").video is None
    odd = announced_tracks(amf0.encode("onMetaData", {"videocodecid": float("inf"),
                                                      "audiocodecid": "mp3"}))
    assert odd.video is not None and odd.video.codec == Codec.UNKNOWN
    assert odd.audio is not None and odd.audio.codec == Codec.UNKNOWN


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from([AUDIO, VIDEO, DATA, 0, 255]), payload=st.binary(max_size=12))
def test_any_payload_makes_a_packet_without_error(kind: int, payload: bytes) -> None:
    packet = AVPacket(kind, 1000, payload)
    assert abs(packet.pts - 1000) < 0x800000
    assert packet.encoded(flv.TAG_ENCODER)[:1] == bytes([kind])
