"""The HLS disk store: files written by one thread, in order, in batches; playlists
replaced so that readers never see half a file; bounded; one log line on errors."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from threadclock import ThreadedClock
from twisted.logger import formatEvent

from lal_twisted import log as lal_log
from lal_twisted.hls import files
from lal_twisted.hls.store import DiskStore, Pieces


@contextmanager
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    lal_log.publisher.addObserver(observe)
    try:
        yield lines
    finally:
        lal_log.publisher.removeObserver(observe)


def results(deferreds: list[Any]) -> list[Any]:
    out: list[Any] = []
    for d in deferreds:
        d.addBoth(out.append)
    return out


def close(store: DiskStore, clock: ThreadedClock) -> None:
    closed = store.close()
    if closed is not None:
        done = results([closed])
        clock.run(lambda: bool(done))


def test_one_reactor_turn_is_one_batch_written_in_order(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    segments = {f"s/seg-{i}.ts": os.urandom(50_000 + i) for i in range(5)}
    asked = [store.put(path, data) for path, data in segments.items()]
    asked.append(store.put("s/playlist.m3u8", b"#EXTM3U\nseg-4.ts\n"))
    store.delete("s/seg-0.ts")  # after its write, as asked
    answers = results(asked)
    clock.run(lambda: len(answers) == len(asked))
    assert answers == [True] * len(asked)
    assert store.batches == 1 and store.pending == 0
    assert not (tmp_path / "s" / "seg-0.ts").exists()
    for i in range(1, 5):
        assert (tmp_path / "s" / f"seg-{i}.ts").read_bytes() == segments[f"s/seg-{i}.ts"]
    assert (tmp_path / "s" / "playlist.m3u8").read_bytes() == b"#EXTM3U\nseg-4.ts\n"
    # What the answers ask for is the next batch.
    again = results([store.put("s/playlist.m3u8", b"#EXTM3U\nseg-5.ts\n")])
    clock.run(lambda: bool(again))
    assert again == [True] and store.batches == 2
    assert (tmp_path / "s" / "playlist.m3u8").read_bytes() == b"#EXTM3U\nseg-5.ts\n"
    close(store, clock)


def versions(n: int, big: bool) -> list[bytes]:
    """Playlists of different lengths, each ending with a line of its own."""
    out = []
    for i in range(n):
        lines = 2 + (i * 7) % 40 + (200 if big else 0)
        body = b"".join(b"#EXTINF:4.000,\nseg-%06d.ts\n" % (i + k) for k in range(lines))
        out.append(b"#EXTM3U\n" + body + b"#END %d\n" % i)
    return out


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
def test_readers_never_see_half_a_playlist(tmp_path: Path, big: bool) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    texts = versions(300, big)
    path = tmp_path / "s" / "playlist.m3u8"
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    seen.append(f.read())
            except FileNotFoundError:
                pass

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for text in texts:  # one turn each: one replacement after the other
            answer = results([store.put("s/playlist.m3u8", text)])
            clock.run(lambda answer=answer: bool(answer))
            assert answer == [True]
    finally:
        stop.set()
        thread.join()
    valid = set(texts)
    assert seen and all(s in valid for s in seen)
    assert len(set(seen)) > 10  # the reader did see it change
    assert path.read_bytes() == texts[-1]
    # Every version was a new file, swapped in: nothing is left beside it.
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["playlist.m3u8"]
    close(store, clock)


def test_a_playlist_growing_and_shrinking(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    small, big = versions(4, False), versions(4, True)
    for text in [small[0], small[1], big[0], big[1], small[2], big[2], small[3]]:
        answer = results([store.put("s/record.m3u8", text)])
        clock.run(lambda answer=answer: bool(answer))
        assert answer == [True]
        assert (tmp_path / "s" / "record.m3u8").read_bytes() == text
    close(store, clock)


def test_without_renameat2_a_plain_rename(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_renameat2", None)  # as on a system without it
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    for text in versions(5, False):
        answer = results([store.put("s/playlist.m3u8", text)])
        clock.run(lambda answer=answer: bool(answer))
        assert (tmp_path / "s" / "playlist.m3u8").read_bytes() == text
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["playlist.m3u8"]
    close(store, clock)


def test_bytes_waiting_are_bounded(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock, max_pending_bytes=100_000)
    with logged() as lines:
        asked = [store.put(f"s/seg-{i}.ts", b"x" * 40_000) for i in range(5)]
        answers = results(asked)
        assert answers == [False, False, False]  # at once: over the bound
        assert store.pending == 80_000
        clock.run(lambda: len(answers) == 5)
    assert answers == [False, False, False, True, True]
    assert [line for line in lines if "slower than the streams" in line] and len(lines) == 1
    assert store.pending == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["seg-0.ts", "seg-1.ts"]
    close(store, clock)


def test_an_unwritable_directory_is_one_log_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    clock = ThreadedClock()
    store = DiskStore(str(blocker), clock)
    with logged() as lines:
        for turn in range(3):
            asked = [store.put(f"s/seg-{turn}.ts", b"x" * 1000),
                     store.put("s/playlist.m3u8", b"#EXTM3U\n")]
            answers = results(asked)
            clock.run(lambda answers=answers: len(answers) == 2)
            assert answers == [False, False]
    assert len(lines) == 1 and "cannot write" in lines[0] and str(blocker) in lines[0]
    assert store.pending == 0
    close(store, clock)


def test_close_waits_for_the_writes_their_answers_ask_for(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)

    def list_it(written: bool) -> None:  # as the segmenter does once a segment is written
        store.put("s/playlist.m3u8", b"#EXTM3U\nseg.ts\n#EXT-X-ENDLIST\n")

    store.put("s/playlist.m3u8", b"#EXTM3U\n")
    store.put("s/seg.ts", b"x" * 10_000).addCallback(list_it)
    closed = store.close()
    assert closed is not None
    done = results([closed])
    clock.run(lambda: bool(done))
    assert (tmp_path / "s" / "playlist.m3u8").read_bytes().endswith(b"#EXT-X-ENDLIST\n")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["playlist.m3u8", "seg.ts"]
    # Closed: what comes after (the last playlists at shutdown) is written at once.
    after = results([store.put("s/late.ts", b"y")])
    assert after == [True] and (tmp_path / "s" / "late.ts").read_bytes() == b"y"


def test_delete_dir_removes_the_stream_and_later_writes_make_it_again(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    for text in versions(3, False):
        store.put("s/playlist.m3u8", text)
        clock.run(lambda: store.pending == 0 and not store._batch)
    store.delete_dir("s")
    clock.run(lambda: not (tmp_path / "s").exists())
    answer = results([store.put("s/playlist.m3u8", b"#EXTM3U\n")])
    clock.run(lambda: bool(answer))
    assert answer == [True]
    assert (tmp_path / "s" / "playlist.m3u8").read_bytes() == b"#EXTM3U\n"
    close(store, clock)


def test_a_segment_in_pieces_is_written_whole_and_counted(tmp_path: Path) -> None:
    """A segment handed over as its pieces (more than one writev takes, some
    empty) lands on disk as their concatenation; the pending bound counts it."""
    clock = ThreadedClock()
    store = DiskStore(str(tmp_path), clock)
    parts = [os.urandom(i % 300) for i in range(3 * files._IOV_MAX + 7)]
    answer = results([store.put("s/seg-0.ts", Pieces(parts))])
    assert store.pending == sum(map(len, parts))
    clock.run(lambda: bool(answer))
    assert answer == [True] and store.pending == 0
    assert (tmp_path / "s" / "seg-0.ts").read_bytes() == b"".join(parts)
    close(store, clock)


def test_write_all_finishes_a_write_the_kernel_cut_short() -> None:
    """A write that takes only part of the pieces (here: a socket with a send
    timeout whose reader starts late) is carried on from where it stopped,
    the piece it cut included."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
    parts = [os.urandom(10_000 + i) for i in range(30)]
    got: list[bytes] = []
    calls: list[tuple[int, int]] = []
    writev = os.writev
    first_done = threading.Event()

    def counted(fd: int, pieces: list[Any]) -> int:
        n = writev(fd, pieces)
        calls.append((sum(map(len, pieces)), n))
        first_done.set()
        return n

    def drain() -> None:
        first_done.wait(10)  # the first write times out having sent only part
        while chunk := theirs.recv(65536):
            got.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "writev", counted)
            files.write_all(ours.fileno(), parts)
        files.write_all(ours.fileno(), b"tail" * 50_000)
    finally:
        ours.shutdown(socket.SHUT_WR)
        reader.join(10)
        ours.close()
        theirs.close()
    assert b"".join(got) == b"".join(parts) + b"tail" * 50_000
    assert calls[0][1] < calls[0][0]  # the first call was cut short
