"""HTTP-FLV: serve a live stream as an endless FLV body (``GET /live/test.flv``).

:class:`HttpFlvResource` is mounted on the HTTP router under
``httpflv.url_pattern`` with the suffix ``.flv``; each request becomes an
``FLVSUB`` session that goes through the registry's access chain (403 when
refused, 404 when the stream is refused as not found) before its sink is
attached.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import BAD_REQUEST, FORBIDDEN, INTERNAL_SERVER_ERROR, NOT_ALLOWED, NOT_FOUND
from twisted.web.iweb import IRequest

from lal_twisted.httpflv import websocket
from lal_twisted.httpflv.sink import FlvSink, abort, stream_flags
from lal_twisted.hub.registry import Refused, SessionGone, StreamRegistry
from lal_twisted.hub.session import FLV_PLAYER, Session
from lal_twisted.hub.stream import Stream
from lal_twisted.log import Logger
from lal_twisted.web.router import plain_error, route_path

__all__ = ["FlvSink", "HttpFlvResource", "parse_flv_path", "stream_flags"]

log = Logger("lal_twisted.httpflv.server")

# Every other method answers 405 (twisted.web would answer 501, or 405 with HTML).
_METHODS = (b"GET", b"HEAD", b"OPTIONS")
_ALLOW = b", ".join(_METHODS)

def parse_flv_path(path: str) -> tuple[str, str] | None:
    """``/live/test.flv`` -> ``("live", "test")``; None when the path is not a stream."""
    if not path.endswith(".flv"):
        return None
    app, _, name = path[1:-4].rpartition("/")
    if not name:
        return None
    return app, name


class HttpFlvResource(resource.Resource):
    """Serves every routed ``.../APP/STREAM.flv`` path as a live FLV stream."""

    isLeaf = True

    def __init__(
        self,
        registry: StreamRegistry,
        reactor: IReactorTime,
        gop_num: int | None = None,
        stall_timeout: float = 10.0,
        max_backlog_bytes: int = 2 * 1024 * 1024,
        wait_timeout: float = 0.0,
        websocket: bool = True,
    ) -> None:
        super().__init__()
        self.websocket = websocket
        self.wait_timeout = wait_timeout
        self.registry = registry
        self.reactor = reactor
        self.gop_num = gop_num
        self.stall_timeout = stall_timeout
        self.max_backlog_bytes = max_backlog_bytes

    def render(self, request: server.Request) -> Any:
        if request.method not in _METHODS:
            request.setHeader(b"Allow", _ALLOW)
            method = request.method.decode("ascii", "replace")
            return plain_error(request, NOT_ALLOWED,
                               f"method {method} not allowed (allowed: {_ALLOW.decode()})")
        return super().render(request)

    def render_OPTIONS(self, request: server.Request) -> bytes:  # noqa: N802 - twisted.web
        _cors(request)
        request.setHeader(b"Access-Control-Allow-Methods", _ALLOW)
        request.setHeader(b"Access-Control-Allow-Headers", b"*")
        request.setResponseCode(204)
        return b""

    def render_HEAD(self, request: server.Request) -> bytes:  # noqa: N802 - twisted.web
        """A GET's headers, at once: no player session, no access check."""
        parsed, error = _parse(request)
        if parsed is None:
            # The length of the body a GET would get; twisted.web sends none.
            request.setHeader(b"Content-Length", b"%d" % len(error))
            return b""
        _cors(request)
        request.setHeader(b"Content-Type", b"video/x-flv")
        request.setHeader(b"Cache-Control", b"no-cache")
        return b""

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        if self.websocket and websocket.is_upgrade(request):
            return websocket.render_upgrade(self, request)
        return self.play(request, FlvSink, "http")

    def play(self, request: server.Request, sink_class: type[FlvSink], scheme: str) -> Any:
        """Start a player session for ``request`` with a sink of ``sink_class``.

        A WebSocket-FLV player is an ``httpflv`` session like any other (its URL
        says ``ws://``), so every check keyed by protocol (simple_auth's
        ``sub_httpflv_enable``, hooks, stats) covers it the same way, as in lal."""
        parsed, error = _parse(request)
        if parsed is None:
            return error
        peer = request.getClientAddress()
        who = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        session = self.registry.new_session(FLV_PLAYER, "httpflv", who,
                                            closer=lambda reason: abort(request, reason))
        session.app, session.stream = parsed
        session.query = request.uri.decode("utf-8", "replace").partition("?")[2]
        host = (request.getHeader(b"host") or b"").decode("utf-8", "replace")
        session.url = f"{scheme}://{host}{request.uri.decode('utf-8', 'replace')}"
        sink = sink_class(request, reactor=self.reactor, stall_timeout=self.stall_timeout,
                          max_backlog_bytes=self.max_backlog_bytes,
                          wait_timeout=self.wait_timeout)
        request.lal_sink = sink  # type: ignore[attr-defined]  # for lal_twisted.limits
        sink.begin_burst()  # FLV header and cached GOP in one write
        started = time.monotonic()
        request.notifyFinish().addBoth(self._finished, session, sink, started)
        d = self.registry.play(session, sink, self.gop_num)
        d.addCallbacks(self._accepted, self._refused, callbackArgs=(request, session, sink),
                       errbackArgs=(request, session))
        return server.NOT_DONE_YET

    def _accepted(self, stream: Stream, request: server.Request, session: Session,
                  sink: FlvSink) -> None:
        if isinstance(sink, websocket.WsFlvSink):
            started = time.monotonic()
            websocket.upgrade(request, sink, self.reactor, session,
                              lambda reason: self._finished(reason, session, sink, started))
            return
        _cors(request)
        request.setHeader(b"Content-Type", b"video/x-flv")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.registerProducer(sink, True)
        sink.end_burst()
        log.info("httpflv session {id} {peer} playing {key} started ({state})", id=session.id,
                 peer=session.remote_addr, key=session.key,
                 state="live" if stream.publisher else "waiting for publisher")

    def _refused(self, failure: Failure, request: server.Request, session: Session) -> None:
        session.sink = None
        if failure.check(SessionGone):
            return
        if failure.check(Refused):
            refusal: Refused = failure.value  # type: ignore[assignment]
            log.warn("httpflv session {id} {peer} play {key} refused: {why}", id=session.id,
                     peer=session.remote_addr, key=session.key, why=refusal.reason)
            code, text = ((BAD_REQUEST, "bad request") if refusal.bad_name
                          else (NOT_FOUND, "not found") if refusal.not_found
                          else (FORBIDDEN, "forbidden"))
            request.close_reason = f"play refused: {refusal.reason}"  # type: ignore[attr-defined]
            body = plain_error(request, code, f"{text}: {refusal.reason}")
        else:
            log.failure("httpflv session {id}: play failed", failure, id=session.id)
            body = plain_error(request, INTERNAL_SERVER_ERROR, "internal error")
        request.write(body)
        request.finish()

    def _finished(self, result: Any, session: Session, sink: FlvSink, started: float) -> None:
        if session.ended:
            return  # a WebSocket player's connection ends once, whichever way
        session.ended = True
        self.registry.stop_play(session, sink)
        sink.stopProducing()
        request = sink.request
        reason = getattr(request, "close_reason", None)
        if reason is None:
            reason = "player closed" if result is not None else "done"
        log.info("{proto} session {id} {peer} ended: stream={key} bytes_out={bout} "
                 "duration={dur:.1f}s reason={why}", id=session.id, peer=session.remote_addr,
                 key=session.key, bout=sink.bytes_out, dur=time.monotonic() - started,
                 why=reason, proto=sink.protocol_name)


def _parse(request: server.Request) -> tuple[tuple[str, str] | None, bytes]:
    """(app, stream) from the request's path, or None and a 404 body."""
    path = route_path(request) or request.path.decode("utf-8", "replace")
    parsed = parse_flv_path(path)
    if parsed is not None:
        return parsed, b""
    return None, plain_error(request, NOT_FOUND,
                             f"not found: {path} (streams are served as APP/STREAM.flv)")


def _cors(request: IRequest) -> None:
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
