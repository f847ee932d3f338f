"""The Twisted internals the server leans on, each checked where it is used.

lal_twisted.net reads a transport's buffer attributes (eager writes), makes
its client transports through ``tcp.Connector._makeTransport`` and replaces
the epoll reactor's poll loop (``_poller``, ``_selectables``,
``_doReadOrWrite``); lal_twisted.service sets
``StreamServerEndpointService._raiseSynchronously`` (as ``strports.service``
does) so that a listening error raises at start.  None of them is public: a
Twisted release may change them.  Each test here fails with a message naming
what moved and who relies on it (pyproject.toml bounds Twisted below the next
major release for the same reason).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.application import internet
from twisted.copyright import version as twisted_version
from twisted.internet import abstract, defer, endpoints, protocol, reactor, tcp
from twisted.internet.epollreactor import EPollReactor

from lal_twisted.dial import dial
from lal_twisted.listener import Listener
from lal_twisted.net import EagerClient, EagerServer, TunedReactor, _EagerWrites, lean_dispatch
from lal_twisted.target import Target


def _moved(what: str, user: str) -> str:
    return (f"Twisted {twisted_version}: {what}, which {user} relies on, has changed; "
            f"adapt {user} to it (and the bound on Twisted in pyproject.toml)")


@pytest_twisted.inlineCallbacks
def test_the_buffer_attributes_eager_writes_read() -> Any:
    """_EagerWrites sends at once only when Twisted's buffers are empty; it
    reads them from FileDescriptor's attributes (here on a plain connection)."""
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol),
                             interface="127.0.0.1")
    client = yield endpoints.connectProtocol(
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        protocol.Protocol())
    try:
        transport = client.transport
        assert isinstance(transport, abstract.FileDescriptor)
        for name in _EagerWrites.__annotations__:
            if name != "_corked":
                assert hasattr(transport, name), _moved(
                    f"FileDescriptor.{name}", "lal_twisted.net._EagerWrites")
        # Their meaning: what write() queued is counted in _tempDataLen until
        # the reactor's turn moves it into dataBuffer.
        empty = (transport._tempDataLen, transport.offset, len(transport.dataBuffer))
        transport.write(b"hello")
        assert empty == (0, 0, 0) and transport._tempDataLen == 5, _moved(
            "the meaning of FileDescriptor._tempDataLen / offset / dataBuffer",
            "lal_twisted.net._EagerWrites")
        assert transport.connected and not transport.disconnecting
        assert not transport._writeDisconnected
        assert isinstance(transport.socket, socket.socket)
    finally:
        client.transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_eager_transports_are_made_where_twisted_makes_its_own() -> Any:
    """Dialled eagerly, a client connection is an EagerClient (made by
    tcp.Connector._makeTransport); accepted by a Listener, a server connection
    is an EagerServer (tcp.Port.transport)."""
    assert callable(getattr(tcp.Connector, "_makeTransport", None)), _moved(
        "tcp.Connector._makeTransport", "lal_twisted.net._EagerConnector")
    assert getattr(tcp.Port, "transport", None) is tcp.Server, _moved(
        "tcp.Port.transport", "lal_twisted.net.use_eager_writes")
    accepted: list[Any] = []

    class _Keep(protocol.Protocol):
        def connectionMade(self) -> None:  # noqa: N802
            accepted.append(self.transport)

    listener = Listener("rtmp.addr", "tcp:0:interface=127.0.0.1",
                        protocol.Factory.forProtocol(_Keep), reactor)
    listener.startService()
    try:
        assert listener.port is not None
        target = Target("127.0.0.1", listener.port.getHost().port)
        client = yield dial(reactor, target, protocol.Factory.forProtocol(protocol.Protocol),
                            timeout=5, eager=True)
        assert type(client.transport) is EagerClient, _moved(
            "tcp.Connector._makeTransport", "lal_twisted.net._EagerConnector")
        for _ in range(50):
            if accepted:
                break
            yield _pause(0.02)
        assert accepted and type(accepted[0]) is EagerServer, _moved(
            "tcp.Port.transport", "lal_twisted.net.use_eager_writes")
        client.transport.loseConnection()
    finally:
        yield listener.stopService()


def test_the_epoll_loop_lean_dispatch_replaces() -> None:
    """lean_dispatch polls the reactor's epoll object itself and hands each
    ready descriptor to the reactor's own handler."""
    epoll = EPollReactor()
    try:
        assert hasattr(epoll._poller, "poll"), _moved(
            "EPollReactor._poller", "lal_twisted.net.lean_dispatch")
        assert isinstance(epoll._selectables, dict), _moved(
            "EPollReactor._selectables", "lal_twisted.net.lean_dispatch")
        assert callable(getattr(epoll, "_doReadOrWrite", None)), _moved(
            "EPollReactor._doReadOrWrite", "lal_twisted.net.lean_dispatch")
        assert EPollReactor.doIteration is EPollReactor.doPoll, _moved(
            "EPollReactor.doIteration", "lal_twisted.net.lean_dispatch")
        assert lean_dispatch(epoll)
    finally:
        epoll._poller.close()


def test_a_listening_error_raises_at_start() -> None:
    """_raiseSynchronously makes StreamServerEndpointService raise a listening
    error from privilegedStartService (lal_twisted.listener.Listener: one line
    and exit under twistd); without it the error would only be logged."""
    assert hasattr(internet.StreamServerEndpointService, "_raiseSynchronously"), _moved(
        "StreamServerEndpointService._raiseSynchronously", "lal_twisted.listener.Listener")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = Listener("rtmp.addr", f"tcp:{port}:interface=127.0.0.1",
                            protocol.Factory.forProtocol(protocol.Protocol), reactor)
        with pytest.raises(Exception, match="Address already in use"):
            listener.privilegedStartService()
        listener.stopService()
    assert listener.port is None


def test_a_tuned_reactor_is_seen_as_the_reactor() -> None:
    """HostnameEndpoint asks its reactor for IReactorPluggableNameResolver;
    a TunedReactor provides what the reactor provides."""
    from twisted.internet.interfaces import IReactorPluggableNameResolver, IReactorTCP

    tuned = TunedReactor(reactor, eager=True)
    assert IReactorPluggableNameResolver.providedBy(tuned) and IReactorTCP.providedBy(tuned)
    assert tuned.nameResolver is reactor.nameResolver  # type: ignore[attr-defined]


def _pause(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
