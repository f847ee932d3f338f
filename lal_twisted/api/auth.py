"""Access checks of the control plane: lal's simple_auth and an HTTP hook.

:class:`SimpleAuth` is lal's: the URL query carries ``lal_secret``, which
must equal ``md5(key + stream_name)`` (hex, case-insensitive), or the
configured ``dangerous_lal_secret`` when one is set.  Which sessions are
checked is chosen per protocol and direction (``pub_rtmp_enable``,
``sub_httpflv_enable``, ...), keyed by the session's protocol name, so an
output added later (HTTP-TS, HLS, RTSP) is checked once its sessions carry
their protocol.

:class:`HttpHook` is ours (what SRS's and nginx-rtmp's on_publish/on_play
do): it POSTs the session's notify payload before the session is accepted;
a 2xx answer allows, any other answer, a connection error or the timeout
refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.python.failure import Failure
from zope.interface import implementer

from lal_twisted.api import stat
from lal_twisted.api.bounded_pool import head_too_large
from lal_twisted.api.notify import describe_failure, json_client, post_json, timed_out
from lal_twisted.config import HttpHookConfig, SimpleAuthConfig
from lal_twisted.hub.access import IAccessCheck, Refused
from lal_twisted.hub.session import Role, Session
from lal_twisted.log import Logger, safe
from lal_twisted.protocols import ProtocolName

if TYPE_CHECKING:
    from lal_twisted.api.context import ServerContext

__all__ = ["HttpHook", "SimpleAuth", "lal_secret"]

log = Logger("lal_twisted.api.auth")

SECRET_NAME = "lal_secret"

# (session protocol, publishes?) -> the simple_auth switch that covers it.
_SWITCHES: dict[tuple[str, bool], str] = {
    (ProtocolName.RTMP, True): "pub_rtmp_enable",
    (ProtocolName.RTSP, True): "pub_rtsp_enable",
    (ProtocolName.RTMP, False): "sub_rtmp_enable",
    (ProtocolName.HTTP_FLV, False): "sub_httpflv_enable",
    (ProtocolName.HTTP_TS, False): "sub_httpts_enable",
    (ProtocolName.RTSP, False): "sub_rtsp_enable",
    (ProtocolName.HLS, False): "hls_m3u8_enable",
}


def lal_secret(key: str, stream_name: str) -> str:
    """The ``lal_secret`` lal expects for ``stream_name``: md5(key + stream_name), hex."""
    return hashlib.md5((key + stream_name).encode("utf-8")).hexdigest()


@implementer(IAccessCheck)
class SimpleAuth:
    """lal's simple_auth as a link of the access chain."""

    name = "simple_auth"

    def __init__(self, config: SimpleAuthConfig) -> None:
        self.config = config

    def covers(self, protocol: str, publishes: bool) -> bool:
        switch = _SWITCHES.get((protocol, publishes))
        return switch is not None and bool(getattr(self.config, switch))

    def check(self, session: Session) -> Refused | None:
        if session.role not in (Role.PUBLISH, Role.PLAY):
            return None  # relays are the server's own sessions
        if not self.covers(session.protocol, session.role == Role.PUBLISH):
            return None
        return self.verify(session.stream, session.query)

    def verify(self, stream_name: str, query: str) -> Refused | None:
        """None when ``query`` holds the right ``lal_secret`` for ``stream_name``
        (for outputs that check outside a session, such as an m3u8 request)."""
        values = parse_qs(query, keep_blank_values=True).get(SECRET_NAME)
        given = values[0].lower() if values else ""
        if not given:
            return Refused(f"simple_auth: no {SECRET_NAME} in the URL query")
        given_bytes = given.encode("utf-8", "replace")
        dangerous = self.config.dangerous_lal_secret.encode("utf-8")
        if dangerous and hmac.compare_digest(given_bytes, dangerous):
            return None
        expected = lal_secret(self.config.key, stream_name).encode("ascii")
        if self.config.key and hmac.compare_digest(given_bytes, expected):
            return None
        return Refused(f"simple_auth: wrong {SECRET_NAME}")


@implementer(IAccessCheck)
class HttpHook:
    """``http_hook``: ask a backend before accepting a publish (``on_publish``)
    or a play (``on_play``)."""

    name = "http_hook"

    def __init__(self, config: HttpHookConfig, context: ServerContext) -> None:
        self.config = config
        self.context = context
        self.timeout = config.timeout_ms / 1000.0
        self.client = json_client(context.reactor, self.timeout)

    def check(self, session: Session) -> Any:
        url = (self.config.on_publish if session.role == Role.PUBLISH
               else self.config.on_play if session.role == Role.PLAY else "")
        if not url:
            return None
        payload = stat.session_event(session, self.context.server_id, self.context.registry)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        d = post_json(self.client, url, body, self.timeout, self.context.reactor)
        return d.addCallbacks(self._answered, self._failed, callbackArgs=(session, url),
                              errbackArgs=(session, url))

    def _answered(self, code: int, session: Session, url: str) -> Refused | None:
        if 200 <= code < 300:
            return None
        return Refused(f"http_hook {safe(url)} answered {code}")

    def _failed(self, failure: Failure, session: Session, url: str) -> Refused:
        if timed_out(failure):
            why = f"did not answer within {self.timeout:g}s"
        elif head_too_large(failure):
            why = describe_failure(failure)
        else:
            why = f"unreachable: {describe_failure(failure)}"
        log.warn("http_hook {url} for session {id}: {why}", url=safe(url), id=session.id,
                 why=safe(why))
        return Refused(f"http_hook {safe(url)} {why}")
