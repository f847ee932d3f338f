"""Where HLS files live: in memory (``hls.use_memory_as_disk_flag``) or on disk
under ``hls.out_path``, written by one thread so the reactor never waits on disk.

Both stores take paths relative to their root (``STREAM/FILE``) and answer with
Deferreds, so the segmenter does not care which one it has.  Both are bounded:
the memory store by bytes held, the disk store by bytes waiting to be written.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from twisted.internet import defer, threads

from lal_twisted.hls import files
from lal_twisted.log import Logger
from lal_twisted.net import FileSpan, as_bytes

__all__ = ["DiskStore", "MemoryStore", "Pieces", "Store"]

log = Logger("lal_twisted.hls.store")

# The memory store holds at most this many bytes of segments and playlists for all
# streams together (1 GiB: 300 streams of a 2 Mbit/s picture with a 12-segment
# window of 3 s).  Past it the oldest files go first, with one log line.
DEFAULT_MEMORY_MAX_BYTES = 1024 * 1024 * 1024

# The disk store queues at most this many bytes of writes; past it (a disk slower
# than the streams) a segment is not written, with one log line per episode.
DEFAULT_DISK_MAX_PENDING_BYTES = 128 * 1024 * 1024


class Pieces:
    """A file's bytes as the pieces they were made in, never joined: a segment
    is the TS bytes of its packets (the very objects the stream's other TS
    consumers share), which go to a memfd or a file with one ``writev``.
    Joining them on the reactor copied every byte of every stream once more,
    into memory touched for the first time."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes], size: int | None = None) -> None:
        self.parts = parts
        self.size = sum(map(len, parts)) if size is None else size

    def __len__(self) -> int:
        return self.size

    def join(self) -> bytes:
        return b"".join(self.parts)


Content = bytes | Pieces


def _joined(data: Content) -> bytes:
    return data.join() if isinstance(data, Pieces) else data


def _parts(data: Content) -> bytes | list[bytes]:
    """What ``files.write_all`` takes: the bytes, or the pieces as they are."""
    return data.parts if isinstance(data, Pieces) else data


