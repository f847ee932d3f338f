"""H.265 (and enhanced-RTMP H.264 and AAC) into MPEG-TS and HLS, end to end.

Every way H.265 reaches the server ends up in the live and record playlists as
stream type 0x24 with VPS/SPS/PPS in front of every keyframe: enhanced RTMP
``hvc1`` published by the newer ffmpeg, the same frames in ModEx and multitrack
wrappers with a colorInfo Metadata packet beside the decoder configuration, and
legacy FLV codec id 12.  Codecs MPEG-TS does not carry here (AV1, Opus) are
left out with one log line per track while the other track plays."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from codectools import FFMPEG, VIDEO_ENCODERS, make_media, need_encoders, push
from conftest import Media, Server, ServerConfig, start_server, stop_server
from mediatools import decode_errors, finish, made_by, read_tags, to_enhanced, wait_for
from test_hls import get, playlist, url, wait_playlist
from tsparse import parse

from lal_twisted.media import amf0, enhanced
from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvTag, encode_tag, file_header
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.ts import AUDIO_PID, VIDEO_PID

LAL = [sys.executable, "-m", "lal_twisted.tools.cli"]
FPS = 25


# The tests publish streams of their own names to one server.
pytestmark = pytest.mark.shared_server


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    return lambda directory: {"hls": {
        "enable": True, "fragment_duration_ms": 1000, "fragment_num": 4,
        "use_memory_as_disk_flag": True, "out_path": str(directory / "hls") + "/",
        "cleanup_mode": 0, "sub_session_timeout_ms": 3000}}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hevc-hls-media")


def ffprobe_streams(source: str) -> tuple[str, dict[str, tuple[str, int]]]:
    """What ffprobe at ``-v error`` prints on stderr, and codec_type -> (codec,
    decoded frames), reading ``source`` (a playlist or a segment) to its end."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames", "-of", "json", source],
        capture_output=True, text=True, timeout=120)
    streams = json.loads(done.stdout or "{}").get("streams", [])
    return done.stderr.strip(), {s["codec_type"]: (s["codec_name"], int(s["nb_read_frames"]))
                                 for s in streams}


def decodes(source: str, *after_input: str) -> str:
    """What the newer ffmpeg reports decoding ``source`` ("" when clean)."""
    return decode_errors(source, "-rw_timeout", "20000000", after_input=after_input,
                         ffmpeg=FFMPEG)


def source_frames(path: Path) -> dict[str, int]:
    """Frames of each kind in an FLV (sequence headers and metadata left out),
    from the first video keyframe on, where the first segment starts."""
    counts = {"video": 0, "audio": 0}
    started = False
    for tag in read_tags(path):
        packet = AVPacket(tag.tag_type, tag.timestamp, tag.payload)
        if packet.kind == TAG_VIDEO and packet.is_keyframe and not packet.is_sequence_header:
            started = True
        if not started:
            continue
        if packet.kind in (TAG_VIDEO, TAG_AUDIO) and not packet.is_sequence_header:
            if packet.kind == TAG_VIDEO and packet.payload[0] & 0x80 \
                    and enhanced.parse(packet.payload, video=True).packet_type == 2:
                continue  # an enhanced sequence end
            if packet.kind == TAG_VIDEO and not packet.payload[0] & 0x80 \
                    and packet.payload[1] == 2:
                continue  # a legacy end of sequence
            counts["video" if packet.kind == TAG_VIDEO else "audio"] += 1
    return {k: v for k, v in counts.items() if v}


def record_when_ended(server: Server, name: str) -> str:
    assert wait_for(lambda: (p := playlist(server, f"{name}/record.m3u8")) is not None
                    and p.is_endlist, timeout=15), server.log()
    return url(server, f"{name}/record.m3u8")


def check_hevc_segments(server: Server, name: str, audio: bool) -> None:
    """Every segment of the live playlist: H.265 as stream type 0x24 (and AAC as
    0x0F), each keyframe's access unit delimiter followed by VPS, SPS, PPS."""
    p = playlist(server, f"{name}.m3u8")
    assert p is not None and p.segments
    for seg in p.segments:
        status, _, data = get(seg.absolute_uri)
        assert status == 200
        info = parse(data)
        want = {VIDEO_PID: 0x24, AUDIO_PID: 0x0F} if audio else {VIDEO_PID: 0x24}
        assert info.streams == want
        keys = [pes for pes in info.pes if pes.pid == VIDEO_PID and pes.random_access]
        assert keys and info.pes[0].pid == VIDEO_PID and info.pes[0].random_access
        for pes in keys:
            es = pes.first_bytes[9 + pes.first_bytes[8]:]
            types = [(es[i + 4] >> 1) & 0x3F for i in range(len(es) - 5)
                     if es[i:i + 4] == b"\x00\x00\x00\x01"]
            assert types[:4] == [35, 32, 33, 34], types


