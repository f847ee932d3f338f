"""Events: observers are told when the server starts, sessions come and go,
a stream is wanted or no longer watched, a recording is finished, and
periodically.

Observers (HTTP notify, metrics, an on-demand relay, an application's own
code) implement :class:`IObserver`, usually by subclassing :class:`Observer`
and overriding what they need.  They are called in the order they were added,
synchronously and outside the per-packet path; they must return quickly and
do slow work (network calls) later.  An observer that raises, or returns a
Deferred that fails, is logged; the other observers and the media carry on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from lal_twisted.log import Logger

if TYPE_CHECKING:
    from lal_twisted.hub.access import Refused
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session

__all__ = ["EVENTS", "IObserver", "Observer", "Observers"]

log = Logger("lal_twisted.hub.events")


class IObserver(Interface):
    """What the registry tells its observers."""

    def server_started(server: Any) -> None:
        """All listeners are bound (``server`` is the LalService)."""

    def publish_started(session: Session) -> None:
        """A publisher was accepted; media from it reaches players."""

    def publish_stopped(session: Session) -> None:
        """A publisher left (closed, unpublished or kicked)."""

    def play_started(session: Session) -> None:
        """A player was accepted and attached to its stream."""

    def play_stopped(session: Session) -> None:
        """A player left."""

    def relay_pull_started(session: Session) -> None:
        """A relay pull began feeding a stream (it publishes it locally)."""

    def relay_pull_stopped(session: Session) -> None:
        """A relay pull stopped."""

    def stream_wanted(key: str, session: Session) -> None:
        """The first player of ``key`` arrived while nobody publishes it."""

    def stream_unwatched(key: str) -> None:
        """The last player of ``key`` left."""

    def periodic_update(registry: StreamRegistry) -> None:
        """Every update interval, after the sessions' bitrates were refreshed."""

    def record_finished(record: Any) -> None:
        """A recorded file was closed (``record`` is a
        :class:`lal_twisted.record.recorder.Recorded`: path, format, stream,
        times, bytes, and ``error`` when it stopped early)."""

    def session_refused(session: Session, refusal: Refused) -> None:
        """A publish or play was refused (bad name, access check, stream busy)."""

    def rtmp_connected(session: Session, app: str, flash_ver: str, tc_url: str) -> None:
        """An RTMP client sent ``connect`` (before it publishes or plays; the
        session is not in the session table yet)."""

    def hls_segment_made(info: dict[str, Any]) -> None:
        """An HLS muxer closed a TS segment.  ``info`` has lal's on_hls_make_ts
        fields: ``event`` ("open"/"close"), ``stream_name``, ``cwd``, ``ts_file``,
        ``live_m3u8_file``, ``record_m3u8_file``, ``id`` (int), ``duration`` (s)."""


EVENTS = tuple(IObserver.names())


@implementer(IObserver)
class Observer:
    """An observer that ignores every event: subclass it and override some."""

    def server_started(self, server: Any) -> None:
        pass

    def publish_started(self, session: Session) -> None:
        pass

    def publish_stopped(self, session: Session) -> None:
        pass

    def play_started(self, session: Session) -> None:
        pass

    def play_stopped(self, session: Session) -> None:
        pass

    def relay_pull_started(self, session: Session) -> None:
        pass

    def relay_pull_stopped(self, session: Session) -> None:
        pass

    def stream_wanted(self, key: str, session: Session) -> None:
        pass

    def stream_unwatched(self, key: str) -> None:
        pass

    def periodic_update(self, registry: StreamRegistry) -> None:
        pass

    def record_finished(self, record: Any) -> None:
        pass

    def session_refused(self, session: Session, refusal: Refused) -> None:
        pass

    def rtmp_connected(self, session: Session, app: str, flash_ver: str, tc_url: str) -> None:
        pass

    def hls_segment_made(self, info: dict[str, Any]) -> None:
        pass


class Observers:
    """The registry's ordered list of observers and the one way to call them."""

    def __init__(self) -> None:
        self._observers: list[Any] = []

    def add(self, observer: Any) -> None:
        self._observers.append(observer)

    def remove(self, observer: Any) -> None:
        self._observers.remove(observer)

    def __len__(self) -> int:
        return len(self._observers)

    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every observer that has it, isolating failures."""
        for observer in list(self._observers):
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                result = method(*args)
            except Exception:
                log.failure("observer {observer} failed on {event}",
                            observer=type(observer).__name__, event=event)
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(_log_failure, type(observer).__name__, event)


def _log_failure(failure: Failure, observer: str, event: str) -> None:
    log.failure("observer {observer} failed on {event}", failure, observer=observer, event=event)
