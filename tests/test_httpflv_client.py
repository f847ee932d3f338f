"""The lean HTTP-FLV client: status line, headers, chunked or identity bodies,
fed in any split, and clear errors for what is not an FLV stream."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from lal_twisted.httpflv.client import HttpFlvError, HttpFlvPull
from lal_twisted.media import flv
from lal_twisted.media.packet import AVPacket

TAGS = [(18, 0, b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"),
        (9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff"),
        (8, 0, b"\xaf\x00\x12\x10"),
        *((9 if i % 3 else 8, 40 * i, bytes([i % 256]) * (i * 37 % 900 + 1)) for i in range(1, 60))]
BODY = flv.file_header() + b"".join(flv.encode_tag(t, ts, p) for t, ts, p in TAGS)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(body):
        n = sizes[i % len(sizes)] if sizes else len(body)
        i += 1
        piece = body[pos:pos + n]
        pos += n
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def _connect(url: str = "http://127.0.0.1:8080/live/x.flv?a=1") -> tuple[
        HttpFlvPull, Any, StringTransport, list[AVPacket], list[Any]]:
    reactor = MemoryReactorClock()
    packets: list[AVPacket] = []
    pull = HttpFlvPull(reactor, url, packets.append)
    results: list[Any] = []
    pull.start().addBoth(results.append)
    host, port, factory, _, _ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 8080)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return pull, proto, transport, packets, results


def _feed(proto: Any, data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts})
    last = 0
    for p in [*points, len(data)]:
        if p > last:
            proto.dataReceived(data[last:p])
            last = p


def _expected() -> list[tuple[int, int, bytes]]:
    return [(t, ts, p) for t, ts, p in TAGS]


def test_request_line_and_headers() -> None:
    _, _, transport, _, _ = _connect()
    request = transport.value()
    assert request.startswith(b"GET /live/x.flv?a=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:8080\r\n" in request
    assert request.endswith(b"\r\n\r\n")


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 3000), max_size=6),
       cuts=st.lists(st.integers(0, 100000), max_size=40))
def test_chunked_body_in_any_split(sizes: list[int], cuts: list[int]) -> None:
    pull, proto, _, packets, results = _connect()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n"
    _feed(proto, head + _chunked(BODY, sizes), cuts)
    assert results == [pull]
    assert [(p.kind, p.dts, p.payload) for p in packets] == _expected()
    assert pull.header_seen and pull.has_audio and pull.has_video
    assert pull.error is None


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 100000), max_size=20))
def test_identity_body_with_length_and_until_close(cuts: list[int]) -> None:
    for headers in (b"Content-Length: %d\r\n" % len(BODY), b""):
        pull, proto, _, packets, _ = _connect()
        _feed(proto, b"HTTP/1.0 200 OK\r\n" + headers + b"\r\n" + BODY + b"trailing junk", cuts)
        n = len(packets)
        assert [(p.kind, p.dts, p.payload) for p in packets[:len(TAGS)]] == _expected()
        if headers:
            assert n == len(TAGS)  # nothing past Content-Length is read


def _failure_of(results: list[Any]) -> str:
    assert len(results) == 1 and isinstance(results[0], Failure), results
    assert results[0].check(HttpFlvError)
    return results[0].getErrorMessage()


def test_not_found_is_an_error() -> None:
    pull, proto, _, packets, results = _connect()
    proto.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
    proto.connectionLost(Failure(ConnectionDone()))
    assert _failure_of(results) == "server answered 404 Not Found"
    assert packets == [] and pull.done.called


def test_garbage_is_refused_with_a_clear_error() -> None:
    cases = [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000, "response headers too long"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunked encoding"),
        (b"HTTP/1.1 200 OK\r\n\r\n<html>", "bad FLV from server"),
    ]
    for data, message in cases:
        pull, proto, _, _, results = _connect()
        proto.dataReceived(data)
        proto.connectionLost(Failure(ConnectionDone()))
        assert pull.error is not None and message in pull.error, (data[:20], pull.error)
        assert pull.done.called


def test_connection_lost_mid_body_is_reported() -> None:
    pull, proto, _, packets, results = _connect()
    proto.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + _chunked(BODY, [500])[:3000])
    proto.connectionLost(Failure(ConnectionDone("gone")))
    assert results == [pull] and packets
    assert pull.done.called and pull.error == "the server ended the stream mid-body"


def test_https_url_dials_tls() -> None:
    """The TCP connection goes to the host's resolved address, port 443, and the
    first bytes on it are a TLS ClientHello, not the GET."""
    reactor = MemoryReactorClock()
    pull = HttpFlvPull(reactor, "https://127.0.0.1/live/x.flv", lambda p: None)
    pull.start()
    host, port, factory, _timeout, _bind = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 443)
    transport = StringTransport()
    factory.buildProtocol(None).makeConnection(transport)
    hello = transport.value()
    assert hello[:1] == b"\x16" and b"GET" not in hello  # a handshake record


def test_a_unix_url_dials_the_socket_and_says_localhost() -> None:
    reactor = MemoryReactorClock()
    pull = HttpFlvPull(reactor, "http://unix:/run/lals/w1.sock:/live/x.flv?a=1",
                       lambda p: None)
    pull.start()
    assert not reactor.tcpClients
    path, factory, _timeout, _check_pid = reactor.unixClients[0]
    assert path == "/run/lals/w1.sock"
    transport = StringTransport()
    factory.buildProtocol(None).makeConnection(transport)
    request = transport.value()
    assert request.startswith(b"GET /live/x.flv?a=1 HTTP/1.1\r\n")
    assert b"\r\nHost: localhost\r\n" in request


def test_stop_while_connecting_abandons_the_attempt() -> None:
    reactor = MemoryReactorClock()
    pull = HttpFlvPull(reactor, "http://127.0.0.1:8080/live/x.flv", lambda p: None)
    results: list[Any] = []
    pull.start().addBoth(results.append)
    connector = reactor.connectors[0]
    pull.stop()
    assert connector.stoppedConnecting
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert pull.done.called and pull.error is None
