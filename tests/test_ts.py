"""The MPEG-TS muxer: muxed files decode fully with ffmpeg/ffprobe, and the packet
layer (continuity, PCR, random access, PSI) is checked by an independent reader."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from conftest import FPS, Media, generate, require
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import decode_errors, made_by
from test_tool_flv2es import annexb_nalus, hevc_access_units, hvcc_record
from tsparse import count_frames, ffprobe_packets, parse

from lal_twisted import log as lal_log
from lal_twisted.media import ts as ts_module
from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvReader
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.track import Tracks
from lal_twisted.media.ts import (
    AUDIO_PID,
    PMT_PID,
    VIDEO_PID,
    TsMuxer,
    crc32_mpeg2,
    video_start,
)
from lal_twisted.media.ts import muxer as muxer_module
from lal_twisted.media.ts import pes as pes_module

WRAP = 1 << 32


def packets(path: Path, shift: int = 0) -> Iterator[AVPacket]:
    """The file's packets as the hub holds them, their (wide) times moved by ``shift``."""
    for tag in FlvReader().feed(path.read_bytes()):
        yield AVPacket(tag.tag_type, tag.timestamp + shift, bytes(tag.payload))


def mux(source: Iterable[AVPacket], out: Path, muxer: TsMuxer | None = None) -> Path:
    """Mux like a TS consumer does: PAT/PMT at the first frame, then every packet,
    and at the end the audio frames the muxer holds for its next PES."""
    muxer = muxer or TsMuxer(name="test")
    parts: list[bytes] = []
    for packet in source:
        data = muxer.feed(packet)
        if data:
            if not parts:
                parts.append(muxer.header(0))
            parts.append(data)
    parts.append(muxer.flush())
    out.write_bytes(b"".join(parts))
    return out


def source_counts(path: Path) -> dict[str, tuple[str, int]]:
    return count_frames(path)


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


