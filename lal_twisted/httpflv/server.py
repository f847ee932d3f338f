"""HTTP-FLV: serve a live stream as an endless FLV body (``GET /live/test.flv``).

:class:`HttpFlvResource` is mounted on the HTTP router under
``httpflv.url_pattern`` with the suffix ``.flv``; each request becomes an
``FLVSUB`` session.  Sessions, access checks, CORS and flow control are the
shared machinery of :mod:`lal_twisted.web.player`; this module adds what is
FLV's: the file header and the shared FLV tag encoder.
"""

from __future__ import annotations

from typing import Any

from lal_twisted.hub.session import FLV_PLAYER
from lal_twisted.hub.stream import Stream
from lal_twisted.media import flv
from lal_twisted.web.player import HttpSink, LiveStreamResource, parse_stream_path

__all__ = ["FlvSink", "HttpFlvResource", "parse_flv_path", "stream_flags"]

_FLV_HEADERS = {(a, v): flv.file_header(has_audio=a, has_video=v)
                for a in (False, True) for v in (False, True)}


def stream_flags(stream: Stream) -> tuple[bool, bool]:
    """(has_audio, has_video) for the FLV header, from the stream's tracks
    (announced by onMetaData, or seen); both when nothing is known yet.
    Players such as ffmpeg wait for every track the header announces, so it
    must not over-promise."""
    tracks = stream.tracks
    if tracks.audio is None and tracks.video is None:
        return True, True
    return tracks.audio is not None, tracks.video is not None


def flv_header(stream: Stream) -> bytes:
    """The 13-byte FLV file header for ``stream``'s tracks."""
    return _FLV_HEADERS[stream_flags(stream)]


class FlvSink(HttpSink):
    """A player's side of a Stream: writes shared FLV tag bytes to an HTTP response."""

    protocol_name = "httpflv"
    encoder = flv.TAG_ENCODER

    def __init__(self, request: Any, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.header_sent = False

    def send(self, packet: Any) -> None:
        # The FLV header waits for the first packet, when the stream's tracks are known.
        if not self.header_sent and self.stream is not None and self.stream.publisher is not None:
            self.header_sent = True
            self.emit(flv_header(self.stream))
        super().send(packet)


def parse_flv_path(path: str) -> tuple[str, str] | None:
    """``/live/test.flv`` -> ``("live", "test")``; None when the path is not a stream."""
    return parse_stream_path(path, ".flv")


class HttpFlvResource(LiveStreamResource):
    """Serves every routed ``.../APP/STREAM.flv`` path as a live FLV stream."""

    suffix = ".flv"
    content_type = b"video/x-flv"
    session_prefix = FLV_PLAYER
    protocol = "httpflv"
    sink_class = FlvSink
