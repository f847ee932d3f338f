"""The HTTP-FLV player's sink: shared FLV tag bytes written to an HTTP response
(and, through :class:`~lal_twisted.httpflv.websocket.WsFlvSink`, to a WebSocket)."""

from __future__ import annotations

from typing import Any

from twisted.web import server

from lal_twisted.hub.ports import StreamView
from lal_twisted.media import flv
from lal_twisted.media.packet import Encoder
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.player import HttpSink, abort

__all__ = ["FlvSink", "abort", "stream_flags"]

_FLV_HEADERS = {(a, v): flv.file_header(has_audio=a, has_video=v)
                for a in (False, True) for v in (False, True)}


def stream_flags(stream: StreamView) -> tuple[bool, bool]:
    """(has_audio, has_video) for the FLV header, from the stream's tracks
    (announced by onMetaData, or seen); both when nothing is known yet.
    Players such as ffmpeg wait for every track the header announces, so it
    must not over-promise."""
    tracks = stream.tracks
    if tracks.audio is None and tracks.video is None:
        return True, True
    return tracks.audio is not None, tracks.video is not None


class FlvSink(HttpSink):
    """A player's side of a Stream: writes shared FLV tag bytes to an HTTP response."""

    protocol_name = ProtocolName.HTTP_FLV
    encoder: Encoder = flv.TAG_ENCODER

    def __init__(self, request: server.Request, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.header_sent = False

    def container_header(self, has_audio: bool, has_video: bool) -> bytes:
        """The bytes before the first tag (the FLV file header)."""
        return _FLV_HEADERS[has_audio, has_video]

    def send(self, packet: Any) -> None:
        # The FLV header waits for the first packet, when the stream's tracks are known.
        if not self.header_sent and self.stream is not None and self.stream.publishing:
            self.header_sent = True
            self.emit(self.container_header(*stream_flags(self.stream)))
        super().send(packet)
