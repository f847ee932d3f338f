"""Outgoing connections: every dial of the relays, the clients and the tools.

Where a connection goes is a :class:`~lal_twisted.target.Target`, read from
its URL; how is Twisted's client endpoints:

- ``host:port``: ``HostnameEndpoint`` (the name resolved without blocking the
  reactor, its IPv6 and IPv4 addresses tried in turn, the first to connect
  wins; each attempt bounded by ``timeout``);
- ``rtmps://`` and ``https://``: ``wrapClientTLS`` over it, with the client
  TLS options the caller made (:func:`lal_twisted.tls.client_tls`: the chain
  and the name verified, against the system store by default);
- a unix socket (``rtmp://unix:/PATH:/APP/STREAM``): the ``unix:`` endpoint
  of ``clientFromString``.

``eager``: the TCP connection sends each write at once when it can, as the
server's player connections do (:mod:`lal_twisted.net`); for a relay push,
which writes every packet of a stream.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint

from lal_twisted.net import TunedReactor
from lal_twisted.target import Target
from lal_twisted.tls import client_tls

__all__ = ["client_endpoint", "dial"]


def client_endpoint(reactor: Any, target: Target, *, timeout: float = 10.0, tls: Any = None,
                    eager: bool = False) -> IStreamClientEndpoint:
    """The client endpoint that reaches ``target``.  ``tls`` is the client TLS
    options of a secure target (by default: verified for its host against the
    system store); it is not read for a plain one."""
    if target.unix:
        # Twisted reads a unix endpoint's timeout as whole seconds.
        seconds = max(1, math.ceil(timeout))
        path = endpoints.quoteStringArgument(target.unix)
        return endpoints.clientFromString(reactor, f"unix:path={path}:timeout={seconds}")
    if eager:
        reactor = TunedReactor(reactor, eager=True)
    tcp = endpoints.HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if not target.secure:
        return tcp
    options = tls if tls is not None else client_tls(target.host)
    return endpoints.wrapClientTLS(options, tcp)


def dial(reactor: Any, target: Target, factory: IProtocolFactory, *, timeout: float = 10.0,
         tls: Any = None, eager: bool = False) -> defer.Deferred[IProtocol]:
    """Connect ``factory``'s protocol to ``target``; fires with the protocol
    once connected (over TLS: before the handshake, which the protocol's
    writes wait for) or errbacks with why not; cancelling it while it
    connects abandons the attempt.  What no retry can mend (TLS options that
    cannot be made) raises here, at once."""
    endpoint = client_endpoint(reactor, target, timeout=timeout, tls=tls, eager=eager)
    d: defer.Deferred[IProtocol] = endpoint.connect(factory)
    return d
