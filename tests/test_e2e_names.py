"""End to end: the longest name the check accepts works on every output that
makes files of it (FLV and TS recording, HLS on disk), under the real server;
one character more is refused with the reason, over RTMP and HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import m3u8
import pytest
from conftest import ROOT, Server, ServerConfig, generate
from mediatools import decode_errors, finish, probe, push, wait_for
from tsparse import count_frames

from lal_twisted.hub.session import check_names

GRIN = "\U0001F600"  # 4 bytes in UTF-8, the most a character takes
SECONDS = 3


def longest_accepted(char: str) -> str:
    """The longest run of ``char`` that check_names accepts as a stream name."""
    n = 1
    while check_names("live", char * (n + 1)) is None and n < 10_000:
        n += 1
    return char * n


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("names-media") / "clip.flv", SECONDS)


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    """Recording and HLS on disk, in the server's directory (the test's own)."""
    return lambda directory: {
        "record": {"enable_flv": True, "enable_mpegts": True,
                   "flv_out_path": str(directory / "rec"),
                   "mpegts_out_path": str(directory / "rec")},
        "hls": {"enable": True, "fragment_duration_ms": 1000, "fragment_num": 4,
                "use_memory_as_disk_flag": False, "out_path": str(directory / "hls") + "/",
                "cleanup_mode": 0},
        "subscriber": {"publisher_wait_timeout_ms": 1000}}


def hls_url(server: Server, path: str) -> str:
    path, _, query = path.partition("?")  # a segment URI's viewer token stays as it is
    return f"http://127.0.0.1:{server.http_port}/hls/{quote(path)}" + (
        f"?{query}" if query else "")


def test_the_longest_name_of_4_byte_characters_records_and_plays_hls(
        server: Server, clip: Path, tmp_path: Path) -> None:
    name = longest_accepted(GRIN)
    code, err = finish(push(clip, server.rtmp_url(name)), timeout=60)
    assert code == 0, err
    assert wait_for(lambda: server.log().count("finished") == 2, 10), server.log()
    log = server.log()
    assert "recording stopped" not in log and "cannot write" not in log, log
    # Recording: STREAM-UNIXTIME.flv / .ts, each decodes.
    for ext in (".flv", ".ts"):
        files = sorted((tmp_path / "rec").glob(f"*{ext}"))
        assert len(files) == 1, files
        assert files[0].stem.rpartition("-")[0] == name
        info = probe(files[0])
        assert info.codecs == {"video": "h264", "audio": "aac"}
        assert info.decode_errors == "" and info.video_frames > 0
    # HLS: the record playlist (percent-encoded URL) and a segment that decodes.
    record_url = hls_url(server, f"{name}/record.m3u8")
    assert wait_for(lambda: get(record_url)[0] == 200, 10), server.log()
    status, body = get(record_url)
    playlist = m3u8.loads(body.decode())
    assert playlist.is_endlist and playlist.segments, body
    status, data = get(hls_url(server, f"{name}/{playlist.segments[0].uri}"))
    assert status == 200 and data[:1] == b"\x47"
    segment = tmp_path / "segment.ts"
    segment.write_bytes(data)
    info = probe(segment)
    assert info.decode_errors == "" and info.video_frames > 0
    assert sorted(p.name for p in (tmp_path / "hls" / name).glob("*.m3u8")) == [
        "playlist.m3u8", "record.m3u8"]
    # A player follows the playlist's own segment names through the whole publish.
    assert get(hls_url(server, f"{name}/playlist.m3u8"))[0] == 200
    assert decode_errors(record_url) == ""
    assert count_frames(record_url) == count_frames(clip)


def test_one_4_byte_character_more_is_refused_with_the_reason(server: Server,
                                                              clip: Path) -> None:
    name = longest_accepted(GRIN) + GRIN
    why = f"the stream name is {len(name.encode())} bytes long in UTF-8, at most 128"
    # RTMP, with ffmpeg and with lal's own client (which shows the status code).
    code, err = finish(push(clip, server.rtmp_url(name)), timeout=30)
    assert code != 0 and why in err, err
    lal = subprocess.run(
        [sys.executable, "-m", "lal_twisted.tools.cli", "push", "-q", str(clip),
         server.rtmp_url(name)], capture_output=True, text=True, timeout=30,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert lal.returncode != 0 and "NetStream.Publish.BadName" in lal.stderr, lal.stderr
    assert why in lal.stderr, lal.stderr
    # HTTP-FLV: 400 with the reason; HLS: not found.
    status, body = get(f"http://127.0.0.1:{server.http_port}/live/{quote(name)}.flv")
    assert status == 400 and why in body.decode(), (status, body)
    assert get(hls_url(server, f"{name}.m3u8"))[0] == 404
    assert not (Path(server.log_path).parent / "rec").exists()
    assert f"refused: invalid stream name: {why}" in server.log()
