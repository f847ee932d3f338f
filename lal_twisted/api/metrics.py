"""Prometheus metrics (``/metrics`` on the HTTP listener).

A custom collector reads the registry when Prometheus scrapes: nothing is
added to the media path.  The few totals that outlive their sessions (bytes
and dropped packets of sessions that ended, refusals, stalls) are kept by a
subscriber of the session events, once per event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import resource
from twisted.web.http import NOT_ALLOWED
from twisted.web.iweb import IRequest

from lal_twisted.hub.access import RefusalKind, Refused
from lal_twisted.hub.events import EventBus, SessionRefused, SessionStarted, SessionStopped
from lal_twisted.hub.ports import IFlowCounts
from lal_twisted.web.router import plain_error

if TYPE_CHECKING:
    from lal_twisted.api.context import ServerContext

__all__ = ["MetricsResource", "ServerCollector", "SessionTotals", "refusal_reason"]


def refusal_reason(refusal: Refused) -> str:
    """A small fixed set of label values: the refusal's kind, and for a denial
    the control plane's check that said no (simple_auth, http_hook)."""
    if refusal.kind is RefusalKind.DENIED and refusal.check in ("simple_auth", "http_hook"):
        return refusal.check
    return str(refusal.kind)


class SessionTotals:
    """What ended sessions leave behind, for counters that never go down."""

    def __init__(self, events: EventBus) -> None:
        self.started: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[str] = Counter()
        self.ended_bytes_in = 0
        self.ended_bytes_out = 0
        self.ended_dropped = 0
        self.stalls = 0
        events.subscribe(SessionStarted, self._started)
        events.subscribe(SessionStopped, self._stopped)
        events.subscribe(SessionRefused, self._refused)

    def _started(self, event: SessionStarted) -> None:
        session = event.session
        self.started[(session.protocol, str(session.role))] += 1

    def _stopped(self, event: SessionStopped) -> None:
        session = event.session
        self.ended_bytes_in += session.bytes_in
        self.ended_bytes_out += session.total_out()
        sink = session.sink
        if IFlowCounts.providedBy(sink):
            self.ended_dropped += sink.packets_dropped
            if sink.stalled:
                self.stalls += 1

    def _refused(self, event: SessionRefused) -> None:
        self.refused[refusal_reason(event.refusal)] += 1


class ServerCollector:
    """Reads the registry (and the notify queue) at scrape time."""

    def __init__(self, context: ServerContext, totals: SessionTotals) -> None:
        self.context = context
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        registry, totals = self.context.registry, self.totals
        streams = list(registry.streams.values())
        sessions = list(registry.sessions.values())
        yield GaugeMetricFamily("lals_streams_live", "Streams with a publisher",
                                value=sum(1 for s in streams if s.publisher is not None))
        by_kind: Counter[tuple[str, str]] = Counter(
            (s.protocol, str(s.role)) for s in sessions)
        live = GaugeMetricFamily("lals_sessions", "Sessions now, by protocol and role",
                                 labels=["protocol", "role"])
        for (protocol, role), n in sorted(by_kind.items()):
            live.add_metric([protocol, role], n)
        yield live
        started = CounterMetricFamily("lals_sessions_started",
                                      "Sessions accepted, by protocol and role",
                                      labels=["protocol", "role"])
        for (protocol, role), n in sorted(totals.started.items()):
            started.add_metric([protocol, role], n)
        yield started
        refused = CounterMetricFamily("lals_sessions_refused",
                                      "Publishes and plays refused, by reason",
                                      labels=["reason"])
        for reason, n in sorted(totals.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily(
            "lals_received_bytes", "Bytes received from publishers and players",
            value=totals.ended_bytes_in + sum(s.bytes_in for s in sessions))
        yield CounterMetricFamily(
            "lals_sent_bytes", "Bytes sent to players and publishers",
            value=totals.ended_bytes_out + sum(s.total_out() for s in sessions))
        dropped = sum(sink.packets_dropped for s in streams for sink in s.sinks
                      if IFlowCounts.providedBy(sink))
        yield CounterMetricFamily(
            "lals_player_dropped_packets", "Packets not sent to players that read too slowly",
            value=totals.ended_dropped + dropped)
        yield CounterMetricFamily(
            "lals_player_stall_disconnects",
            "Players disconnected for not reading (subscriber.stall_timeout_ms)",
            value=totals.stalls)
        yield GaugeMetricFamily("lals_gop_cache_bytes", "Bytes held by the GOP caches",
                                value=sum(s.gop_cache.bytes for s in streams))
        notify = self.context.notify
        yield GaugeMetricFamily("lals_notify_queue_length", "HTTP notify events waiting",
                                value=notify.queue_length if notify else 0)
        yield CounterMetricFamily("lals_notify_dropped",
                                  "HTTP notify events dropped from a full queue",
                                  value=notify.dropped if notify else 0)
        yield CounterMetricFamily("lals_notify_failed",
                                  "HTTP notify requests that failed or timed out",
                                  value=notify.failed if notify else 0)


def build_registry(context: ServerContext, totals: SessionTotals) -> CollectorRegistry:
    """A registry of our own (not the process-global one), so two servers in one
    process each report their own figures."""
    reg = CollectorRegistry(auto_describe=True)
    reg.register(ServerCollector(context, totals))  # type: ignore[arg-type]
    ProcessCollector(registry=reg)
    return reg


class MetricsResource(resource.Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return plain_error(request, NOT_ALLOWED, "method not allowed (GET, HEAD)")
        body: Any = generate_latest(self.registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Cache-Control", b"no-cache")
        return bytes(body)
