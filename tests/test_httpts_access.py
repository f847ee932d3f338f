"""HTTP-TS players go through the access chain like every player: sessions with
lal's TSSUB ids, 403 when refused, 404 when refused as not found, 400 for a bad
name (in process, real sockets on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from zope.interface import implementer

from lal_twisted import log as lal_log
from lal_twisted.config import from_dict
from lal_twisted.hub.access import IAccessCheck, Refused
from lal_twisted.hub.session import Session
from lal_twisted.service import make_service


@implementer(IAccessCheck)
class Rules:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str, str]] = []

    def check(self, session: Session) -> Any:
        self.asked.append((session.id, session.protocol, str(session.role), session.key))
        if session.stream == "secret":
            return Refused("no token")
        if session.stream == "gone":
            return Refused("no such stream", not_found=True)
        return True


@pytest_twisted.inlineCallbacks
def test_refused_httpts_players_get_403_or_404() -> Any:
    lals = make_service(from_dict({"rtmp": {"addr": "127.0.0.1:0"},
                                   "default_http": {"http_listen_addr": "127.0.0.1:0"},
                                   "log": {"is_to_stdout": False}}), reactor)
    rules = Rules()
    lals.registry.add_access_check(rules)
    lals.startService()
    try:
        port = lals.http.port.getHost().port  # type: ignore[union-attr]
        agent = Agent(reactor)
        answers = {}
        for name in ("secret", "gone", "a%22b"):
            response = yield agent.request(b"GET", f"http://127.0.0.1:{port}/live/{name}.ts"
                                           .encode())
            answers[name] = (response.code, (yield readBody(response)))
        assert answers["secret"] == (403, b"forbidden: no token\n")
        assert answers["gone"] == (404, b"not found: no such stream\n")
        assert answers["a%22b"][0] == 400
        assert [a[1:] for a in rules.asked] == [("httpts", "play", "live/secret"),
                                                ("httpts", "play", "live/gone")]
        assert all(a[0].startswith("TSSUB") for a in rules.asked)
        assert lals.registry.list_sessions() == []  # refused sessions are not kept
    finally:
        yield lals.stopService()
        lal_log.reset()
