"""End to end: recording every publish to files, under the real server (twistd)."""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FPS, Server, ServerConfig, generate, start_server, stop_server
from mediatools import finish, probe, pull, push, wait_for

SECONDS = 10


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("rec-media") / "ten.flv", SECONDS)


@pytest.fixture(scope="module")
def published_counts(ten_seconds: Path) -> tuple[int, int]:
    """(video, audio) frames in the file the tests publish."""
    info = probe(ten_seconds)
    return info.video_frames, info.audio_frames


def recorder_config(**record: object) -> dict[str, Any]:
    # Players are closed a second after their publisher leaves, so each one ends
    # with the stream instead of waiting on for another publisher.
    return {"record": dict(record), "subscriber": {"publisher_wait_timeout_ms": 1000}}


def recorder_server(tmp: Path, **record: object) -> Server:
    return start_server(tmp, **recorder_config(**record))


BOTH = {"enable_flv": True, "enable_mpegts": True}


def both(tmp: Path) -> dict[str, object]:
    return {**BOTH, "flv_out_path": str(tmp / "rec"), "mpegts_out_path": str(tmp / "rec")}


@pytest.fixture(scope="module")
def server_config() -> ServerConfig:
    """Both recordings, into rec/ of the server's directory (the test's own)."""
    return lambda directory: recorder_config(**both(directory))


def ffprobe_errors(path: Path) -> str:
    """What ``ffprobe -v error`` says while counting every frame of ``path``."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", str(path)],
                         capture_output=True, timeout=120)
    return out.stderr.decode(errors="replace").strip()


def recorded(directory: Path, ext: str) -> list[Path]:
    return sorted(directory.glob(f"*{ext}")) if directory.is_dir() else []


def test_flv_and_ts_recordings_of_a_publish_decode_fully(server: Server, ten_seconds: Path,
                                                         published_counts: tuple[int, int],
                                                         tmp_path: Path) -> None:
    started = int(time.time())
    code, err = finish(push(ten_seconds, server.rtmp_url("rec")), timeout=60)
    assert code == 0, err
    assert wait_for(lambda: server.log().count("finished") == 2, 10), server.log()
    for ext in (".flv", ".ts"):
        files = recorded(tmp_path / "rec", ext)
        assert len(files) == 1, files
        # lal's naming: STREAM-UNIXTIME.flv / .ts
        name, _, stamp = files[0].stem.rpartition("-")
        assert name == "rec" and started <= int(stamp) <= started + 5
        assert ffprobe_errors(files[0]) == ""
        info = probe(files[0])
        assert info.codecs == {"video": "h264", "audio": "aac"}
        assert info.decode_errors == ""
        assert info.first_video_key
        assert (info.video_frames, info.audio_frames) == published_counts, ext


def test_each_publish_is_its_own_file(server: Server, ten_seconds: Path,
                                      tmp_path: Path) -> None:
    for _ in range(2):
        code, err = finish(push(ten_seconds, server.rtmp_url("twice"), realtime=False))
        assert code == 0, err
    assert wait_for(lambda: server.log().count("finished") == 4, 10), server.log()
    files = recorded(tmp_path / "rec", ".flv") + recorded(tmp_path / "rec", ".ts")
    assert len(files) == 4, files
    for path in files:
        assert probe(path).video_frames == SECONDS * FPS


def test_sigterm_leaves_a_file_that_decodes_to_the_shutdown(tmp_path: Path,
                                                            ten_seconds: Path) -> None:
    srv = recorder_server(tmp_path, **both(tmp_path))
    publisher = push(ten_seconds, srv.rtmp_url("cut"))
    try:
        assert wait_for(lambda: "writing" in srv.log(), 10), srv.log()
        time.sleep(4.0)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) in (0, -signal.SIGTERM), srv.log()  # twistd re-raises it
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(srv)
    assert "Traceback" not in srv.log(), srv.log()
    assert srv.log().count("finished") == 2, srv.log()
    for ext in (".flv", ".ts"):
        files = recorded(tmp_path / "rec", ext)
        assert len(files) == 1, files
        assert ffprobe_errors(files[0]) == ""
        info = probe(files[0])
        assert info.decode_errors == ""
        # about 4 s were published before the signal (a loaded machine: at least 2 s)
        assert 2 * FPS <= info.video_frames < SECONDS * FPS, info


def test_unwritable_directory_leaves_the_stream_playing(tmp_path: Path, ten_seconds: Path,
                                                        published_counts: tuple[int, int]
                                                        ) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the recording directory should be")
    srv = recorder_server(tmp_path, enable_mpegts=True, mpegts_out_path=str(blocker / "rec"))
    try:
        out = tmp_path / "played.flv"
        player = pull(srv.flv_url("live1"), out, SECONDS + 5, timeout=4)
        srv.wait_players("live1")
        code, err = finish(push(ten_seconds, srv.rtmp_url("live1")), timeout=60)
        assert code == 0, err
        finish(player)
    finally:
        stop_server(srv)
    log = srv.log()
    assert "Traceback" not in log, log
    stopped = [line for line in log.splitlines() if "recording stopped" in line]
    assert len(stopped) == 1, log
    assert "Not a directory" in stopped[0] and "the stream plays on" in stopped[0]
    info = probe(out)
    assert info.decode_errors == ""
    assert (info.video_frames, info.audio_frames) == published_counts


def _limit_file_size() -> None:
    # Files this process writes past 150 KiB fail with EFBIG, as on a full disk
    # (Python ignores SIGXFSZ, so the write itself fails).
    resource.setrlimit(resource.RLIMIT_FSIZE, (150 * 1024, 150 * 1024))


def test_disk_failing_mid_recording_stops_it_once(tmp_path: Path, ten_seconds: Path,
                                                  published_counts: tuple[int, int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original = subprocess.Popen

    def limited(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs["preexec_fn"] = _limit_file_size
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess, "Popen", limited)
    srv = recorder_server(tmp_path, enable_flv=True, flv_out_path=str(tmp_path / "rec"))
    monkeypatch.undo()
    try:
        out = tmp_path / "played.flv"
        player = pull(srv.flv_url("full"), out, SECONDS + 5, timeout=4)
        srv.wait_players("full")
        code, err = finish(push(ten_seconds, srv.rtmp_url("full")), timeout=60)
        assert code == 0, err
        finish(player)
    finally:
        stop_server(srv)
    log = srv.log()
    assert "Traceback" not in log, log
    stopped = [line for line in log.splitlines() if "recording stopped" in line]
    assert len(stopped) == 1, log
    assert "File too large" in stopped[0]
    files = recorded(tmp_path / "rec", ".flv")
    assert len(files) == 1 and files[0].stat().st_size <= 150 * 1024
    info = probe(out)
    assert info.decode_errors == ""
    assert (info.video_frames, info.audio_frames) == published_counts
