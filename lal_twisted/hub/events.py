"""Events: what happened, as small typed objects, and the bus that tells the subscribers.

An event is an instance of a subclass of :class:`Event`.  The hub's own events
are defined here: the server started, sessions began, ended or were refused,
a stream is wanted or no longer watched, and a periodic update.  A feature
defines its events in its own package (``hls.manager.HlsSegmentMade``,
``record.recorder.RecordFinished``, ``rtmp.server.RtmpConnected``), so a new
feature adds events without editing this module.

Code subscribes by type: ``registry.events.subscribe(PublishStarted, callback)``
calls ``callback(event)`` for every :class:`PublishStarted`, and a subscription
to a base class (:class:`SessionStarted`, :class:`SessionEvent`, :class:`Event`)
receives its subclasses too.  An application may instead add an observer
object (``registry.add_observer(obj)``): each event calls the method that its
class names in ``observer_method`` (``publish_started``), with the event's
fields as arguments, when the object has one.

Subscribers are called in the order they subscribed, synchronously and outside
the per-packet path; they must return quickly and do slow work (network calls)
later.  A subscriber that raises, or returns a Deferred that fails, is logged;
the other subscribers and the media carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from lal_twisted.hub.access import Refused
from lal_twisted.hub.session import Session
from lal_twisted.log import Logger

__all__ = ["Event", "EventBus", "Observer", "PeriodicUpdate", "PlayStarted", "PlayStopped",
           "PublishStarted", "PublishStopped", "RelayPullStarted", "RelayPullStopped",
           "ServerStarted", "SessionEvent", "SessionRefused", "SessionStarted",
           "SessionStopped", "SessionTable", "SourceStarted", "SourceStopped", "StreamUnwatched",
           "StreamWanted"]

log = Logger("lal_twisted.hub.events")

E = TypeVar("E", bound="Event")


@dataclass(frozen=True)
class Event:
    """The base of every event.  ``observer_method`` names the method of an
    observer object that the event calls (none for the bases that only group
    events); :meth:`observer_args` are its arguments."""

    observer_method: ClassVar[str] = ""

    def observer_args(self) -> tuple[Any, ...]:
        """The arguments of the observer method: the fields, in order."""
        return tuple(getattr(self, field.name) for field in fields(self))


class SessionTable(Protocol):
    """What a periodic update hands its subscribers (the registry is one)."""

    sessions: dict[str, Session]

    def list_sessions(self) -> list[Session]: ...


# -- the hub's events ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStarted(Event):
    """All listeners are bound (``server`` is the LalService)."""

    server: Any
    observer_method: ClassVar[str] = "server_started"


@dataclass(frozen=True)
class SessionEvent(Event):
    """Something happened to one session (the base of the session events)."""

    session: Session


@dataclass(frozen=True)
class SessionStarted(SessionEvent):
    """A session was accepted: a publish, a play or a relay pull."""


@dataclass(frozen=True)
class SessionStopped(SessionEvent):
    """An accepted session left."""


@dataclass(frozen=True)
class SourceStarted(SessionStarted):
    """A stream's source was accepted: a publisher or a relay pull (what HLS,
    recording and relay pushes follow)."""


@dataclass(frozen=True)
class SourceStopped(SessionStopped):
    """A stream's source left: a publisher or a relay pull."""


@dataclass(frozen=True)
class PublishStarted(SourceStarted):
    """A publisher was accepted; media from it reaches players."""

    observer_method: ClassVar[str] = "publish_started"


@dataclass(frozen=True)
class PublishStopped(SourceStopped):
    """A publisher left (closed, unpublished or kicked)."""

    observer_method: ClassVar[str] = "publish_stopped"


@dataclass(frozen=True)
class PlayStarted(SessionStarted):
    """A player was accepted and attached to its stream (or, served request by
    request, listed as a viewer)."""

    observer_method: ClassVar[str] = "play_started"


