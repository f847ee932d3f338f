"""lal's HTTP notify: JSON POSTs to a backend when the server starts, streams
and sessions come and go, RTMP clients connect and HLS segments are made,
and every ``update_interval_sec`` with the state of every stream.

The event handlers only build the payload and queue it.  One request is in
flight at a time, so a backend sees events in the order they happened
(on_pub_start before the on_sub_start of a player that joined after it).  The
queue holds at most ``queue_max`` events, and one ``on_update`` (a newer one
replaces it): when the backend is slow or down, the oldest waiting event is
dropped and counted, and one log line per update interval says how many went.
Media never waits for any of it.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

from treq.client import HTTPClient
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web._newclient import RequestTransmissionFailed
from twisted.web.client import Agent, ResponseFailed
from twisted.web.http_headers import Headers

from lal_twisted.api import stat
from lal_twisted.api.bounded_pool import BoundedHeadPool
from lal_twisted.config import HttpNotifyConfig
from lal_twisted.hls.manager import HlsSegmentMade
from lal_twisted.hub.events import (
    PlayStarted,
    PlayStopped,
    PublishStarted,
    PublishStopped,
    RelayPullStarted,
    RelayPullStopped,
    ServerStarted,
    SessionEvent,
)
from lal_twisted.hub.session import Session
from lal_twisted.log import Logger, safe
from lal_twisted.rtmp.server import RtmpConnected

if TYPE_CHECKING:
    from lal_twisted.api.context import ServerContext

__all__ = ["HttpNotify", "close_client", "describe_failure", "json_client", "post_json",
           "timed_out"]

log = Logger("lal_twisted.api.notify")

_JSON = Headers({b"Content-Type": [b"application/json"], b"User-Agent": [b"lal-twisted"]})
# A callback's answer body is read and thrown away; past this it is not read
# further (the request still counts as delivered).  Its status line and headers
# are bounded by the pool (bounded_pool: past the bound the request fails).
_MAX_ANSWER = 64 * 1024

# lal's notify events of the sessions (the config's keys, the logs' names).
_SESSION_EVENTS: dict[type[SessionEvent], str] = {
    PublishStarted: "on_pub_start",
    PublishStopped: "on_pub_stop",
    PlayStarted: "on_sub_start",
    PlayStopped: "on_sub_stop",
    RelayPullStarted: "on_relay_pull_start",
    RelayPullStopped: "on_relay_pull_stop",
}


def json_client(reactor: Any, connect_timeout: float) -> HTTPClient:
    """A treq client with its own connection pool (a few kept-alive connections
    per backend host; answers with a bounded head)."""
    pool = BoundedHeadPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    pool.retryAutomatically = False
    client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=connect_timeout))
    client.lal_pool = pool  # type: ignore[attr-defined]  # closed when the server stops
    return client


def close_client(client: HTTPClient) -> Any:
    """Close the kept-alive connections of a :func:`json_client`."""
    pool = getattr(client, "lal_pool", None)
    return pool.closeCachedConnections() if pool is not None else None


def post_json(client: HTTPClient, url: str, body: bytes, timeout: float,
              reactor: IReactorTime) -> defer.Deferred[int]:
    """POST ``body`` to ``url``; fires with the HTTP status once the answer was
    read (at most _MAX_ANSWER bytes of it), or fails (connection error, timeout)."""
    d: defer.Deferred[Any] = client.post(url, data=body, headers=_JSON)

    def read(response: Any) -> defer.Deferred[int]:
        done = _drain(response)
        return done.addCallback(lambda _: int(response.code))

    d.addCallback(read)
    d.addTimeout(timeout, reactor)
    return d


def timed_out(failure: Failure) -> bool:
    """True when ``failure`` is :func:`post_json`'s timeout (the Agent reports a
    cancelled request as ResponseNeverReceived / RequestTransmissionFailed
    wrapping the CancelledError)."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return True
    if failure.check(ResponseFailed, RequestTransmissionFailed):
        reasons = getattr(failure.value, "reasons", [])
        return any(r.check(defer.CancelledError) for r in reasons)
    return False


