"""HLS over HTTP at lal's paths, under ``hls.url_pattern`` (``/hls/``):

- ``/hls/STREAM.m3u8`` and ``/hls/STREAM/playlist.m3u8``: the live playlist;
- ``/hls/STREAM/record.m3u8``: every segment of the publish, EXT-X-ENDLIST at its end;
- ``/hls/STREAM/STREAM-T-N.ts`` and ``/hls/STREAM-T-N.ts``: segments.

A playlist not made yet is a 404 at once (players retry).  Viewers are
sessions (``HLSSUB``), one per client address, User-Agent and stream, admitted
by the access chain on their first request and ended after
``hls.sub_session_timeout_ms`` without one.
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
    INTERNAL_SERVER_ERROR,
    NOT_FOUND,
    datetimeToString,
)

from lal_twisted.hls.segmenter import LIVE_PLAYLIST, RECORD_PLAYLIST
from lal_twisted.hub.access import Refused
from lal_twisted.log import Logger
from lal_twisted.net import FileSpan
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
    __slots__ = ("session", "last", "admitted", "waiting")

    def __init__(self, session: Session, now: float) -> None:
        self.session = session
        self.last = now  # time of the latest request
        self.admitted = False
        self.waiting: list[tuple[server.Request, str, str]] = []


class HlsResource(ReadOnlyResource):
    """Serves playlists and segments from the :class:`HlsManager`'s streams."""

    isLeaf = True

    def __init__(self, manager: HlsManager, registry: StreamRegistry, reactor: Any,
                 url_pattern: str = "/hls/", session_timeout: float = 30.0) -> None:
        super().__init__()
        self.manager = manager
        self.registry = registry
        self.reactor = reactor
        self.url_pattern = url_pattern
        self.session_timeout = session_timeout
        self.viewers: dict[tuple[str, str, str], _Viewer] = {}
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
        if hls is None or (file == LIVE_PLAYLIST and hls.live_playlist is None) or (
                file == RECORD_PLAYLIST and hls.record_playlist is None):
            return plain_error(request, NOT_FOUND, f"not found: no HLS for stream {name} yet")
        viewer = self._viewer(request, name)
        if viewer.admitted:
            return self._serve(request, viewer, name, file)
        viewer.waiting.append((request, name, file))
        if len(viewer.waiting) == 1:
            self._admit(viewer)
        return server.NOT_DONE_YET

    def fast_get(self, path: str, headers: dict[bytes, bytes],
                 channel: Any) -> Callable[[], list[bytes | FileSpan] | None] | None:
        """A responder for an admitted viewer's playlist or in-memory segment,
        answered without a twisted.web request (a thousand players poll every
        second); None for everything else, which takes the ordinary way.  The
        channel may call the responder again for the same request bytes."""
        if not path.startswith(self.url_pattern):
            return None
        parsed = parse_hls_path(path[len(self.url_pattern):])
        if parsed is None:
            return None
        name, file = parsed
        host = getattr(channel, "lal_peer_host", None)
        if host is None:
            peer = channel.transport.getPeer()
            host = channel.lal_peer_host = str(getattr(peer, "host", peer))
        agent = headers.get(b"user-agent", b"").decode("utf-8", "replace")[:200]
        key = (host, agent, name)
        viewer = self.viewers.get(key)
        if viewer is None or not viewer.admitted:
            return None
        return partial(self._fast_answer, key, name, file)

    def _fast_answer(self, key: tuple[str, str, str], name: str,
                     file: str) -> list[bytes | FileSpan] | None:
        """The response (status line and headers, then the body, sent together
        without joining them; a segment's body may be a memfd span the
        transport sends with ``sendfile``), or None: the viewer is gone (a new
        one is admitted the ordinary way), or the file is not served from
        memory."""
        viewer = self.viewers.get(key)
        hls = self.manager.streams.get(name)
        if viewer is None or not viewer.admitted or hls is None:
            return None
        if file == LIVE_PLAYLIST:
            body, head = hls.live_playlist, _M3U8_HEAD
        elif file == RECORD_PLAYLIST:
            body, head = hls.record_playlist, _M3U8_HEAD
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
    def _viewer(self, request: server.Request, name: str) -> _Viewer:
        peer = request.getClientAddress()
        host = str(getattr(peer, "host", peer))
        agent = (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace")[:200]
        key = (host, agent, name)
        viewer = self.viewers.get(key)
        if viewer is None:
            session = self.registry.new_session(HLS_PLAYER, "hls",
                                                f"{host}:{getattr(peer, 'port', '')}",
                                                closer=lambda reason: self._expire(key))
            hls = self.manager.get(name)
            app, _, _ = (hls.key.rpartition("/") if hls is not None else ("", "", ""))
            session.app, session.stream = app, name
            session.query = request.uri.decode("utf-8", "replace").partition("?")[2]
            http_host = (request.getHeader(b"host") or b"").decode("utf-8", "replace")
            session.url = f"http://{http_host}{request.uri.decode('utf-8', 'replace')}"
            viewer = self.viewers[key] = _Viewer(session, self.reactor.seconds())
            if not self._sweeper.running:
                self._sweeper.start(self._sweep_every, now=False)
        else:
            viewer.last = self.reactor.seconds()
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
        session = viewer.session
        self._drop(session)
        waiting, viewer.waiting = viewer.waiting, []
        if failure.check(Refused):
            refusal: Refused = failure.value  # type: ignore[assignment]
            log.warn("hls session {id} {peer} play {name} refused: {why}", id=session.id,
                     peer=session.remote_addr, name=session.stream, why=refusal.reason)
            code, text = ((NOT_FOUND, "not found") if refusal.not_found or refusal.bad_name
                          else (FORBIDDEN, "forbidden"))
            make = (code, f"{text}: {refusal.reason}")
        else:
            log.failure("hls session {id}: play failed", failure, id=session.id)
            make = (INTERNAL_SERVER_ERROR, "internal error")
        for request, _, _ in waiting:
            if not request.finished:
                request.write(plain_error(request, *make))
                request.finish()

    def _drop(self, session: Session) -> None:
        for key, viewer in list(self.viewers.items()):
            if viewer.session is session:
                del self.viewers[key]

    def _expire(self, key: tuple[str, str, str]) -> None:
        viewer = self.viewers.pop(key, None)
        if viewer is None:
            return
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
    def _serve(self, request: server.Request, viewer: _Viewer, name: str, file: str) -> Any:
        hls = self.manager.get(name)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        if file in (LIVE_PLAYLIST, RECORD_PLAYLIST):
            body = None if hls is None else (
                hls.live_playlist if file == LIVE_PLAYLIST else hls.record_playlist)
            if body is None:
                return plain_error(request, NOT_FOUND, f"not found: no HLS for stream {name}")
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
            viewer.session.bytes_out += len(data)
            return data
        store.get(path).addCallback(self._read, request, viewer, file)
        return server.NOT_DONE_YET

    def _read(self, data: bytes | None, request: server.Request, viewer: _Viewer,
              file: str) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        if data is None:
            request.write(plain_error(request, NOT_FOUND, f"not found: segment {file}"))
        else:
            request.setHeader(b"Content-Type", _TS_TYPE)
            request.setHeader(b"Content-Length", b"%d" % len(data))
            viewer.session.bytes_out += len(data)
            request.write(data)
        request.finish()
