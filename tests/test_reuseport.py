"""Listeners bound with SO_REUSEPORT: two on one port, and the kernel gives
each of them connections (what several worker processes of a node do)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from conftest import free_port
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from lal_twisted.config import ConfigError
from lal_twisted.service import Listener


class _Counting(protocol.Factory):
    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol:  # noqa: N802
        self.accepted += 1
        return protocol.Protocol()


@pytest_twisted.inlineCallbacks
def test_two_listeners_share_a_port_and_both_accept() -> Any:
    port = free_port()
    factories = [_Counting(), _Counting()]
    listeners = [Listener("rtmp.addr", f"tcp:{port}:interface=127.0.0.1", f, reactor,
                          reuse_port=True) for f in factories]
    for listener in listeners:
        listener.startService()
    try:
        assert all(listener.port is not None for listener in listeners)
        clients = []
        for _ in range(64):  # the kernel spreads connections by their addresses' hash
            proto = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                          protocol.Protocol())
            clients.append(proto)
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.2, d.callback, None)
        yield d
        counts = [f.accepted for f in factories]
        assert sum(counts) == 64 and min(counts) >= 8, counts
        for proto in clients:
            proto.transport.loseConnection()
    finally:
        for listener in listeners:
            yield listener.stopService()


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
    with pytest.raises(ConfigError, match=r"^rtmp.addr: SO_REUSEPORT needs a tcp"):
        Listener("rtmp.addr", "unix:/tmp/lals-test.sock", _Counting(), reactor, reuse_port=True)
