"""Connection limits: per listener, per remote address, and room for publishers.

Every listener's factory is wrapped by one :class:`ConnectionGuard`.  All
listeners together stay under the process's file descriptor limit (less a
reserve for listening sockets, logs and files), so the server refuses a
connection before ``accept`` would fail with EMFILE; ``limits.max_connections``
caps each listener further and ``limits.max_connections_per_addr`` each remote
address.

Sockets that wait for nothing (a connection that has not published or played
yet, a player of a stream nobody publishes) must not be able to take the last
descriptors from a publisher: when the cap is reached, the oldest such
connection is closed to make room for the new one.  Only when every connection
is doing real work is a new one refused.  Each refusal or eviction is one log
line (at most one per listener every few seconds, with a count).

The API's ``add_ip_blacklist`` lands here too (:meth:`ConnectionGuard.block`):
a blocked address gets no connection to any listener but the API's until its
time is up, and its open connections are closed.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory

from lal_twisted.log import Logger

__all__ = ["ConnectionGuard", "GuardedFactory", "default_max_connections", "plain_host",
           "raise_fd_limit"]

log = Logger("lal_twisted.limits")

# Descriptors kept for what is not a client connection: listening sockets, the
# epoll descriptor, stdio, log files, recordings and segments being written.
FD_RESERVE = 32
# A line about refused or evicted connections at most this often per listener.
_LOG_EVERY = 5.0
# Listeners the IP blacklist does not cover (the operator's own backend must
# not be able to lock itself out of the API).
BLACKLIST_EXEMPT = frozenset({"http_api"})
# Addresses the blacklist holds at most (the oldest entry goes past it).
MAX_BLACKLIST = 65536


def raise_fd_limit() -> int:
    """Raise the soft fd limit to the hard one (as servers do at start); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """Connections the fd limit allows (RLIMIT_NOFILE soft limit less a reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, soft - FD_RESERVE)


def is_waiting(protocol: Any) -> bool:
    """True when a connection waits for nothing: not publishing, not playing a
    live stream.  Protocols say so with ``is_waiting()``; an HTTP channel waits
    unless one of its requests plays a live stream (``request.lal_sink``)."""
    check = getattr(protocol, "is_waiting", None)
    if check is not None:
        return bool(check())
    requests = getattr(_unwrapped(protocol), "requests", None)
    if requests is None:
        return False  # a kind of connection this guard knows nothing about
    for request in requests:
        sink = getattr(request, "lal_sink", None)
        stream = getattr(sink, "stream", None)
        if stream is not None and stream.publisher is not None:
            return False
    return True


def _unwrapped(protocol: Any) -> Any:
    """The HTTP channel inside twisted.web's wrapper (for HTTP/2 negotiation), or
    the protocol itself."""
    return getattr(protocol, "_channel", protocol)


def plain_host(host: str) -> str:
    """An address as text, an IPv4 client of a dual-stack listener
    (``::ffff:1.2.3.4``) as its IPv4 address, so it is counted and blocked
    as one."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _host(address: IAddress) -> str:
    return plain_host(str(getattr(address, "host", address)))


