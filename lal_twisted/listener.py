"""A stream listener as a Twisted service: Twisted's endpoint service on one
endpoint description (TCP, TLS, unix), binding in ``privilegedStartService``,
with the one-line startup errors twistd users see, the connection guard and
the eager-write transports."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application import internet
from twisted.internet import defer, endpoints
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.web import server
from zope.interface import implementer

from lal_twisted import log as lal_log
from lal_twisted.errors import ConfigError
from lal_twisted.limits import ConnectionGuard
from lal_twisted.net import reuse_port_endpoint, use_eager_writes

__all__ = ["Listener"]

logger = lal_log.Logger("lal_twisted.service")


def _endpoint(reactor: Any, key: str, description: str) -> Any:
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"{key}: cannot listen on {description!r}: {e}") from None


@implementer(IStreamServerEndpoint)
class _Announced:
    """An endpoint whose listening port is handed to ``listened`` first."""

    def __init__(self, endpoint: IStreamServerEndpoint,
                 listened: Callable[[IListeningPort], IListeningPort]) -> None:
        self.endpoint = endpoint
        self.listened = listened

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        d: defer.Deferred[IListeningPort] = self.endpoint.listen(factory)
        return d.addCallback(self.listened)


class Listener(internet.StreamServerEndpointService):
    """Twisted's endpoint service on one endpoint description (TCP, TLS, unix
    ...); ``port`` is the IListeningPort once bound.

    It binds in ``privilegedStartService``, so ``twistd --uid`` can bind port
    1935 or 80 as root and then drop privileges (``startService`` binds if that
    was skipped).  Listening errors (port in use, bad interface) raise there, so
    twistd stops with a clear message before the server half-starts.
    ``reuse_port``: bind with ``SO_REUSEPORT`` (TCP or TLS), so that several
    processes share the address (:func:`lal_twisted.net.reuse_port_endpoint`).
    """

    # Set by the twistd entry point: a listening error then ends the process
    # with one line instead of a traceback (inside another application it raises).
    exit_on_error = False

    def __init__(self, key: str, description: str, factory: Factory | server.Site,
                 reactor: Any, guard: ConnectionGuard | None = None,
                 reuse_port: bool = False) -> None:
        self.key = key
        self.guard = guard
        self.description = description
        self.reactor = reactor
        # What it serves; ``factory`` is that behind the guard once started.
        self.inner_factory: Any = factory
        if reuse_port:
            try:
                endpoint = reuse_port_endpoint(reactor, description)
            except ValueError as e:
                raise ConfigError(f"{key}: {e}") from None
        else:
            endpoint = _endpoint(reactor, key, description)
        super().__init__(_Announced(endpoint, self._listened), factory)
        # A listening error raises from privilegedStartService instead of being
        # logged later (strports.service sets it too; tests/test_twisted_pins.py).
        self._raiseSynchronously = True
        self.port: IListeningPort | None = None
        self._tried = False

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted interface
        if self.guard is not None:
            self.factory = self.guard.wrap(self.inner_factory, self.name or self.key)
        self._tried = True
        try:
            super().privilegedStartService()
        except Exception as e:
            if self.exit_on_error:
                raise SystemExit(f"lals: {self.key}: {e}") from None
            raise

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        use_eager_writes(port)
        logger.info("{name} listening on {where}", name=self.name,
                    where=_where(port.getHost()))
        return port

    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        self.port = None
        if not self._tried:  # never started (a listener before it failed to)
            self.running = False
            return None
        return super().stopService()


def _where(address: Any) -> str:
    """A listening address as the log tells it: ``host:port`` or ``unix:PATH``."""
    if isinstance(address, UNIXAddress):
        return f"unix:{os.fsdecode(address.name or b'')}"
    return f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"
