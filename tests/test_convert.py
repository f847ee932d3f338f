"""Conversions between FLV bodies and elementary streams (media/convert), checked
against ffmpeg: elementary streams ffmpeg made go to FLV bodies and back, and
come back with the same bytes (the same NAL units where the start codes
legitimately differ) or the same decoded frames; ffmpeg decodes every output
without an error; what ffmpeg itself makes of the same input (its FLV muxer,
its -c copy to OBU, its av1C) is what the conversions make."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from codectools import FFMPEG as NEW_FFMPEG
from codectools import need_encoders
from conftest import FPS, require
from mediatools import decode_errors
from test_tool_flv2es import annexb_nalus, lal

from lal_twisted.media import convert
from lal_twisted.media.aac import AscInfo
from lal_twisted.media.av1 import build_config
from lal_twisted.media.convert import (
    AdtsWriter,
    AnnexBWriter,
    FlvBody,
    ObuWriter,
    adts_to_flv,
    annexb_to_flv,
    obu_to_flv,
)
from lal_twisted.media.flv import TAG_VIDEO, FlvReader
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.media.tags import Codec
from lal_twisted.media.track import audio_track, video_track

SIZE = "160x120"


def ffmpeg(*args: str | Path, binary: str | None = None) -> None:
    subprocess.run([binary or require("ffmpeg"), "-hide_banner", "-loglevel", "error",
                    "-nostdin", "-y", *map(str, args)], check=True, timeout=180,
                    capture_output=True)


def video_es(out: Path, codec: str, seconds: float = 2, size: str = SIZE,
             pattern: str = "testsrc") -> Path:
    """An elementary stream made by ffmpeg: H.264/H.265 Annex-B or AV1 OBUs,
    a keyframe a second and no B-frames."""
    encoder = {
        "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", str(FPS),
                 "-f", "h264"],
        "h265": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                 f"log-level=error:keyint={FPS}:min-keyint={FPS}:bframes=0", "-f", "hevc"],
        "av1": ["-c:v", "libaom-av1", "-cpu-used", "8", "-g", str(FPS), "-f", "obu"],
    }[codec]
    ffmpeg("-f", "lavfi", "-i", f"{pattern}=size={size}:rate={FPS}", "-t", str(seconds),
           "-pix_fmt", "yuv420p", *encoder, out)
    return out


def aac_es(out: Path, seconds: float = 2, rate: int = 44100, channels: int = 2) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}", "-t", str(seconds),
           "-ac", str(channels), "-c:a", "aac", "-b:a", "64k", "-f", "adts", out)
    return out


def decoded_frames(path: Path) -> list[str]:
    """The md5 of every decoded picture (or audio frame), in order."""
    out = subprocess.run([require("ffmpeg"), "-v", "error", "-nostdin", "-i", str(path),
                          "-f", "framemd5", "-"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def packets(bodies: Iterator[FlvBody]) -> list[AVPacket]:
    """FLV bodies as the packets the hub would hold (timestamps do not matter here)."""
    return [AVPacket(body.kind, i, body.body) for i, body in enumerate(bodies)]


def video_back(items: list[AVPacket]) -> bytes:
    """FLV video packets back to an elementary stream, the writer following the
    sequence headers."""
    out = []
    writer: AnnexBWriter | ObuWriter | None = None
    for packet in items:
        if packet.is_sequence_header and packet.header_key is None:
            track = video_track(packet.payload)
            writer = ObuWriter(track) if track.codec == Codec.AV1 else AnnexBWriter(track)
        elif writer is not None:
            out.append(writer.frame(packet))
    return b"".join(out)


@pytest.mark.parametrize("enhanced", [False, True], ids=["legacy", "enhanced"])
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_annexb_round_trip(tmp_path: Path, codec: str, enhanced: bool) -> None:
    source = video_es(tmp_path / f"src.{codec}", codec)
    data = source.read_bytes()
    items = packets(annexb_to_flv(data, Codec(codec), enhanced))
    headers = [p for p in items if p.is_sequence_header]
    frames = [p for p in items if not p.is_sequence_header]
    assert len(headers) == 1 and items[0] is headers[0]
    assert {p.codec for p in items} == {Codec(codec)}
    assert all((p.payload[0] & 0x80 != 0) == enhanced for p in items)
    assert len(frames) == 2 * FPS
    assert [i for i, p in enumerate(frames) if p.is_keyframe] == [0, FPS]
    out = tmp_path / f"out.{codec}"
    out.write_bytes(video_back(items))
    # The same NAL units in the same order: the parameter sets left the frames
    # for the sequence header and came back in front of each keyframe.  Only
    # start codes differ (the encoder writes some with 3 bytes, we write 4).
    assert annexb_nalus(out.read_bytes()) == annexb_nalus(data)
    assert decode_errors(out) == ""
    assert decoded_frames(out) == decoded_frames(source)


def test_aac_adts_round_trip_is_byte_exact(tmp_path: Path) -> None:
    for rate, channels in ((44100, 2), (48000, 1), (22050, 2)):
        source = aac_es(tmp_path / f"src{rate}.aac", rate=rate, channels=channels)
        data = source.read_bytes()
        items = packets(adts_to_flv(data))
        assert items[0].is_sequence_header and items[0].payload[:2] == b"\xaf\x00"
        track = audio_track(items[0].payload)
        assert (track.codec, track.sample_rate, track.channels) == (Codec.AAC, rate, channels)
        writer = AdtsWriter(track.config)
        back = b"".join(writer.frame(p) for p in items[1:])
        assert back == data
        assert decode_errors(source) == ""


@pytest.mark.parametrize("encoder", ["libaom-av1", "libsvtav1"])
def test_av1_obu_round_trip_is_byte_exact(tmp_path: Path, encoder: str) -> None:
    source = tmp_path / "src.obu"
    params = (["-cpu-used", "8"] if encoder == "libaom-av1" else ["-preset", "12"])
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate={FPS}", "-t", "2",
           "-pix_fmt", "yuv420p", "-c:v", encoder, *params, "-g", str(FPS), "-f", "obu", source)
    data = source.read_bytes()
    items = packets(obu_to_flv(data))
    assert items[0].is_sequence_header and items[0].codec == Codec.AV1
    track = video_track(items[0].payload)
    assert (track.width, track.height) == (160, 120) and not track.error
    frames = items[1:]
    assert len(frames) == 2 * FPS
    assert [i for i, p in enumerate(frames) if p.is_keyframe] == [0, FPS]
    out = tmp_path / "out.obu"
    out.write_bytes(video_back(items))
    assert out.read_bytes() == data
    assert decode_errors(out) == ""


def test_av1_frames_without_delimiter_or_last_size_field(tmp_path: Path) -> None:
    """Frames in the ISOBMFF form (no temporal delimiter, the last OBU without
    its size field, no sequence header in the keyframes) become the same low
    overhead stream: delimiters and size fields added, the av1C record's
    sequence header in front of each keyframe."""
    source = video_es(tmp_path / "src.obu", "av1")
    data = source.read_bytes()
    items = packets(obu_to_flv(data))
    sequence_header = video_track(items[0].payload).config[4:]
    stripped = [items[0]]
    for packet in items[1:]:
        frame = packet.payload[5:]
        obus = convert.split_obus(frame)
        kept = [o for o in obus if o.obu_type not in (2, 1)]  # no delimiter, no sequence header
        last = kept[-1]
        body = b"".join(frame[o.start:o.end] for o in kept[:-1])
        # The last OBU's header without obu_has_size_field, no size, its payload.
        header = frame[last.start:last.start + (2 if frame[last.start] & 0x04 else 1)]
        body += bytes((header[0] & ~0x02,)) + header[1:] + frame[last.payload:last.end]
        stripped.append(AVPacket(VIDEO, packet.dts, packet.payload[:5] + body))
    back = video_back(stripped)
    expected = b"".join(
        convert.TEMPORAL_DELIMITER + (sequence_header if p.is_keyframe else b"")
        + b"".join(p.payload[5:][o.start:o.end] for o in convert.split_obus(p.payload[5:])
                   if o.obu_type not in (2, 1))
        for p in items[1:])
    assert back == expected
    out = tmp_path / "out.obu"
    out.write_bytes(back)
    assert decode_errors(out) == ""
    assert decoded_frames(out) == decoded_frames(source)


def test_new_parameter_sets_give_a_new_sequence_header(tmp_path: Path) -> None:
    """Two H.264 streams of different sizes one after the other: a second
    sequence header at the second one's first keyframe, and the round trip
    decodes as the source does, at both sizes."""
    first = video_es(tmp_path / "a.h264", "h264", 1, "160x120").read_bytes()
    second = video_es(tmp_path / "b.h264", "h264", 1, "320x240", "smptebars").read_bytes()
    source = tmp_path / "both.h264"
    source.write_bytes(first + second)
    items = packets(annexb_to_flv(source.read_bytes(), Codec.H264))
    headers = [i for i, p in enumerate(items) if p.is_sequence_header]
    assert headers == [0, FPS + 1]
    sizes = [(t.width, t.height) for t in (video_track(items[i].payload) for i in headers)]
    assert sizes == [(160, 120), (320, 240)]
    out = tmp_path / "out.h264"
    out.write_bytes(video_back(items))
    assert annexb_nalus(out.read_bytes()) == annexb_nalus(source.read_bytes())
    assert decoded_frames(out) == decoded_frames(source)


def test_the_main_track_of_multitrack_and_mod_ex_tags(tmp_path: Path) -> None:
    """Frames wrapped in enhanced-RTMP multitrack (track 0 and another) and ModEx
    headers give the main track's access units, as the plain tags do."""
    data = video_es(tmp_path / "src.h264", "h264", 1).read_bytes()
    items = packets(annexb_to_flv(data, Codec.H264, enhanced_rtmp=True))
    plain = video_back(items)
    wrapped = [items[0]]
    for p in items[1:]:
        first, body = p.payload[0], p.payload[5:]  # CodedFramesX: no composition time
        frame_type = first & 0x70
        other = b"\x00\x00\x00\x01\x09\xf0"
        many = (bytes((0x80 | frame_type | 6, 0x13)) + b"avc1"  # ManyTracks, CodedFramesX
                + b"\x01" + len(other).to_bytes(3, "big") + other
                + b"\x00" + len(body).to_bytes(3, "big") + body)
        nano = bytes((0x80 | frame_type | 7, 2, 0, 0, 9, 0x03))  # ModEx (nano offset), then X
        wrapped.append(AVPacket(VIDEO, p.dts, many if p.dts % 2 else nano + b"avc1" + body))
    assert all(p.is_keyframe == q.is_keyframe for p, q in zip(items, wrapped, strict=True))
    assert video_back(wrapped) == plain


