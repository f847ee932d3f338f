"""HTTP-TS: serve a live stream as an endless MPEG-TS body (``GET /live/test.ts``).

:class:`HttpTsResource` is mounted on the HTTP router under
``httpts.url_pattern`` with the suffix ``.ts``; each request becomes a
``TSSUB`` session, with the access checks, CORS, GOP cache and flow control
every HTTP player has (:mod:`lal_twisted.web.player`).  The TS packets are
the stream's live TS output's (:data:`~lal_twisted.outputs.ts.TS_LIVE`, owned
by the stream): each packet is muxed once for every HTTP-TS player.
"""

from __future__ import annotations

from typing import Any

from lal_twisted.hub.ports import StreamView
from lal_twisted.hub.session import TS_PLAYER
from lal_twisted.media.packet import DATA, AVPacket
from lal_twisted.media.ts import KeyframePsi
from lal_twisted.outputs.ts import TS_LIVE, TsOutput
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.player import HttpSink, LiveStreamResource

__all__ = ["HttpTsResource", "TsSink"]


class TsSink(HttpSink):
    """A player's side of a Stream: the stream's shared TS packets from a
    keyframe on, with PAT and PMT before every video keyframe (a player that
    joins or resyncs mid-stream finds them there); an audio-only output starts
    with PAT and PMT."""

    protocol_name = ProtocolName.HTTP_TS
    encoder: KeyframePsi

    def __init__(self, request: Any, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.headers_sent = 0  # PAT/PMT pairs written: their continuity counter
        self._need_header = True
        self._output: TsOutput | None = None

    def start(self, stream: StreamView) -> None:
        if self._output is None:
            self._output = stream.output(TS_LIVE)
            self.encoder = self._output.keyframe_psi
        super().start(stream)

    def _leave(self) -> None:
        output, self._output = self._output, None
        if output is not None and self.stream is not None:
            self.stream.release(output)

    def close(self, reason: str) -> None:
        self._leave()
        super().close(reason)

    def stopProducing(self) -> None:  # noqa: N802 - Twisted interface
        self._leave()
        super().stopProducing()

    def publish_started(self, stream: StreamView) -> None:
        # A new publisher may bring other tracks: PAT/PMT again before its media.
        self._need_header = True
        super().publish_started(stream)

    def send(self, packet: AVPacket) -> None:
        # PAT/PMT wait for the first frame: by then the sequence headers told the
        # tracks.  With video, the first frame a player gets is a keyframe, which
        # brings them.
        if (self._need_header and packet.kind != DATA and not packet.is_sequence_header
                and self.stream is not None and self.stream.publishing):
            self._need_header = False
            muxer = self.encoder.muxer
            if not muxer.has_video:
                self.emit(muxer.header(self.headers_sent))
                self.headers_sent += 1
        super().send(packet)


class HttpTsResource(LiveStreamResource):
    """Serves every routed ``.../APP/STREAM.ts`` path as a live MPEG-TS stream."""

    suffix = ".ts"
    content_type = b"video/mp2t"
    session_prefix = TS_PLAYER
    protocol = ProtocolName.HTTP_TS
    sink_class = TsSink
