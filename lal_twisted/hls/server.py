"""HLS over HTTP at lal's paths, under ``hls.url_pattern`` (``/hls/``):

- ``/hls/STREAM.m3u8`` and ``/hls/STREAM/playlist.m3u8``: the live playlist;
- ``/hls/STREAM/record.m3u8``: every segment of the publish, EXT-X-ENDLIST at its end;
- ``/hls/STREAM/STREAM-T-N.ts`` and ``/hls/STREAM-T-N.ts``: segments.

A playlist not made yet is a 404 at once (players retry).  Viewers are
sessions (``HLSSUB``), one per token (:mod:`lal_twisted.hls.tokens`): a
playlist request without a valid ``session_id`` is redirected (302) to its own
URL with a new one, as lal does, and makes no session; the first request with
it makes the session, which the access chain admits (simple_auth, the hook:
once per viewer) or refuses, and which ends after
``hls.sub_session_timeout_ms`` without a request.  Playlists are served with
the token in their segment URIs; with ``hls.segments_need_session`` a segment
is served only to a request carrying an admitted viewer's token.  New viewers
from one address (an IPv6 /64) are at most ``hls.max_viewers_per_addr``, all
listeners together; loopback addresses (a reverse proxy on this machine) are
not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import (
    FORBIDDEN,
    FOUND,
    INTERNAL_SERVER_ERROR,
    NOT_FOUND,
    datetimeToString,
)

from lal_twisted.hls.segmenter import LIVE_PLAYLIST, RECORD_PLAYLIST
from lal_twisted.hls.tokens import TOKEN_PARAM, token_of, with_token, without_token
from lal_twisted.hub.access import Refused
from lal_twisted.hub.registry import SessionGone
from lal_twisted.log import Logger
from lal_twisted.net import FileSpan
from lal_twisted.protocols import ProtocolName
from lal_twisted.web.player import http_answer
from lal_twisted.web.router import ReadOnlyResource, plain_error, route_path

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from lal_twisted.hls.manager import HlsManager
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session

__all__ = ["HLS_PLAYER", "HlsResource", "parse_hls_path"]

log = Logger("lal_twisted.hls.server")

HLS_PLAYER = "HLSSUB"  # lal's session type name

_M3U8_TYPE = b"application/vnd.apple.mpegurl"
TOO_MANY_REQUESTS = 429
_TS_TYPE = b"video/mp2t"


_M3U8_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
              b"Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: ")
_TS_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n"
            b"Access-Control-Allow-Origin: *\r\nContent-Length: ")
_date_cache: list[Any] = [0, b""]


def _http_date() -> bytes:
    """The Date header's value, made once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, datetimeToString(now)
    return _date_cache[1]  # type: ignore[no-any-return]


def parse_hls_path(rest: str) -> tuple[str, str] | None:
    """The part of the path after ``url_pattern`` -> (stream name, file), where
    file is ``playlist.m3u8``, ``record.m3u8`` or a segment name; None if it
    names nothing HLS serves."""
    directory, _, file = rest.rpartition("/")
    if "/" in directory:
        return None
    if not directory:
        if file.endswith(".m3u8"):
            return (file[:-5], LIVE_PLAYLIST) if len(file) > 5 else None
        if file.endswith(".ts"):
            name = file.rsplit("-", 2)[0]
            return (name, file) if file.count("-") >= 2 and name else None
        return None
    if file in (LIVE_PLAYLIST, RECORD_PLAYLIST) or (file.endswith(".ts") and len(file) > 3):
        return directory, file
    return None


class _Viewer:
    __slots__ = ("session", "name", "host", "token", "last", "admitted", "refusal", "waiting",
                 "_source", "_served")

    def __init__(self, session: Session, name: str, host: str, token: str, now: float) -> None:
        self.session = session
        self.name = name  # the stream its token was made for
        self.host = host
        self.token = token
        self.last = now  # time of the latest request
        self.admitted = False
        self.refusal: tuple[int, str] | None = None  # set when the access chain said no
        self.waiting: list[tuple[server.Request, str, str]] = []
        self._source: bytes | None = None  # the playlist last served, and as served
        self._served = b""

    def playlist(self, body: bytes) -> bytes:
        """``body`` with this viewer's token in every segment URI (made once for
        each new version of the playlist)."""
        if body is not self._source:
            self._source = body
            self._served = body.replace(b".ts\n", b".ts?%s=%s\n" % (
                TOKEN_PARAM.encode(), self.token.encode()))
        return self._served


