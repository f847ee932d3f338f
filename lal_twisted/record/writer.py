"""Files written off the reactor: one thread does every recording's disk I/O.

A :class:`RecordFile` collects bytes on the reactor thread and hands them to
the shared :class:`DiskWriter` thread in chunks (at :data:`CHUNK_BYTES`, or
when the recorder flushes it, twice a second).  Memory is bounded: a file
whose bytes waiting for the disk pass :data:`MAX_PENDING_BYTES`, or that finds
every file together past :data:`MAX_TOTAL_PENDING_BYTES`, is stopped (what
was queued is still written and the file closed), never grown.  An error
from the disk (a directory that cannot be created or written, a full disk)
stops that file alone; the reactor hears of it once, through ``on_done``.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from lal_twisted.log import Logger

__all__ = ["CHUNK_BYTES", "MAX_PENDING_BYTES", "MAX_TOTAL_PENDING_BYTES", "DiskWriter",
           "RecordFile"]

log = Logger("lal_twisted.record.writer")

# Bytes collected before they go to the writer thread: 64 KiB is one write
# call per ~2 s of a 274 kbit/s stream, or per ~17 ms of a 30 Mbit/s one.
CHUNK_BYTES = 64 * 1024
# What one file may have waiting for the disk: 16 MiB is ~4 s of a 30 Mbit/s
# stream, ~8 minutes of a 274 kbit/s one.  A disk that falls that far behind
# is not going to catch up.
MAX_PENDING_BYTES = 16 * 1024 * 1024
# And every file together, so 200 recordings cannot hold 200 times that.
MAX_TOTAL_PENDING_BYTES = 64 * 1024 * 1024
# How many names ``stream-TIME.ext`` gets tried with a ``-N`` suffix when the
# file exists (the same stream republished within the second).
_MAX_SUFFIX = 100

_STOP = object()


class DiskWriter:
    """The thread that opens, writes and closes recorded files, in order.

    Started on first use; :meth:`stop` lets it finish what is queued and
    fires when it has.  ``reactor`` gets the results (``callFromThread``).
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.queued = 0  # bytes handed to the thread (reactor thread only)
        self.written = 0  # bytes the thread is done with (writer thread only)

    @property
    def pending(self) -> int:
        return self.queued - self.written

    def submit(self, work: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lals-record-writer",
                                            daemon=True)
            self._thread.start()
        self._queue.put(work)

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is _STOP:
                return
            try:
                work()
            except Exception:  # a bug, not a disk error: keep the thread for the others
                log.failure("record writer: unexpected error")

    def stop(self, timeout: float = 10.0) -> defer.Deferred[None]:
        """Finish what is queued, then end the thread; fires when it has (or
        after ``timeout`` seconds, with one log line, if the disk hangs)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._queue.put(lambda: self.reactor.callFromThread(done.callback, None))
        self._queue.put(_STOP)

        def too_long() -> None:
            if not done.called:
                log.error("record: files not closed after {t:g}s (is the disk stuck?); "
                          "shutting down anyway", t=timeout)
                done.callback(None)

        call = self.reactor.callLater(timeout, too_long)
        done.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return done


class RecordFile:
    """One file being recorded: ``write`` on the reactor thread, disk I/O on
    the writer's.  ``on_done(self)`` is called on the reactor thread once the
    file is closed, or once it failed (``error`` says why)."""

    def __init__(self, writer: DiskWriter, directory: str, base: str, ext: str,
                 on_done: Callable[[RecordFile], None]) -> None:
        self.writer = writer
        self.directory = directory
        self.path = os.path.join(directory, f"{base}{ext}")  # the name, once opened
        self._base, self._ext = base, ext
        self.on_done = on_done
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.queued = 0  # reactor thread only
        self.written = 0  # writer thread only
        self.error: str | None = None  # why the file stopped early
        self.closing = False
        self._failed_on_disk = False  # writer thread: stop touching the file
        self.opened = False  # set by the writer thread, read after on_done
        self._fd: int | None = None
        writer.submit(self._open)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what is collected to the writer thread, unless the disk is too
        far behind: then the file stops here."""
        if not self._buffered or self.closing:
            return
        chunk = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer.clear()
        self._buffered = 0
        writer = self.writer
        if (self.queued - self.written + len(chunk) > MAX_PENDING_BYTES
                or writer.pending + len(chunk) > MAX_TOTAL_PENDING_BYTES):
            waiting = (self.queued - self.written) // (1024 * 1024)
            self.stop(f"the disk is not keeping up ({waiting} MiB of this file and "
                      f"{writer.pending // (1024 * 1024)} MiB in all waiting to be written)")
            return
        self.queued += len(chunk)
        writer.queued += len(chunk)
        writer.submit(lambda: self._write(chunk))

    def close(self) -> None:
        """Write what is collected, close the file, then ``on_done``."""
        if self.closing:
            return
        self.flush()
        self.closing = True
        self.writer.submit(self._close)

    def stop(self, reason: str) -> None:
        """Stop early: what is queued is still written; ``error`` is ``reason``."""
        if self.closing:
            return
        self.error = reason
        self._buffer.clear()
        self._buffered = 0
        self.closing = True
        self.writer.submit(self._close)

    # -- writer thread ----------------------------------------------------------------
    def _open(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            for n in range(_MAX_SUFFIX):
                path = os.path.join(self.directory,
                                    f"{self._base}-{n}{self._ext}" if n else
                                    f"{self._base}{self._ext}")
                try:
                    self._fd = os.open(path, flags, 0o644)
                except FileExistsError:
                    continue
                self.path = path
                self.opened = True
                return
            raise OSError(errno.EEXIST, f"{_MAX_SUFFIX} files named {self._base}-N exist")
        except OSError as e:
            self._disk_error(e)

    def _write(self, chunk: bytes) -> None:
        try:
            if self._fd is not None and not self._failed_on_disk:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as e:
            self._disk_error(e)
        finally:
            self.written += len(chunk)
            self.writer.written += len(chunk)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as e:
                self._disk_error(e)
        self.writer.reactor.callFromThread(self.on_done, self)

    def _disk_error(self, error: OSError) -> None:
        if self._failed_on_disk:
            return
        self._failed_on_disk = True
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        where = error.filename or self.path
        reason = f"cannot write {where}: {error.strerror or error}"
        self.writer.reactor.callFromThread(self._failed, reason)

    def _failed(self, reason: str) -> None:
        """Reactor thread: the disk refused; nothing more goes to the thread."""
        if self.error is None:
            self.error = reason
        self._buffer.clear()
        self._buffered = 0
        if not self.closing:
            self.closing = True
            self.writer.submit(self._close)
