"""lal's HTTP API: ``/api/stat/lal_info``, ``/api/stat/group``, ``/api/stat/all_group``
and ``/api/ctrl/kick_session``, with lal's paths, JSON shapes and error codes.

Every answer is a JSON object with ``error_code`` (0 on success), ``desp``
and, for the stat endpoints, ``data``.  As in lal, a stream or session that
does not exist is an ordinary answer (HTTP 200) with code 1001 or 1003; a
request that is malformed (missing parameter, a body that is not a JSON
object, a field of the wrong type) is code 1002 with HTTP 400, and an unknown
path is code 404 with HTTP 404.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.web import resource
from twisted.web.http import BAD_REQUEST, NOT_ALLOWED, NOT_FOUND, OK
from twisted.web.iweb import IRequest

from lal_twisted import __version__
from lal_twisted.api import stat
from lal_twisted.hub.session import Role
from lal_twisted.log import Logger, safe
from lal_twisted.web.router import route_path

if TYPE_CHECKING:
    from lal_twisted.api.plane import ControlPlane

__all__ = ["ApiResource", "json_answer"]

log = Logger("lal_twisted.api.http_api")

SUCCESS = (0, "succ")
PAGE_NOT_FOUND = (404, "page not found, check this document out: https://pengrl.com/lal/#/HTTPAPI")
GROUP_NOT_FOUND = (1001, "group not found")
PARAM_MISSING = (1002, "param missing")
SESSION_NOT_FOUND = (1003, "session not found")
METHOD_NOT_ALLOWED = (405, "method not allowed")
START_RELAY_PULL_FAIL = (2001, "start relay pull fail")

_SERVER = f"lal-twisted/{__version__}".encode()


def json_answer(request: IRequest, body: dict[str, Any], status: int = OK) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Server", _SERVER)
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Cache-Control", b"no-cache")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _basic(code: tuple[int, str], detail: str = "") -> dict[str, Any]:
    return {"error_code": code[0], "desp": f"{code[1]}: {detail}" if detail else code[1]}


class BadRequest(Exception):
    """A malformed API request (lal's 1002)."""


class ApiResource(resource.Resource):
    """Serves every path of the API listener except the status page.

    ``read_only`` serves the stat endpoints alone, without the clients'
    addresses (the copy the status page reads on the public HTTP listener)."""

    isLeaf = True

    def __init__(self, plane: ControlPlane, read_only: bool = False) -> None:
        super().__init__()
        self.plane = plane
        self.registry = plane.registry
        self.read_only = read_only
        self._get = {
            "/api/stat/lal_info": self.lal_info,
            "/api/stat/group": self.group,
            "/api/stat/all_group": self.all_group,
        }
        self._post = {} if read_only else {
            "/api/ctrl/kick_session": self.kick_session,
            "/api/ctrl/start_relay_pull": self.start_relay_pull,
            "/api/ctrl/stop_relay_pull": self.stop_relay_pull,
        }
        if not read_only:  # lal documents stop_relay_pull as a GET
            self._get["/api/ctrl/stop_relay_pull"] = self.stop_relay_pull

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        path = route_path(request) or request.path.decode("utf-8", "replace")  # type: ignore[attr-defined]
        method = request.method
        if method == b"OPTIONS":
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type")
            request.setResponseCode(204)
            return b""
        handler = (self._get if method in (b"GET", b"HEAD") else
                   self._post if method == b"POST" else {}).get(path)
        if handler is None:
            if path in self._get or path in self._post:
                request.setHeader(b"Allow", b"GET, HEAD" if path in self._get else b"POST")
                return json_answer(request, _basic(METHOD_NOT_ALLOWED), NOT_ALLOWED)
            log.info("http api: unknown path {path} from {peer}", path=safe(path),
                     peer=_peer(request))
            return json_answer(request, _basic(PAGE_NOT_FOUND), NOT_FOUND)
        try:
            return json_answer(request, handler(request))
        except BadRequest as e:
            log.info("http api {path}: bad request from {peer}: {why}", path=path,
                     peer=_peer(request), why=safe(str(e)))
            return json_answer(request, _basic(PARAM_MISSING, str(e)), BAD_REQUEST)

    # -- /api/stat ------------------------------------------------------------------
    def lal_info(self, request: IRequest) -> dict[str, Any]:
        return {**_basic(SUCCESS), "data": self.plane.lal_info()}

    def all_group(self, request: IRequest) -> dict[str, Any]:
        groups = stat.all_groups(self.registry, self.plane.rates)
        if self.read_only:
            for group in groups:
                _redact(group)
        return {**_basic(SUCCESS), "data": {"groups": groups}}

    def group(self, request: IRequest) -> dict[str, Any]:
        name = _query_arg(request, "stream_name")
        if not name:
            raise BadRequest("the query parameter stream_name is required")
        stream = stat.find_stream(self.registry, name)
        if stream is None:
            return {**_basic(GROUP_NOT_FOUND), "data": None}
        players = stat.players_by_key(self.registry).get(stream.key, [])
        pushes = stat.sessions_by_key(self.registry, Role.RELAY_PUSH).get(stream.key, [])
        group = stat.group_stat(stream, players, self.plane.rates, pushes)
        if self.read_only:
            _redact(group)
        return {**_basic(SUCCESS), "data": group}

    # -- /api/ctrl ------------------------------------------------------------------
    def kick_session(self, request: IRequest) -> dict[str, Any]:
        body = _json_body(request)
        stream_name = _string_field(body, "stream_name")
        session_id = _string_field(body, "session_id")
        stream = stat.find_stream(self.registry, stream_name)
        if stream is None:
            return _basic(GROUP_NOT_FOUND)
        session = self.registry.find_session(session_id)
        if session is None or session.key != stream.key:
            return _basic(SESSION_NOT_FOUND)
        log.info("http api from {peer}: kick session {id} of {key}", peer=_peer(request),
                 id=session.id, key=stream.key)
        self.registry.kick(session.id, "kicked by the HTTP API")
        return _basic(SUCCESS)


    def start_relay_pull(self, request: IRequest) -> dict[str, Any]:
        from lal_twisted.relay.manager import PullError

        body = _json_body(request)
        url = _string_field(body, "url")
        stream_name = _string_field(body, "stream_name") if "stream_name" in body else ""
        timeout = _int_field(body, "pull_timeout_ms", 10000)
        retry = _int_field(body, "pull_retry_num", 0)
        auto_stop = _int_field(body, "auto_stop_pull_after_no_out_ms", -1)
        try:
            pull = self.plane.lals.relays.start_pull(url, stream_name, timeout, retry, auto_stop)
        except PullError as e:
            log.info("http api from {peer}: start_relay_pull {url} refused: {why}",
                     peer=_peer(request), url=safe(url), why=safe(str(e)))
            return {"error_code": START_RELAY_PULL_FAIL[0], "desp": str(e)}
        log.info("http api from {peer}: start_relay_pull {url} as {key}", peer=_peer(request),
                 url=safe(url), key=pull.key)
        return {**_basic(SUCCESS), "data": {"stream_name": pull.stream_name,
                                            "session_id": pull.session_id}}

    def stop_relay_pull(self, request: IRequest) -> dict[str, Any]:
        name = _query_arg(request, "stream_name")
        if not name:
            raise BadRequest("the query parameter stream_name is required")
        relays = self.plane.lals.relays
        pull = relays.find_pull(name)
        if pull is None:
            code = GROUP_NOT_FOUND if stat.find_stream(self.registry, name) is None else (
                SESSION_NOT_FOUND)
            return {**_basic(code), "data": None}
        session_id = pull.session_id
        relays.stop_pull(name)
        log.info("http api from {peer}: stop_relay_pull {key}", peer=_peer(request),
                 key=pull.key)
        return {**_basic(SUCCESS), "data": {"session_id": session_id}}


def _int_field(body: dict[str, Any], name: str, default: int) -> int:
    if name not in body:
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise BadRequest(f"{name} must be a whole number")
    return int(value)


def _redact(group: dict[str, Any]) -> None:
    """The public copy (on the HTTP listener) does not tell who the clients are."""
    for session in (group["pub"], group["pull"], *group["subs"], *group["pushs"]):
        session["remote_addr"] = ""


def _peer(request: IRequest) -> str:
    peer = request.getClientAddress()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


def _query_arg(request: IRequest, name: str) -> str:
    values = (request.args or {}).get(name.encode(), [])  # type: ignore[attr-defined]
    if not values:
        return ""
    try:
        return values[-1].decode("utf-8")  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not UTF-8") from None


def _json_body(request: IRequest) -> dict[str, Any]:
    content = request.content  # type: ignore[attr-defined]
    raw = content.read() if content is not None else b""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _string_field(body: dict[str, Any], name: str) -> str:
    if name not in body:
        raise BadRequest(f"{name} is required")
    value = body[name]
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value
