"""Refusals have a kind; each protocol answers each kind in one place, and the
metrics count them by kind (and, for denials, by the check that said no)."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from lal_twisted.api.metrics import refusal_reason
from lal_twisted.hub.access import RefusalKind, Refused, check_access
from lal_twisted.hub.registry import StreamBusy
from lal_twisted.hub.session import Session
from lal_twisted.web.player import http_answer


@pytest.mark.parametrize(("refusal", "kind", "status"), [
    (Refused("x", bad_name=True), RefusalKind.BAD_NAME, 400),
    (Refused("x", not_found=True), RefusalKind.NOT_FOUND, 404),
    (Refused("x"), RefusalKind.DENIED, 403),
    (Refused("x", kind=RefusalKind.TIMEOUT), RefusalKind.TIMEOUT, 403),
    (StreamBusy("live/a"), RefusalKind.BUSY, 403),
])
def test_each_kind_has_one_http_answer(refusal: Refused, kind: RefusalKind, status: int) -> None:
    assert refusal.kind is kind
    assert refusal.not_found == (kind is RefusalKind.NOT_FOUND)
    assert refusal.bad_name == (kind is RefusalKind.BAD_NAME)
    code, text = http_answer(refusal)
    assert code == status and text.endswith(f": {refusal.reason}")


class _Check:
    def __init__(self, name: str, answer: object) -> None:
        self.name, self.answer = name, answer

    def check(self, session: Session) -> object:
        return self.answer


def _refusal(checks: list[_Check], clock: Clock | None = None) -> Refused:
    clock = clock or Clock()
    d = check_access(checks, Session("X1", "rtmp", "1.2.3.4:5"), 2.0, clock)
    failures: list[defer.Failure] = []
    d.addErrback(failures.append)
    clock.advance(3.0)
    (failure,) = failures
    return failure.value  # type: ignore[no-any-return]


def test_the_chain_names_the_check_that_refused_and_the_metrics_count_it() -> None:
    refusal = _refusal([_Check("ok", True), _Check("simple_auth", Refused("no secret"))])
    assert (refusal.kind, refusal.check) == (RefusalKind.DENIED, "simple_auth")
    assert refusal_reason(refusal) == "simple_auth"
    refusal = _refusal([_Check("http_hook", defer.succeed(False))])
    assert refusal.check == "http_hook" and refusal_reason(refusal) == "http_hook"
    refusal = _refusal([_Check("mine", False)])
    assert refusal.check == "mine" and refusal_reason(refusal) == "denied"
    refusal = _refusal([_Check("slow", defer.Deferred())])
    assert refusal.kind is RefusalKind.TIMEOUT and refusal_reason(refusal) == "timeout"
    assert "did not answer within 2s" in refusal.reason
    refusal = _refusal([_Check("mine", Refused("gone", not_found=True))])
    assert refusal_reason(refusal) == "not_found"
    assert refusal_reason(StreamBusy("live/a")) == "stream_busy"
    assert refusal_reason(Refused("bad", bad_name=True)) == "bad_name"
