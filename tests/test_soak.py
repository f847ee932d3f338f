"""bench/soak.py: a short soak against the project's own server (churn, publisher
restarts, every kind of hostile client), an interrupted one, and bad arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from conftest import Media

# A soak judges how many players kept receiving media in real time: the soak
# runs are ``serial``.

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "bench" / "soak.py"
SAMPLE_FIELDS = {"t", "phase", "rss_mib", "fds", "sockets", "cpu_percent", "players",
                 "receiving", "publishers_up", "hostile_open"}
SUMMARY_FIELDS = {"reason", "rss_start_mib", "rss_end_mib", "rss_change_percent",
                  "rss_slope_mib_per_hour", "rss_fit_change_percent", "fds_before",
                  "fds_after", "fds_leaked", "players_started", "players_received",
                  "publisher_restarts", "hostile", "goals", "ok"}
HOSTILE_KINDS = {"garbage-rtmp", "garbage-http", "slowloris", "silent", "non-reader",
                 "long-name"}


def soak_command(media: Media, out: Path, *args: str) -> list[str]:
    return [sys.executable, str(SOAK), "--file", str(media.long_av), "--json", str(out),
            "--publishers", "2", "--players", "4", "--warmup", "5", "--interval", "2",
            "--churn-every", "2", "--churn", "0.5", "--restart-every", "5",
            "--restart-pause", "1", "--hostile-every", "1", "--hostile-hold", "4", *args]


def assert_nothing_left(report: dict) -> None:
    """Every process the soak started is gone, and the server's ports are closed."""
    assert report["pids"]
    for pid in report["pids"]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        assert b"lal_twisted" not in cmdline and b"twistd" not in cmdline, (pid, cmdline)
    for url in (report["rtmp"], report["http"]):
        parts = urlsplit(url)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((parts.hostname, parts.port), timeout=2).close()


@pytest.mark.serial
def test_short_soak_samples_judges_and_cleans_up(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(soak_command(media, out, "--duration", "20"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "summary:" in done.stdout and "goals:" in done.stdout
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert SUMMARY_FIELDS <= set(summary), SUMMARY_FIELDS - set(summary)
    assert done.returncode == (0 if summary["ok"] else 1)
    assert summary["reason"] == "done"
    phases = [s["phase"] for s in report["samples"]]
    assert phases[0] == "before" and phases[-1] == "after"
    load = [s for s in report["samples"] if s["phase"] in ("warmup", "steady")]
    assert len(load) >= 8
    for sample in load:
        assert SAMPLE_FIELDS <= set(sample), SAMPLE_FIELDS - set(sample)
        assert sample["rss_mib"] > 10 and sample["fds"] > sample["sockets"] > 0
    # players joined, left and received media all along
    assert summary["players_started"] > 4
    assert summary["players_received"] >= summary["players_started"] - 4
    assert summary["receiving_median"] >= 3
    assert summary["publisher_restarts"] >= 2
    assert set(summary["hostile"]) == HOSTILE_KINDS
    assert summary["server_tracebacks"] == 0
    assert summary["fds_after"] is not None and summary["fds_leaked"] is not None
    assert_nothing_left(report)


@pytest.mark.serial
def test_sigterm_stops_everything(media: Media, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.Popen(soak_command(media, out, "--duration", "120"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if " steady " in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "FAIL (interrupted)" in stdout
    report = json.loads(out.read_text())
    assert report["summary"]["reason"] == "interrupted"
    assert_nothing_left(report)


def test_bad_arguments() -> None:
    pid = str(os.getpid())
    for args, message in (
            (["--warmup", "30", "--duration", "10"], "--warmup"),
            (["--rtmp", "rtmp://127.0.0.1:1935/live"], "all three"),
            (["--rtmp", "rtmp://192.0.2.1:1935/live", "--http", "http://192.0.2.1:8080/live",
              "--server-pid", pid], "loopback"),
            (["--file", "/nonexistent.flv"], "nonexistent")):
        done = subprocess.run([sys.executable, str(SOAK), *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["soak"]
    return module


def test_least_squares() -> None:
    soak = load_soak()
    slope, intercept = soak.least_squares([0.0, 1.0, 2.0, 3.0], [10.0, 12.0, 14.0, 16.0])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(10.0)
    assert soak.least_squares([1.0, 1.0], [5.0, 7.0]) == (0.0, 6.0)
