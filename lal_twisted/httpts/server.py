"""HTTP-TS: serve a live stream as an endless MPEG-TS body (``GET /live/test.ts``).

:class:`HttpTsResource` is mounted on the HTTP router under
``httpts.url_pattern`` with the suffix ``.ts``; each request becomes a
``TSSUB`` session, with the access checks, CORS, GOP cache and flow control
every HTTP player has (:mod:`lal_twisted.web.player`).  The TS packets are
the stream's shared muxer's (``stream.ts_muxer``): each packet is muxed once
for every HLS, HTTP-TS and recording consumer.
"""

from __future__ import annotations

from typing import Any

from lal_twisted.hub.session import TS_PLAYER
from lal_twisted.hub.stream import Stream
from lal_twisted.media.packet import DATA, AVPacket
from lal_twisted.media.ts import TsMuxer
from lal_twisted.web.player import HttpSink, LiveStreamResource

__all__ = ["HttpTsResource", "TsSink"]


class TsSink(HttpSink):
    """A player's side of a Stream: PAT and PMT, then the stream's shared TS
    packets from a keyframe on."""

    protocol_name = "httpts"
    encoder: TsMuxer

    def __init__(self, request: Any, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.headers_sent = 0  # PAT/PMT pairs written: their continuity counter
        self._need_header = True

    def start(self, stream: Stream) -> None:
        self.encoder = stream.ts_muxer
        super().start(stream)

    def publish_started(self, stream: Stream) -> None:
        # A new publisher may bring other tracks: PAT/PMT again before its media.
        self._need_header = True
        super().publish_started(stream)

    def send(self, packet: AVPacket) -> None:
        # PAT/PMT wait for the first frame: by then the sequence headers told the tracks.
        if (self._need_header and packet.kind != DATA and not packet.is_sequence_header
                and self.stream is not None and self.stream.publisher is not None):
            self._need_header = False
            self.emit(self.encoder.header(self.headers_sent))
            self.headers_sent += 1
        super().send(packet)


class HttpTsResource(LiveStreamResource):
    """Serves every routed ``.../APP/STREAM.ts`` path as a live MPEG-TS stream."""

    suffix = ".ts"
    content_type = b"video/mp2t"
    session_prefix = TS_PLAYER
    protocol = "httpts"
    sink_class = TsSink
