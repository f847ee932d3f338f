"""HTTP-FLV: serve a live stream as an endless FLV body (``GET /live/test.flv``),
or in WebSocket messages (``ws://.../live/test.flv``).

:class:`HttpFlvResource` is mounted on the HTTP router under
``httpflv.url_pattern`` with the suffix ``.flv``; each request becomes an
``FLVSUB`` session.  Sessions, access checks, CORS and flow control are the
shared machinery of :mod:`lal_twisted.web.player`; this module adds what is
FLV's: the sink (:mod:`lal_twisted.httpflv.sink`) and the WebSocket upgrade.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.web import server

from lal_twisted.httpflv import websocket
from lal_twisted.httpflv.sink import FlvSink, stream_flags
from lal_twisted.hub.ports import StreamView
from lal_twisted.hub.session import FLV_PLAYER, Session
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.player import HttpSink, LiveStreamResource, parse_stream_path

__all__ = ["FlvSink", "HttpFlvResource", "parse_flv_path", "stream_flags"]


def parse_flv_path(path: str) -> tuple[str, str] | None:
    """``/live/test.flv`` -> ``("live", "test")``; None when the path is not a stream."""
    return parse_stream_path(path, ".flv")


class HttpFlvResource(LiveStreamResource):
    """Serves every routed ``.../APP/STREAM.flv`` path as a live FLV stream.

    A WebSocket-FLV player is an ``httpflv`` session like any other (its URL
    says ``ws://``), so every check keyed by protocol (simple_auth's
    ``sub_httpflv_enable``, hooks, stats) covers it the same way, as in lal."""

    suffix = ".flv"
    content_type = b"video/x-flv"
    session_prefix = FLV_PLAYER
    protocol = ProtocolName.HTTP_FLV
    sink_class = FlvSink

    def __init__(self, *args: Any, websocket: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websocket = websocket

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        if self.websocket and websocket.is_upgrade(request):
            return websocket.render_upgrade(self, request)
        return super().render_GET(request)

    def _accepted(self, stream: StreamView, request: server.Request, session: Session,
                  sink: HttpSink) -> None:
        if isinstance(sink, websocket.WsFlvSink):
            started = time.monotonic()
            websocket.upgrade(request, sink, self.reactor, session,
                              lambda reason: self._finished(reason, session, sink, started))
            return
        super()._accepted(stream, request, session, sink)
