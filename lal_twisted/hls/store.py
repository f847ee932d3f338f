"""Where HLS files live: in memory (``hls.use_memory_as_disk_flag``) or on disk
under ``hls.out_path``, written by one thread so the reactor never waits on disk.

Both stores take paths relative to their root (``STREAM/FILE``) and answer with
Deferreds, so the segmenter does not care which one it has.  Both are bounded:
the memory store by bytes held, the disk store by bytes waiting to be written.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from typing import Any

from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lal_twisted.log import Logger
from lal_twisted.net import FileSpan, as_bytes

__all__ = ["DiskStore", "MemoryStore", "Store"]

log = Logger("lal_twisted.hls.store")

# The memory store holds at most this many bytes of segments and playlists for all
# streams together (1 GiB: 300 streams of a 2 Mbit/s picture with a 12-segment
# window of 3 s).  Past it the oldest files go first, with one log line.
DEFAULT_MEMORY_MAX_BYTES = 1024 * 1024 * 1024

# The disk store queues at most this many bytes of writes; past it (a disk slower
# than the streams) a segment is not written, with one log line per episode.
DEFAULT_DISK_MAX_PENDING_BYTES = 128 * 1024 * 1024


class Store:
    """What the segmenter and the HTTP resource use."""

    in_memory = False

    def put(self, path: str, data: bytes) -> defer.Deferred[bool]:
        """Store ``data`` at ``path``; fires True once readable, False if dropped."""
        raise NotImplementedError

    def get(self, path: str) -> defer.Deferred[bytes | None]:
        """The bytes at ``path``, or None."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def delete_dir(self, path: str) -> None:
        """Remove ``path`` and everything under it."""
        raise NotImplementedError

    def close(self) -> defer.Deferred[None] | None:
        """Finish pending work (server shutdown); a Deferred when that takes a while."""
        return None


