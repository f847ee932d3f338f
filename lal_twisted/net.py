"""Transport tuning for many players: send at once instead of on the next turn.

Twisted's TCP transport buffers every ``write`` and sends on the next reactor
turn, registering the socket for writability (epoll_ctl) on each write and
unregistering it after the send.  For a live server that writes every media
packet to every player, that is two extra system calls and a trip through the
reactor's event dispatch per packet per player.  :class:`EagerServer` sends
immediately when nothing is queued and falls back to Twisted's buffering (and
its producer pausing) for whatever the kernel does not take.

Measured with one 275 kbit/s publisher and 1000 players on a 2-core machine
(py-spy had shown 15% in epoll add/remove and 10% in event dispatch): RTMP
went from 86% to 41% of a core, HTTP-FLV from 94% to 73%; what remains is
mostly the kernel's work inside send().

A relay push writes the same packets to its target as a player does, over a
connection it dialled: dialled through a :class:`TunedReactor` (``eager``), it
gets the same writes (:class:`EagerClient`).

A response may end with a :class:`FileSpan` (an HLS segment held in a memfd):
the eager transport sends it with ``sendfile``, as nginx sends a static file,
instead of copying it from Python bytes into the socket.

:func:`reuse_port_endpoint` listens with ``SO_REUSEPORT`` (TCP, or TLS over it):
several processes (the workers of one node) bind the same address and the
kernel spreads the connections among them.

This module leans on Twisted's internals in a few named places (the buffer
attributes :class:`_EagerWrites` reads, ``tcp.Connector._makeTransport``, the
epoll reactor's ``_poller``, ``_selectables`` and ``_doReadOrWrite``);
``tests/test_twisted_pins.py`` fails, naming the one that moved, when a
Twisted release changes them.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import endpoints, tcp
from twisted.internet.posixbase import PosixReactorBase
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import directlyProvides, providedBy

from lal_twisted.log import Logger

_log = Logger("lal_twisted.net")


class FileSpan:
    """The first ``size`` bytes of an open file (the caller owns and closes
    ``fd``), as the last piece given to ``writeSequence``: an eager transport
    sends it with ``sendfile``, any other takes :meth:`read`."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int = 0) -> bytes:
        """The bytes from ``offset`` to the end of the span."""
        parts = []
        while offset < self.size:
            chunk = os.pread(self.fd, self.size - offset, offset)
            if not chunk:
                raise OSError(f"file span: {self.size - offset} bytes missing at {offset}")
            parts.append(chunk)
            offset += len(chunk)
        return b"".join(parts)


def as_bytes(piece: bytes | FileSpan) -> bytes:
    return piece if type(piece) is bytes else piece.read()  # type: ignore[union-attr]


_MSG_MORE = getattr(socket, "MSG_MORE", 0)


class _EagerWrites:
    """``write`` that sends at once when nothing is queued (see the module)."""

    # The attributes of twisted.internet.abstract.FileDescriptor / tcp.Connection
    # this mixin reads; the class it is mixed into has them.
    _tempDataLen: int
    offset: int
    dataBuffer: bytes
    connected: int
    disconnecting: Any
    _writeDisconnected: bool
    socket: Any

    _corked: list[bytes] | None = None

    def cork(self) -> None:
        """Collect writes until :meth:`uncork`, which sends them as one."""
        self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self.write(b"".join(corked))

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
            return
        if (data and not self._tempDataLen and self.offset == len(self.dataBuffer)
                and self.connected and not self.disconnecting
                and not self._writeDisconnected and type(data) is bytes):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error the normal write path will report
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        super().write(data)  # type: ignore[misc]

    def writeSequence(self, iovec: Any) -> None:  # noqa: N802 - Twisted interface
        """Send the pieces with one ``sendmsg`` when nothing is queued (no join:
        an HLS segment and its headers go out without a copy); what the kernel
        does not take is queued, in order.  twisted.web writes each chunk of a
        chunked body as [size, data, CRLF].  A last piece that is a
        :class:`FileSpan` follows with ``sendfile`` (the pieces before it are
        sent with MSG_MORE, so they leave in the same TCP segment)."""
        if self._corked is not None:
            self._corked.extend(as_bytes(piece) for piece in iovec)
            return
        if (self._tempDataLen or self.offset != len(self.dataBuffer) or not self.connected
                or self.disconnecting or self._writeDisconnected):
            for piece in iovec:
                super().write(as_bytes(piece))  # type: ignore[misc]
            return
        span = iovec[-1] if iovec and type(iovec[-1]) is FileSpan else None
        pieces = [piece for piece in (iovec[:-1] if span is not None else iovec) if piece]
        queued = False
        if pieces:
            try:
                sent = self.socket.sendmsg(pieces, (), _MSG_MORE if span is not None else 0)
            except OSError:
                sent = 0  # EAGAIN, or an error the normal write path will report
            for piece in pieces:
                if sent >= len(piece):
                    sent -= len(piece)
                    continue
                super().write(piece[sent:] if sent else piece)  # type: ignore[misc]
                sent = 0
                queued = True
        if span is not None and span.size:
            sent = 0
            if not queued:
                try:
                    sent = os.sendfile(self.socket.fileno(), span.fd, 0, span.size)
                except OSError:
                    sent = 0  # as above
            if sent < span.size:
                super().write(span.read(sent))  # type: ignore[misc]


