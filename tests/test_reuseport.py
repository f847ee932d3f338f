"""Listeners bound with SO_REUSEPORT: two on one port, and the kernel gives
each of them connections (what several worker processes of a node do), over
TCP and over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from conftest import free_port
from tlscerts import CA
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS

from lal_twisted.config import ConfigError
from lal_twisted.listener import Listener
from lal_twisted.tls import client_tls, ssl_endpoint


class _Counting(protocol.Factory):
    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol:  # noqa: N802
        self.accepted += 1
        return _Hello()


class _Hello(protocol.Protocol):
    """Says hello once connected (over TLS: once the handshake is done)."""

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(b"hello")


class _Heard(protocol.Protocol):
    def __init__(self) -> None:
        self.heard: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if not self.heard.called:
            self.heard.callback(data)


def _pause(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest_twisted.inlineCallbacks
def _both_accept(description: str, port: int, tls: Any = None, clients: int = 64) -> Any:
    """Two listeners on ``description`` with SO_REUSEPORT; ``clients`` connections
    (over TLS with ``tls``, each one heard from) are shared between them."""
    factories = [_Counting(), _Counting()]
    listeners = [Listener("rtmp.addr", description, f, reactor, reuse_port=True)
                 for f in factories]
    for listener in listeners:
        listener.startService()
    try:
        assert all(listener.port is not None for listener in listeners)
        protos = []
        for _ in range(clients):  # the kernel spreads connections by their addresses' hash
            endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            if tls is not None:
                endpoint = wrapClientTLS(tls, endpoint)
            proto = yield connectProtocol(endpoint, _Heard())
            protos.append(proto)
        heard = yield defer.gatherResults([p.heard for p in protos])
        assert heard == [b"hello"] * clients  # every handshake went through
        yield _pause(0.1)
        counts = [f.accepted for f in factories]
        assert sum(counts) == clients and min(counts) >= clients // 8, counts
        for proto in protos:
            proto.transport.loseConnection()
        yield _pause(0.1)
    finally:
        for listener in listeners:
            yield listener.stopService()


def test_two_listeners_share_a_port_and_both_accept() -> Any:
    port = free_port()
    return _both_accept(f"tcp:{port}:interface=127.0.0.1", port)


def test_two_tls_listeners_share_a_port_and_both_accept(tmp_path: Path) -> Any:
    """The ssl: description the config makes for RTMPS and HTTPS listens with
    SO_REUSEPORT too; clients verify the certificate against the test CA."""
    ca = CA(tmp_path)
    pair = ca.issue("server", ["lals.example"], ["127.0.0.1"])
    port = free_port()
    description = ssl_endpoint(f"tcp:{port}:interface=127.0.0.1", str(pair.cert),
                               str(pair.key), "rtmp.rtmps_cert_file", "rtmp.rtmps_key_file")
    assert description.startswith("ssl:")
    verified = client_tls("lals.example", str(ca.cert))  # chain and name checked
    return _both_accept(description, port, tls=verified, clients=32)


def test_without_reuse_port_a_second_listener_is_refused() -> None:
    port = free_port()
    first = Listener("rtmp.addr", f"tcp:{port}:interface=127.0.0.1", _Counting(), reactor,
                     reuse_port=True)
    first.startService()
    try:
        second = Listener("rtmp.addr", f"tcp:{port}:interface=127.0.0.1", _Counting(), reactor)
        with pytest.raises(Exception, match="Address already in use"):
            second.startService()
    finally:
        first.stopService()


def test_reuse_port_needs_a_tcp_address() -> None:
    with pytest.raises(ConfigError, match=r"^rtmp.addr: SO_REUSEPORT needs a tcp:, tcp6: or ssl:"):
        Listener("rtmp.addr", "unix:/tmp/lals-test.sock", _Counting(), reactor, reuse_port=True)