class MemoryStore(Store):
    """Files in memory, bounded by ``max_bytes`` (the oldest go first).

    Each file is kept in a memfd (an anonymous in-memory file, never on disk)
    when the system has them, so a segment goes to a player with ``sendfile``
    straight from the page, as nginx serves a static file, instead of being
    copied from Python bytes into the socket: with a thousand players fetching
    ~150 KB segments that copy was a fifth of the server's time.  The memfds
    take at most a sixteenth of the process's file descriptors (connections
    need the rest: 1250 of the usual 20000, the windows of ~100 streams); past
    that, or when the system refuses one, files are kept as bytes.
    """

    in_memory = True

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_MAX_BYTES,
                 max_fds: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.files: OrderedDict[str, bytes | FileSpan] = OrderedDict()
        self.bytes = 0
        self.fds = 0
        # None: worked out on first use (the server raises its limit after building this).
        self.max_fds = max_fds
        self._evict_logged = False

    def put(self, path: str, data: bytes) -> defer.Deferred[bool]:
        self.delete(path)
        self.files[path] = self._keep(data)
        self.bytes += len(data)
        while self.bytes > self.max_bytes and len(self.files) > 1:
            self._drop(self.files.popitem(last=False)[1])
            if not self._evict_logged:
                self._evict_logged = True
                log.warn("hls: in-memory files over {max} bytes; the oldest are dropped",
                         max=self.max_bytes)
        return defer.succeed(True)

    def _keep(self, data: bytes) -> bytes | FileSpan:
        if self.max_fds is None:
            self.max_fds = _fd_share()
        if not data or self.fds >= self.max_fds or _memfd_create is None:
            return data
        try:
            fd = _memfd_create("lal-hls", _MFD_CLOEXEC)
        except OSError:
            return data  # out of descriptors (or memfd refused): bytes do
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.close(fd)
            return data
        self.fds += 1
        return FileSpan(fd, len(data))

    def _drop(self, kept: bytes | FileSpan) -> None:
        self.bytes -= len(kept)
        if type(kept) is FileSpan:
            os.close(kept.fd)
            kept.fd = -1
            self.fds -= 1

    def span(self, path: str) -> bytes | FileSpan | None:
        """The file as it is kept (bytes, or a memfd span to send with
        ``sendfile``); valid until the store next changes."""
        return self.files.get(path)

    def read(self, path: str) -> bytes | None:
        """Synchronous ``get`` (the memory store never waits)."""
        kept = self.files.get(path)
        return None if kept is None else as_bytes(kept)

    def get(self, path: str) -> defer.Deferred[bytes | None]:
        return defer.succeed(self.read(path))

    def delete(self, path: str) -> None:
        kept = self.files.pop(path, None)
        if kept is not None:
            self._drop(kept)

    def delete_dir(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for name in [n for n in self.files if n.startswith(prefix)]:
            self.delete(name)

    def close(self) -> None:
        for name in list(self.files):
            self.delete(name)


_memfd_create = getattr(os, "memfd_create", None)
_MFD_CLOEXEC = getattr(os, "MFD_CLOEXEC", 0)


def _fd_share() -> int:
    """A sixteenth of the soft limit on open files (at least 16)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 16
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, soft // 16)


class DiskStore(Store):
    """Files under ``root``, written and deleted in order by one thread."""

    def __init__(self, root: str, reactor: Any,
                 max_pending_bytes: int = DEFAULT_DISK_MAX_PENDING_BYTES) -> None:
        self.root = root
        self.reactor = reactor
        self.max_pending_bytes = max_pending_bytes
        self.pending = 0
        self._overflowing = False
        self._failed: set[str] = set()
        self._made_dirs: set[str] = set()  # directories the writer thread created
        # One thread: writes and deletions happen in the order they were asked for.
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="lal-hls-writer")
        self._started = False
        self._closed = False

    def _run(self, func: Any, *args: Any) -> defer.Deferred[Any]:
        if self._closed:
            # Shutting down: the last playlists are written at once.
            return defer.maybeDeferred(func, *args)
        if not self._started:
            self._started = True
            self.pool.start()
        return threads.deferToThreadPool(self.reactor, self.pool, func, *args)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path)

    def put(self, path: str, data: bytes) -> defer.Deferred[bool]:
        if self.pending + len(data) > self.max_pending_bytes:
            if not self._overflowing:
                self._overflowing = True
                log.warn("hls: {n} bytes wait to be written under {root}; the disk is slower "
                         "than the streams, segments are skipped", n=self.pending, root=self.root)
            return defer.succeed(False)
        self._overflowing = False
        self.pending += len(data)
        full = self._full(path)
        directory = os.path.dirname(full)
        make_dir = directory not in self._made_dirs
        self._made_dirs.add(directory)
        # A new segment is listed only once written, so it is written in place; a
        # playlist replaces an older one, so it goes through a rename.
        d = self._run(_write_file, full, data, make_dir, path.endswith(".m3u8"))

        def done(result: Any) -> bool:
            self.pending -= len(data)
            if isinstance(result, Failure):
                self._made_dirs.discard(directory)
                if directory not in self._failed:  # one line until a write there succeeds
                    self._failed.add(directory)
                    log.error("hls: cannot write {path}: {err}", path=self._full(path),
                              err=result.getErrorMessage())
                return False
            self._failed.discard(directory)
            return True

        return d.addBoth(done)

    def get(self, path: str) -> defer.Deferred[bytes | None]:
        # Reads go to the reactor's pool, not behind queued writes.
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         _read_file, self._full(path))

    def delete(self, path: str) -> None:
        self._run(_remove, self._full(path)).addErrback(lambda _: None)

    def delete_dir(self, path: str) -> None:
        self._made_dirs.discard(os.path.dirname(self._full(path + "/x")))
        self._run(shutil.rmtree, self._full(path), True).addErrback(lambda _: None)

    def close(self) -> defer.Deferred[None] | None:
        """Let the queued writes finish, and the writes their completions queue
        (the playlists of the last segments), then stop the thread."""
        if not self._started:
            self._closed = True
            return None

        def stop(_: Any) -> None:
            self._closed = True
            self._started = False
            self.pool.stop()

        d = self._run(_nothing)
        d.addBoth(lambda _: self._run(_nothing))
        return d.addBoth(stop)


def _write_file(path: str, data: bytes, make_dir: bool = True, replace: bool = True) -> None:
    """Write ``data`` to ``path``; with ``replace``, to a temporary name renamed
    over it, so readers never see half a file."""
    if make_dir:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    target = path + ".tmp" if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)


def _nothing() -> None:
    pass


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