@dataclass(frozen=True)
class PlayStopped(SessionStopped):
    """A player left."""

    observer_method: ClassVar[str] = "play_stopped"


@dataclass(frozen=True)
class RelayPullStarted(SourceStarted):
    """A relay pull began feeding a stream (it publishes it locally)."""

    observer_method: ClassVar[str] = "relay_pull_started"


@dataclass(frozen=True)
class RelayPullStopped(SourceStopped):
    """A relay pull stopped."""

    observer_method: ClassVar[str] = "relay_pull_stopped"


@dataclass(frozen=True)
class SessionRefused(SessionEvent):
    """A publish or play was refused (bad name, access check, stream busy)."""

    refusal: Refused
    observer_method: ClassVar[str] = "session_refused"


@dataclass(frozen=True)
class StreamWanted(Event):
    """The first player of ``key`` arrived while nobody publishes it."""

    key: str
    session: Session
    observer_method: ClassVar[str] = "stream_wanted"


@dataclass(frozen=True)
class StreamUnwatched(Event):
    """The last player of ``key`` left."""

    key: str
    observer_method: ClassVar[str] = "stream_unwatched"


@dataclass(frozen=True)
class PeriodicUpdate(Event):
    """Every update interval, after the sessions' bitrates were refreshed."""

    registry: SessionTable
    observer_method: ClassVar[str] = "periodic_update"


# -- the bus ------------------------------------------------------------------------------


class Observer:
    """A base for observer objects (``registry.add_observer``): it has no
    methods, so an event whose method a subclass does not define is ignored.
    Define the methods that the events' ``observer_method`` name."""


class _ObserverMethods:
    """An observer object as a subscriber of every event."""

    __slots__ = ("observer",)

    def __init__(self, observer: object) -> None:
        self.observer = observer

    def __call__(self, event: Event) -> Any:
        name = event.observer_method
        method = getattr(self.observer, name, None) if name else None
        if method is None:
            return None
        return method(*event.observer_args())

    def __str__(self) -> str:
        return type(self.observer).__name__


class EventBus:
    """The registry's ordered subscriptions and the one way to tell them."""

    def __init__(self) -> None:
        self._subscriptions: list[tuple[type[Event], Callable[[Any], Any]]] = []

    def subscribe(self, event_type: type[E], callback: Callable[[E], Any]) -> None:
        """Call ``callback(event)`` for every event of ``event_type`` (or a subclass)."""
        self._subscriptions.append((event_type, callback))

    def unsubscribe(self, event_type: type[Event], callback: Callable[[Any], Any]) -> None:
        self._subscriptions.remove((event_type, callback))

    def add_observer(self, observer: object) -> None:
        """Call ``observer``'s methods named by the events' ``observer_method``."""
        self._subscriptions.append((Event, _ObserverMethods(observer)))

    def remove_observer(self, observer: object) -> None:
        self._subscriptions = [
            (t, c) for t, c in self._subscriptions
            if not (isinstance(c, _ObserverMethods) and c.observer is observer)]

    def __len__(self) -> int:
        return len(self._subscriptions)

    def emit(self, event: Event) -> None:
        """Tell every subscriber of ``event``'s type, in order, isolating failures."""
        for event_type, callback in list(self._subscriptions):
            if not isinstance(event, event_type):
                continue
            try:
                result = callback(event)
            except Exception:
                log.failure("subscriber {subscriber} failed on {event}",
                            subscriber=_name(callback), event=type(event).__name__)
                continue
            if isinstance(result, defer.Deferred):
                result.addErrback(_log_failure, _name(callback), type(event).__name__)


def _name(callback: Callable[[Any], Any]) -> str:
    if isinstance(callback, _ObserverMethods):
        return str(callback)
    return getattr(callback, "__qualname__", None) or repr(callback)


def _log_failure(failure: Failure, subscriber: str, event: str) -> None:
    log.failure("subscriber {subscriber} failed on {event}", failure, subscriber=subscriber,
                event=event)
