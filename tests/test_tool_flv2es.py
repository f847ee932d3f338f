"""End-to-end tests of ``lal flv2es``: real ffmpeg input, the real command, ffprobe checks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BIN, FPS, ROOT, generate, require
from mediatools import decode_errors, made_by, to_enhanced

from lal_twisted.media import avc
from lal_twisted.media.flv import (
    TAG_SCRIPT,
    TAG_VIDEO,
    encode_tag,
    file_header,
)
from lal_twisted.tools.flvfile import iter_file

SECONDS = 3


@dataclass
class Sources:
    av: Path
    video: Path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    d = tmp_path_factory.mktemp("flv2es-src")
    return Sources(av=generate(d / "av.flv", SECONDS),
                   video=generate(d / "video.flv", 2, audio=False))


# The installed console script, or ``cli.main`` when it is not installed.
LAL = ([str(BIN / "lal")] if (BIN / "lal").exists() else
       [sys.executable, "-c", "import sys; from lal_twisted.tools.cli import main; "
                              "sys.exit(main())"])


def lal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAL, *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def count_frames(path: Path) -> dict[str, tuple[str, int]]:
    """codec_type -> (codec name, decoded frame count) as ffprobe sees it."""
    out = subprocess.run(
        [require("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60)
    return {s["codec_type"]: (s["codec_name"], int(s["nb_read_frames"]))
            for s in json.loads(out.stdout)["streams"]}


def annexb_nalus(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream at its start codes."""
    starts: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    nalus = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nalus.append(data[start:end].rstrip(b"\x00"))
    return [n for n in nalus if n]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lal flv2es: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_h264_and_aac(sources: Sources, tmp_path: Path) -> None:
    result = lal("flv2es", sources.av, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aac", "out.h264"]
    source = count_frames(sources.av)
    assert source["video"][1] == SECONDS * FPS
    assert count_frames(tmp_path / "out.h264") == {"video": ("h264", source["video"][1])}
    assert count_frames(tmp_path / "out.aac") == {"audio": ("aac", source["audio"][1])}
    assert decode_errors(tmp_path / "out.h264") == ""
    assert decode_errors(tmp_path / "out.aac") == ""
    summary = result.stdout.strip()
    assert summary.startswith("wrote ")
    assert f"(h264, {source['video'][1]} frames, " in summary
    assert f"(aac LC 44100 Hz 2 ch, {source['audio'][1]} frames, " in summary

    # SPS and PPS come right before every IDR picture, one set per keyframe tag.
    keyframes = sum(1 for t in iter_file(str(sources.av))
                    if t.tag_type == TAG_VIDEO and t.payload[0] >> 4 == 1 and t.payload[1] == 1)
    types = [n[0] & 0x1F for n in annexb_nalus((tmp_path / "out.h264").read_bytes())]
    assert types[:2] == [7, 8]
    idr_starts = [i for i, t in enumerate(types) if t == 5 and (i == 0 or types[i - 1] != 5)]
    assert len(idr_starts) == keyframes == SECONDS
    for i in idr_starts:
        before = types[max(0, i - 4):i]
        assert 7 in before and 8 in before, types[max(0, i - 4):i + 1]
    assert types.count(7) == keyframes


def test_video_only_file(sources: Sources, tmp_path: Path) -> None:
    result = lal("flv2es", sources.video, tmp_path / "v")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["v.h264"]
    assert count_frames(tmp_path / "v.h264") == {"video": ("h264", 2 * FPS)}


def test_only_options(sources: Sources, tmp_path: Path) -> None:
    assert lal("flv2es", "--audio-only", sources.av, tmp_path / "a").returncode == 0
    assert lal("flv2es", "--video-only", sources.av, tmp_path / "v").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aac", "v.h264"]
    both = lal("flv2es", "--audio-only", "--video-only", sources.av, tmp_path / "x")
    assert both.returncode == 2
    result = lal("flv2es", "--audio-only", sources.video, tmp_path / "none")
    assert_one_line_error(result, "no audio tags")


def test_enhanced_rtmp_h264_and_aac_match_legacy(sources: Sources, tmp_path: Path) -> None:
    enhanced = tmp_path / "enhanced.flv"
    with open(enhanced, "wb") as fh:
        fh.write(file_header())
        for tag in iter_file(str(sources.av)):
            new = to_enhanced(tag)
            fh.write(encode_tag(new.tag_type, new.timestamp, new.payload))
    assert lal("flv2es", sources.av, tmp_path / "legacy").returncode == 0
    result = lal("flv2es", enhanced, tmp_path / "enh")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for ext in ("h264", "aac"):
        assert (tmp_path / f"enh.{ext}").read_bytes() == (tmp_path / f"legacy.{ext}").read_bytes()


def hvcc_record(vps: bytes, sps: bytes, pps: bytes) -> bytes:
    """An HEVCDecoderConfigurationRecord holding one VPS, SPS and PPS (4-byte lengths)."""
    rbsp = avc.remove_emulation_prevention(sps[2:])
    ptl = rbsp[1:13]  # profile space/tier/idc, compatibility flags, constraints, level
    fixed = bytes([1]) + ptl + bytes([0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00,
                                      0x0F, 3])
    arrays = b""
    for nal_type, nal in ((32, vps), (33, sps), (34, pps)):
        arrays += bytes([0x80 | nal_type]) + (1).to_bytes(2, "big")
        arrays += len(nal).to_bytes(2, "big") + nal
    return fixed + arrays


def hevc_access_units(nalus: list[bytes]) -> list[list[bytes]]:
    """Group Annex-B HEVC NAL units into access units (one picture each)."""
    units: list[list[bytes]] = []
    current: list[bytes] = []
    has_vcl = False
    for nal in nalus:
        nal_type = (nal[0] >> 1) & 0x3F
        vcl = nal_type < 32
        first_slice = vcl and bool(nal[2] & 0x80)
        if has_vcl and (first_slice or nal_type in (32, 33, 34, 35, 39)):
            units.append(current)
            current, has_vcl = [], False
        current.append(nal)
        has_vcl = has_vcl or vcl
    if current:
        units.append(current)
    return units


def test_h265_enhanced_rtmp(tmp_path: Path) -> None:
    ffmpeg = require("ffmpeg")
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                              text=True, check=True).stdout
    if "libx265" not in encoders:
        pytest.skip("this ffmpeg has no libx265 encoder, so no H.265 input can be made")
    raw = tmp_path / "src.hevc"
    made_by([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc=size=320x240:rate={FPS}", "-t", "2", "-c:v", "libx265", "-preset",
             "ultrafast", "-x265-params", "log-level=error:keyint=25:min-keyint=25",
             "-pix_fmt", "yuv420p", "-f", "hevc"], raw, timeout=60)
    source_frames = count_frames(raw)["video"][1]
    assert source_frames == 2 * FPS

    units = hevc_access_units(annexb_nalus(raw.read_bytes()))
    assert len(units) == source_frames
    first = {(n[0] >> 1) & 0x3F: n for n in units[0]}
    tags = [encode_tag(TAG_VIDEO, 0, b"\x90hvc1" + hvcc_record(first[32], first[33], first[34]))]
    keyframes = 0
    for i, unit in enumerate(units):
        # Parameter sets live in the record only, as FLV muxers do.
        frame = [n for n in unit if (n[0] >> 1) & 0x3F not in (32, 33, 34)]
        data = b"".join(len(n).to_bytes(4, "big") + n for n in frame)
        key = any(16 <= (n[0] >> 1) & 0x3F <= 23 for n in frame)
        keyframes += key
        # Keyframes as CodedFrames (with a composition time), others as CodedFramesX.
        header = b"\x91hvc1\x00\x00\x00" if key else b"\xa3hvc1"
        tags.append(encode_tag(TAG_VIDEO, i * 1000 // FPS, header + data))
    flv = tmp_path / "hevc.flv"
    flv.write_bytes(file_header(has_audio=False) + b"".join(tags))

    result = lal("flv2es", flv, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"out.h265 (h265, {source_frames} frames, " in result.stdout
    out = tmp_path / "out.h265"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hevc.flv", "out.h265", "src.hevc"]
    assert count_frames(out) == {"video": ("hevc", source_frames)}
    assert decode_errors(out) == ""
    types = [(n[0] >> 1) & 0x3F for n in annexb_nalus(out.read_bytes())]
    assert keyframes == 2
    assert types.count(32) == types.count(33) == types.count(34) == keyframes
    for i, t in enumerate(types):
        if 16 <= t <= 23:
            before = [u for u in types[max(0, i - 5):i] if u != 39]  # SEI may follow the PPS
            assert before[-3:] == [32, 33, 34], types[max(0, i - 5):i + 1]


def test_other_codecs_are_skipped_with_a_warning(tmp_path: Path) -> None:
    src = tmp_path / "mp3.flv"
    made_by([require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-c:a", "libmp3lame", "-ar", "44100", "-f", "flv"], src, timeout=60)
    result = lal("flv2es", src, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and "mp3" in warnings[0], result.stderr
    assert not (tmp_path / "out.aac").exists()
    assert count_frames(tmp_path / "out.h264") == {"video": ("h264", 2 * FPS)}

    only_mp3 = lal("flv2es", "--audio-only", src, tmp_path / "a")
    assert only_mp3.returncode == 1
    assert "nothing to extract" in only_mp3.stderr and "mp3" in only_mp3.stderr


def test_frames_before_the_sequence_header_are_skipped(sources: Sources, tmp_path: Path) -> None:
    tags = list(iter_file(str(sources.video)))
    header = next(t for t in tags if t.tag_type == TAG_VIDEO and t.payload[1] == 0)
    frames = [t for t in tags if t.tag_type == TAG_VIDEO and t.payload[1] == 1]
    second_key = next(i for i, t in enumerate(frames) if i and t.payload[0] >> 4 == 1)
    moved = frames[:second_key] + [header] + frames[second_key:]
    src = tmp_path / "late-header.flv"
    src.write_bytes(file_header(has_audio=False)
                    + b"".join(encode_tag(t.tag_type, t.timestamp, t.payload) for t in moved))
    result = lal("flv2es", src, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"skipped {second_key} h264 frames" in result.stderr
    out = tmp_path / "out.h264"
    assert count_frames(out) == {"video": ("h264", len(frames) - second_key)}
    assert decode_errors(out) == ""


def test_errors(sources: Sources, tmp_path: Path) -> None:
    missing = lal("flv2es", tmp_path / "missing.flv", tmp_path / "out")
    assert_one_line_error(missing, "missing.flv", "no such file")

    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a video\n")
    assert_one_line_error(lal("flv2es", text, tmp_path / "out"), "not an FLV file")

    empty = tmp_path / "empty.flv"
    empty.write_bytes(b"")
    assert_one_line_error(lal("flv2es", empty, tmp_path / "out"), "not an FLV file")

    script_only = tmp_path / "script.flv"
    script = encode_tag(TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData\x05")
    script_only.write_bytes(file_header() + script)
    assert_one_line_error(lal("flv2es", script_only, tmp_path / "out"), "no audio or video")
    assert list(tmp_path.glob("out.*")) == []

    # Cut the file in the middle of a tag: what was complete is written, exit 1.
    data = sources.av.read_bytes()
    truncated = tmp_path / "truncated.flv"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    complete = sum(1 for _ in iter_file(str(truncated), allow_truncated=True))
    result = lal("flv2es", truncated, tmp_path / "cut")
    line = assert_one_line_error(result, "truncated", f"after {complete} complete tags")
    assert "wrote what was complete" in line
    assert result.stdout.startswith("wrote ")
    video = count_frames(tmp_path / "cut.h264")["video"]
    audio = count_frames(tmp_path / "cut.aac")["audio"]
    assert video[0] == "h264" and 0 < video[1] < SECONDS * FPS
    assert audio[0] == "aac" and audio[1] > 0
    assert decode_errors(tmp_path / "cut.h264") == ""
