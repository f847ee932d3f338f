"""HLS for every published stream: a subscriber of the registry's publish events
that attaches a segmenter to each publish, and the service that owns the
segmenters and their store.  Each segment made is an :class:`HlsSegmentMade`.

HLS is keyed by stream name, as lal's URLs are (``/hls/STREAM.m3u8``): while
one app publishes a name, the same name published under another app gets no
HLS (one log line).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall

from lal_twisted.hls.segmenter import (
    CLEANUP_IN_THE_END,
    HlsMakeTsInfo,
    HlsStream,
    SegmenterConfig,
)
from lal_twisted.hls.store import DiskStore, MemoryStore, Store
from lal_twisted.hls.tokens import TokenSigner
from lal_twisted.hub.events import (
    Event,
    SessionEvent,
    SourceStarted,
    SourceStopped,
)
from lal_twisted.log import Logger

if TYPE_CHECKING:
    from lal_twisted.config import HlsConfig
    from lal_twisted.hub.registry import StreamRegistry

__all__ = ["HlsManager", "HlsSegmentMade"]

log = Logger("lal_twisted.hls.manager")


@dataclass(frozen=True)
class HlsSegmentMade(Event):
    """An HLS muxer closed a TS segment.  An observer object's method gets
    ``info`` as a dict of lal's on_hls_make_ts fields: ``event``
    ("open"/"close"), ``stream_name``, ``cwd``, ``ts_file``, ``live_m3u8_file``,
    ``record_m3u8_file``, ``id`` (int), ``duration`` (s)."""

    info: HlsMakeTsInfo
    observer_method: ClassVar[str] = "hls_segment_made"

    def observer_args(self) -> tuple[Any, ...]:
        return (self.info.as_dict(),)


def _addr_key(host: str) -> str | None:
    """What viewers are counted by: the address, an IPv6 one's /64 (one
    subscriber's range), None for loopback (a reverse proxy on this machine
    speaks for every client) and for what is not an address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# Packets wait at most this long before the segmenters take them, every
# stream's together (one timer while any stream publishes): one pass over a
# few thousand packets costs much less CPU than a little TS work between every
# two RTMP reads, and each pass has a cost per stream, so fewer passes cost
# less (200 publishers: see bench/README.md).  A segment is finished up to
# that much later, nothing next to its seconds (an HLS player polls its
# playlist once a segment duration); other readers of the stream's TS output
# are not delayed (TsOutput.bytes_of).
DRAIN_EVERY_S = 0.2


