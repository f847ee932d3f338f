"""Legacy HEVC (FLV video codec id 12, as Chinese CDNs and lal use it) in and
out: ``lal es2flv`` wraps ffmpeg's H.265 elementary stream, ``lal push``
publishes it, players get the same id-12 tags back, and ffmpeg decodes them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from codectools import (
    FFMPEG,
    VIDEO_ENCODERS,
    assert_played_run,
    framemd5_of,
    framemd5_pull,
    need_encoders,
    parse_framemd5,
    wait_pull,
)
from conftest import Server
from mediatools import finish, made_by, read_tags

from lal_twisted.media.flv import FlvReader
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.media.tags import Codec

LAL = [sys.executable, "-m", "lal_twisted.tools.cli"]


@pytest.fixture(scope="module")
def legacy_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_encoders("libx265")
    d = tmp_path_factory.mktemp("legacy")
    es = d / "video.h265"
    made_by([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
             "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "8",
             "-pix_fmt", "yuv420p", *VIDEO_ENCODERS["hevc"][1], "-f", "hevc"], es, timeout=300)
    out = d / "legacy.flv"
    done = subprocess.run([*LAL, "es2flv", str(es), str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def test_es2flv_writes_codec_id_12_that_ffmpeg_decodes(legacy_flv: Path) -> None:
    tags = [t for t in read_tags(legacy_flv) if t.tag_type == VIDEO]
    assert {t.payload[0] & 0x0F for t in tags} == {12}
    packets = [AVPacket(VIDEO, t.timestamp, t.payload) for t in tags]
    assert packets[0].is_sequence_header and packets[0].codec == Codec.H265
    assert sum(p.is_keyframe for p in packets[1:]) == 8  # one a second
    result = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(legacy_flv),
                             "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "hevc (Main)" in result.stderr and "320x240" in result.stderr
    assert "frame=  200" in result.stderr


def http_until_closed(url: str) -> bytes:
    """An HTTP-FLV body read until the server ends it (the end of the chunked
    response once the publisher has left)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    # Players are closed a second after the publisher leaves: they play to the end.
    return {"subscriber": {"publisher_wait_timeout_ms": 1000}}


def test_legacy_hevc_in_and_out(server: Server, legacy_flv: Path) -> None:
    source = [t for t in read_tags(legacy_flv) if t.tag_type == VIDEO]
    published = framemd5_of(legacy_flv)
    pusher = subprocess.Popen([*LAL, "push", "-q", str(legacy_flv), server.rtmp_url("h265")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        server.wait_live("h265")
        assert "stream live/h265 video: H265 Main 320x240" in server.log(), server.log()
        time.sleep(1.5)  # join late
        rtmp = framemd5_pull(server.rtmp_url("h265"))
        body = http_until_closed(server.flv_url("h265"))
        played = parse_framemd5(wait_pull(rtmp))
        code, err = finish(pusher)
        assert code == 0, err
    finally:
        pusher.kill()
        finish(pusher)
    # HTTP-FLV: the id-12 tags as published, the sequence header first, then a
    # run of frames from a keyframe.
    tags = [t for t in FlvReader().feed(body) if t.tag_type == VIDEO]
    assert tags[0].payload == source[0].payload
    frames = [(t.timestamp, t.payload) for t in tags[1:]]
    sent = [(t.timestamp, t.payload) for t in source[1:]]
    start = sent.index(frames[0])
    assert frames == sent[start:] and len(frames) >= 25
    assert start > 0 and AVPacket(VIDEO, 0, frames[0][1]).is_keyframe
    assert all(p[0] & 0x0F == 12 for _, p in frames)
    # RTMP, played by ffmpeg: the same packets byte for byte.
    assert_played_run(played, published, 25)
