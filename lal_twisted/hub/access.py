"""Access checks: may this session publish or play?

Before a publish or a play is accepted the registry asks an ordered chain of
:class:`IAccessCheck` objects (simple_auth, an HTTP hook, an application's own
Python check).  Each answers at once or with a Deferred; the first refusal
wins, and a Deferred that has not answered within the configured timeout
counts as a refusal, so a hung hook cannot hold a connection open forever.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from lal_twisted.log import Logger

if TYPE_CHECKING:
    from lal_twisted.hub.session import Session

__all__ = ["IAccessCheck", "RefusalKind", "Refused", "check_access"]

log = Logger("lal_twisted.hub.access")


class RefusalKind(StrEnum):
    """Why a publish or play was refused; each protocol answers each kind in
    one place (HTTP: :func:`lal_twisted.web.player.http_answer`; RTMP:
    ``rtmp/server.py``), and the metrics count refusals by it."""

    BAD_NAME = "bad_name"  # the app or stream name is not valid
    NOT_FOUND = "not_found"  # the stream does not exist (or will not come)
    BUSY = "stream_busy"  # another publisher has the stream
    TIMEOUT = "timeout"  # an access check did not answer in time
    DENIED = "denied"  # this client may not have it


class Refused(Exception):
    """A publish or play was refused, with a ``kind`` (:class:`RefusalKind`)
    and a ``reason`` for people.  ``check`` names the access check that refused
    (``simple_auth``, ``http_hook``, a Python check's name; empty when the hub
    itself did).  ``not_found=True`` / ``bad_name=True`` are the kinds
    NOT_FOUND / BAD_NAME (the forms an application's own check may use)."""

    def __init__(self, reason: str, not_found: bool = False, bad_name: bool = False,
                 kind: RefusalKind | None = None, check: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind or (RefusalKind.BAD_NAME if bad_name else
                             RefusalKind.NOT_FOUND if not_found else RefusalKind.DENIED)
        self.check = check

    @property
    def not_found(self) -> bool:
        return self.kind is RefusalKind.NOT_FOUND

    @property
    def bad_name(self) -> bool:
        return self.kind is RefusalKind.BAD_NAME


class IAccessCheck(Interface):
    """One link of the access chain."""

    def check(session: Session) -> Any:
        """Decide whether ``session`` (``session.role`` says publish or play) may
        go on.  Return True or None to allow, False or a :class:`Refused` (or
        raise one) to refuse, or a Deferred that fires with one of those."""


def _name(check: Any) -> str:
    return getattr(check, "name", None) or type(check).__name__


def _verdict(check: Any, answer: Any) -> None:
    if answer is None or answer is True:
        return
    if isinstance(answer, Refused):
        raise answer
    if answer is False:
        raise Refused(f"refused by {_name(check)}")
    raise Refused(f"access check {_name(check)} gave an unusable answer {answer!r}")


@defer.inlineCallbacks
def check_access(
    checks: Sequence[Any], session: Session, timeout: float, reactor: IReactorTime,
) -> Generator[defer.Deferred[Any], Any, None]:
    """Run ``checks`` in order for ``session``; fires with None when all allow,
    fails with :class:`Refused` at the first refusal.  With only synchronous
    checks the returned Deferred has already fired."""
    for check in checks:
        try:
            answer = check.check(session)
            if isinstance(answer, defer.Deferred):
                answer.addTimeout(timeout, reactor)
                answer = yield answer
            _verdict(check, answer)
        except Refused as refusal:
            refusal.check = refusal.check or _name(check)
            raise
        except defer.TimeoutError:
            raise Refused(f"access check {_name(check)} did not answer within "
                          f"{timeout:g}s", kind=RefusalKind.TIMEOUT,
                          check=_name(check)) from None
        except Exception as e:
            log.failure("access check {check} failed for {session}", check=_name(check),
                        session=session.id)
            raise Refused(f"access check {_name(check)} failed: {e}",
                          check=_name(check)) from None