def describe_failure(failure: Failure) -> str:
    """One line for a failed request (the first reason of a wrapped failure)."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return reasons[0].getErrorMessage()
    return failure.getErrorMessage()


def _drain(response: Any) -> defer.Deferred[None]:
    from twisted.internet.protocol import Protocol

    finished: defer.Deferred[None] = defer.Deferred()

    class Discard(Protocol):
        received = 0

        def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
            self.received += len(data)
            if self.received > _MAX_ANSWER and self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
            if not finished.called:
                finished.callback(None)

    response.deliverBody(Discard())
    return finished


class HttpNotify:
    """The http_notify callbacks: it subscribes to the registry's events."""

    def __init__(self, config: HttpNotifyConfig, context: ServerContext,
                 client: HTTPClient | None = None) -> None:
        self.config = config
        self.context = context
        self.server_id = context.server_id
        self.registry = context.registry
        self.reactor = context.reactor
        self.timeout = config.timeout_ms / 1000.0
        self.client = client or json_client(self.reactor, self.timeout)
        self.queue: deque[tuple[str, str, dict[str, Any]]] = deque()
        self.sent = 0  # answered 2xx
        self.failed = 0  # answered otherwise, unreachable or timed out
        self.dropped = 0  # pushed out of a full queue
        self._dropped_logged = 0
        self._failed_logged = 0
        self._failing = False  # the last request failed (its failure was logged)
        self._busy = False
        self._stopped = False
        self._inflight: defer.Deferred[Any] | None = None
        self._updates = task.LoopingCall(self._update)
        self._updates.clock = self.reactor
        events = self.registry.events
        events.subscribe(ServerStarted, self._server_started)
        for event_type in _SESSION_EVENTS:
            events.subscribe(event_type, self._session_event)
        events.subscribe(RtmpConnected, self._rtmp_connected)
        events.subscribe(HlsSegmentMade, self._hls_segment_made)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._stopped = False
        if not self._updates.running:
            self._updates.start(self.config.update_interval_sec, now=False)

    def stop(self) -> Any:
        """Stop sending: the request in flight is abandoned, waiting events are dropped."""
        self._stopped = True
        if self._updates.running:
            self._updates.stop()
        self.queue.clear()
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.cancel()
        return close_client(self.client)

    # -- events ----------------------------------------------------------------------
    def _server_started(self, event: ServerStarted) -> None:
        self._queue("on_server_start", self.config.on_server_start, self.context.lal_info())

    def _session_event(self, event: SessionEvent) -> None:
        name = _SESSION_EVENTS[type(event)]
        self._session(name, getattr(self.config, name), event.session)

    def _rtmp_connected(self, event: RtmpConnected) -> None:
        if self.config.on_rtmp_connect:
            session = event.session
            self._queue("on_rtmp_connect", self.config.on_rtmp_connect, {
                "server_id": self.server_id, "session_id": session.id,
                "remote_addr": session.remote_addr, "app": event.app,
                "flashVer": event.flash_ver, "tcUrl": event.tc_url})

    def _hls_segment_made(self, event: HlsSegmentMade) -> None:
        if self.config.on_hls_make_ts:
            self._queue("on_hls_make_ts", self.config.on_hls_make_ts,
                        {"server_id": self.server_id, **event.info.as_dict()})

    def _update(self) -> None:
        self._log_losses()
        if self.config.on_update:
            self._queue("on_update", self.config.on_update, {
                "server_id": self.server_id,
                "groups": stat.all_groups(self.registry, self.context.rates,
                                          self.context.pulls())})

    def _session(self, event: str, url: str, session: Session) -> None:
        if url:
            self._queue(event, url, stat.session_event(session, self.server_id, self.registry))

    # -- the queue --------------------------------------------------------------------
    def _queue(self, event: str, url: str, payload: dict[str, Any]) -> None:
        if not url or self._stopped:
            return
        if event == "on_update":
            # An update waiting behind a slow backend is stale once the next one
            # is made, and it is the big payload (every stream and session): at
            # most one waits.
            stale = next((item for item in self.queue if item[0] == "on_update"), None)
            if stale is not None:
                self.queue.remove(stale)
                self.dropped += 1
        if len(self.queue) >= self.config.queue_max:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append((event, url, payload))
        if not self._busy:
            self._send_next()

    def _send_next(self) -> None:
        self._inflight = None
        if not self.queue or self._stopped:
            self._busy = False
            return
        self._busy = True
        event, url, payload = self.queue.popleft()
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        d = post_json(self.client, url, body, self.timeout, self.reactor)
        self._inflight = d
        d.addCallbacks(self._answered, self._unreachable, callbackArgs=(event, url),
                       errbackArgs=(event, url))
        # The next request goes from a fresh reactor turn, never from inside this one.
        d.addBoth(self._next_turn)

    def _next_turn(self, _: Any) -> None:
        if not self._stopped:
            self.reactor.callLater(0, self._send_next)

    def _answered(self, code: int, event: str, url: str) -> None:
        if 200 <= code < 300:
            self.sent += 1
            self._failing = False
            return
        self.failed += 1
        self._log_failure(event, url, f"HTTP {code}")

    def _unreachable(self, failure: Failure, event: str, url: str) -> None:
        if self._stopped:
            return  # abandoned at shutdown
        self.failed += 1
        why = (f"no answer within {self.timeout:g}s" if timed_out(failure)
               else describe_failure(failure))
        self._log_failure(event, url, why)

    def _log_failure(self, event: str, url: str, why: str) -> None:
        # The first failure (after a success) is logged; the rest are counted
        # and summed up once per update interval.
        if not self._failing:
            self._failing = True
            self._failed_logged = self.failed
            log.warn("http notify {event} to {url} failed: {why}", event=event, url=safe(url),
                     why=safe(why))

    def _log_losses(self) -> None:
        if self.dropped > self._dropped_logged:
            log.warn("http notify: {n} events dropped (queue full at {max}; the callback "
                     "server is slow or down)", n=self.dropped - self._dropped_logged,
                     max=self.config.queue_max)
            self._dropped_logged = self.dropped
        if self.failed > self._failed_logged:
            log.warn("http notify: {n} more requests failed", n=self.failed - self._failed_logged)
            self._failed_logged = self.failed

    @property
    def queue_length(self) -> int:
        return len(self.queue)

