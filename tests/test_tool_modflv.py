"""End-to-end tests of ``lal modflv``: real ffmpeg input, the real command, ffprobe checks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BIN, FPS, ROOT, generate, require
from mediatools import decode_errors, made_by

from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvTag, encode_tag, file_header
from lal_twisted.media.packet import AVPacket
from lal_twisted.tools.flvfile import iter_file

SECONDS = 4

# The installed console script, or ``cli.main`` when it is not installed.
LAL = ([str(BIN / "lal")] if (BIN / "lal").exists() else
       [sys.executable, "-c", "import sys; from lal_twisted.tools.cli import main; "
                              "sys.exit(main())"])


@dataclass
class Sources:
    plain: Path
    offset: Path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    d = tmp_path_factory.mktemp("modflv-src")
    offset = d / "offset.flv"
    made_by([require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "3",
             "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", str(FPS),
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
             "-output_ts_offset", "10", "-f", "flv"], offset, timeout=60)
    return Sources(plain=generate(d / "plain.flv", SECONDS), offset=offset)


def lal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAL, *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def tags_of(path: Path) -> list[FlvTag]:
    return list(iter_file(str(path)))


def is_frame(tag: FlvTag) -> bool:
    return (tag.tag_type in (TAG_AUDIO, TAG_VIDEO)
            and not AVPacket(tag.tag_type, 0, tag.payload).is_sequence_header)


def write_flv(path: Path, tags: list[FlvTag]) -> None:
    path.write_bytes(file_header() + b"".join(
        encode_tag(t.tag_type, t.timestamp, t.payload) for t in tags))


def frame_counts(path: Path) -> dict[str, int]:
    out = subprocess.run(
        [require("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60)
    return {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(out.stdout)["streams"]}


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lal modflv: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_rebase(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "rebased.flv"
    result = lal("modflv", sources.offset, out, "--rebase")
    assert result.returncode == 0, result.stderr
    before, after = tags_of(sources.offset), tags_of(out)
    assert [(t.tag_type, t.payload) for t in after] == [(t.tag_type, t.payload) for t in before]
    base = next(t.timestamp for t in before if is_frame(t))
    assert 9000 <= base <= 10000
    assert next(t for t in after if t.tag_type in (TAG_AUDIO, TAG_VIDEO)).timestamp == 0
    assert next(t for t in after if is_frame(t)).timestamp == 0
    for old, new in zip(before, after, strict=True):
        assert new.timestamp == (old.timestamp - base if is_frame(old) else 0)
    assert out.read_bytes()[4] == sources.offset.read_bytes()[4]  # audio/video flags
    assert decode_errors(out) == ""
    assert frame_counts(out) == frame_counts(sources.offset)
    last = max(t.timestamp for t in before if is_frame(t)) - base
    assert f"frame timestamps 0..{last} ms (input {base}..{last + base} ms)" in result.stdout


def test_shift(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "shifted.flv"
    result = lal("modflv", sources.plain, out, "--shift", "5000")
    assert result.returncode == 0, result.stderr
    before, after = tags_of(sources.plain), tags_of(out)
    assert [t.payload for t in after] == [t.payload for t in before]
    for old, new in zip(before, after, strict=True):
        if old.timestamp == 0 and not is_frame(old):
            assert new.timestamp == 0  # metadata and sequence headers stay at 0
        else:
            assert new.timestamp == old.timestamp + 5000
    assert decode_errors(out) == ""
    assert frame_counts(out) == frame_counts(sources.plain)
    start = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=start_time", "-of", "csv=p=0",
         str(out)], capture_output=True, text=True, check=True).stdout
    assert 5.0 <= float(start) < 5.2

    # A negative shift that stays in range is fine too.
    back = tmp_path / "back.flv"
    assert lal("modflv", sources.offset, back, "--shift", "-9000").returncode == 0
    for old, new in zip(tags_of(sources.offset), tags_of(back), strict=True):
        assert new.timestamp == (old.timestamp - 9000 if is_frame(old) else 0)
    assert decode_errors(back) == ""


def break_timestamps(tags: list[FlvTag]) -> tuple[list[FlvTag], int, int]:
    """Damage a clean tag list: one video frame steps back 3 s, one audio frame
    jumps 5 s ahead, and at the keyframe at 3 s the clock restarts near 0 with
    new sequence headers, as after a publisher reconnect."""
    broken = [FlvTag(t.tag_type, t.timestamp, t.payload) for t in tags]
    video = [i for i, t in enumerate(broken) if t.tag_type == TAG_VIDEO and is_frame(t)]
    audio = [i for i, t in enumerate(broken) if t.tag_type == TAG_AUDIO and is_frame(t)]
    glitch_v, glitch_a = video[30], audio[40]
    broken[glitch_v].timestamp -= 3000
    broken[glitch_a].timestamp += 5000
    restart = next(i for i in video if broken[i].payload[0] >> 4 == 1
                   and broken[i].timestamp >= 3000)
    cut = broken[restart].timestamp
    for t in broken[restart:]:
        t.timestamp = t.timestamp - cut + 100
    headers = [FlvTag(t.tag_type, 100, t.payload) for t in tags
               if t.tag_type in (TAG_AUDIO, TAG_VIDEO) and not is_frame(t)]
    return broken[:restart] + headers + broken[restart:], glitch_v, glitch_a


def test_repair(sources: Sources, tmp_path: Path) -> None:
    original = tags_of(sources.plain)
    broken_tags, glitch_v, glitch_a = break_timestamps(original)
    broken = tmp_path / "broken.flv"
    write_flv(broken, broken_tags)
    out = tmp_path / "repaired.flv"
    result = lal("modflv", broken, out, "--repair")
    assert result.returncode == 0, result.stderr
    repaired = tags_of(out)
    assert [t.payload for t in repaired] == [t.payload for t in broken_tags]
    changed = sum(a.timestamp != b.timestamp for a, b in zip(broken_tags, repaired, strict=True))
    assert changed > 0
    assert f"{len(repaired)} tags read, {len(repaired)} written, {changed} changed" in result.stdout

    for kind in (TAG_AUDIO, TAG_VIDEO):
        stamps = [t.timestamp for t in repaired if t.tag_type == kind and is_frame(t)]
        assert stamps == sorted(stamps), f"track {kind} not monotonic"
        steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert max(steps) <= 1000
    # The glitches and the restart are closed up: the frames land back on the
    # original timeline (video exactly, AAC's 23.2 ms frames within 2 ms).
    wanted = [t for t in original if is_frame(t)]
    got = [t for t in repaired if is_frame(t)]
    assert len(wanted) == len(got)
    for a, b in zip(wanted, got, strict=True):
        assert a.payload == b.payload
        if a.tag_type == TAG_VIDEO:
            assert b.timestamp == a.timestamp
        else:
            assert abs(b.timestamp - a.timestamp) <= 2, (a.timestamp, b.timestamp)
    assert original[glitch_v].timestamp == repaired[glitch_v].timestamp

    assert decode_errors(out) == ""
    assert frame_counts(out) == frame_counts(broken) == frame_counts(sources.plain)


def test_repair_leaves_clean_files_alone(sources: Sources, tmp_path: Path) -> None:
    for src in (sources.plain, sources.offset):
        out = tmp_path / f"clean-{src.name}"
        result = lal("modflv", src, out, "--repair")
        assert result.returncode == 0, result.stderr
        assert " 0 changed" in result.stdout
        assert out.read_bytes() == src.read_bytes()


def test_errors(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "out.flv"
    assert_one_line_error(lal("modflv", tmp_path / "missing.flv", out, "--rebase"),
                          "missing.flv", "no such file")
    text = tmp_path / "notes.txt"
    text.write_text("not a video at all\n")
    assert_one_line_error(lal("modflv", text, out, "--repair"), "not an FLV file")

    first_frame = next(i for i, t in enumerate(tags_of(sources.plain), 1) if is_frame(t))
    negative = lal("modflv", sources.plain, out, "--shift", "-100")
    assert_one_line_error(negative, f"tag {first_frame} ", "at 0 ms", "-100 ms")
    assert list(tmp_path.iterdir()) == [text]  # nothing half-written is left behind

    for args in ([], ["--rebase", "--repair"], ["--shift"]):
        usage = lal("modflv", sources.plain, out, *args)
        assert usage.returncode == 2, usage
        assert "Traceback" not in usage.stderr and "usage:" in usage.stderr
    assert "one of the arguments --rebase --shift --repair is required" in lal(
        "modflv", sources.plain, out).stderr

    # A truncated input: the complete tags are written, and the exit status says so.
    data = sources.plain.read_bytes()
    cut = tmp_path / "cut.flv"
    cut.write_bytes(data[: len(data) // 2])
    complete = list(iter_file(str(cut), allow_truncated=True))
    result = lal("modflv", cut, out, "--rebase")
    assert_one_line_error(result, "truncated", f"{len(complete)} complete tags")
    assert [t.payload for t in tags_of(out)] == [t.payload for t in complete]
    assert decode_errors(out) == ""
