"""lal's HTTP API: ``/api/stat/lal_info``, ``/api/stat/group``, ``/api/stat/all_group``,
``/api/ctrl/kick_session``, ``start_relay_pull``, ``stop_relay_pull`` and
``add_ip_blacklist``, with lal's paths, JSON shapes, error codes and field
meanings (Go clients send zero values for the fields they do not set).

Every answer is a JSON object with ``error_code`` (0 on success), ``desp``
and, for the stat endpoints, ``data``.  As in lal, a stream or session that
does not exist is an ordinary answer (HTTP 200) with code 1001 or 1003; a
request that is malformed (missing parameter, a body that is not a JSON
object, a field of the wrong type, a number out of range) is code 1002 with
HTTP 400, and an unknown path is code 404 with HTTP 404.  Who may ask at all
is :mod:`lal_twisted.api.guard`'s business.
"""

from __future__ import annotations

import ipaddress
import json
import math
from typing import TYPE_CHECKING, Any

from twisted.web import resource
from twisted.web.http import BAD_REQUEST, NOT_ALLOWED, NOT_FOUND, OK
from twisted.web.iweb import IRequest

from lal_twisted import __version__
from lal_twisted.api import stat
from lal_twisted.api.guard import ApiGuard
from lal_twisted.hub.session import Role
from lal_twisted.limits import plain_host
from lal_twisted.log import Logger, redact, safe
from lal_twisted.relay.policy import MAX_AUTO_STOP_MS, MAX_PULL_RETRY_NUM, MAX_PULL_TIMEOUT_MS
from lal_twisted.web.router import route_path

if TYPE_CHECKING:
    from lal_twisted.api.context import ServerContext

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


# Go's int, which lal's numeric fields are: a number outside it is a bad request.
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
# add_ip_blacklist's duration_sec is kept to this (about 68 years).
_MAX_BLACKLIST_SEC = 2 ** 31 - 1


def json_answer(request: IRequest, body: dict[str, Any], status: int = OK) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Server", _SERVER)
    request.setHeader(b"Cache-Control", b"no-cache")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _basic(code: tuple[int, str], detail: str = "") -> dict[str, Any]:
    return {"error_code": code[0], "desp": f"{code[1]}: {detail}" if detail else code[1]}


class BadRequest(Exception):
    """A malformed API request (lal's 1002)."""


