"""lal bench: a tiny run of all three scenarios against the project's own server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FPS, Media
from mediatools import probe

# The figures judged (first video, gaps, segment drift) are wall-clock times:
# the bench runs are ``serial``.

FIGURES = {"scenario", "publishers", "players", "protocol", "window_s", "stream_kbit",
           "server_cpu_percent", "server_rss_mb", "push_cpu_percent", "pull_cpu_percent",
           "players_ok", "load_generator_saturated"}
PLAYER_FIGURES = {"players_failed", "player_kbit_min", "player_kbit_median",
                  "player_fps_median", "players_with_gap_over_1s", "first_video_ms_median",
                  "first_video_ms_max"}


@pytest.mark.serial
def test_bench_tiny_run_has_every_figure(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "lal_twisted.tools.cli", "bench", "-n", "3", "--window", "5",
         "--warmup", "3", "--file", str(media.long_av), "--json", str(out),
         "--protocol", "httpflv"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "server CPU%" in done.stdout  # the table
    results = json.loads(out.read_text())["results"]
    assert [r["scenario"] for r in results] == [1, 2, 3]
    for r in results:
        assert FIGURES <= set(r), set(FIGURES) - set(r)
        assert r["server_cpu_percent"] >= 0 and r["server_rss_mb"] > 10
        assert 150 < r["stream_kbit"] < 600
        if r["players"]:
            assert PLAYER_FIGURES <= set(r), set(PLAYER_FIGURES) - set(r)
            assert r["players_ok"] == 3 and r["players_failed"] == 0
            assert r["players_with_gap_over_1s"] == 0
            assert r["first_video_ms_median"] < 1000


def test_bench_bad_arguments() -> None:
    for args, message in ((["--scenario", "5"], "--scenario"), (["-n", "0"], "-n must be"),
                          (["--file", "/nonexistent.flv", "-s", "1"], "nonexistent"),
                          (["--record", "avi"], "--record takes flv, mpegts"),
                          (["--record", "flv", "--rtmp", "rtmp://127.0.0.1/x"],
                           "not with --rtmp")):
        done = subprocess.run([sys.executable, "-m", "lal_twisted.tools.cli", "bench", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.serial
def test_bench_with_recording_leaves_decodable_files(media: Media, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lal_twisted.tools.cli", "bench", "-s", "1", "-n", "2",
         "--window", "3", "--warmup", "2", "--file", str(media.long_av), "--record",
         "flv,mpegts", "--keep", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "rec").iterdir())
    assert [f.suffix for f in files].count(".flv") == 2, files
    assert [f.suffix for f in files].count(".ts") == 2, files
    for path in files:
        info = probe(path)
        assert info.decode_errors == "" and info.video_frames >= 2 * FPS, (path, info)
    assert "recording stopped" not in (tmp_path / "server.log").read_text()


@pytest.mark.serial
def test_bench_with_hls_and_hls_players(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "lal_twisted.tools.cli", "bench", "-s", "1,4", "-n", "3",
         "--window", "4", "--warmup", "3", "--file", str(media.long_av), "--json", str(out),
         "--hls", "disk", "--fragment-ms", "1000"], capture_output=True, text=True,
        timeout=240)
    assert done.returncode == 0, done.stderr
    one, four = json.loads(out.read_text())["results"]
    # Scenario 1 with HLS on: every stream's playlist is current, no segment late.
    assert one["hls"] == "disk" and one["hls_playlists_current"] == 3
    assert one["hls_playlists_missing"] == 0 and one["hls_segment_drift_ms_max"] < 1000
    # Scenario 4: HLS players polled and fetched the segments, no errors.
    assert four["players_ok"] == 3 and four["hls_errors"] == 0 and four["hls_not_found"] == 0
    assert four["hls_playlists"] > 3 * 4 and four["hls_segments"] >= 3 * 3
