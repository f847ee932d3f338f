"""The recording writer: disk I/O on its own thread, bounded memory, unique names."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from threadclock import ThreadedClock

from lal_twisted.record import writer as writer_module
from lal_twisted.record.writer import DiskWriter, RecordFile


def test_bytes_reach_the_file_in_order_and_it_is_closed(tmp_path: Path) -> None:
    clock = ThreadedClock()
    writer = DiskWriter(clock)
    done: list[RecordFile] = []
    file = RecordFile(writer, str(tmp_path / "new" / "dir"), "s-1", ".flv", done.append)
    pieces = [bytes([i % 256]) * (1000 + i) for i in range(300)]
    for piece in pieces:
        file.write(piece)
    file.close()
    clock.run(lambda: bool(done))
    assert done == [file] and file.error is None
    assert Path(file.path).read_bytes() == b"".join(pieces)
    assert writer.pending == 0
    stopped = writer.stop()
    clock.run(lambda: stopped.called)


def test_same_name_gets_a_suffix(tmp_path: Path) -> None:
    clock = ThreadedClock()
    writer = DiskWriter(clock)
    done: list[RecordFile] = []
    files = [RecordFile(writer, str(tmp_path), "s-1", ".ts", done.append) for _ in range(3)]
    for i, file in enumerate(files):
        file.write(b"x" * (i + 1))
        file.close()
    clock.run(lambda: len(done) == 3)
    assert sorted(os.listdir(tmp_path)) == ["s-1-1.ts", "s-1-2.ts", "s-1.ts"]
    assert [Path(f.path).stat().st_size for f in files] == [1, 2, 3]


def test_a_disk_that_falls_behind_stops_the_file_not_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_PENDING_BYTES", 1024 * 1024)
    clock = ThreadedClock()
    writer = DiskWriter(clock)
    stuck = threading.Event()
    writer.submit(lambda: stuck.wait(10))  # the disk does not answer for now
    done: list[RecordFile] = []
    file = RecordFile(writer, str(tmp_path), "slow-1", ".flv", done.append)
    piece = b"v" * 10000
    for _ in range(1000):  # 10 MB offered
        file.write(piece)
    assert file.closing and file.error is not None and "not keeping up" in file.error
    assert file.queued <= 1024 * 1024  # what waits is bounded
    file.write(piece)  # ignored from now on
    stuck.set()
    clock.run(lambda: bool(done))
    assert done == [file]
    assert Path(file.path).stat().st_size == file.queued  # what was queued is kept


def test_all_files_together_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_TOTAL_PENDING_BYTES", 1024 * 1024)
    clock = ThreadedClock()
    writer = DiskWriter(clock)
    stuck = threading.Event()
    writer.submit(lambda: stuck.wait(10))
    files = [RecordFile(writer, str(tmp_path), f"s{i}-1", ".flv", lambda f: None)
             for i in range(4)]
    piece = b"a" * 65536
    for _ in range(5):
        for file in files:
            file.write(piece)
    stopped = [f for f in files if f.closing]
    assert stopped and all("not keeping up" in (f.error or "") for f in stopped)
    assert writer.pending <= 1024 * 1024
    stuck.set()
    end = writer.stop()
    clock.run(lambda: end.called)


def test_stop_gives_up_on_a_stuck_disk(tmp_path: Path) -> None:
    clock = ThreadedClock()
    writer = DiskWriter(clock)
    stuck = threading.Event()
    writer.submit(lambda: stuck.wait(10))
    end = writer.stop(timeout=5)
    clock.advance(5)
    assert end.called
    stuck.set()