class ApiResource(resource.Resource):
    """Serves every path of the API listener except the status page.

    ``read_only`` serves the stat endpoints alone, without the clients'
    addresses and to any origin (the copy the status page reads on the public
    HTTP listener); the full API is behind an :class:`ApiGuard`."""

    isLeaf = True

    def __init__(self, context: ServerContext, read_only: bool = False) -> None:
        super().__init__()
        self.context = context
        self.registry = context.registry
        self.read_only = read_only
        self.guard: ApiGuard | None = None if read_only else context.api_guard
        self._get = {
            "/api/stat/lal_info": self.lal_info,
            "/api/stat/group": self.group,
            "/api/stat/all_group": self.all_group,
        }
        self._post = {} if read_only else {
            "/api/ctrl/kick_session": self.kick_session,
            "/api/ctrl/start_relay_pull": self.start_relay_pull,
            "/api/ctrl/stop_relay_pull": self.stop_relay_pull,
            "/api/ctrl/add_ip_blacklist": self.add_ip_blacklist,
        }
        # The endpoints that read a JSON body (stop_relay_pull reads its query).
        self._with_body = {"/api/ctrl/kick_session", "/api/ctrl/start_relay_pull",
                           "/api/ctrl/add_ip_blacklist"}
        if not read_only:  # lal documents stop_relay_pull as a GET
            self._get["/api/ctrl/stop_relay_pull"] = self.stop_relay_pull

    def render(self, request: IRequest) -> bytes:  # type: ignore[override]
        path = route_path(request) or request.path.decode("utf-8", "replace")  # type: ignore[attr-defined]
        method = request.method
        guard = self.guard
        if guard is not None:
            refusal = guard.check(request, path.startswith("/api/ctrl/"))
            if refusal is not None:
                log.info("http api {method} {path} from {peer} refused: {why}",
                         method=method.decode("ascii", "replace"), path=safe(path),
                         peer=_peer(request), why=refusal.reason)
                return json_answer(request, _basic((refusal.status, refusal.reason)),
                                   refusal.status)
            cross_origin_ok = guard.cors(request)
        else:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            cross_origin_ok = True
        if method == b"OPTIONS":
            if not cross_origin_ok:
                why = "cross-origin requests are not allowed (http_api.cors_allowed_origins)"
                return json_answer(request, _basic((403, why)), 403)
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, POST, OPTIONS")
            request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type, Authorization")
            request.setHeader(b"Access-Control-Max-Age", b"600")
            request.setResponseCode(204)
            return b""
        if (guard is not None and method in (b"GET", b"HEAD") and path in self._post
                and not guard.bearer(request)):
            # Any web page can make a browser send a GET (an <img>), with its
            # cached credentials: a control GET needs the bearer token.
            request.setHeader(b"Allow", b"POST")
            return json_answer(request, _basic((405, "use POST for a control request (a GET "
                                                     "is what any web page can make a browser "
                                                     "send), or send http_api.auth_token as a "
                                                     "Bearer token")), NOT_ALLOWED)
        handler = (self._get if method in (b"GET", b"HEAD") else
                   self._post if method == b"POST" else {}).get(path)
        if handler is None:
            if path in self._get or path in self._post:
                allow = b", ".join(m for m, table in ((b"GET, HEAD", self._get),
                                                      (b"POST", self._post)) if path in table)
                request.setHeader(b"Allow", allow)
                return json_answer(request, _basic(METHOD_NOT_ALLOWED), NOT_ALLOWED)
            log.info("http api: unknown path {path} from {peer}", path=safe(path),
                     peer=_peer(request))
            return json_answer(request, _basic(PAGE_NOT_FOUND), NOT_FOUND)
        if guard is not None and method == b"POST" and path in self._with_body:
            refusal = guard.check_body(request)
            if refusal is not None:
                log.info("http api {path} from {peer}: {why}", path=path, peer=_peer(request),
                         why=refusal.reason)
                return json_answer(request, _basic(PARAM_MISSING, refusal.reason),
                                   refusal.status)
        try:
            return json_answer(request, handler(request))
        except BadRequest as e:
            log.info("http api {path}: bad request from {peer}: {why}", path=path,
                     peer=_peer(request), why=safe(str(e)))
            return json_answer(request, _basic(PARAM_MISSING, str(e)), BAD_REQUEST)

    # -- /api/stat ------------------------------------------------------------------
    def lal_info(self, request: IRequest) -> dict[str, Any]:
        return {**_basic(SUCCESS), "data": self.context.lal_info()}

    def all_group(self, request: IRequest) -> dict[str, Any]:
        groups = stat.all_groups(self.registry, self.context.rates, self.context.pulls())
        if self.read_only:
            for group in groups:
                _redact(group)
        return {**_basic(SUCCESS), "data": {"groups": groups}}

    def group(self, request: IRequest) -> dict[str, Any]:
        name = _query_arg(request, "stream_name")
        if not name:
            raise BadRequest("the query parameter stream_name is required")
        pulls = self.context.pulls()
        stream = stat.find_stream(self.registry, name)
        if stream is None:
            pull = next((p for p in pulls.values()
                         if p.stream_name == name or p.key == name), None)
            if pull is None:
                return {**_basic(GROUP_NOT_FOUND), "data": None}
            group = stat.pending_pull_group(pull)
        else:
            players = stat.players_by_key(self.registry).get(stream.key, [])
            pushes = stat.sessions_by_key(self.registry, Role.RELAY_PUSH).get(stream.key, [])
            group = stat.group_stat(stream, players, self.context.rates, pushes,
                                    pulls.get(stream.key))
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
        stream_name = _string_field(body, "stream_name", required=False)
        # lal's defaults for absent fields; a present 0 keeps lal's meaning
        # (see RelayManager.start_pull).
        timeout = _int_field(body, "pull_timeout_ms", 10000, 0, MAX_PULL_TIMEOUT_MS,
                             "0 (no timeout of its own) or a number of ms")
        retry = _int_field(body, "pull_retry_num", 0, _INT64[0], MAX_PULL_RETRY_NUM,
                           "-1 (until stopped), 0 (no retry) or a count")
        auto_stop = _int_field(body, "auto_stop_pull_after_no_out_ms", -1, _INT64[0],
                               MAX_AUTO_STOP_MS, "-1 (never), 0 (at once) or a number of ms")
        _int_field(body, "rtsp_mode", 0, *_INT64)  # lal's, for rtsp:// pulls
        _string_field(body, "debug_dump_packet", required=False)  # lal's, for rtsp://
        shown = redact(url)
        try:
            pull = self.context.relays.start_pull(url, stream_name, timeout, retry, auto_stop)
        except PullError as e:
            log.info("http api from {peer}: start_relay_pull {url} refused: {why}",
                     peer=_peer(request), url=shown, why=str(e))
            return {"error_code": START_RELAY_PULL_FAIL[0], "desp": redact(str(e)),
                    "data": {"stream_name": "", "session_id": ""}}
        log.info("http api from {peer}: start_relay_pull {url} as {key}", peer=_peer(request),
                 url=shown, key=pull.key)
        return {**_basic(SUCCESS), "data": {"stream_name": pull.stream_name,
                                            "session_id": pull.session_id}}

    def stop_relay_pull(self, request: IRequest) -> dict[str, Any]:
        name = _query_arg(request, "stream_name")
        if not name:
            raise BadRequest("the query parameter stream_name is required")
        relays = self.context.relays
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

    def add_ip_blacklist(self, request: IRequest) -> dict[str, Any]:
        """lal's: refuse ``ip`` for ``duration_sec`` seconds (0 or less: no more).
        lal checks HLS requests only; here every media listener refuses the
        address and its open connections are closed (the API listener is not
        covered, so a backend cannot lock itself out)."""
        body = _json_body(request)
        text = _string_field(body, "ip").strip()
        duration = _int_field(body, "duration_sec", 0, *_INT64)
        if "duration_sec" not in body:
            raise BadRequest("duration_sec is required")
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            raise BadRequest(f"ip must be an IPv4 or IPv6 address, got {safe(text)!r}") from None
        mapped = getattr(address, "ipv4_mapped", None)
        ip = str(mapped or address)  # as the listeners see an IPv4 client of a dual stack
        seconds = min(duration, _MAX_BLACKLIST_SEC)
        closed = self.context.guard.block(ip, seconds)
        if seconds > 0:  # and the sessions of no connection of their own (HLS viewers)
            for session in self.registry.list_sessions():
                host = plain_host(session.remote_addr.rpartition(":")[0].strip("[]"))
                if session.role in (Role.PUBLISH, Role.PLAY) and host == ip:
                    session.close("address blacklisted")
        log.info("http api from {peer}: add_ip_blacklist {ip} for {secs}s ({n} connections "
                 "closed)", peer=_peer(request), ip=ip, secs=max(0, seconds), n=closed)
        return _basic(SUCCESS)