def test_enhanced_hevc_aac_in_live_and_record_playlists(server: Server,
                                                        media_dir: Path) -> None:
    """The newer ffmpeg publishes H.265 (hvc1) and AAC over enhanced RTMP; ffmpeg
    plays the live playlist and decodes every frame of the record playlist."""
    src = make_media(media_dir / "hevc_aac.flv", "hevc", "aac", seconds=8)
    frames = source_frames(src)
    assert frames["video"] == 8 * FPS
    pusher = push(src, server.rtmp_url("h265"))
    try:
        wait_playlist(server, "h265.m3u8", segments=2)
        check_hevc_segments(server, "h265", audio=True)
        assert decodes(url(server, "h265.m3u8"), "-t", "2") == ""
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    record = record_when_ended(server, "h265")
    assert decodes(record) == ""
    errors, streams = ffprobe_streams(record)
    assert errors == ""
    assert streams == {"video": ("hevc", frames["video"]), "audio": ("aac", frames["audio"])}


# -- the same frames in every enhanced-RTMP wrapping ---------------------------------------

def _modex(first: int, rest: bytes, video: bool) -> bytes:
    """``first`` + ``rest`` (an enhanced tag body) behind a ModEx block carrying a
    nanosecond offset."""
    packet_type = first & 0x0F
    wrapper = (first & 0xF0) | 7
    return bytes([wrapper, 2]) + (123456).to_bytes(3, "big") + bytes([packet_type]) + rest


def _one_track(first: int, rest: bytes, video: bool) -> bytes:
    """Multitrack OneTrack, track 0."""
    packet_type = first & 0x0F
    wrapper = (first & 0xF0) | (6 if video else 5)
    return bytes([wrapper, packet_type]) + rest[:4] + b"\x00" + rest[4:]


def _many_codecs(first: int, rest: bytes, video: bool) -> bytes:
    """Multitrack ManyTracksManyCodecs: a copy of the frame as track 1 first (with
    composition time 0), then track 0 (TS outputs carry track 0, with its own
    composition time)."""
    packet_type = first & 0x0F
    wrapper = (first & 0xF0) | (6 if video else 5)
    fourcc, body = rest[:4], rest[4:]
    other = b"\x00\x00\x00" + body[3:] if video and packet_type == 1 else body
    size = len(body).to_bytes(3, "big")
    return (bytes([wrapper, 0x20 | packet_type]) + fourcc + b"\x01" + size + other
            + fourcc + b"\x00" + size + body)


def _many_tracks(first: int, rest: bytes, video: bool) -> bytes:
    """Multitrack ManyTracks: track 0 then track 1, one FourCC."""
    packet_type = first & 0x0F
    wrapper = (first & 0xF0) | (6 if video else 5)
    fourcc, body = rest[:4], rest[4:]
    size = len(body).to_bytes(3, "big")
    return (bytes([wrapper, 0x10 | packet_type]) + fourcc + b"\x00" + size + body
            + b"\x01" + size + body)


WRAPPERS: list[Callable[[int, bytes, bool], bytes] | None] = [
    None, _modex, _one_track, _many_codecs, _many_tracks]


def wrapped(tags: list[FlvTag], fourcc: bytes) -> bytes:
    """An FLV of enhanced tags with frames in turn plain, behind ModEx, and in
    each multitrack form; the sequence starts plain, behind ModEx or as
    OneTrack track 0 (still track 0's decoder configuration), each followed by
    a colorInfo Metadata packet (a header, but no decoder configuration)."""
    out = [file_header(True, True)]
    n = 0
    for tag in tags:
        p = tag.payload
        if tag.tag_type not in (TAG_VIDEO, TAG_AUDIO) or not p[0] & 0x80:
            out.append(encode_tag(tag.tag_type, tag.timestamp, p))
            continue
        video = tag.tag_type == TAG_VIDEO
        packet_type = p[0] & 0x0F
        if packet_type == 0:  # sequence start
            wrap = (None, _modex, _one_track)[n % 3]
        else:
            wrap = WRAPPERS[n % len(WRAPPERS)]
        n += 1
        body = p if wrap is None else wrap(p[0], p[1:], video)
        out.append(encode_tag(tag.tag_type, tag.timestamp, body))
        if video and packet_type == 0:
            color = amf0.encode("colorInfo", {"colorConfig": {
                "bitDepth": 8.0, "colorPrimaries": 1.0, "transferCharacteristics": 1.0,
                "matrixCoefficients": 1.0}})
            out.append(encode_tag(TAG_VIDEO, tag.timestamp,
                                  bytes([0x80 | 0x50 | 4]) + fourcc + color))
    return b"".join(out)


