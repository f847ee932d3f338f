"""Enhanced RTMP headers built from the veovera spec's layouts: every video and
audio packet type, ModEx, the three multitrack kinds, command frames; what a
Stream keeps for late joiners; the connect capability negotiation; the codec
configuration records read for the stats."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from codectools import make_media
from hypothesis import given
from hypothesis import strategies as st
from test_session import RawPeer

from lal_twisted.hub.stream import MAX_EXTRA_HEADERS, Stream
from lal_twisted.media import audio_config, av1, enhanced, hevc, vp9
from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.media.tags import Codec, lal_codec_name
from lal_twisted.media.track import audio_track, video_track

KEY, INTER, COMMAND = 1, 2, 5


def ex_video(frame_type: int, packet_type: int) -> bytes:
    return bytes([0x80 | frame_type << 4 | packet_type])


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def test_single_track_packet_types() -> None:
    cases = [
        (ex_video(KEY, 0) + b"hvc1" + b"\x01rec", Codec.H265, True, True, None, 0),
        (ex_video(KEY, 1) + b"hvc1" + u24(80) + b"nal", Codec.H265, True, False, None, 80),
        (ex_video(INTER, 3) + b"av01" + b"obu", Codec.AV1, False, False, None, 0),
        (ex_video(KEY, 2) + b"vp09", Codec.VP9, False, False, None, 0),  # SequenceEnd
        (ex_video(COMMAND, 4) + b"av01" + b"\x02\x00\x09colorInfo", Codec.AV1, False, True,
         (VIDEO, 4, b"av01", 0), 0),
        (ex_video(KEY, 5) + b"av01" + b"desc", Codec.AV1, False, True, (VIDEO, 5, b"av01", 0), 0),
    ]
    for payload, codec, key, seq, header_key, cts in cases:
        p = AVPacket(VIDEO, 1000, payload)
        assert (p.codec, p.is_keyframe, p.is_sequence_header, p.header_key, p.cts) == \
            (codec, key, seq, header_key, cts), payload


def test_command_frame_has_no_codec_and_is_no_keyframe() -> None:
    p = AVPacket(VIDEO, 0, ex_video(COMMAND, 1) + b"\x00")  # StartSeek
    assert (p.codec, p.is_keyframe, p.is_sequence_header) == (None, False, False)
    assert enhanced.parse(p.payload, video=True).command == 0


def test_mod_ex_nano_offset_then_coded_frames() -> None:
    nanos = 123456
    payload = (ex_video(KEY, 7) + bytes([3 - 1]) + u24(nanos) + bytes([0 << 4 | 1])
               + b"hvc1" + u24(40) + b"nal")
    header = enhanced.parse(payload, video=True)
    assert (header.packet_type, header.nano_offset, header.tracks[0].fourcc) == (1, nanos, b"hvc1")
    p = AVPacket(VIDEO, 0, payload)
    assert (p.codec, p.is_keyframe, p.cts) == (Codec.H265, True, 40)


def test_mod_ex_with_a_two_byte_size() -> None:
    data = bytes(300)
    payload = ex_video(INTER, 7) + b"\xff" + struct.pack(">H", 299) + data + bytes([0x13])
    payload += b"av01" + b"obu"
    header = enhanced.parse(payload, video=True)
    assert header.mod_ex == [(1, data)] and header.packet_type == 3
    assert payload[header.tracks[0].start:] == b"obu"


def test_multitrack_one_track() -> None:
    payload = ex_video(KEY, 6) + bytes([0 << 4 | 0]) + b"av01" + b"\x01" + b"\x81av1c"
    p = AVPacket(VIDEO, 0, payload)
    assert (p.codec, p.is_sequence_header, p.header_key) == (Codec.AV1, True,
                                                            (VIDEO, 0, b"av01", 1))
    frame = AVPacket(VIDEO, 40, ex_video(KEY, 6) + bytes([0 << 4 | 3]) + b"av01" + b"\x01obu")
    assert not frame.is_keyframe, "only track 0's keyframes start GOPs"
    main = AVPacket(VIDEO, 40, ex_video(KEY, 6) + bytes([0 << 4 | 3]) + b"av01" + b"\x00obu")
    assert main.is_keyframe and main.header_key is None


def test_multitrack_many_tracks_same_codec() -> None:
    body = b"\x00" + u24(6) + u24(33) + b"abc" + b"\x02" + u24(5) + u24(66) + b"de"
    payload = ex_video(KEY, 6) + bytes([1 << 4 | 1]) + b"hvc1" + body
    header = enhanced.parse(payload, video=True)
    assert [(t.track_id, t.fourcc, payload[t.start:t.end]) for t in header.tracks] == [
        (0, b"hvc1", u24(33) + b"abc"), (2, b"hvc1", u24(66) + b"de")]
    p = AVPacket(VIDEO, 0, payload)
    assert (p.codec, p.cts, p.is_keyframe) == (Codec.H265, 33, True)


def test_multitrack_many_tracks_many_codecs_audio() -> None:
    body = (b"Opus" + b"\x00" + u24(4) + b"opus" + b"mp4a" + b"\x01" + u24(2) + b"\x12\x10")
    payload = bytes([0x90 | 5]) + bytes([2 << 4 | 0]) + body
    header = enhanced.parse(payload, video=False)
    assert [(t.track_id, t.fourcc) for t in header.tracks] == [(0, b"Opus"), (1, b"mp4a")]
    p = AVPacket(AUDIO, 0, payload)
    assert (p.codec, p.is_sequence_header, p.header_key) == (Codec.OPUS, True,
                                                            (AUDIO, 0, b"Opus", 0, 1))


@pytest.mark.parametrize("payload", [
    ex_video(KEY, 7),  # ModEx without its size
    ex_video(KEY, 7) + b"\x05ab",  # ModEx data cut short
    ex_video(KEY, 6) + b"\x10hvc1\x00" + u24(100) + b"short",  # track size past the end
    ex_video(KEY, 6) + b"\x06",  # multitrack in multitrack
    ex_video(KEY, 6) + b"\x30hvc1",  # unknown multitrack type
    ex_video(KEY, 0) + b"hv",  # FourCC cut short
])
def test_malformed_headers_raise_and_packets_still_pass(payload: bytes) -> None:
    with pytest.raises(enhanced.EnhancedError):
        enhanced.parse(payload, video=True)
    p = AVPacket(VIDEO, 0, payload)  # never raises: the bytes pass through untouched
    assert p.payload == payload


@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_enhanced_error(data: bytes) -> None:
    for video in (True, False):
        try:
            enhanced.parse(bytes([0x80 | (data[:1] or b"\x07")[0] & 0x7F]) + data, video)
        except enhanced.EnhancedError:
            pass
    AVPacket(VIDEO, 0, b"\x80" + data)
    AVPacket(AUDIO, 0, b"\x90" + data)


def test_stream_replays_every_track_header_to_a_late_joiner() -> None:
    stream = Stream("live/x")
    stream.start_publish(object())
    seq0 = AVPacket(VIDEO, 0, ex_video(KEY, 0) + b"hvc1" + b"rec0")
    seq1 = AVPacket(VIDEO, 0, ex_video(KEY, 6) + b"\x00av01\x01" + b"\x81rec1")
    color = AVPacket(VIDEO, 0, ex_video(COMMAND, 4) + b"hvc1" + b"meta")
    for p in (seq0, seq1, color):
        stream.feed(p)
    assert stream.video_header is seq0
    assert stream.headers() == [seq0, seq1, color]
    # A newer header of the same track replaces the older one.
    seq1b = AVPacket(VIDEO, 0, ex_video(KEY, 6) + b"\x00av01\x01" + b"\x81rec2")
    stream.feed(seq1b)
    assert stream.headers() == [seq0, color, seq1b]


def test_extra_headers_are_bounded() -> None:
    stream = Stream("live/x")
    stream.start_publish(object())
    for track in range(1, 200):
        stream.feed(AVPacket(VIDEO, 0, ex_video(KEY, 6) + b"\x00av01" + bytes([track]) + b"c"))
    assert len(stream.extra_headers) == MAX_EXTRA_HEADERS


def reply_properties(**props: object) -> dict:
    peer = RawPeer()
    peer.command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", **props})
    result = next(c for c in peer.commands() if c[0] == "_result")
    return result[2]


def test_connect_negotiation() -> None:
    plain = reply_properties()
    assert "fourCcList" not in plain and "capsEx" not in plain
    asked = reply_properties(fourCcList=["hvc1", "av01", "xxxx"])
    assert asked["fourCcList"] == ["hvc1", "av01"]
    assert asked["videoFourCcInfoMap"]["av01"] == 4.0  # CanForward
    assert asked["audioFourCcInfoMap"]["Opus"] == 4.0
    assert int(asked["capsEx"]) & 0x06 == 0x06  # Multitrack and ModEx
    wildcard = reply_properties(videoFourCcInfoMap={"*": 7.0}, capsEx=4.0)
    assert {"hvc1", "av01", "vp09", "Opus", "fLaC"} <= set(wildcard["fourCcList"])


def test_lal_codec_names() -> None:
    assert [lal_codec_name(c) for c in (Codec.H264, Codec.H265, Codec.AV1, Codec.VP9, Codec.AAC,
                                        Codec.OPUS, Codec.FLAC, Codec.AC3, Codec.EAC3,
                                        Codec.MP3)] == \
        ["H264", "H265", "AV1", "VP9", "AAC", "OPUS", "FLAC", "AC3", "EAC3", "MP3"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enhanced-media")


@pytest.mark.parametrize(("video", "audio", "profile", "level"), [
    ("hevc", "opus", "Main", 2.0), ("av1", "opus", "Main", 2.0), ("vp9", "aac", "Profile 0", 2.0)])
def test_tracks_from_ffmpeg_sequence_headers(media_dir: Path, video: str, audio: str,
                                             profile: str, level: float) -> None:
    src = make_media(media_dir / f"{video}_{audio}.flv", video, audio, seconds=2)
    stream = Stream("live/x")
    stream.start_publish(object())
    for tag in FlvReader().feed(src.read_bytes()):
        stream.feed(AVPacket(tag.tag_type, tag.timestamp, tag.payload))
    stats = stream.stats()
    assert stats["video"]["codec_name"] == {"hevc": "H265", "av1": "AV1", "vp9": "VP9"}[video]
    assert (stats["video"]["width"], stats["video"]["height"]) == (320, 240)
    assert (stats["video"]["profile"], stats["video"]["level"]) == (profile, level)
    assert (stats["audio"]["sample_rate"], stats["audio"]["channels"]) == (48000, 2)
    assert stats["audio"]["codec_name"] == audio.upper()


def test_config_parsers_reject_garbage() -> None:
    with pytest.raises(hevc.HevcError):
        hevc.parse_sps(b"\x42\x01" + b"\xff" * 4)
    with pytest.raises(av1.Av1Error):
        av1.parse_config(b"\x81\x00")
    with pytest.raises(vp9.Vp9Error):
        vp9.parse_config(b"\x01\x00")
    with pytest.raises(audio_config.AudioConfigError):
        audio_config.parse_opus_head(b"OpusHead\x01")
    assert video_track(ex_video(KEY, 0) + b"av01" + b"\x00").error
    assert audio_track(b"\x90Opus" + b"junk").error


def test_flac_streaminfo() -> None:
    # 44100 Hz, 2 channels, 16 bits: rate(20) channels-1(3) bps-1(5) in bytes 10..
    packed = (44100 << 44) | (1 << 41) | (15 << 36)
    info = bytes(10) + packed.to_bytes(8, "big") + bytes(16)
    assert audio_config.parse_flac_streaminfo(b"fLaC" + b"\x80\x00\x00\x22" + info) == \
        audio_config.AudioConfig(44100, 2, 16)
    track = audio_track(b"\x90fLaC" + b"fLaC\x80\x00\x00\x22" + info)
    assert (track.codec, track.sample_rate, track.channels) == (Codec.FLAC, 44100, 2)


def test_ac3_and_eac3_frame_headers() -> None:
    # AC-3, 48 kHz (fscod 0), bsid 8, acmod 2 (stereo: dsurmod follows), lfeon 0.
    bits = (0 << 46) | (0x1A << 40) | (8 << 35) | (0 << 32) | (2 << 29) | (0 << 27) | (0 << 26)
    ac3 = b"\x0b\x77" + b"\x00\x00" + (bits >> 16).to_bytes(4, "big")
    assert audio_config.parse_ac3_frame(ac3 + bytes(4)) == audio_config.AudioConfig(48000, 2, 8)
    # E-AC-3, 32 kHz (fscod 2), 6 blocks, acmod 7 (3/2) + LFE: 5.1.
    word = (0 << 46) | (0 << 43) | (100 << 32) | (2 << 30) | (3 << 28) | (7 << 25) | (1 << 24)
    word |= 16 << 19
    eac3 = b"\x0b\x77" + word.to_bytes(6, "big")
    assert audio_config.parse_ac3_frame(eac3) == audio_config.AudioConfig(32000, 6, 16)
    with pytest.raises(audio_config.AudioConfigError):
        audio_config.parse_ac3_frame(b"\x0b\x77" + bytes(3) + bytes([20 << 3]) + bytes(2))
