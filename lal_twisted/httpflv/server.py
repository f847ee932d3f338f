"""HTTP-FLV: serve a live stream as an endless FLV body (``GET /live/test.flv``)."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web import resource, server
from twisted.web.http import NOT_FOUND
from twisted.web.iweb import IRequest

from lal_twisted.hub.registry import StreamRegistry, stream_key
from lal_twisted.hub.sink import Sink
from lal_twisted.hub.stream import Stream
from lal_twisted.log import Logger
from lal_twisted.media import amf0, flv
from lal_twisted.media.packet import AVPacket

log = Logger("lal_twisted.httpflv.server")

_FLV_HEADERS = {(a, v): flv.file_header(has_audio=a, has_video=v)
                for a in (False, True) for v in (False, True)}


def stream_flags(stream: Stream) -> tuple[bool, bool]:
    """(has_audio, has_video) for the FLV header: from onMetaData's codec ids when
    present, else from the sequence headers seen.  Players such as ffmpeg wait
    for every stream the header announces, so it must not over-promise."""
    if stream.metadata is not None:
        try:
            values = amf0.decode(stream.metadata.payload)
        except amf0.AMF0Error:
            values = []
        meta = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
        has_audio = "audiocodecid" in meta
        has_video = "videocodecid" in meta
        if has_audio or has_video:
            return has_audio, has_video
    if stream.audio_header is not None or stream.video_header is not None:
        return stream.audio_header is not None, stream.video_header is not None
    return stream.has_audio or not stream.has_video, stream.has_video or not stream.has_audio


def encode_flv(packet: AVPacket) -> bytes:
    """The FLV tag for one packet; cached on the packet, shared by all players."""
    data = packet.flv_cache
    if data is None:
        data = packet.flv_cache = flv.encode_tag(packet.kind, packet.timestamp, packet.payload)
    return data


class FlvSink(Sink):
    """A player's side of a Stream: writes shared FLV tag bytes to an HTTP response."""

    protocol_name = "httpflv"

    def __init__(self, request: server.Request, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.header_sent = False

    def encode(self, packet: AVPacket) -> bytes:
        return encode_flv(packet)

    def send(self, packet: AVPacket) -> None:
        # The FLV header waits for the first packet, when the stream's tracks are known.
        if not self.header_sent and self.stream is not None and self.stream.publisher is not None:
            self.header_sent = True
            self.emit(_FLV_HEADERS[stream_flags(self.stream)])
        super().send(packet)

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def disconnect(self, reason: str) -> None:
        self.request.close_reason = reason  # type: ignore[attr-defined]
        transport = self.request.channel.transport
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]


def parse_flv_path(path: str, url_pattern: str) -> tuple[str, str] | None:
    """``/live/test.flv`` -> ``("live", "test")``; None when the path is not a stream."""
    if not path.startswith(url_pattern) or not path.endswith(".flv"):
        return None
    rest = path[1:-4]
    app, _, name = rest.rpartition("/")
    if not name:
        return None
    return app, name


class HttpFlvResource(resource.Resource):
    """Serves every ``{url_pattern}{app}/{stream}.flv`` path as a live FLV stream."""

    isLeaf = True

    def __init__(
        self,
        registry: StreamRegistry,
        reactor: IReactorTime,
        url_pattern: str = "/",
        gop_num: int | None = None,
        stall_timeout: float = 10.0,
        max_backlog_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.reactor = reactor
        self.url_pattern = url_pattern
        self.gop_num = gop_num
        self.stall_timeout = stall_timeout
        self.max_backlog_bytes = max_backlog_bytes

    def render_OPTIONS(self, request: server.Request) -> bytes:  # noqa: N802 - twisted.web
        _cors(request)
        request.setHeader(b"Access-Control-Allow-Methods", b"GET, OPTIONS")
        request.setHeader(b"Access-Control-Allow-Headers", b"*")
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        path = request.path.decode("utf-8", "replace")
        parsed = parse_flv_path(path, self.url_pattern)
        _cors(request)
        if parsed is None:
            request.setResponseCode(NOT_FOUND)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return (f"not found: {path} (streams are served as "
                    f"{self.url_pattern}APP/STREAM.flv)\n").encode()
        key = stream_key(*parsed)
        peer = request.getClientAddress()
        who = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        request.setHeader(b"Content-Type", b"video/x-flv")
        request.setHeader(b"Cache-Control", b"no-cache")
        sink = FlvSink(request, reactor=self.reactor, stall_timeout=self.stall_timeout,
                       max_backlog_bytes=self.max_backlog_bytes)
        request.registerProducer(sink, True)
        started = time.monotonic()
        sink.begin_burst()  # FLV header and cached GOP in one write
        stream = self.registry.subscribe(key, sink, self.gop_num)
        sink.end_burst()
        log.info("httpflv session {peer} playing {key} started ({state})", peer=who, key=key,
                 state="live" if stream.publisher else "waiting for publisher")

        def finished(result: Any) -> None:
            self.registry.unsubscribe(key, sink)
            sink.stopProducing()
            reason = getattr(request, "close_reason", None)
            if reason is None:
                reason = "player closed" if result is not None else "done"
            log.info("httpflv session {peer} ended: stream={key} bytes_out={bout} "
                     "duration={dur:.1f}s reason={why}", peer=who, key=key,
                     bout=sink.bytes_out, dur=time.monotonic() - started, why=reason)

        request.notifyFinish().addBoth(finished)
        return server.NOT_DONE_YET


def _cors(request: IRequest) -> None:
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
