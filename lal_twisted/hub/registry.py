"""StreamRegistry: the service that mediates publisher-to-subscriber flow."""

from __future__ import annotations

from typing import Any

from twisted.application import service

from lal_twisted.hub.sink import IStreamSink
from lal_twisted.hub.stream import Stream
from lal_twisted.log import Logger

log = Logger("lal_twisted.hub.registry")


class StreamBusy(Exception):
    """A publisher tried to publish a stream key that is already live."""


def stream_key(app: str, name: str) -> str:
    """The registry key for an app and stream name ("live", "test" -> "live/test")."""
    app = app.strip("/")
    return f"{app}/{name}" if app else name


class StreamRegistry(service.Service):
    """All live streams, by key.  Protocols publish into it and subscribe from it.

    ``gop_num`` and ``single_gop_max_frame_num`` size each stream's GOP cache.
    """

    name = "registry"

    def __init__(self, gop_num: int = 1, single_gop_max_frame_num: int = 0) -> None:
        self.gop_num = gop_num
        self.single_gop_max_frame_num = single_gop_max_frame_num
        self.streams: dict[str, Stream] = {}

    def get(self, key: str) -> Stream | None:
        return self.streams.get(key)

    def _stream(self, key: str) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            stream = Stream(key, self.gop_num, self.single_gop_max_frame_num)
            self.streams[key] = stream
        return stream

    def publish(self, key: str, publisher: Any) -> Stream:
        """Make ``publisher`` the source of ``key``; raises StreamBusy if it is live."""
        stream = self._stream(key)
        if stream.publisher is not None and stream.publisher is not publisher:
            raise StreamBusy(key)
        stream.start_publish(publisher)
        log.info("stream {key} publishing from {who} ({subs} players waiting)", key=key,
                 who=getattr(publisher, "description", publisher), subs=len(stream.sinks))
        return stream

    def unpublish(self, key: str, publisher: Any) -> None:
        stream = self.streams.get(key)
        if stream is None or stream.publisher is not publisher:
            return
        stream.stop_publish()
        log.info("stream {key} unpublished ({n} packets in)", key=key, n=stream.packets_in)
        self._discard_if_idle(stream)

    def subscribe(self, key: str, sink: IStreamSink, gop_num: int | None = None) -> Stream:
        """Attach ``sink``; it waits if nobody publishes ``key`` yet.  ``gop_num``
        limits how many cached GOPs it is sent first (None: all the cache holds)."""
        stream = self._stream(key)
        stream.add_sink(sink, gop_num)
        return stream

    def unsubscribe(self, key: str, sink: IStreamSink) -> None:
        stream = self.streams.get(key)
        if stream is None:
            return
        stream.remove_sink(sink)
        self._discard_if_idle(stream)

    def _discard_if_idle(self, stream: Stream) -> None:
        if stream.idle and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]

    def stats(self) -> list[dict[str, Any]]:
        return [s.stats() for s in self.streams.values()]

    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        for stream in list(self.streams.values()):
            for sink in list(stream.sinks):
                sink.close("server shutting down")
            if stream.publisher is not None:
                stream.publisher.close("server shutting down")
        return super().stopService()