class HlsResource(ReadOnlyResource):
    """Serves playlists and segments from the :class:`HlsManager`'s streams."""

    isLeaf = True

    def __init__(self, manager: HlsManager, registry: StreamRegistry, reactor: Any,
                 url_pattern: str = "/hls/", session_timeout: float = 30.0,
                 segments_need_session: bool = False) -> None:
        super().__init__()
        self.manager = manager
        self.signer = manager.signer
        self.registry = registry
        self.reactor = reactor
        self.url_pattern = url_pattern
        self.session_timeout = session_timeout
        self.segments_need_session = segments_need_session
        self.viewers: dict[str, _Viewer] = {}  # by token
        # One sweep ends idle viewers (a timer per viewer, reset on every request,
        # cost more than the sweep with a thousand players polling).
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = reactor
        self._sweep_every = max(0.25, min(1.0, session_timeout / 4))
        manager.resources.append(self)

    def render_HEAD(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        return self.render_GET(request)

    def render_GET(self, request: server.Request) -> Any:  # noqa: N802 - twisted.web
        path = route_path(request) or request.path.decode("utf-8", "replace")
        parsed = parse_hls_path(path[len(self.url_pattern):]) \
            if path.startswith(self.url_pattern) else None
        if parsed is None:
            return plain_error(request, NOT_FOUND, f"not found: {path} (HLS is served as "
                               f"{self.url_pattern}STREAM.m3u8)")
        name, file = parsed
        request.lal_quiet = True  # type: ignore[attr-defined]  # no access-log line each
        hls = self.manager.get(name)
        query = request.uri.decode("utf-8", "replace").partition("?")[2]
        token = token_of(query)
        if file not in (LIVE_PLAYLIST, RECORD_PLAYLIST):
            return self._segment(request, name, file, token)
        if hls is None or (file == LIVE_PLAYLIST and hls.live_playlist is None) or (
                file == RECORD_PLAYLIST and hls.record_playlist is None):
            return plain_error(request, NOT_FOUND, f"not found: no HLS for stream {name} yet")
        if not token or not self.signer.valid(name, token):
            return self._redirect(request, name, query)
        viewer = self.viewers.get(token)
        if viewer is None or viewer.name != name:
            host = _host(request)
            if not self.manager.viewer_allowed(host):
                return plain_error(request, TOO_MANY_REQUESTS, "too many HLS viewer sessions "
                                   "from this address (hls.max_viewers_per_addr)")
            viewer = self._new_viewer(request, name, host, token, without_token(query))
        viewer.last = self.reactor.seconds()
        if viewer.refusal is not None:
            return plain_error(request, *viewer.refusal)
        if viewer.admitted:
            return self._serve(request, viewer, name, file)
        viewer.waiting.append((request, name, file))
        if len(viewer.waiting) == 1:
            self._admit(viewer)
        return server.NOT_DONE_YET

    def _redirect(self, request: server.Request, name: str, query: str) -> bytes:
        """302 to the same URL with a new token (no session until it is used)."""
        location = request.path + b"?" + with_token(query, self.signer.make(name)).encode(
            "utf-8")  # type: ignore[attr-defined]
        request.setResponseCode(FOUND)
        request.setHeader(b"Location", location)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"see " + location + b"\n"

    def _segment(self, request: server.Request, name: str, file: str, token: str) -> Any:
        viewer = self.viewers.get(token) if token else None
        if viewer is not None and (viewer.name != name or not viewer.admitted):
            viewer = None
        if viewer is None and self.segments_need_session:
            return plain_error(request, FORBIDDEN, "forbidden: a segment needs the session_id "
                               "of its playlist (hls.segments_need_session)")
        if viewer is not None:
            viewer.last = self.reactor.seconds()
        return self._serve(request, viewer, name, file)

    def fast_get(self, path: str, query: str, headers: dict[bytes, bytes],
                 channel: Any) -> Callable[[], list[bytes | FileSpan] | None] | None:
        """A responder for an admitted viewer's playlist or in-memory segment,
        answered without a twisted.web request (a thousand players poll every
        second); None for everything else, which takes the ordinary way.  The
        channel may call the responder again for the same request bytes."""
        if not path.startswith(self.url_pattern) or TOKEN_PARAM not in query:
            return None
        parsed = parse_hls_path(path[len(self.url_pattern):])
        if parsed is None:
            return None
        name, file = parsed
        token = token_of(query)
        viewer = self.viewers.get(token)
        if viewer is None or not viewer.admitted or viewer.name != name:
            return None
        return partial(self._fast_answer, token, name, file)

    def _fast_answer(self, token: str, name: str,
                     file: str) -> list[bytes | FileSpan] | None:
        """The response (status line and headers, then the body, sent together
        without joining them; a segment's body may be a memfd span the
        transport sends with ``sendfile``), or None: the viewer is gone (the
        ordinary way answers), or the file is not served from memory."""
        viewer = self.viewers.get(token)
        hls = self.manager.streams.get(name)
        if viewer is None or not viewer.admitted or hls is None:
            return None
        body: Any
        if file == LIVE_PLAYLIST or file == RECORD_PLAYLIST:
            source = hls.live_playlist if file == LIVE_PLAYLIST else hls.record_playlist
            if source is None:
                return None
            body, head = viewer.playlist(source), _M3U8_HEAD
        elif file in hls.files and hls.store.in_memory:
            body, head = hls.store.span(f"{name}/{file}"), _TS_HEAD  # type: ignore[attr-defined]
        else:
            return None
        if body is None:
            return None
        viewer.last = self.reactor.seconds()
        viewer.session.bytes_out += len(body)
        return [b"%s%d\r\nDate: %s\r\n\r\n" % (head, len(body), _http_date()), body]

    # -- viewers ----------------------------------------------------------------------
    def _new_viewer(self, request: server.Request, name: str, host: str, token: str,
                    query: str) -> _Viewer:
        peer = request.getClientAddress()
        session = self.registry.new_session(HLS_PLAYER, ProtocolName.HLS,
                                            f"{host}:{getattr(peer, 'port', '')}",
                                            closer=lambda reason: self._kick(token, reason))
        hls = self.manager.get(name)
        app, _, _ = (hls.key.rpartition("/") if hls is not None else ("", "", ""))
        session.app, session.stream = app, name
        session.query = query
        http_host = (request.getHeader(b"host") or b"").decode("utf-8", "replace")
        path = request.uri.decode("utf-8", "replace").partition("?")[0]
        session.url = f"http://{http_host}{path}" + (f"?{query}" if query else "")
        viewer = self.viewers[token] = _Viewer(session, name, host, token,
                                               self.reactor.seconds())
        self.manager.viewer_came(host)
        if not self._sweeper.running:
            self._sweeper.start(self._sweep_every, now=False)
        return viewer

    def _sweep(self) -> None:
        idle_since = self.reactor.seconds() - self.session_timeout
        for key in [k for k, v in self.viewers.items() if v.last <= idle_since]:
            self._expire(key)
        if not self.viewers and self._sweeper.running:
            self._sweeper.stop()

    def _admit(self, viewer: _Viewer) -> None:
        d: Deferred[None] = self.registry.add_viewer(viewer.session)
        d.addCallbacks(self._admitted, self._refused, callbackArgs=(viewer,),
                       errbackArgs=(viewer,))

    def _admitted(self, _: None, viewer: _Viewer) -> None:
        viewer.admitted = True
        session = viewer.session
        log.info("hls session {id} {peer} playing {name} started", id=session.id,
                 peer=session.remote_addr, name=session.stream)
        waiting, viewer.waiting = viewer.waiting, []
        for request, name, file in waiting:
            if request.finished or getattr(request, "_disconnected", False):
                continue
            body = self._serve(request, viewer, name, file)
            if body is not server.NOT_DONE_YET:
                request.setHeader(b"Content-Length", b"%d" % len(body))
                request.write(body)
                request.finish()

    def _refused(self, failure: Failure, viewer: _Viewer) -> None:
        """The access chain said no: this token's requests are answered so until
        it is forgotten (``sub_session_timeout_ms`` without one), so a refused
        player polling does not ask the hook again each time."""
        session = viewer.session
        waiting, viewer.waiting = viewer.waiting, []
        if failure.check(SessionGone):  # kicked or blacklisted while it was checked
            viewer.refusal = viewer.refusal or (FORBIDDEN, "forbidden: the session ended")
        elif failure.check(Refused):
            refusal: Refused = failure.value  # type: ignore[assignment]
            log.warn("hls session {id} {peer} play {name} refused: {why}", id=session.id,
                     peer=session.remote_addr, name=session.stream, why=refusal.reason)
            viewer.refusal = http_answer(refusal)
        else:
            log.failure("hls session {id}: play failed", failure, id=session.id)
            viewer.refusal = (INTERNAL_SERVER_ERROR, "internal error")
        session.ended = True
        for request, _, _ in waiting:
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(plain_error(request, *viewer.refusal))
                request.finish()

    def _kick(self, key: str, reason: str) -> None:
        """The session was ended from outside (the API's kick, a blacklisted
        address): its token is refused until it is forgotten, so the player's
        next request does not come straight back in."""
        viewer = self.viewers.get(key)
        if viewer is None:
            return
        viewer.refusal = (FORBIDDEN, f"forbidden: {reason}")
        if viewer.admitted:
            viewer.admitted = False
            self.registry.remove_viewer(viewer.session)
            log.info("hls session {id} {peer} ended: stream={name} bytes_out={bout} "
                     "reason={why}", id=viewer.session.id, peer=viewer.session.remote_addr,
                     name=viewer.name, bout=viewer.session.bytes_out, why=reason)
        viewer.session.ended = True

    def _expire(self, key: str) -> None:
        viewer = self.viewers.pop(key, None)
        if viewer is None:
            return
        self.manager.viewer_left(viewer.host)
        session = viewer.session
        if viewer.admitted:
            self.registry.remove_viewer(session)
            log.info("hls session {id} {peer} ended: stream={name} bytes_out={bout}",
                     id=session.id, peer=session.remote_addr, name=session.stream,
                     bout=session.bytes_out)
        session.ended = True

    def close_all(self) -> None:
        for key in list(self.viewers):
            self._expire(key)
        if self._sweeper.running:
            self._sweeper.stop()

    # -- files -----------------------------------------------------------------------------
    def _serve(self, request: server.Request, viewer: _Viewer | None, name: str,
               file: str) -> Any:
        hls = self.manager.get(name)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        if file in (LIVE_PLAYLIST, RECORD_PLAYLIST):
            source = None if hls is None else (
                hls.live_playlist if file == LIVE_PLAYLIST else hls.record_playlist)
            if source is None or viewer is None:
                return plain_error(request, NOT_FOUND, f"not found: no HLS for stream {name}")
            body = viewer.playlist(source)
            request.setHeader(b"Content-Type", _M3U8_TYPE)
            request.setHeader(b"Cache-Control", b"no-cache")
            viewer.session.bytes_out += len(body)
            return body
        if hls is None or file not in hls.files:
            return plain_error(request, NOT_FOUND, f"not found: segment {file}")
        store = hls.store
        path = f"{name}/{file}"
        read = getattr(store, "read", None)
        if read is not None:  # in memory: at once
            data = read(path)
            if data is None:
                return plain_error(request, NOT_FOUND, f"not found: segment {file}")
            request.setHeader(b"Content-Type", _TS_TYPE)
            if viewer is not None:
                viewer.session.bytes_out += len(data)
            return data
        store.get(path).addCallback(self._read, request, viewer, file)
        return server.NOT_DONE_YET

    def _read(self, data: bytes | None, request: server.Request, viewer: _Viewer | None,
              file: str) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if data is None:
            request.write(plain_error(request, NOT_FOUND, f"not found: segment {file}"))
        else:
            request.setHeader(b"Content-Type", _TS_TYPE)
            request.setHeader(b"Content-Length", b"%d" % len(data))
            if viewer is not None:
                viewer.session.bytes_out += len(data)
            request.write(data)
        request.finish()


def _host(request: server.Request) -> str:
    peer = request.getClientAddress()
    return str(getattr(peer, "host", peer))