class HlsManager(service.Service):
    """Owns every stream name's :class:`HlsStream`, made and ended by the
    registry's publish and relay pull events."""

    name = "hls"

    def __init__(self, registry: StreamRegistry, config: HlsConfig, reactor: Any,
                 store: Store | None = None, token_secret: bytes | None = None) -> None:
        self.registry = registry
        # Viewer tokens, and viewers by address (an IPv6 /64), shared by the
        # HTTP and HTTPS resources.
        self.signer = TokenSigner(token_secret)
        self.viewers_by_addr: dict[str, int] = {}
        self._busy_addr_logged: set[str] = set()
        self.reactor = reactor
        self.config = config
        threshold = config.delete_threshold if config.delete_threshold >= 0 \
            else config.fragment_num
        self.segmenter_config = SegmenterConfig(
            config.fragment_duration_ms, config.fragment_num, threshold,
            config.cleanup_mode, config.out_path)
        if store is None:
            store = (MemoryStore() if config.use_memory_as_disk_flag
                     else DiskStore(os.path.abspath(config.out_path), reactor))
        self.store = store
        self.streams: dict[str, HlsStream] = {}
        self._cleanups: dict[str, IDelayedCall] = {}
        self._busy_logged: set[str] = set()
        self.resources: list[Any] = []  # HTTP resources serving these streams
        self._drainer = LoopingCall(self._drain)
        self._drainer.clock = reactor
        events = registry.events
        events.subscribe(SourceStarted, self._source_started)
        events.subscribe(SourceStopped, self._source_stopped)

    # -- events ----------------------------------------------------------------------
    def _source_started(self, event: SessionEvent) -> None:
        session = event.session
        stream = self.registry.get(session.key)
        if stream is None:
            return
        name = session.stream
        hls = self.streams.get(name)
        if hls is not None and hls.publishing and hls.key != stream.key:
            if name not in self._busy_logged:
                self._busy_logged.add(name)
                log.warn("hls: stream name {name} is already made from {key}; {other} gets "
                         "no HLS while it is", name=name, key=hls.key, other=stream.key)
            return
        self._busy_logged.discard(name)
        call = self._cleanups.pop(name, None)
        if call is not None and call.active():
            call.cancel()
        if hls is None:
            hls = self.streams[name] = HlsStream(name, self.store, self.segmenter_config,
                                                 self._made, self._schedule)
        hls.begin(stream)

    def _source_stopped(self, event: SessionEvent) -> None:
        session = event.session
        hls = self.streams.get(session.stream)
        if hls is None or hls.key != session.key:
            return
        hls.end()
        if self.config.cleanup_mode == CLEANUP_IN_THE_END:
            # Delete a while later, so players can fetch the last segments.
            delay = self.config.fragment_duration_ms * self.config.fragment_num * 2 / 1000.0
            self._cleanups[hls.name] = self.reactor.callLater(delay, self._cleanup, hls.name)

    def _cleanup(self, name: str) -> None:
        self._cleanups.pop(name, None)
        hls = self.streams.get(name)
        if hls is None or hls.publishing:
            return
        del self.streams[name]
        hls.remove_files()
        log.info("hls: files of stream {name} removed (hls.cleanup_mode 1)", name=name)

    def _schedule(self, hls: HlsStream) -> None:
        """``hls`` begins a publish: every stream's packets are taken together,
        every DRAIN_EVERY_S, while any stream publishes."""
        if not self._drainer.running:
            self._drainer.start(DRAIN_EVERY_S, now=False)

    def _drain(self) -> None:
        attached = False
        for hls in list(self.streams.values()):
            hls.drain()
            attached = attached or hls.stream is not None or hls.publishing
        if not attached and self._drainer.running:
            self._drainer.stop()

    def _made(self, info: HlsMakeTsInfo) -> None:
        self.registry.events.emit(HlsSegmentMade(info))

    # -- viewers by address --------------------------------------------------------------
    def viewer_allowed(self, host: str) -> bool:
        """Whether ``host`` may have one more HLS viewer (``hls.max_viewers_per_addr``)."""
        most = self.config.max_viewers_per_addr
        key = _addr_key(host)
        if not most or key is None or self.viewers_by_addr.get(key, 0) < most:
            self._busy_addr_logged.discard(key or "")
            return True
        if key not in self._busy_addr_logged:  # once until it has room again
            self._busy_addr_logged.add(key)
            log.warn("hls: {addr} has {n} viewer sessions; refusing more "
                     "(hls.max_viewers_per_addr)", addr=key, n=most)
        return False

    def viewer_came(self, host: str) -> None:
        key = _addr_key(host)
        if key is not None:
            self.viewers_by_addr[key] = self.viewers_by_addr.get(key, 0) + 1

    def viewer_left(self, host: str) -> None:
        key = _addr_key(host)
        if key is None or key not in self.viewers_by_addr:
            return
        left = self.viewers_by_addr[key] - 1
        if left:
            self.viewers_by_addr[key] = left
        else:
            del self.viewers_by_addr[key]

    # -- lookups for the HTTP resource ---------------------------------------------------
    def get(self, name: str) -> HlsStream | None:
        return self.streams.get(name)

    # -- service -----------------------------------------------------------------------
    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        super().stopService()
        if self._drainer.running:
            self._drainer.stop()
        for hls in self.streams.values():
            hls.drain()
        for call in self._cleanups.values():
            if call.active():
                call.cancel()
        self._cleanups.clear()
        for resource in self.resources:
            resource.close_all()
        for hls in self.streams.values():
            hls.end()
        return self.store.close()  # the reactor waits for the last files
