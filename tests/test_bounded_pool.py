"""The bounded head of hook and notify answers, byte by byte: the bounds are
exact, bodies do not count, each request on a kept-alive connection starts
afresh, and the pool really builds the bounded protocol."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.web._newclient import Request, ResponseFailed
from twisted.web.http_headers import Headers

from lal_twisted.api.bounded_pool import (
    MAX_HEAD_BYTES,
    MAX_HEAD_LINES,
    AnswerHeadTooLarge,
    BoundedHeadPool,
    BoundedHeadProtocol,
    head_too_large,
)
from lal_twisted.api.notify import describe_failure

STATUS = b"HTTP/1.1 200 OK\r\n"
END = b"Content-Length: 0\r\n\r\n"  # two of the head's lines


def connected() -> tuple[BoundedHeadProtocol, StringTransport, list[Any]]:
    quiescent: list[Any] = []
    proto = BoundedHeadProtocol(quiescent.append)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, quiescent


def ask(proto: BoundedHeadProtocol) -> list[Any]:
    results: list[Any] = []
    request = Request(b"POST", b"/cb", Headers({b"Host": [b"backend"]}), None,
                      persistent=True)
    proto.request(request).addBoth(results.append)
    return results


def feed(proto: BoundedHeadProtocol, data: bytes, step: int) -> None:
    for at in range(0, len(data), step):
        proto.dataReceived(data[at:at + step])


def lines_head(lines: int) -> bytes:
    """A head of exactly ``lines`` lines (status, pads, Content-Length, blank)."""
    return STATUS + b"".join(b"X-Pad-%d: v\r\n" % n for n in range(lines - 3)) + END


def bytes_head(size: int) -> bytes:
    """A head of exactly ``size`` bytes in lines of at most 8 KiB (Twisted's
    parser takes lines of up to 16 KiB)."""
    left = size - len(STATUS) - len(END)
    count = -(-left // 8192)
    pads = [b"X-Pad: " + b"v" * (left // count + (i < left % count) - 9) + b"\r\n"
            for i in range(count)]
    head = STATUS + b"".join(pads) + END
    assert len(head) == size
    return head


def answered(results: list[Any]) -> int:
    assert len(results) == 1, results
    assert not hasattr(results[0], "check"), results[0]
    return int(results[0].code)


def refused(results: list[Any], transport: StringTransport) -> str:
    assert len(results) == 1, results
    failure = results[0]
    assert failure.check(ResponseFailed) and head_too_large(failure), failure
    assert failure.value.reasons[0].check(AnswerHeadTooLarge)
    assert transport.disconnecting  # the rest is never read
    return describe_failure(failure)


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_lines_bound_is_exact(step: int) -> None:
    proto, transport, _ = connected()
    results = ask(proto)
    feed(proto, lines_head(MAX_HEAD_LINES), step)
    assert answered(results) == 200

    proto, transport, _ = connected()
    results = ask(proto)
    feed(proto, lines_head(MAX_HEAD_LINES + 1), step)
    assert refused(results, transport) == (
        f"the answer's status line and headers pass {MAX_HEAD_LINES} lines")


@pytest.mark.parametrize("step", [1000, 4096, 1 << 20])
def test_bytes_bound_is_exact(step: int) -> None:
    proto, transport, _ = connected()
    results = ask(proto)
    feed(proto, bytes_head(MAX_HEAD_BYTES), step)
    assert answered(results) == 200

    proto, transport, _ = connected()
    results = ask(proto)
    feed(proto, bytes_head(MAX_HEAD_BYTES + 1), step)
    assert refused(results, transport) == (
        "the answer's status line and headers pass 64 KiB")


def test_endless_headers_are_cut_at_the_bound() -> None:
    proto, transport, _ = connected()
    results = ask(proto)
    proto.dataReceived(STATUS)
    for n in range(10_000):
        proto.dataReceived(b"X-Pad-%d: value\r\n" % n)
        if results:
            break
    assert n == MAX_HEAD_LINES - 2  # the status line and 99 headers: cut there
    refused(results, transport)


class Collect(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        self.received.append(data)


def test_body_bytes_do_not_count_and_each_request_starts_afresh() -> None:
    proto, transport, quiescent = connected()
    body = b"x" * (4 * MAX_HEAD_BYTES)
    head = lines_head(MAX_HEAD_LINES).replace(b"Content-Length: 0",
                                              b"Content-Length: %d" % len(body))
    for _ in range(3):  # on one kept-alive connection
        results = ask(proto)
        proto.dataReceived(head + body)  # head and body in one read
        assert answered(results) == 200
        collect = Collect()
        results[0].deliverBody(collect)
        assert b"".join(collect.received) == body
        assert quiescent[-1] is proto and not transport.disconnecting
    assert len(quiescent) == 3


def test_the_pool_builds_the_bounded_protocol() -> None:
    factory = BoundedHeadPool._factory(lambda proto: None, "backend")
    assert isinstance(factory.buildProtocol(None), BoundedHeadProtocol)
