"""What the control plane's parts read of the server, and nothing more.

The API, notify, the HTTP hook, metrics and the status page each take a
:class:`ServerContext`, not the whole service: the registry and the config,
the reactor, the frame rates, and the few other pieces some of them use (the
relays for the pull endpoints, the connection guard for the blacklist, the
listeners and routers the status page links to).  The service fills it in as
it builds those pieces (relays come after the control plane, whose events
must be subscribed first).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lal_twisted.api import stat

if TYPE_CHECKING:
    from lal_twisted.config import Config
    from lal_twisted.hub.registry import StreamRegistry

__all__ = ["ServerContext"]


@dataclass(eq=False)
class ServerContext:
    config: Config
    registry: StreamRegistry
    reactor: Any
    rates: stat.FrameRates
    start_time: float = field(default_factory=time.time)
    relays: Any = None  # the RelayManager: start_pull, find_pull, stop_pull, pulls
    guard: Any = None  # the ConnectionGuard of the media listeners: block(ip, seconds)
    listeners: Mapping[str, Any] = field(default_factory=dict)  # by name, as LalService has them
    routers: Mapping[str, Any] = field(default_factory=dict)  # the HTTP routers by listener
    notify: Any = None  # the HttpNotify when http_notify is on (metrics read its counters)
    api_guard: Any = None  # the ApiGuard every page of the API listener is behind

    @property
    def server_id(self) -> str:
        return self.config.server_id

    def lal_info(self) -> dict[str, Any]:
        return stat.lal_info(self.server_id, self.start_time)

    def pulls(self) -> dict[str, Any]:
        """The relay pulls by stream key, live or trying (for the stat groups)."""
        return self.relays.pulls if self.relays is not None else {}
