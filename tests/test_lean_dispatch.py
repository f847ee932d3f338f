"""The server's own poll loop (net.lean_dispatch): ready connections handled
without Twisted's legacy log context, with the same results."""

from __future__ import annotations

import time

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.selectreactor import SelectReactor

from lal_twisted.net import lean_dispatch


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        if data == b"boom":
            raise RuntimeError("a handler that fails")
        self.transport.write(data)


class _Client(Protocol):
    def __init__(self) -> None:
        self.got = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        self.got += data

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        self.lost = True


def _spin(reactor: EPollReactor, done: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:  # type: ignore[operator]
        reactor.iterate(0.01)


def test_connections_work_and_a_failing_handler_ends_only_its_own() -> None:
    reactor = EPollReactor()
    assert lean_dispatch(reactor)
    assert not lean_dispatch(SelectReactor())  # any other reactor is left alone
    port = reactor.listenTCP(0, Factory.forProtocol(_Echo), interface="127.0.0.1")
    clients: list[_Client] = []

    class _Factory(ClientFactory):
        def buildProtocol(self, addr: object) -> _Client:  # noqa: N802
            client = _Client()
            clients.append(client)
            return client

    try:
        for _ in range(2):
            reactor.connectTCP("127.0.0.1", port.getHost().port, _Factory())
        _spin(reactor, lambda: len(clients) == 2 and all(c.transport for c in clients))
        good, bad = clients
        good.transport.write(b"ping")
        _spin(reactor, lambda: good.got == b"ping")
        assert good.got == b"ping"
        bad.transport.write(b"boom")  # the server's handler raises: that connection ends
        _spin(reactor, lambda: bad.lost)
        assert bad.lost
        good.transport.write(b"again")
        _spin(reactor, lambda: good.got == b"pingagain")
        assert good.got == b"pingagain" and not good.lost
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.loseConnection()
        port.stopListening()
        _spin(reactor, lambda: all(c.lost for c in clients), 2.0)
