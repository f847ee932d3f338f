"""The control plane of one server: HTTP API, notify, simple_auth, the HTTP
hook, metrics and the status page, wired to the registry from the config.

:class:`ControlPlane` is built from the pieces it uses (the config, the
registry, the reactor; the service adds the relays, the connection guard and
its listeners and routers to its :class:`~lal_twisted.api.context.ServerContext`
as it builds them).  Everything it adds is a subscriber of the registry's
events, an access check or a route, so the media path does not change
whichever parts are on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.web import resource

from lal_twisted.api import stat
from lal_twisted.api.auth import HttpHook, SimpleAuth
from lal_twisted.api.context import ServerContext
from lal_twisted.api.guard import ApiGuard, GuardedPage
from lal_twisted.api.http_api import ApiResource
from lal_twisted.api.metrics import MetricsResource, SessionTotals, build_registry
from lal_twisted.api.notify import HttpNotify, close_client
from lal_twisted.api.status import StatusPage

if TYPE_CHECKING:
    from lal_twisted.config import Config
    from lal_twisted.hub.registry import StreamRegistry

__all__ = ["ControlPlane"]


class ControlPlane(service.Service):
    """Owns the control-plane objects of ``lals``; its attributes are None for
    the parts the config turns off (``notify``, ``simple_auth``, ``hook``)."""

    name = "control"

    def __init__(self, config: Config, registry: StreamRegistry, reactor: Any) -> None:
        self.config = config
        self.registry = registry
        self.reactor = reactor
        self.rates = stat.FrameRates(registry, reactor)
        context = self.context = ServerContext(config, registry, reactor, self.rates)
        self.totals = SessionTotals(registry.events)
        self.notify: HttpNotify | None = None
        if config.http_notify.enable:
            self.notify = context.notify = HttpNotify(config.http_notify, context)
        auth = config.simple_auth
        self.simple_auth: SimpleAuth | None = None
        if any(getattr(auth, k) for k in vars(auth) if k.endswith("_enable")):
            self.simple_auth = SimpleAuth(auth)
            registry.add_access_check(self.simple_auth)
        self.hook: HttpHook | None = None
        if config.http_hook.enable:
            self.hook = HttpHook(config.http_hook, context)
            registry.add_access_check(self.hook)
        self.metrics_registry = build_registry(context, self.totals)
        # Every page of the API listener.
        self.api_guard = context.api_guard = ApiGuard(config.http_api)

    # -- resources (mounted through service.ROUTES) ------------------------------------
    def api_resource(self) -> resource.IResource:
        return ApiResource(self.context)

    def public_stat_resource(self) -> resource.IResource:
        """The read-only stat endpoints on the HTTP listener, for the status page."""
        return ApiResource(self.context, read_only=True)

    def metrics_resource(self) -> resource.IResource:
        return MetricsResource(self.metrics_registry)

    def status_page(self, listener: str) -> resource.IResource:
        page = StatusPage(self.context, listener)
        return GuardedPage(self.api_guard, page) if listener == "http_api" else page

    # -- lifecycle ------------------------------------------------------------------------
    def startService(self) -> None:  # noqa: N802 - Twisted interface
        super().startService()
        self.rates.start()
        if self.notify is not None:
            self.notify.start()

    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        self.rates.stop()
        closing = []
        if self.notify is not None:
            closing.append(self.notify.stop())
        if self.hook is not None:
            closing.append(close_client(self.hook.client))
        super().stopService()
        return defer.gatherResults([d for d in closing if d is not None])
