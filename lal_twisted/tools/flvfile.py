"""FLV files for the tools: reading and writing them on disk.

:mod:`lal_twisted.media.flv` parses and encodes FLV without doing any I/O;
the file handling the tools need (plain iteration and writing, and
:class:`FlvInput`, which turns failures into :class:`ToolError` messages and
shows progress) lives here.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterable, Iterator

from lal_twisted.media.flv import FlvError, FlvReader, FlvTag, encode_tag, file_header
from lal_twisted.tools.common import ToolError

__all__ = ["FlvInput", "iter_file", "write_file"]

_CHUNK = 1 << 20


def iter_file(
    path: str, chunk_size: int = 65536, allow_truncated: bool = False
) -> Iterator[FlvTag]:
    """Yield the tags of an FLV file, reading it in chunks.

    A file that ends inside a tag (or inside its header) raises
    ``FlvError("truncated FLV: ...")`` unless ``allow_truncated`` is true, in
    which case iteration simply stops.  A missing final ``PreviousTagSize`` is
    tolerated.
    """
    reader = FlvReader()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield from reader.feed(chunk)
    if reader.at_tag_boundary() or allow_truncated:
        return
    if not reader.header_parsed:
        raise FlvError(f"truncated FLV: incomplete file header in {path!r}")
    if reader.in_header_padding:
        raise FlvError(f"truncated FLV: file ends inside the header padding in {path!r}")
    raise FlvError(f"truncated FLV: {reader.buffered()} trailing bytes in {path!r}")


def write_file(
    path: str, tags: Iterable[FlvTag], has_audio: bool = True, has_video: bool = True
) -> None:
    """Write an FLV file made of the header and the given tags."""
    with open(path, "wb") as fh:
        fh.write(file_header(has_audio, has_video))
        for tag in tags:
            fh.write(encode_tag(tag.tag_type, tag.timestamp, tag.payload))


class FlvInput:
    """The tags of an FLV file, read in chunks, with the failures a tool reports.

    Iterating yields complete tags.  A missing file or a file that is not an
    FLV raises :class:`ToolError`; a file that ends inside a tag, or holds a
    malformed tag after a valid start, stops the iteration and leaves a
    message in :attr:`problem` so the caller can finish what was complete.
    With ``progress`` set and stderr a terminal, the percentage read is shown
    at most once a second.
    """

    def __init__(self, path: str, progress: str | None = None) -> None:
        self.path = path
        self.progress = progress
        self.tags_read = 0
        self.problem: str | None = None
        self.has_audio = False
        self.has_video = False
        try:
            self._fh: io.BufferedReader = open(path, "rb")
        except FileNotFoundError:
            raise ToolError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ToolError(f"{path}: is a directory") from None
        except OSError as e:
            raise ToolError(f"{path}: {e.strerror}") from None
        self.size = os.fstat(self._fh.fileno()).st_size

    def __iter__(self) -> Iterator[FlvTag]:
        reader = FlvReader()
        done = 0
        show = self.progress is not None and sys.stderr.isatty()
        shown = False
        last_shown = time.monotonic()
        try:
            with self._fh as fh:
                while chunk := fh.read1(_CHUNK):
                    try:
                        tags = reader.feed(chunk)
                    except FlvError as e:
                        if not reader.header_parsed:
                            reason = str(e).removeprefix("not an FLV stream: ")
                            raise ToolError(f"{self.path}: not an FLV file ({reason})") from None
                        self.has_audio, self.has_video = reader.has_audio, reader.has_video
                        self.problem = (f"malformed FLV after {self.tags_read} complete tags: "
                                        f"{e}")
                        return
                    self.has_audio, self.has_video = reader.has_audio, reader.has_video
                    for tag in tags:
                        self.tags_read += 1
                        yield tag
                    done += len(chunk)
                    if show and time.monotonic() - last_shown >= 1.0:
                        last_shown = time.monotonic()
                        sofar = (f"{100 * done // self.size}%" if self.size
                                 else f"{done / 1e6:.1f} MB")
                        sys.stderr.write(f"\r\x1b[Klal {self.progress}: {sofar} of {self.path}")
                        sys.stderr.flush()
                        shown = True
        finally:
            if shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
        if not reader.header_parsed:
            what = "empty file" if self.size == 0 else "too short for an FLV header"
            raise ToolError(f"{self.path}: not an FLV file ({what})")
        if not reader.at_tag_boundary():
            self.problem = (f"truncated FLV: {self.path} ends inside tag {self.tags_read + 1} "
                            f"after {self.tags_read} complete tags")