class EagerServer(_EagerWrites, tcp.Server):
    """A TCP server connection whose ``write`` sends at once when it can.

    Nagle's algorithm stays on: it merges a player's small live packets while an
    ACK is outstanding (fewer segments, much less kernel time: TCP_NODELAY cost
    60% more CPU in the bench).  Bursts that must arrive together (a new
    player's replies and GOP cache) are written as one ``write``.
    """


class EagerClient(_EagerWrites, tcp.Client):
    """A TCP client connection whose ``write`` sends at once when it can."""


class _EagerConnector(tcp.Connector):
    def _makeTransport(self) -> tcp.Client:  # noqa: N802 - Twisted interface
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)


class ReusePort(tcp.Port):
    """A listening TCP port whose socket has ``SO_REUSEPORT`` set before it
    is bound, so other sockets with it may bind the same address."""

    def createInternetSocket(self) -> socket.socket:  # noqa: N802 - Twisted interface
        sock: socket.socket = super().createInternetSocket()  # type: ignore[no-untyped-call]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock


class TunedReactor:
    """The reactor, as Twisted's endpoints see it, with this module's tuning.

    Endpoints take the reactor they listen and connect with as a parameter;
    this one passes everything to the real reactor except:

    - ``reuse_port``: ``listenTCP`` binds a :class:`ReusePort`, and
      ``listenSSL`` puts TLS over one (as the reactor's own ``listenSSL`` puts
      it over ``listenTCP``), so ``tcp:``, ``tcp6:`` and ``ssl:`` endpoints
      listen with ``SO_REUSEPORT``;
    - ``eager``: ``connectTCP`` makes :class:`EagerClient` connections, so a
      ``HostnameEndpoint`` (and TLS over it) dials with eager writes.

    It provides the interfaces the real reactor provides (a HostnameEndpoint
    asks for ``IReactorPluggableNameResolver``).  Any reactor other than a
    real one (a test's memory reactor) is used as it is.
    """

    def __init__(self, reactor: Any, *, reuse_port: bool = False, eager: bool = False) -> None:
        self._reactor = reactor
        self._real = isinstance(reactor, PosixReactorBase)
        self._reuse_port = reuse_port
        self._eager = eager
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,  # noqa: N802
                  interface: str = "") -> Any:
        if not (self._reuse_port and self._real):
            return self._reactor.listenTCP(port, factory, backlog, interface)
        listening = ReusePort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenSSL(self, port: int, factory: Any, contextFactory: Any,  # noqa: N802, N803
                  backlog: int = 50, interface: str = "") -> Any:
        if not (self._reuse_port and self._real):
            return self._reactor.listenSSL(port, factory, contextFactory, backlog, interface)
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory),
                              backlog, interface)

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,  # noqa: N802
                   bindAddress: Any = None) -> Any:  # noqa: N803 - Twisted interface
        if not (self._eager and self._real):
            return self._reactor.connectTCP(host, port, factory, timeout, bindAddress)
        connector = _EagerConnector(host, port, factory, timeout, bindAddress, self._reactor)
        connector.connect()
        return connector


# What can listen with SO_REUSEPORT: TCP, and TLS over it.
_REUSE_PORT_KINDS = ("tcp", "tcp6", "ssl")


def reuse_port_endpoint(reactor: Any, description: str) -> Any:
    """The server endpoint of a ``tcp:``, ``tcp6:`` or ``ssl:`` description,
    listening with ``SO_REUSEPORT`` (Twisted reads the description, as for
    any listener); ValueError for any other kind of endpoint."""
    kind = description.partition(":")[0]
    if kind not in _REUSE_PORT_KINDS:
        raise ValueError(f"SO_REUSEPORT needs a tcp:, tcp6: or ssl: address, "
                         f"got {description!r}")
    return endpoints.serverFromString(TunedReactor(reactor, reuse_port=True), description)


def use_eager_writes(port: Any) -> None:
    """Make a listening TCP port build :class:`EagerServer` connections.

    Ports of other kinds (UNIX sockets, or TCP ports with a custom transport)
    are left as they are.
    """
    if isinstance(port, tcp.Port) and port.transport is tcp.Server:
        port.transport = EagerServer


def lean_dispatch(reactor: Any) -> bool:
    """In a process of the server's own (twistd): the epoll reactor's poll loop
    without Twisted's legacy log context around each ready descriptor.

    ``EPollReactor.doPoll`` calls every ready descriptor's handler through
    ``log.callWithLogger``, which sets the ``system`` prefix of legacy
    ``log.msg`` lines (none of the server's own: it logs with
    :mod:`lal_twisted.log`) and costs ~1.2 us an event against ~40 ns for the
    call; with a thousand HLS players polling, that is a few per cent of the
    server.  Here the handler is called directly: what it raises is logged, as
    before, and the other descriptors are handled.  Any other reactor is left
    alone.  Returns whether the loop was replaced.  Not for an application the
    server is embedded in: its reactor is the application's.
    """
    from twisted.internet.epollreactor import EPollReactor

    if type(reactor) is not EPollReactor:
        return False
    poller = reactor._poller
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def poll(timeout: float | None) -> None:
        # epoll_wait is retried by Python when a signal interrupts it (PEP 475).
        events = poller.poll(-1 if timeout is None else timeout, len(selectables))
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                try:
                    handle(selectable, fd, event)
                except Exception:
                    _log.failure("handling a ready connection failed: {selectable}",
                                 selectable=selectable)

    reactor.doIteration = poll  # type: ignore[method-assign]
    return True