class Store:
    """What the segmenter and the HTTP resource use."""

    in_memory = False

    def put(self, path: str, data: Content) -> defer.Deferred[bool]:
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

    A file is kept as bytes until it is first served (``span``); from then on
    in a memfd (an anonymous in-memory file, never on disk) when the system
    has them, so a segment goes to its players with ``sendfile`` straight from
    the page, as nginx serves a static file, instead of being copied from
    Python bytes into the socket: with a thousand players fetching ~150 KB
    segments that copy was a fifth of the server's time.  A segment nobody
    asks for (a stream no one watches over HLS) costs no memfd and no copy.
    The memfds take at most a sixteenth of the process's file descriptors
    (connections need the rest: 1250 of the usual 20000); past that, or when
    the system refuses one, files stay bytes.
    """

    in_memory = True

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_MAX_BYTES,
                 max_fds: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.files: OrderedDict[str, Content | FileSpan] = OrderedDict()
        self.bytes = 0
        self.fds = 0
        # None: worked out on first use (the server raises its limit after building this).
        self.max_fds = max_fds
        self._evict_logged = False

    def put(self, path: str, data: Content) -> defer.Deferred[bool]:
        self.delete(path)
        self.files[path] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes and len(self.files) > 1:
            self._drop(self.files.popitem(last=False)[1])
            if not self._evict_logged:
                self._evict_logged = True
                log.warn("hls: in-memory files over {max} bytes; the oldest are dropped",
                         max=self.max_bytes)
        return defer.succeed(True)

    def fd_share(self) -> int:
        """The most memfds this store holds at once."""
        if self.max_fds is None:
            self.max_fds = _fd_share()
        return self.max_fds

    def _keep(self, data: Content) -> bytes | FileSpan:
        if not data or self.fds >= self.fd_share() or _memfd_create is None:
            return _joined(data)
        try:
            fd = _memfd_create("lal-hls", _MFD_CLOEXEC)
        except OSError:
            return _joined(data)  # out of descriptors (or memfd refused): bytes do
        try:
            files.write_all(fd, _parts(data))
        except OSError:
            os.close(fd)
            return _joined(data)
        self.fds += 1
        return FileSpan(fd, len(data))

    def _drop(self, kept: Content | FileSpan) -> None:
        self.bytes -= len(kept)
        if type(kept) is FileSpan:
            os.close(kept.fd)
            kept.fd = -1
            self.fds -= 1

    def span(self, path: str) -> bytes | FileSpan | None:
        """The file to serve: a memfd span to send with ``sendfile`` (made on
        the first call), or bytes; valid until the store next changes."""
        kept = self.files.get(path)
        if kept is not None and not isinstance(kept, FileSpan):
            kept = self.files[path] = self._keep(kept)  # keeps its place in the order
        return kept

    def read(self, path: str) -> bytes | None:
        """Synchronous ``get`` (the memory store never waits)."""
        kept = self.files.get(path)
        if isinstance(kept, Pieces):
            kept = self.files[path] = kept.join()  # joined once, for every reader
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


# One file operation: what the writer thread runs, and what the reactor hears of it.
_Job = tuple[Callable[..., None], tuple[Any, ...], Callable[[OSError | None], None]]


class DiskStore(Store):
    """Files under ``root``, written and deleted in order by one thread.

    What the reactor asks for in one turn (the segments finished by one
    segmenter pass, or the playlists of the segments just written) goes to the
    thread as one batch, and comes back as one call: a thread hand-off per
    file (a queue put, a thread wake-up, a call back through the reactor's
    waker) cost more than writing a small playlist.
    """

    def __init__(self, root: str, reactor: Any,
                 max_pending_bytes: int = DEFAULT_DISK_MAX_PENDING_BYTES) -> None:
        self.root = root
        self.reactor = reactor
        self.max_pending_bytes = max_pending_bytes
        self.pending = 0
        self.batches = 0  # batches handed to the thread
        self._overflowing = False
        self._failed: set[str] = set()
        self._made_dirs: set[str] = set()  # directories the writer thread created
        self._batch: list[_Job] = []  # asked for in this reactor turn
        self._flush_call: Any = None
        self._queue: SimpleQueue[list[_Job] | None] = SimpleQueue()
        # One thread: writes and deletions happen in the order they were asked for.
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the reactor's side ----------------------------------------------------------
    def _ask(self, func: Callable[..., None], args: tuple[Any, ...],
             done: Callable[[OSError | None], None]) -> None:
        """Have ``func(*args)`` run by the writer thread after everything asked
        before; ``done(error)`` follows on the reactor thread."""
        if self._closed:
            # Shutting down: the last playlists are written at once.
            done(_attempt(func, args))
            return
        self._batch.append((func, args, done))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        """Hand the batch of this turn to the writer thread."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="lal-hls-writer",
                                            daemon=True)
            self._thread.start()
        self.batches += 1
        self._queue.put(batch)

    def _done(self, batch: list[_Job], errors: list[OSError | None]) -> None:
        for job, error in zip(batch, errors, strict=True):
            job[2](error)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path)

    def put(self, path: str, data: Content) -> defer.Deferred[bool]:
        size = len(data)
        if self.pending + size > self.max_pending_bytes:
            if not self._overflowing:
                self._overflowing = True
                log.warn("hls: {n} bytes wait to be written under {root}; the disk is slower "
                         "than the streams, segments are skipped", n=self.pending, root=self.root)
            return defer.succeed(False)
        self._overflowing = False
        self.pending += size
        full = self._full(path)
        directory = os.path.dirname(full)
        make_dir = directory not in self._made_dirs
        self._made_dirs.add(directory)
        d: defer.Deferred[bool] = defer.Deferred()

        def done(error: OSError | None) -> None:
            self.pending -= size
            if error is not None:
                self._made_dirs.discard(directory)
                if directory not in self._failed:  # one line until a write there succeeds
                    self._failed.add(directory)
                    log.error("hls: cannot write {path}: {err}", path=full,
                              err=str(error))
                d.callback(False)
                return
            self._failed.discard(directory)
            d.callback(True)

        # A new segment is listed only once written, so it is written in place; a
        # playlist replaces an older one, so it is written aside and swapped in.
        if path.endswith(".m3u8"):
            self._ask(files.replace, (full, _joined(data), make_dir), done)
        else:
            self._ask(files.write_new, (full, _parts(data), make_dir), done)
        return d

    def get(self, path: str) -> defer.Deferred[bytes | None]:
        # Reads go to the reactor's pool, not behind queued writes.
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         files.read, self._full(path))

    def delete(self, path: str) -> None:
        self._ask(files.remove, (self._full(path),), _ignore)

    def delete_dir(self, path: str) -> None:
        directory = self._full(path).rstrip("/")
        self._made_dirs.discard(directory)
        self._ask(files.remove_tree, (directory,), _ignore)

    def close(self, timeout: float = 10.0) -> defer.Deferred[None] | None:
        """Let the queued writes finish, and the writes their completions queue
        (the playlists of the last segments), then stop the thread; after
        ``timeout`` seconds (a disk that hangs) give up with one log line."""
        if self._thread is None and not self._batch:
            self._closed = True
            return None
        closed: defer.Deferred[None] = defer.Deferred()

        def settled(_: OSError | None) -> None:
            if closed.called:
                return
            # Everything asked before has run and been answered; what those
            # answers asked for is in the batch, behind which we wait again.
            if self._batch:
                self._ask(_nothing, (), settled)
                self._flush()
                return
            stop()

        def stop() -> None:
            if call.active():
                call.cancel()
            self._closed = True
            self._queue.put(None)
            self._thread = None
            closed.callback(None)

        def too_long() -> None:
            log.error("hls: files under {root} not written after {t:g}s (is the disk "
                      "stuck?); shutting down anyway", root=self.root, t=timeout)
            stop()

        call = self.reactor.callLater(timeout, too_long)
        self._ask(_nothing, (), settled)
        self._flush()
        return closed

    # -- the writer thread -------------------------------------------------------------
    def _work(self) -> None:
        queue, reactor, done = self._queue, self.reactor, self._done
        while True:
            batch = queue.get()
            if batch is None:
                return
            errors = [_attempt(func, args) for func, args, _ in batch]
            reactor.callFromThread(done, batch, errors)


def _attempt(func: Callable[..., None], args: tuple[Any, ...]) -> OSError | None:
    try:
        func(*args)
    except OSError as e:
        return e
    except Exception as e:  # a bug, not a disk error: keep the thread for the others
        log.failure("hls: unexpected error writing files")
        return OSError(str(e))
    return None


def _ignore(error: OSError | None) -> None:
    pass


def _nothing() -> None:
    pass
