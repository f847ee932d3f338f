"""How the disk store's writer thread writes HLS files, with few system calls
and little work for the file system.

A segment is a new file, written once where it will stay (it is listed only
once written).  A playlist replaces the one before it while players read it,
so it is written as a new file under a temporary name (``NAME.tmp``) and
swapped in: a reader opens either the old file or the new, never half of one,
and a file a reader may have open is never written again.

``rename`` over an existing file makes ext4 (``auto_da_alloc``, the default)
start writing the new file's blocks out in the renaming thread: twice the CPU
of the write itself (the playlists of 200 streams, ~100 replacements a
second).  Exchanging the two names (``renameat2`` with ``RENAME_EXCHANGE``)
is as atomic for readers and leaves the write-out to the kernel's flusher;
the old version is then unlinked.  Where ``renameat2`` or the exchange is
missing (not Linux, some file systems), a plain rename.

Writing a small playlist over the previous version's file instead would save
an inode made and freed per version (on ext4 without a journal, making an
inode while many were freed recently costs most of the writer's time), but a
reader that opened that version just before it was replaced, or a server
that keeps descriptors open (nginx's ``open_file_cache``), would then read it
rewritten.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from typing import Any

__all__ = ["read", "remove", "remove_tree", "replace", "write_all", "write_new"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC

# renameat2(2): "relative to the current directory", and the flag to exchange.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _find_renameat2() -> Any:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a C library without it
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_renameat2 = _find_renameat2()


def _iov_max() -> int:
    try:
        return max(16, os.sysconf("SC_IOV_MAX"))
    except (AttributeError, ValueError, OSError):
        return 16


_IOV_MAX = _iov_max()


def write_all(fd: int, data: bytes | list[bytes]) -> None:
    """Write ``data`` to ``fd``: bytes, or pieces in order (``writev``, as
    many pieces a call as the system takes, without joining them)."""
    if type(data) is bytes:
        written = os.write(fd, data)
        if written < len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view):]
        return
    pieces: list[Any] = list(data)  # type: ignore[arg-type]
    done = 0
    while done < len(pieces):
        batch = pieces[done:done + _IOV_MAX]
        written = os.writev(fd, batch)
        if not written and any(batch):
            raise OSError(errno.EIO, "write took no bytes")
        for piece in batch:
            if written < len(piece):
                pieces[done] = memoryview(piece)[written:]
                break
            written -= len(piece)
            done += 1


def write_new(path: str, data: bytes | list[bytes], make_dir: bool) -> None:
    """Write ``data`` (bytes or pieces) to the file ``path`` (a new segment)."""
    if make_dir:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, _NEW_FLAGS, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def replace(path: str, data: bytes, make_dir: bool) -> None:
    """Make ``data`` the content of ``path`` in one step for readers."""
    if make_dir:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    new = path + ".tmp"
    write_new(new, data, False)
    if _exchange(new, path):
        os.unlink(new)  # the old version: a reader that has it open reads it whole


def _exchange(new: str, path: str) -> bool:
    """Swap the names ``new`` and ``path``: True.  With no ``path`` yet, or
    where the exchange is not available, ``new`` is renamed ``path``: False."""
    global _renameat2
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(path),
                      _RENAME_EXCHANGE) == 0:
            return True
        error = ctypes.get_errno()
        if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            _renameat2 = None  # this system cannot exchange: rename from now on
        elif error != errno.ENOENT:
            raise OSError(error, os.strerror(error), path)
    os.replace(new, path)
    return False


def remove(path: str) -> None:
    _unlink(path)


def remove_tree(directory: str) -> None:
    """Remove ``directory`` and everything in it."""
    shutil.rmtree(directory, ignore_errors=True)


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
