"""An HTTP connection pool whose answers have a bounded head.

Twisted's HTTP/1.1 client limits the length of one header line but not how
many there are, so a callback server answering with endless header lines
grows the server's memory by hundreds of MB before the answer is done.  The
protocol here feeds the parser at most :data:`MAX_HEAD_BYTES` and
:data:`MAX_HEAD_LINES` of a status line and headers; an answer whose head is
still unfinished at that point fails the request with :class:`AnswerHeadTooLarge`
and the connection is closed.  Bodies are bounded by the reader
(``notify._drain``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol, Request
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IResponse

__all__ = ["MAX_HEAD_BYTES", "MAX_HEAD_LINES", "AnswerHeadTooLarge", "BoundedHeadPool",
           "head_too_large"]

# A hook or notify answer is a status line and a few headers; 64 KiB and 100
# lines (http.client's _MAXHEADERS) leave room for any proxy in between.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEAD_LINES = 100


class AnswerHeadTooLarge(Exception):
    """The answer's status line and headers passed the bound."""


def head_too_large(failure: Failure) -> bool:
    """True when a request failed for :class:`AnswerHeadTooLarge` (the Agent
    wraps it in ResponseFailed)."""
    reasons = getattr(failure.value, "reasons", None) or [failure]
    return any(r.check(AnswerHeadTooLarge) for r in reasons)


class BoundedHeadProtocol(HTTP11ClientProtocol):
    """HTTP11ClientProtocol that feeds its parser at most MAX_HEAD_BYTES and
    MAX_HEAD_LINES while the parser reads the status line and headers.

    It relies on Twisted's private ``_parser`` (one HTTPClientParser per
    request, whose ``state`` is STATUS/HEADER until the head is done) and
    ``_giveUp`` (close the connection, fail the request with the reason);
    tests/test_bounded_pool.py covers both."""

    _head_bytes = 0
    _head_lines = 0

    def request(self, request: Request) -> Deferred[IResponse]:
        if self.state == "QUIESCENT":  # else Twisted refuses it (RequestNotSent)
            self._head_bytes = self._head_lines = 0
        return super().request(request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        while data:
            parser = self._parser
            if parser is None or parser.state not in (STATUS, HEADER):
                super().dataReceived(data)
                return
            cut = _cut(data, MAX_HEAD_BYTES - self._head_bytes,
                       MAX_HEAD_LINES - self._head_lines)
            piece, data = data[:cut], data[cut:]
            self._head_bytes += len(piece)
            self._head_lines += piece.count(b"\n")
            super().dataReceived(piece)
            if self._parser is not parser:
                return  # the answer is done (or failed); what follows is not ours
            if parser.state in (STATUS, HEADER):
                if self._head_bytes >= MAX_HEAD_BYTES:
                    self._give_up(f"{MAX_HEAD_BYTES // 1024} KiB")
                    return
                if self._head_lines >= MAX_HEAD_LINES:
                    self._give_up(f"{MAX_HEAD_LINES} lines")
                    return

    def _give_up(self, bound: str) -> None:
        self._giveUp(Failure(AnswerHeadTooLarge(
            f"the answer's status line and headers pass {bound}")))


def _cut(data: bytes, room_bytes: int, room_lines: int) -> int:
    """How much of ``data`` fits in ``room_bytes`` and ``room_lines`` lines."""
    end = min(len(data), room_bytes)
    at = -1
    for _ in range(room_lines):
        at = data.find(b"\n", at + 1, end)
        if at < 0:
            return end
    return at + 1


class _BoundedHeadFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" line per hook or notify connection

    def buildProtocol(self, addr: IAddress | None) -> HTTP11ClientProtocol:  # noqa: N802
        return BoundedHeadProtocol(self._quiescentCallback)


class BoundedHeadPool(HTTPConnectionPool):
    """HTTPConnectionPool whose connections are :class:`BoundedHeadProtocol`
    (through the pool's private ``_factory``, the one way to choose them)."""

    _factory: Any = _BoundedHeadFactory