def _int_field(body: dict[str, Any], name: str, default: int, low: int = _INT64[0],
               high: int = _INT64[1], meaning: str = "") -> int:
    """A whole-number field (lal's Go ``int``): ``default`` when absent, 0 when
    null (Go's zero value); NaN, infinities, fractions, other types and values
    outside [low, high] are bad requests naming the field."""
    if name not in body:
        return default
    value = body[name]
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a whole number, got {_shown(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise BadRequest(f"{name} must be a whole number, got {_shown(value)}")
        value = int(value)
    if not low <= value <= high:
        what = f" ({meaning})" if meaning else ""
        raise BadRequest(f"{name} must be between {low} and {high}{what}, got {value}")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else (
        str(value))
    return safe(text, 40)


def _redact(group: dict[str, Any]) -> None:
    """The public copy (on the HTTP listener) does not tell who the clients are."""
    for session in (group["pub"], group["pull"], *group["subs"], *group["pushs"]):
        session["remote_addr"] = ""
        if "url" in session:
            session["url"] = ""


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
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not JSON (or nests too deep)") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _string_field(body: dict[str, Any], name: str, required: bool = True) -> str:
    """A string field; null is "" (Go's zero value), absent is an error when
    ``required`` (lal's 1002) and "" otherwise."""
    if name not in body:
        if required:
            raise BadRequest(f"{name} is required")
        return ""
    value = body[name]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value