@pytest.mark.parametrize("enhanced", [False, True], ids=["legacy", "enhanced"])
def test_es2flv_then_flv2es_with_video_and_audio(tmp_path: Path, enhanced: bool) -> None:
    """The tools: lal es2flv puts an H.264 and an AAC stream in one FLV that
    ffmpeg plays; lal flv2es takes them out again."""
    video = video_es(tmp_path / "v.h264", "h264")
    audio = aac_es(tmp_path / "a.aac")
    flv = tmp_path / "av.flv"
    done = lal("es2flv", video, audio, flv, *(["--enhanced"] if enhanced else []))
    assert done.returncode == 0, done.stderr
    assert f"{2 * FPS} video frames (h264), " in done.stdout
    if not enhanced:  # the Debian ffmpeg reads legacy tags only
        assert decode_errors(flv) == ""
    tags = FlvReader().feed(flv.read_bytes())
    stamps = [t.timestamp for t in tags]
    assert stamps == sorted(stamps)
    video_stamps = [t.timestamp for t in tags if t.tag_type == TAG_VIDEO][1:]
    assert video_stamps == [i * 40 for i in range(2 * FPS)]
    done = lal("flv2es", flv, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.aac").read_bytes() == audio.read_bytes()
    assert annexb_nalus((tmp_path / "out.h264").read_bytes()) == annexb_nalus(video.read_bytes())


def test_av1_in_flv_as_ffmpeg_writes_and_reads_it(tmp_path: Path) -> None:
    """ffmpeg 7+ (the imageio-ffmpeg build) muxes AV1 in enhanced-RTMP FLV: lal
    es2flv writes the same video tag bodies from the OBU stream (but the
    colorInfo metadata ffmpeg adds), lal flv2es gives back what ffmpeg's stream
    copy to OBU gives, and the av1C record is what ffmpeg writes in MP4."""
    need_encoders("libsvtav1")
    source = tmp_path / "src.obu"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate={FPS}", "-t", "2",
           "-pix_fmt", "yuv420p", "-c:v", "libsvtav1", "-preset", "12", "-g", str(FPS),
           "-f", "obu", source, binary=NEW_FFMPEG)
    theirs = tmp_path / "ffmpeg.flv"
    ffmpeg("-i", source, "-c", "copy", "-f", "flv", theirs, binary=NEW_FFMPEG)
    ours = tmp_path / "lal.flv"
    done = lal("es2flv", source, ours)
    assert done.returncode == 0, done.stderr

    def video_bodies(path: Path) -> list[bytes]:
        return [bytes(t.payload) for t in FlvReader().feed(path.read_bytes())
                if t.tag_type == TAG_VIDEO
                and not AVPacket(VIDEO, 0, bytes(t.payload)).header_key]  # no colorInfo

    assert video_bodies(ours) == video_bodies(theirs)
    copied = tmp_path / "copied.obu"
    ffmpeg("-i", theirs, "-c", "copy", "-f", "obu", copied, binary=NEW_FFMPEG)
    done = lal("flv2es", theirs, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.obu").read_bytes() == copied.read_bytes()
    mp4 = tmp_path / "src.mp4"
    ffmpeg("-i", source, "-c", "copy", mp4, binary=NEW_FFMPEG)
    box = mp4.read_bytes()
    at = box.find(b"av1C")
    av1c = box[at + 4:at - 4 + int.from_bytes(box[at - 4:at], "big")]
    first_unit = next(convert.obu_units(source.read_bytes()))
    assert build_config(first_unit.sequence_header) == av1c


def test_flv2es_of_ffmpegs_flv_decodes_as_the_flv_does(tmp_path: Path) -> None:
    """An FLV ffmpeg made (H.264 with B-frames, AAC): the Annex-B stream decodes
    to the same pictures, the ADTS is ffmpeg's own -c copy byte for byte."""
    flv = tmp_path / "src.flv"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate={FPS}", "-f", "lavfi", "-i",
           "sine=sample_rate=44100", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
           "-bf", "2", "-g", str(FPS), "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", flv)
    done = lal("flv2es", flv, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    adts = tmp_path / "ffmpeg.aac"
    ffmpeg("-i", flv, "-vn", "-c:a", "copy", "-f", "adts", adts)
    assert (tmp_path / "out.aac").read_bytes() == adts.read_bytes()
    h264 = tmp_path / "out.h264"
    assert decode_errors(h264) == ""
    video_only = tmp_path / "video.flv"
    ffmpeg("-i", flv, "-an", "-c", "copy", video_only)
    assert decoded_frames(h264) == decoded_frames(video_only)


def test_malformed_input_raises_a_conversion_error() -> None:
    frame = convert.adts_header(AscInfo(2, 44100, 2, 4), 9) + bytes(9)
    assert len(list(adts_to_flv(frame * 2))) == 3
    with pytest.raises(convert.AacError, match="sync"):
        list(adts_to_flv(frame + b"junk!!!!"))
    with pytest.raises(convert.AacError, match="past the end"):
        list(adts_to_flv(frame + frame[:10]))
    with pytest.raises(convert.AnnexBError, match="SPS"):
        list(annexb_to_flv(b"\x00\x00\x00\x01\x41\x9a\x00", Codec.H264))
    with pytest.raises(convert.Av1Error):
        list(obu_to_flv(b"\x12\x00\x32\x7f\x00"))  # a frame OBU running past the end
    with pytest.raises(convert.AnnexBError, match="past the end"):
        convert.access_unit(b"\x00\x00\x00\x09\x65", 0, 5, 4, False, True, b"")
    writer = AdtsWriter(b"\x12\x10")
    assert writer.frame(AVPacket(AUDIO, 0, b"\xaf\x00\x12\x10")) == b""  # a header, no frame
    with pytest.raises(convert.AacError):
        writer.header(convert.MAX_ADTS_PAYLOAD + 1)