@pytest.mark.parametrize("codec", ["hevc", "h264"])
def test_wrapped_enhanced_frames_into_hls(server: Server, media: Media, media_dir: Path,
                                          codec: str) -> None:
    """H.265 (hvc1) or H.264 (avc1) with AAC (mp4a) in ModEx and multitrack
    wrappers, published by ``lal push``: the record playlist decodes to every
    published frame of track 0."""
    if codec == "hevc":
        src = make_media(media_dir / "hevc_aac6.flv", "hevc", "aac", seconds=6)
        tags = read_tags(src)
        # ffmpeg writes AAC with the legacy header: give it the mp4a FourCC too.
        tags = [to_enhanced(t) if t.tag_type == TAG_AUDIO else t for t in tags]
        fourcc, ts_codec = b"hvc1", "hevc"
    else:
        tags = [to_enhanced(t) for t in read_tags(media.av)]
        fourcc, ts_codec = b"avc1", "h264"
    out = media_dir / f"wrapped_{codec}.flv"
    out.write_bytes(wrapped(tags, fourcc))
    frames = source_frames(out)
    name = f"wrapped_{codec}"
    pusher = subprocess.Popen([*LAL, "push", "-q", str(out), server.rtmp_url(name)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    record = record_when_ended(server, name)
    assert decodes(record) == ""
    errors, streams = ffprobe_streams(record)
    assert errors == ""
    assert streams == {"video": (ts_codec, frames["video"]), "audio": ("aac", frames["audio"])}
    if codec == "hevc":
        check_hevc_segments(server, name, audio=True)
    assert "TS output without" not in server.log()


def test_legacy_hevc_id_12_into_hls(server: Server, media_dir: Path) -> None:
    """H.265 with FLV codec id 12 (``lal es2flv``), published by ``lal push``."""
    need_encoders("libx265")
    es = media_dir / "legacy.h265"
    made_by([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
             "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}", "-t", "6",
             "-pix_fmt", "yuv420p", *VIDEO_ENCODERS["hevc"][1], "-f", "hevc"], es, timeout=300)
    flv = media_dir / "legacy.flv"
    done = subprocess.run([*LAL, "es2flv", str(es), str(flv)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert {t.payload[0] & 0x0F for t in read_tags(flv) if t.tag_type == TAG_VIDEO} == {12}
    pusher = subprocess.Popen([*LAL, "push", "-q", str(flv), server.rtmp_url("legacy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_playlist(server, "legacy.m3u8", segments=2)
        check_hevc_segments(server, "legacy", audio=False)
        assert decodes(url(server, "legacy.m3u8"), "-t", "2") == ""
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    record = record_when_ended(server, "legacy")
    errors, streams = ffprobe_streams(record)
    assert errors == ""
    assert streams == {"video": ("hevc", 6 * FPS)}


def skip_lines(server: Server) -> list[str]:
    return [line for line in server.log().splitlines() if "TS output without" in line]


def test_hevc_opus_gives_video_only_and_one_log_line(server: Server, media_dir: Path) -> None:
    src = make_media(media_dir / "hevc_opus.flv", "hevc", "opus")
    frames = source_frames(src)
    pusher = push(src, server.rtmp_url("hopus"))
    try:
        wait_playlist(server, "hopus.m3u8", segments=2)
        check_hevc_segments(server, "hopus", audio=False)
        assert decodes(url(server, "hopus.m3u8"), "-t", "2") == ""
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    record = record_when_ended(server, "hopus")
    errors, streams = ffprobe_streams(record)
    assert errors == ""
    assert streams == {"video": ("hevc", frames["video"])}
    lines = skip_lines(server)
    assert len(lines) == 1, lines
    assert "live/hopus" in lines[0] and "audio" in lines[0] and "opus" in lines[0]


def test_av1_opus_gives_no_playlist_and_one_line_per_track(server: Server,
                                                           media_dir: Path) -> None:
    """Nothing MPEG-TS carries here: no segment is made, so the playlists answer
    404 as for a stream without HLS; the stream still plays over HTTP-FLV."""
    src = make_media(media_dir / "av1_opus.flv", "av1", "opus")
    pusher = push(src, server.rtmp_url("av1"))
    try:
        assert server.wait_live("av1")["video_codec"] == "AV1"
        time.sleep(3)  # more than a fragment's duration
        assert get(url(server, "av1.m3u8"))[0] == 404
        assert get(url(server, "av1/record.m3u8"))[0] == 404
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    assert server.alive()
    lines = skip_lines(server)
    assert len(lines) == 2, lines
    assert sum("video" in line and "av1" in line for line in lines) == 1
    assert sum("audio" in line and "opus" in line for line in lines) == 1
    assert get(url(server, "av1.m3u8"))[0] == 404


def test_multitrack_stream_carries_track_0(server: Server, media_dir: Path) -> None:
    """The newer ffmpeg publishes H.265 and AAC on track 0 with AV1 and Opus on
    track 1 (multitrack packets): the playlists carry track 0, every frame."""
    need_encoders("libx265", "libsvtav1", "aac", "libopus")
    src = media_dir / "multi.flv"
    made_by([
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
        "-t", "6", "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-pix_fmt", "yuv420p",
        "-c:v:0", "libx265", "-preset:v:0", "ultrafast",
        "-x265-params", f"log-level=error:keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0",
        "-c:v:1", "libsvtav1", "-preset:v:1", "12", "-g", str(FPS),
        "-c:a:0", "aac", "-c:a:1", "libopus", "-f", "flv"], src, timeout=300)
    track0 = media_dir / "multi_track0.flv"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-i", str(src), "-map", "0:v:0", "-map", "0:a:0", "-c", "copy",
                    "-f", "flv", str(track0)], check=True, capture_output=True, timeout=120)
    frames = source_frames(track0)
    assert frames["video"] == 6 * FPS
    pusher = push(src, server.rtmp_url("multi"))
    try:
        wait_playlist(server, "multi.m3u8", segments=2)
        check_hevc_segments(server, "multi", audio=True)
        assert finish(pusher)[0] == 0
    finally:
        pusher.kill()
        finish(pusher)
    record = record_when_ended(server, "multi")
    assert decodes(record) == ""
    errors, streams = ffprobe_streams(record)
    assert errors == ""
    assert streams == {"video": ("hevc", frames["video"]), "audio": ("aac", frames["audio"])}
    assert skip_lines(server) == []


def test_httpts_plays_hevc(tmp_path: Path, media_dir: Path) -> None:
    """HTTP-TS of an enhanced-RTMP H.265 + AAC stream: an ffmpeg that joins late
    reads it to the end of the response (the publisher left) and decodes every
    frame as H.265 and AAC, with ffprobe silent at ``-v error``."""
    src = make_media(media_dir / "hevc_aac8.flv", "hevc", "aac", seconds=8)
    srv = start_server(tmp_path, subscriber={"publisher_wait_timeout_ms": 1000},
                       httpts={"enable": True})
    try:
        pusher = push(src, srv.rtmp_url("tsh265"))
        try:
            assert srv.wait_live("tsh265")["video_codec"] == "H265"
            time.sleep(1.5)  # join late: the GOP cache gives a keyframe first
            out = tmp_path / "played.ts"
            pull = subprocess.run(
                [FFMPEG, "-v", "error", "-nostdin", "-rw_timeout", "20000000", "-i",
                 f"http://127.0.0.1:{srv.http_port}/live/tsh265.ts", "-map", "0", "-c", "copy",
                 "-f", "mpegts", "-y", str(out)], capture_output=True, text=True, timeout=120)
            # ffmpeg 9's MPEG-TS demuxer ends a live HTTP input with one "Error
            # during demuxing: Input/output error" line after "Last chunk received,
            # closing conn" (-v debug): the server ended the response cleanly.
            lines = [line for line in pull.stderr.splitlines()
                     if "Error during demuxing: Input/output error" not in line]
            assert pull.returncode == 0 and lines == [], pull.stderr
            assert finish(pusher)[0] == 0
        finally:
            pusher.kill()
            finish(pusher)
        errors, streams = ffprobe_streams(str(out))
        assert errors == ""
        assert streams["video"][0] == "hevc" and streams["audio"][0] == "aac"
        assert streams["video"][1] >= 5 * FPS
        assert decodes(str(out)) == ""
        assert "Traceback" not in srv.log()
    finally:
        stop_server(srv)