@pytest.fixture(params=["compiled", "python"])
def packer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The muxer with each form of the TS packer: the compiled one the install
    builds, and the Python one used where it could not be built."""
    if request.param == "python":
        monkeypatch.setattr(muxer_module, "_pes_packets", pes_module.pes_packets_py)
    return str(request.param)


def test_the_install_builds_the_compiled_packer() -> None:
    assert ts_module.PACKER == "compiled"
    assert pes_module.pes_packets is not pes_module.pes_packets_py
    assert muxer_module._pes_packets is pes_module.pes_packets


def test_h264_with_b_frames_and_aac_decode_fully(media: Media, tmp_path: Path,
                                                 packer: str) -> None:
    ts = mux(packets(media.av), tmp_path / "av.ts")
    assert decode_errors(ts) == ""
    assert count_frames(ts) == source_counts(media.av)
    # Nothing the demuxer notices at debug level either: no continuity or PES complaints.
    debug = subprocess.run(["ffmpeg", "-v", "debug", "-nostdin", "-i", str(ts), "-f", "null",
                            "-"], capture_output=True, text=True, timeout=60).stderr
    assert "Continuity check failed" not in debug and "corrupt" not in debug.lower()
    info = parse(ts.read_bytes())
    assert info.cc_errors == []
    assert info.pmt_pid == PMT_PID
    assert info.streams == {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}
    assert info.pcr_pid == VIDEO_PID
    video = [p for p in info.pes if p.pid == VIDEO_PID]
    assert all(p.pcr is not None for p in video)
    # PCR = the PES's DTS (or PTS when it has none), read back from the PES header.
    for p in video:
        assert p.pcr == p.dts
    assert all(p.pcr is None for p in info.pes if p.pid == AUDIO_PID)
    # Every keyframe PES has the random-access flag and starts AUD, SPS, PPS, IDR.
    keys = [p for p in video if p.random_access]
    assert len(keys) == 6  # a 6 s source with a keyframe every second
    for p in keys:
        es = p.first_bytes[9 + p.first_bytes[8]:]
        types = [n[0] & 0x1F for n in annexb_nalus(es)]
        assert types[:3] == [9, 7, 8], types


def test_b_frame_pts_and_dts_come_out_in_order(media: Media, tmp_path: Path) -> None:
    # Coded frames (AVCPacketType 1): not the sequence header or the end-of-sequence tag.
    source = [p for p in packets(media.av) if p.kind == TAG_VIDEO and p.payload[1] == 1]
    assert any(p.cts for p in source), "the source has no B-frames"
    ts = mux(packets(media.av), tmp_path / "av.ts")
    got = ffprobe_packets(ts)
    assert [(int(p["pts"]), int(p["dts"])) for p in got] == \
        [(p.pts * 90, p.dts * 90) for p in source]
    dts = [int(p["dts"]) for p in got]
    assert dts == sorted(dts)
    assert got[0]["flags"].startswith("K")


def test_video_only_and_audio_only(media: Media, tmp_path: Path, packer: str) -> None:
    video = mux(packets(media.video_only), tmp_path / "v.ts")
    assert decode_errors(video) == ""
    assert count_frames(video) == source_counts(media.video_only)
    info = parse(video.read_bytes())
    assert info.streams == {VIDEO_PID: 0x1B} and info.pcr_pid == VIDEO_PID

    audio = mux(packets(media.audio_only), tmp_path / "a.ts")
    assert decode_errors(audio) == ""
    assert count_frames(audio) == source_counts(media.audio_only)
    info = parse(audio.read_bytes())
    assert info.streams == {AUDIO_PID: 0x0F} and info.pcr_pid == AUDIO_PID
    assert info.cc_errors == []
    assert all(p.pcr is not None and p.random_access for p in info.pes)


def test_h265(tmp_path: Path, packer: str) -> None:
    ffmpeg = require("ffmpeg")
    raw = tmp_path / "src.hevc"
    made_by([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc=size=320x240:rate={FPS}", "-t", "3", "-c:v", "libx265", "-preset",
             "ultrafast", "-x265-params", "log-level=error:keyint=25:min-keyint=25:bframes=0",
             "-pix_fmt", "yuv420p", "-f", "hevc"], raw, timeout=60)
    units = hevc_access_units(annexb_nalus(raw.read_bytes()))
    first = {(n[0] >> 1) & 0x3F: n for n in units[0]}
    source = [AVPacket(TAG_VIDEO, 0, b"\x1c\x00\x00\x00\x00"
                       + hvcc_record(first[32], first[33], first[34]))]
    for i, unit in enumerate(units):
        frame = [n for n in unit if (n[0] >> 1) & 0x3F not in (32, 33, 34)]
        key = any(16 <= (n[0] >> 1) & 0x3F <= 23 for n in frame)
        body = b"".join(len(n).to_bytes(4, "big") + n for n in frame)
        # Legacy codec id 12 for keyframes, enhanced hvc1 CodedFramesX for the rest.
        header = b"\x1c\x01\x00\x00\x00" if key else b"\xa3hvc1"
        source.append(AVPacket(TAG_VIDEO, i * 1000 // FPS, header + body))
    ts = mux(source, tmp_path / "hevc.ts")
    assert decode_errors(ts) == ""
    assert count_frames(ts) == {"video": ("hevc", 3 * FPS)}
    info = parse(ts.read_bytes())
    assert info.streams == {VIDEO_PID: 0x24}
    keys = [p for p in info.pes if p.random_access]
    assert len(keys) == 3
    for p in keys:
        types = [(n[0] >> 1) & 0x3F for n in annexb_nalus(p.first_bytes[9 + p.first_bytes[8]:])]
        assert types[:4] == [35, 32, 33, 34], types


def test_enhanced_h264_aac_in_every_wrapping(media: Media, tmp_path: Path) -> None:
    """avc1/mp4a frames plain, behind ModEx and in each multitrack form (track 0
    carried, with its own composition time), colorInfo Metadata beside the
    sequence starts: the same frames, pts and dts as the legacy tags give."""
    from mediatools import read_tags, to_enhanced
    from test_hevc_hls import wrapped

    flv = tmp_path / "wrapped.flv"
    flv.write_bytes(wrapped([to_enhanced(t) for t in read_tags(media.av)], b"avc1"))
    ts = mux(packets(flv), tmp_path / "wrapped.ts")
    assert decode_errors(ts) == ""
    assert count_frames(ts) == source_counts(media.av)
    plain = mux(packets(media.av), tmp_path / "plain.ts")
    assert any(p["pts"] != p["dts"] for p in ffprobe_packets(plain))  # B-frames
    for stream in ("v", "a"):
        assert ffprobe_packets(ts, stream) == ffprobe_packets(plain, stream)


# The hub's time is wide (the RTMP edge unwraps its 32-bit timestamps): a stream
# 3 s before the 32-bit millisecond wrap runs on past it, and one 3 s before the
# 33-bit wrap of the 90 kHz clock (2**33 / 90 ms) makes the TS clock wrap.
@pytest.mark.parametrize("shift", [WRAP - 3000, -(-(1 << 33) // 90) - 3000],
                         ids=["past-2**32-ms", "33-bit-wrap"])
def test_wide_timestamps_run_on_in_the_33_bit_clock(media: Media, tmp_path: Path,
                                                     shift: int) -> None:
    source = list(packets(media.av, shift))
    ts = mux(source, tmp_path / "wrap.ts")
    assert decode_errors(ts) == ""
    assert count_frames(ts) == source_counts(media.av)
    plain = parse(mux(packets(media.av), tmp_path / "p.ts").read_bytes()).pes
    shifted = parse(ts.read_bytes()).pes
    assert [p.pid for p in shifted] == [p.pid for p in plain]
    # Every PES time is the unshifted one plus the shift, in the 33-bit clock.
    for a, b in zip(plain, shifted, strict=True):
        assert b.pts == (a.pts + shift * 90) % (1 << 33)
        assert b.dts == (a.dts + shift * 90) % (1 << 33)
        assert b.pcr == (None if a.pcr is None else (a.pcr + shift * 90) % (1 << 33))
    video = [p.dts for p in shifted if p.pid == VIDEO_PID]
    steps = [(b - a) % (1 << 33) for a, b in zip(video, video[1:], strict=False)]
    assert set(steps) == {3600}
    assert any(b < a for a, b in zip(video, video[1:], strict=False)) == (shift < WRAP)


def test_encoded_once_and_shared(media: Media) -> None:
    muxer = TsMuxer(name="test")
    first = [muxer.feed(p) for p in packets(media.av)]
    # The same packets again (another consumer): the same bytes objects, no new work.
    again = list(packets(media.av))
    for p in again:
        muxer.feed(p)
    cached = [p for p in again if p.kind == TAG_VIDEO][:3]
    assert all(muxer.feed(p) is muxer.feed(p) for p in cached)
    assert sum(map(len, first)) % 188 == 0
    # Headers: PAT + PMT, the continuity counter chosen by the consumer.
    h0, h1 = muxer.header(0), muxer.header(1)
    assert len(h0) == 376 and h0[3] & 0x0F == 0 and h1[3] & 0x0F == 1
    assert h0 is muxer.header(16)


def test_a_shared_muxer_reads_the_streams_tracks(media: Media, tmp_path: Path) -> None:
    class Source:
        tracks = Tracks()

    source = Source()
    muxer = TsMuxer(source, "live/test")
    assert not muxer.has_video and not muxer.has_audio
    from lal_twisted.media.track import audio_track, video_track

    tags = list(packets(media.av))
    for p in tags:
        if p.is_sequence_header:
            if p.kind == TAG_VIDEO:
                source.tracks.video = video_track(p.payload)
            else:
                source.tracks.audio = audio_track(p.payload)
    assert muxer.has_video and muxer.has_audio
    ts = mux(tags, tmp_path / "s.ts", muxer)
    assert count_frames(ts) == source_counts(media.av)


def test_other_codecs_are_skipped_with_one_log_line(tmp_path: Path) -> None:
    src = tmp_path / "mp3.flv"
    made_by([require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-c:a", "libmp3lame", "-ar", "44100", "-f", "flv"], src, timeout=60)
    events: list[dict] = []
    lal_log.publisher.addObserver(events.append)
    try:
        ts = mux(packets(src), tmp_path / "mp3.ts", TsMuxer(name="live/mp3"))
    finally:
        lal_log.publisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace") == "lal_twisted.media.ts"]
    assert len(lines) == 1 and lines[0]["kind"] == "audio" and "mp3" in lines[0]["why"]
    assert decode_errors(ts) == ""
    assert count_frames(ts) == {"video": ("h264", 2 * FPS)}


def test_frames_before_any_sequence_header_are_skipped(media: Media, tmp_path: Path) -> None:
    tags = list(packets(media.av))
    frames = [p for p in tags if not p.is_sequence_header]
    headers = [p for p in tags if p.is_sequence_header]
    muxer = TsMuxer(name="t")
    assert all(muxer.feed(p) == b"" for p in frames[:20])
    later = [AVPacket(p.kind, p.dts, p.payload) for p in headers + frames]
    ts = mux(later, tmp_path / "late.ts", muxer)
    assert decode_errors(ts) == ""


@pytest.mark.parametrize("payload", [b"\x17\x01\x00\x00\x00\x00\x00\x00\x09ab",
                                     b"\x17\x01", b"\x27\x01\x00\x00\x00", b"\xaf\x01"])
def test_malformed_frames_give_nothing(media: Media, payload: bytes) -> None:
    muxer = TsMuxer(name="t")
    for p in packets(media.av):
        if p.is_sequence_header:
            muxer.feed(p)
    kind = TAG_AUDIO if payload[0] == 0xAF else TAG_VIDEO
    assert muxer.feed(AVPacket(kind, 0, payload)) == b""


def test_bigger_frames_than_pes_length_can_say(tmp_path: Path) -> None:
    src = generate(tmp_path / "noisy.flv", 2, audio=False, noisy=True, size="640x480")
    frames = [p for p in packets(src) if p.kind == TAG_VIDEO and len(p.payload) > 70000]
    assert frames, "no frame over 64 KiB"
    ts = mux(packets(src), tmp_path / "big.ts")
    assert decode_errors(ts) == ""
    assert count_frames(ts) == count_frames(src)


@given(st.sampled_from([TAG_AUDIO, TAG_VIDEO]), st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_any_payload_gives_whole_ts_packets_or_nothing(kind: int, payload: bytes) -> None:
    muxer = _MUXER_WITH_TRACKS
    data = muxer.feed(AVPacket(kind, 1234, payload))
    assert len(data) % 188 == 0
    assert all(data[i] == 0x47 for i in range(0, len(data), 188))


# Real H.264 (SPS, PPS) and AAC sequence headers.
_AVC_HEADER = bytes.fromhex("17000000000164000dffe1001967640 00dacd94141fb0110000003001000000303"
                            " 20f142996001000568ebecb22c".replace(" ", ""))
_AAC_HEADER = b"\xaf\x00\x12\x10"


def _muxer_with_tracks() -> TsMuxer:
    """A muxer that has seen real H.264 and AAC sequence headers."""
    muxer = TsMuxer(name="fuzz")
    muxer.feed(AVPacket(TAG_VIDEO, 0, _AVC_HEADER))
    muxer.feed(AVPacket(TAG_AUDIO, 0, _AAC_HEADER))
    assert muxer.has_video and muxer.has_audio
    return muxer


_MUXER_WITH_TRACKS = _muxer_with_tracks()


def _pes_time(first_bytes: bytes) -> int:
    """The PTS of a PES header."""
    t = first_bytes[9:14]
    return (((t[0] >> 1) & 7) << 30) | (t[1] << 22) | ((t[2] >> 1) << 15) | (t[3] << 7) \
        | (t[4] >> 1)


def _aac_frames(source: list[AVPacket]) -> list[AVPacket]:
    return [p for p in source if p.kind == TAG_AUDIO and not p.is_sequence_header]


def test_audio_frames_share_a_pes_and_keep_their_times(media: Media, tmp_path: Path) -> None:
    source = list(packets(media.av))
    audio = _aac_frames(source)
    ts = mux(source, tmp_path / "av.ts")
    assert decode_errors(ts) == ""
    pes = [p for p in parse(ts.read_bytes()).pes if p.pid == AUDIO_PID]
    # Several frames a PES, at most 12 and 300 ms (13 frames of 44.1 kHz AAC).
    assert len(audio) / 12 <= len(pes) < len(audio) / 3
    frame_ms = 1024000 / 44100
    starts = sorted(_pes_time(p.first_bytes) for p in pes)
    assert all(b - a <= 300 * 90 for a, b in zip(starts, starts[1:], strict=False))
    assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 8 * frame_ms * 90
    got = [int(p["pts"]) for p in ffprobe_packets(ts, "a")]
    assert len(got) == len(audio)  # every frame, each with its own time: ffprobe
    # gives the frames after a PES's first their times from the sample count,
    # within a millisecond of the source's rounded millisecond times.
    assert all(abs(g - p.dts * 90) <= 90 for g, p in zip(got, audio, strict=True))


def test_a_live_muxer_writes_every_audio_frame_at_once(media: Media, tmp_path: Path) -> None:
    """An HTTP-TS player waits for nothing: a live muxer writes each AAC frame
    as its own PES, in the frame's own bytes, where a muxer for segments and
    recordings holds frames to group them; both decode with every frame."""
    source = list(packets(media.av))
    grouped = TsMuxer(name="segments")
    live = TsMuxer(name="live", live=True)
    held = [grouped.feed(p) for p in source]
    at_once = [live.feed(p) for p in source]
    aac = [i for i, p in enumerate(source) if p.kind == TAG_AUDIO and not p.is_sequence_header]
    assert any(not held[i] for i in aac)
    assert all(at_once[i] for i in aac)
    ts = tmp_path / "live.ts"
    ts.write_bytes(live.header(0) + b"".join(at_once))
    assert decode_errors(ts) == ""
    assert count_frames(ts) == source_counts(media.av)
    audio_pes = [p for p in parse(ts.read_bytes()).pes if p.pid == AUDIO_PID]
    assert len(audio_pes) == len(_aac_frames(source))


def test_an_audio_gap_starts_a_new_pes(media: Media, tmp_path: Path) -> None:
    source = list(packets(media.av))
    frames = [i for i, p in enumerate(source) if p.kind == TAG_AUDIO and not p.is_sequence_header]
    drop = set(frames[100:120])  # ~460 ms of audio missing
    kept = [p for i, p in enumerate(source) if i not in drop]
    audio = _aac_frames(kept)
    ts = mux(kept, tmp_path / "gap.ts")
    assert decode_errors(ts) == ""
    got = [int(p["pts"]) for p in ffprobe_packets(ts, "a")]
    assert len(got) == len(audio)
    assert all(abs(g - p.dts * 90) <= 90 for g, p in zip(got, audio, strict=True))
    first_after = source[frames[120]].dts * 90  # starts a PES: not timed after the gap's start
    assert first_after in {_pes_time(p.first_bytes) for p in parse(ts.read_bytes()).pes
                           if p.pid == AUDIO_PID}


def test_a_gap_while_frames_are_held_loses_none(media: Media, tmp_path: Path) -> None:
    """The gap comes while frames wait for their PES: those go out, and the frame
    after the gap starts the next PES; no frame is lost."""
    source = list(packets(media.av))
    muxer = TsMuxer(name="test")
    out = [muxer.header(0)]
    fed: list[AVPacket] = []
    skipping = 0
    gaps = 0
    for p in source:
        audio = p.kind == TAG_AUDIO and not p.is_sequence_header
        if audio and skipping:
            skipping -= 1
            continue
        if audio and len(muxer._held) >= 4 and gaps < 3 and p.dts > 1000 * (gaps + 1):
            gaps += 1
            skipping = 10  # ~230 ms of audio missing, with 2+ frames held
            continue
        out.append(muxer.feed(p))
        fed.append(p)
    out.append(muxer.flush())
    assert gaps == 3
    ts = tmp_path / "gaps.ts"
    ts.write_bytes(b"".join(out))
    assert decode_errors(ts) == ""
    audio = _aac_frames(fed)
    got = [int(p["pts"]) for p in ffprobe_packets(ts, "a")]
    assert len(got) == len(audio)
    assert all(abs(g - p.dts * 90) <= 90 for g, p in zip(got, audio, strict=True))


def test_audio_held_at_a_keyframe_goes_out_before_it(media: Media) -> None:
    muxer = TsMuxer(name="test")
    out = [(p, muxer.feed(p)) for p in packets(media.av)]
    keyframes = [(p, data) for p, data in out if p.kind == TAG_VIDEO and p.is_keyframe and data]
    assert len(keyframes) == 6
    prefixed = 0
    for p, data in keyframes:
        info = parse(muxer.header(0) + data)
        kinds = [s.pid for s in info.pes]
        assert kinds == sorted(kinds, key=lambda pid: pid != AUDIO_PID)  # audio first
        audio = [s for s in info.pes if s.pid == AUDIO_PID]
        if audio:
            prefixed += 1
            assert all(_pes_time(s.first_bytes) <= p.dts * 90 for s in audio)
            # video_start finds the keyframe's first TS packet after them
            assert video_start(data) == (info.pes[kinds.index(VIDEO_PID)].index - 2) * 188
        else:
            assert video_start(data) == 0
    assert prefixed >= 3


def test_flush_gives_every_ending_consumer_the_held_audio(media: Media) -> None:
    """flush() is for a consumer whose output ends: the held frames as TS
    packets, the same for each consumer that ends there, and still held for
    the others, which get them later in the stream."""
    source = list(packets(media.av))
    muxer = TsMuxer(name="test")
    i = 0
    while True:
        muxer.feed(source[i])
        i += 1
        if muxer._held and i > 20:
            break
    tail = muxer.flush()
    assert tail and tail == muxer.flush()
    assert {s.pid for s in parse(muxer.header(0) + tail).pes} == {AUDIO_PID}
    rest = b"".join(muxer.feed(p) for p in source[i:]) + muxer.flush()
    # The frames of the tail come again in the stream that goes on: a PES with
    # the tail's time.
    tail_time = _pes_time(parse(muxer.header(0) + tail).pes[0].first_bytes)
    assert tail_time in {_pes_time(s.first_bytes) for s in parse(muxer.header(0) + rest).pes
                         if s.pid == AUDIO_PID}


class _Source:
    """What a Stream gives its muxer: the tracks, from the sequence headers."""

    def __init__(self) -> None:
        self.tracks = Tracks()


# NAL sizes around the TS packet boundaries (176 after a PES header with PTS and
# DTS, 184 per packet), a frame over 8 packets, and one over 64 KiB.
_NAL_SIZES = [1, 2, 40, 150, 157, 158, 162, 170, 175, 176, 177, 183, 184, 185, 368, 900,
              1500, 2000, 70000]


@st.composite
def _frames(draw: st.DrawFn) -> list[AVPacket]:
    """A stream of legacy H.264 and AAC tags: frames of one NAL unit (slices,
    SEI, AUD, SPS) and of several, B-frame offsets or none, AAC frames that
    follow each other or leave gaps, and sequence headers again mid-stream."""
    from lal_twisted.media.track import audio_track, video_track

    out = [AVPacket(TAG_VIDEO, 0, _AVC_HEADER), AVPacket(TAG_AUDIO, 0, _AAC_HEADER)]
    assert video_track(_AVC_HEADER).sps and audio_track(_AAC_HEADER).config
    video_ms = audio_ms = 0.0
    for _ in range(draw(st.integers(20, 60))):
        if draw(st.booleans()):
            key = draw(st.booleans())
            nals = b""
            for _n in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
                size = draw(st.sampled_from(_NAL_SIZES))
                kind = draw(st.sampled_from([5 if key else 1, 6, 9, 7]))
                nals += size.to_bytes(4, "big") + bytes((0x60 | kind,)) + b"\xab" * (size - 1)
            cts = draw(st.sampled_from([0, 0, 40, 80]))
            head = bytes((0x17 if key else 0x27, 1)) + cts.to_bytes(3, "big")
            out.append(AVPacket(TAG_VIDEO, int(video_ms), head + nals))
            video_ms += 40
        else:
            size = draw(st.sampled_from([1, 6, 180, 400, 3000]))
            out.append(AVPacket(TAG_AUDIO, int(audio_ms), b"\xaf\x01" + b"\x21" * size))
            audio_ms += draw(st.sampled_from([1024000 / 44100] * 5 + [0.0, 30.0, 1500.0]))
        if draw(st.integers(0, 40)) == 0:
            out.append(AVPacket(TAG_AUDIO, int(audio_ms), _AAC_HEADER))
    return out


@given(_frames(), st.lists(st.integers(1, 9), min_size=1, max_size=20))
@settings(max_examples=150, deadline=None)
def test_batch_encoding_gives_the_same_bytes_as_one_by_one(frames: list[AVPacket],
                                                           cuts: list[int]) -> None:
    """encode_many (what the HLS segmenter uses, with frames written in line)
    gives exactly what encoding each packet in turn gives, whatever the frame
    layout and however the packets are cut into batches, also when another
    format (the RTMP players' chunks) encoded some packets first; the
    continuity counters run on unbroken, and ``made_bytes`` is what the batch
    added to the packets' cached encodings."""
    from lal_twisted.media.track import audio_track, video_track
    from lal_twisted.rtmp.session import media_encoder

    rtmp = media_encoder(4096)

    def copy(p: AVPacket) -> AVPacket:
        return AVPacket(p.kind, p.dts, p.payload)

    def run(batched: bool, others_first: bool = False) -> bytes:
        source = _Source()
        muxer = TsMuxer(source, name="batch")
        out = [muxer.header(0)]
        todo: list[AVPacket] = []
        cut = itertools.cycle(cuts)

        def take() -> None:
            if batched:
                if others_first:
                    for p in todo[::2]:
                        p.encoded(rtmp)
                before = sum(p.cached_size() for p in todo)
                out.extend(data for _p, data in muxer.encode_many(todo))
                assert muxer.made_bytes == sum(p.cached_size() for p in todo) - before
            else:
                out.extend(muxer.feed(p) for p in todo)
            todo.clear()

        for packet in map(copy, frames):
            if packet.is_sequence_header:  # as a Stream does: what waits goes first
                take()
                if packet.kind == TAG_VIDEO:
                    source.tracks.video = video_track(packet.payload)
                else:
                    source.tracks.audio = audio_track(packet.payload)
            todo.append(packet)
            if len(todo) >= next(cut):
                take()
        take()
        out.append(muxer.flush())
        return b"".join(out)

    one_by_one, batched = run(False), run(True)
    assert batched == one_by_one
    assert run(True, others_first=True) == one_by_one
    info = parse(batched)
    assert info.cc_errors == []
    assert len(batched) % 188 == 0


_PES_ARGS = st.tuples(
    st.sampled_from([VIDEO_PID, AUDIO_PID]), st.integers(0, 15),
    st.sampled_from([0xE0, 0xC0]), st.integers(-1, (1 << 34)),
    st.integers(0, (1 << 34)), st.one_of(st.just(-1), st.integers(0, (1 << 34))),
    st.booleans())  # times past 33 bits: both keep the low 33


@given(args=_PES_ARGS, same_dts=st.booleans(),
       parts=st.lists(st.one_of(st.binary(max_size=400), st.binary(min_size=183, max_size=186),
                                st.binary(min_size=3000, max_size=70000)), max_size=90),
       as_views=st.booleans())
@settings(max_examples=300, deadline=None)
def test_compiled_and_python_packers_give_the_same_bytes(
        args: tuple[int, int, int, int, int, int, bool], same_dts: bool, parts: list[bytes],
        as_views: bool) -> None:
    pid, cc, stream_id, pts, dts, pcr, random_access = args
    if same_dts:
        dts = pts
    pieces: list[bytes] | list[memoryview] = ([memoryview(p) for p in parts] if as_views
                                              else parts)
    compiled = pes_module.pes_packets(pid, cc, stream_id, pts, dts, pcr, random_access, pieces)
    python = pes_module.pes_packets_py(pid, cc, stream_id, pts, dts, pcr, random_access, parts)
    assert compiled == python
    data, last = compiled
    assert len(data) % 188 == 0 and data[::188] == b"\x47" * (len(data) // 188)
    # The counters run on from cc, one per packet.
    assert last == (cc + len(data) // 188 - 1) & 0x0F


def test_compiled_packer_refuses_bad_arguments() -> None:
    pes = pes_module.pes_packets
    with pytest.raises(TypeError):
        pes(VIDEO_PID, 0, 0xE0, 0, 0, -1, False, [b"ok", "not bytes"])
    with pytest.raises(TypeError):
        pes(VIDEO_PID, 0, 0xE0, 0, 0, -1, False, 5)
    with pytest.raises(ValueError):
        pes(0x2000, 0, 0xE0, 0, 0, -1, False, [b""])
    with pytest.raises(ValueError):
        pes(VIDEO_PID, 16, 0xE0, 0, 0, -1, False, [b""])