class ConnectionGuard:
    """Counts the connections of every listener it wraps and of each remote address.

    ``max_total`` (default: from the fd limit) is shared by all listeners,
    ``max_per_listener`` (0: none) applies to each, ``max_per_addr`` (0: none) to
    each remote host."""

    def __init__(self, reactor: IReactorTime, max_per_listener: int = 0,
                 max_per_addr: int = 0, max_total: int = 0) -> None:
        self.reactor = reactor
        self._max_total = max_total
        self.max_per_listener = max_per_listener
        self.max_per_addr = max_per_addr
        # protocol -> (host, listener name), oldest first
        self.connections: dict[Any, tuple[str, str]] = {}
        self.per_host: dict[str, int] = {}
        self.per_listener: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0
        self._quiet_until: dict[str, float] = {}
        self._untold: dict[str, int] = {}
        # What else may hold descriptors, each a call giving its most (the HLS
        # memory store's memfds): kept out of the default cap.
        self.fd_users: list[Callable[[], int]] = []
        # Blocked hosts and until when (reactor time).
        self.blacklist: dict[str, float] = {}

    def block(self, host: str, seconds: int) -> int:
        """Refuse ``host`` on every listener but the API's for ``seconds``
        (0 or less: stop refusing it), closing its open connections; how
        many were closed."""
        now = self.reactor.seconds()
        for stale in [h for h, until in self.blacklist.items() if until <= now]:
            del self.blacklist[stale]
        self.blacklist.pop(host, None)
        if seconds <= 0:
            return 0
        if len(self.blacklist) >= MAX_BLACKLIST:
            del self.blacklist[next(iter(self.blacklist))]
        self.blacklist[host] = now + seconds
        victims = [p for p, (h, where) in self.connections.items()
                   if h == host and where not in BLACKLIST_EXEMPT]
        for protocol in victims:
            if hasattr(protocol, "close_reason"):
                protocol.close_reason = "address blacklisted"
            transport = getattr(_unwrapped(protocol), "transport", None)
            if transport is not None:
                transport.abortConnection()
        return len(victims)

    def blocked(self, host: str) -> bool:
        until = self.blacklist.get(host)
        if until is None:
            return False
        if until <= self.reactor.seconds():
            del self.blacklist[host]
            return False
        return True

    @property
    def max_total(self) -> int:
        """The cap for all listeners: as configured, else from the fd limit now,
        less what ``fd_users`` may hold."""
        if not self._max_total:
            others = sum(most() for most in self.fd_users)
            self._max_total = max(8, default_max_connections() - others)
        return self._max_total

    def wrap(self, factory: Factory, name: str) -> GuardedFactory:
        return GuardedFactory(self, factory, name)

    def admit(self, name: str, address: IAddress) -> bool:
        """Whether a new connection from ``address`` may be accepted (making room
        by closing the oldest waiting connection when the cap is reached)."""
        host = _host(address)
        if self.blacklist and name not in BLACKLIST_EXEMPT and self.blocked(host):
            self.refused += 1
            self._tell(name, "blocked", f"refused a connection from {host}: it is blacklisted "
                       "(add_ip_blacklist)")
            return False
        if self.max_per_addr and self.per_host.get(host, 0) >= self.max_per_addr:
            self.refused += 1
            self._tell(name, "refused", f"refused a connection from {host}: it has "
                       f"{self.max_per_addr} open (limits.max_connections_per_addr)")
            return False
        if self.max_per_listener and self.per_listener.get(name, 0) >= self.max_per_listener:
            cap, why, only = self.max_per_listener, "limits.max_connections", name
        elif len(self.connections) >= self.max_total:
            cap, why, only = self.max_total, "the fd limit", None
        else:
            return True
        victim = next((p for p, (_, where) in self.connections.items()
                       if (only is None or where == only) and is_waiting(p)), None)
        if victim is None:
            self.refused += 1
            self._tell(name, "refused", f"refused a connection from {host}: {cap} connections "
                       f"are open and all of them publish or play ({why})")
            return False
        self.evicted += 1
        self._tell(name, "evicted", f"closed the oldest idle or waiting connection (from "
                   f"{self.connections[victim][0]}) to make room: {cap} connections open ({why})")
        self.forget(victim)
        if hasattr(victim, "close_reason"):
            victim.close_reason = "closed to make room for a new connection"
        transport = getattr(_unwrapped(victim), "transport", None)
        if transport is not None:
            transport.abortConnection()
        return True

    def add(self, protocol: Any, address: IAddress, name: str) -> None:
        host = _host(address)
        self.connections[protocol] = (host, name)
        self.per_host[host] = self.per_host.get(host, 0) + 1
        self.per_listener[name] = self.per_listener.get(name, 0) + 1

    def forget(self, protocol: Any) -> None:
        where = self.connections.pop(protocol, None)
        if where is None:
            return
        host, name = where
        for counts, key in ((self.per_host, host), (self.per_listener, name)):
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]

    def _tell(self, name: str, kind: str, text: str) -> None:
        key = f"{name} {kind}"
        now = self.reactor.seconds()
        if now < self._quiet_until.get(key, 0.0):
            self._untold[key] = self._untold.get(key, 0) + 1
            return
        more = self._untold.pop(key, 0)
        suffix = f" ({more} more like it since the last line)" if more else ""
        log.warn("{name}: {text}{suffix}", name=name, text=text, suffix=suffix)
        self._quiet_until[key] = now + _LOG_EVERY


class GuardedFactory:
    """A listener's factory behind a :class:`ConnectionGuard` (everything else is
    the wrapped factory's)."""

    def __init__(self, guard: ConnectionGuard, factory: Factory, name: str) -> None:
        self.guard = guard
        self.factory = factory
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.factory, attr)

    def doStart(self) -> None:  # noqa: N802 - Twisted interface
        self.factory.doStart()

    def doStop(self) -> None:  # noqa: N802 - Twisted interface
        self.factory.doStop()

    def buildProtocol(self, addr: IAddress) -> Any:  # noqa: N802 - Twisted interface
        guard = self.guard
        if not guard.admit(self.name, addr):
            return None  # the port closes the socket at once
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            return None
        guard.add(protocol, addr, self.name)
        lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            guard.forget(protocol)
            lost(reason)

        protocol.connectionLost = connection_lost  # type: ignore[method-assign]
        return protocol
