"""Live streams over one endless HTTP response: what HTTP-FLV and HTTP-TS share.

:class:`LiveStreamResource` serves ``.../APP/STREAM<suffix>``: each GET
becomes a player session (``FLVSUB``, ``TSSUB``...) that goes through the
registry's access chain (403 when refused, 404 when refused as not found,
400 for a bad name) before its sink is attached; the cached GOP and the
container's header go out in one write, then the stream, chunked, with
``Access-Control-Allow-Origin: *``.  HEAD answers what a GET would (the
same checks, 404 when nobody publishes now) without a body or a player,
OPTIONS the CORS preflight, anything else 405.

:class:`HttpSink` is a :class:`~lal_twisted.hub.sink.Sink` writing to the
request, so flow control is the hub's: a player that does not read drops to
the next keyframe, then is disconnected.  A format subclasses both: the sink
says how its bytes are encoded, the resource names its suffix, content type,
session prefix and sink.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import BAD_REQUEST, FORBIDDEN, INTERNAL_SERVER_ERROR, NOT_FOUND
from twisted.web.iweb import IRequest

from lal_twisted.hub.access import RefusalKind
from lal_twisted.hub.ports import StreamView
from lal_twisted.hub.registry import Refused, SessionGone, StreamRegistry
from lal_twisted.hub.session import Session
from lal_twisted.hub.sink import Sink
from lal_twisted.log import Logger
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.router import ReadOnlyResource, plain_error, route_path

__all__ = ["HttpSink", "LiveStreamResource", "http_answer", "parse_stream_path"]

log = Logger("lal_twisted.web.player")

# Every other method answers 405 (twisted.web would answer 501, or 405 with HTML).


def parse_stream_path(path: str, suffix: str) -> tuple[str, str] | None:
    """``/live/test.flv``, ``.flv`` -> ``("live", "test")``; None when the path
    does not name a stream."""
    if not path.endswith(suffix):
        return None
    app, _, name = path[1:len(path) - len(suffix)].rpartition("/")
    if not name:
        return None
    return app, name


class HttpSink(Sink):
    """A player's side of a Stream, written to an HTTP response."""

    def __init__(self, request: server.Request, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request = request

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def disconnect(self, reason: str) -> None:
        request = self.request
        if not request.startedWriting and not request.finished:
            # Nothing sent yet (a player that waited for a publisher): a clear answer.
            request.close_reason = reason  # type: ignore[attr-defined]
            request.unregisterProducer()
            request.write(plain_error(request, NOT_FOUND, f"not found: {reason}"))
            request.finish()
            return
        if self.paused or request.finished or request.channel is None:
            # A player that is not reading would never take the end of the
            # response from a full buffer: reset it.
            abort(request, reason)
            return
        # The stream ended (or the server stops): the terminating chunk, then the
        # connection closes as a clean end (twisted.web resets it if the player
        # has not read it within its abort timeout).
        request.close_reason = reason  # type: ignore[attr-defined]
        channel = request.channel  # finish() forgets it
        request.unregisterProducer()
        request.finish()
        channel.loseConnection()


class LiveStreamResource(ReadOnlyResource):
    """Serves every routed ``.../APP/STREAM<suffix>`` path as a live stream."""

    isLeaf = True
    suffix: ClassVar[str]
    content_type: ClassVar[bytes]
    session_prefix: ClassVar[str]  # lal's session id prefix: FLVSUB, TSSUB
    protocol: ClassVar[ProtocolName]  # of its sessions: HTTP_FLV, HTTP_TS
    sink_class: ClassVar[type[HttpSink]]

    def __init__(
        self,
        registry: StreamRegistry,
        reactor: IReactorTime,
        gop_num: int | None = None,
        stall_timeout: float = 10.0,
        max_backlog_bytes: int = 2 * 1024 * 1024,
        wait_timeout: float = 0.0,
    ) -> None:
        super().__init__()
        self.wait_timeout = wait_timeout
        self.registry = registry
        self.reactor = reactor
        self.gop_num = gop_num
        self.stall_timeout = stall_timeout
        self.max_backlog_bytes = max_backlog_bytes

    def render_HEAD(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        """What a GET would be answered, without a body and without a player:
        400 for a bad name, 403/404 when the access chain refuses, 404 when
        nobody publishes the stream now, else the stream's headers."""
        parsed, error = self._parse(request)
        if parsed is None:
            # The length of the body a GET would get; twisted.web sends none.
            request.setHeader(b"Content-Length", b"%d" % len(error))
            return b""
        session = self._session(request, parsed, "http")
        d = self.registry.check_play(session)
        d.addCallbacks(self._head_allowed, self._head_refused, callbackArgs=(request, session),
                       errbackArgs=(request, session))
        return server.NOT_DONE_YET

    def _head_allowed(self, _: None, request: server.Request, session: Session) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        stream = self.registry.get(session.key)
        if stream is None or not stream.publishing:
            body = plain_error(request, NOT_FOUND, f"not found: nobody publishes {session.key}")
            request.setHeader(b"Content-Length", b"%d" % len(body))
        else:
            self._stream_headers(request)
        request.finish()

    def _head_refused(self, failure: Failure, request: server.Request, session: Session) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        code, text = _refusal_answer(failure)
        body = plain_error(request, code, text)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.finish()

    def _session(self, request: server.Request, parsed: tuple[str, str], scheme: str,
                 closer: Any = None) -> Session:
        peer = request.getClientAddress()
        who = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        session = self.registry.new_session(self.session_prefix, self.protocol, who,
                                            closer=closer)
        session.app, session.stream = parsed
        session.query = request.uri.decode("utf-8", "replace").partition("?")[2]
        host = (request.getHeader(b"host") or b"").decode("utf-8", "replace")
        session.url = f"{scheme}://{host}{request.uri.decode('utf-8', 'replace')}"
        return session

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        return self.play(request, self.sink_class, "http")

    def play(self, request: server.Request, sink_class: type[HttpSink], scheme: str) -> Any:
        """Start a player session for ``request`` with a sink of ``sink_class``
        (``scheme`` is the one of the session's URL: ``http``, ``ws``)."""
        parsed, error = self._parse(request)
        if parsed is None:
            return error
        sink = sink_class(request, reactor=self.reactor, stall_timeout=self.stall_timeout,
                          max_backlog_bytes=self.max_backlog_bytes, wait_timeout=self.wait_timeout)
        # A kick ends the response as the end of the stream does (its last chunk,
        # then the connection closes; a WebSocket gets a close frame), as lal
        # closes a kicked player's connection; only a player that does not
        # read is reset.
        session = self._session(request, parsed, scheme, closer=sink.close)
        request.lal_sink = sink  # type: ignore[attr-defined]  # for lal_twisted.limits
        sink.begin_burst()  # container header and cached GOP in one write
        started = time.monotonic()
        request.notifyFinish().addBoth(self._finished, session, sink, started)
        d = self.registry.play(session, sink, self.gop_num)
        d.addCallbacks(self._accepted, self._refused, callbackArgs=(request, session, sink),
                       errbackArgs=(request, session))
        return server.NOT_DONE_YET

    def _stream_headers(self, request: server.Request) -> None:
        cors(request)
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Cache-Control", b"no-cache")

    def _parse(self, request: server.Request) -> tuple[tuple[str, str] | None, bytes]:
        """(app, stream) from the request's path, or None and a 404 body."""
        path = route_path(request) or request.path.decode("utf-8", "replace")
        parsed = parse_stream_path(path, self.suffix)
        if parsed is not None:
            return parsed, b""
        return None, plain_error(request, NOT_FOUND, f"not found: {path} (streams are "
                                                     f"served as APP/STREAM{self.suffix})")

    def _accepted(self, stream: StreamView, request: server.Request, session: Session,
                  sink: HttpSink) -> None:
        self._stream_headers(request)
        request.registerProducer(sink, True)
        sink.end_burst()
        log.info("{proto} session {id} {peer} playing {key} started ({state})",
                 proto=self.protocol, id=session.id, peer=session.remote_addr, key=session.key,
                 state="live" if stream.publishing else "waiting for publisher")

    def _refused(self, failure: Failure, request: server.Request, session: Session) -> None:
        session.sink = None
        if failure.check(SessionGone):
            return
        if failure.check(Refused):
            refusal: Refused = failure.value  # type: ignore[assignment]
            log.warn("{proto} session {id} {peer} play {key} refused: {why}",
                     proto=self.protocol, id=session.id, peer=session.remote_addr,
                     key=session.key, why=refusal.reason)
            request.close_reason = f"play refused: {refusal.reason}"  # type: ignore[attr-defined]
        else:
            log.failure("{proto} session {id}: play failed", failure, proto=self.protocol,
                        id=session.id)
        body = plain_error(request, *_refusal_answer(failure))
        request.write(body)
        request.finish()

    def _finished(self, result: Any, session: Session, sink: HttpSink, started: float) -> None:
        if session.ended:
            return  # a connection that was upgraded (WebSocket) ends once, whichever way
        session.ended = True
        self.registry.stop_play(session, sink)
        sink.stopProducing()
        request = sink.request
        reason = getattr(request, "close_reason", None)
        if reason is None:
            reason = "player closed" if result is not None else "done"
        log.info("{proto} session {id} {peer} ended: stream={key} bytes_out={bout} "
                 "duration={dur:.1f}s reason={why}", proto=sink.protocol_name, id=session.id,
                 peer=session.remote_addr, key=session.key, bout=sink.bytes_out,
                 dur=time.monotonic() - started, why=reason)


# Every HTTP output answers a refusal's kind the same way (HTTP-FLV, WebSocket-FLV
# before the upgrade, HTTP-TS, HLS, HEAD).
_HTTP_ANSWERS = {
    RefusalKind.BAD_NAME: (BAD_REQUEST, "bad request"),
    RefusalKind.NOT_FOUND: (NOT_FOUND, "not found"),
    RefusalKind.BUSY: (FORBIDDEN, "forbidden"),
    RefusalKind.TIMEOUT: (FORBIDDEN, "forbidden"),
    RefusalKind.DENIED: (FORBIDDEN, "forbidden"),
}


def http_answer(refusal: Refused) -> tuple[int, str]:
    """The HTTP status and one-line text of a refused play."""
    code, text = _HTTP_ANSWERS[refusal.kind]
    return code, f"{text}: {refusal.reason}"


def _refusal_answer(failure: Failure) -> tuple[int, str]:
    """The HTTP status and text for a failed play (a GET's and a HEAD's)."""
    if not failure.check(Refused):
        return INTERNAL_SERVER_ERROR, "internal error"
    return http_answer(failure.value)  # type: ignore[arg-type]


def abort(request: server.Request, reason: str) -> None:
    """Drop the player's connection at once (kick, stall, shutdown)."""
    request.close_reason = reason  # type: ignore[attr-defined]
    transport = request.channel.transport if request.channel is not None else None
    if transport is not None:
        transport.abortConnection()  # type: ignore[attr-defined]


def cors(request: IRequest) -> None:
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
