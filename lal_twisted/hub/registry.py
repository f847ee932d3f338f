"""StreamRegistry: the service that mediates publisher-to-subscriber flow.

Every publish and play, whatever its protocol, comes here as a
:class:`~lal_twisted.hub.session.Session`: the access chain decides, the
session joins the session table, its Stream gets the publisher or the sink,
and the subscribers of its events are told.  Protocol adapters only translate.

A player that must know a stream's tracks before it plays (RTSP DESCRIBE, a
WHEP offer) asks :meth:`StreamRegistry.describe` first: the same checks as a
play, then the tracks at once when they are known, or when the publisher's
are, within ``describe_timeout``.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from lal_twisted.hub.access import RefusalKind, Refused, check_access
from lal_twisted.hub.events import (
    EventBus,
    PeriodicUpdate,
    PlayStarted,
    PlayStopped,
    PublishStarted,
    PublishStopped,
    RelayPullStarted,
    RelayPullStopped,
    SessionRefused,
    StreamUnwatched,
    StreamWanted,
)
from lal_twisted.hub.gop_cache import DEFAULT_GOP_CACHE_MAX_BYTES
from lal_twisted.hub.ports import IPublisher, ISink
from lal_twisted.hub.session import Role, Session, SessionIds, check_names, stream_key
from lal_twisted.hub.stream import Stream
from lal_twisted.log import Logger
from lal_twisted.media.track import Tracks

__all__ = ["Refused", "StreamBusy", "StreamRegistry", "stream_key"]

log = Logger("lal_twisted.hub.registry")


class StreamBusy(Refused):
    """A publisher tried to publish a stream key that is already live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"stream {key} is already being published", kind=RefusalKind.BUSY)
        self.key = key


class SessionGone(Exception):
    """The session ended while its access checks were running."""


class StreamRegistry(service.Service):
    """All live streams by key, all sessions by id, the access chain and the events.

    ``gop_num``, ``single_gop_max_frame_num`` and ``gop_cache_max_bytes`` size
    each stream's GOP cache;
    ``access_timeout`` bounds how long an access check may take (seconds);
    ``update_interval`` is the period of :class:`~lal_twisted.hub.events.PeriodicUpdate`;
    ``dummy_audio_wait_ms`` (None: off) adds silent AAC to publishers without
    audio (lal's ``in_session.add_dummy_audio_*``);
    ``describe_timeout`` bounds how long :meth:`describe` waits for a
    publisher's tracks (seconds).
    """

    name = "registry"

    def __init__(self, gop_num: int = 1, single_gop_max_frame_num: int = 0,
                 reactor: IReactorTime | None = None, access_timeout: float = 5.0,
                 update_interval: float = 5.0,
                 gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES,
                 dummy_audio_wait_ms: int | None = None,
                 describe_timeout: float = 5.0) -> None:
        self.dummy_audio_wait_ms = dummy_audio_wait_ms
        self.describe_timeout = describe_timeout
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.reactor = reactor
        self.gop_num = gop_num
        self.single_gop_max_frame_num = single_gop_max_frame_num
        self.gop_cache_max_bytes = gop_cache_max_bytes
        self.access_timeout = access_timeout
        self.update_interval = update_interval
        self.streams: dict[str, Stream] = {}
        self.sessions: dict[str, Session] = {}
        self.session_ids = SessionIds()
        self.access_checks: list[Any] = []
        self.events = EventBus()
        self._updates: task.LoopingCall | None = None

    # -- extension points ------------------------------------------------------------
    def add_access_check(self, check: Any) -> None:
        """Append an :class:`~lal_twisted.hub.access.IAccessCheck` to the chain."""
        self.access_checks.append(check)

    def add_observer(self, observer: object) -> None:
        """Add an observer object (:meth:`~lal_twisted.hub.events.EventBus.add_observer`);
        ``events.subscribe`` takes a callback per event type."""
        self.events.add_observer(observer)

    def new_session(self, prefix: str, protocol: str, remote_addr: str,
                    closer: Any = None) -> Session:
        """A Session with a fresh id (``prefix`` as lal names the session type;
        ``protocol`` a :class:`~lal_twisted.protocols.ProtocolName`, or an
        application's own name for its sessions)."""
        return Session(self.session_ids.new(prefix), protocol, remote_addr, closer,
                       clock=self.reactor.seconds)

    # -- lookups ------------------------------------------------------------------------
    def get(self, key: str) -> Stream | None:
        return self.streams.get(key)

    def find_session(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def list_sessions(self) -> list[Session]:
        return list(self.sessions.values())

    def kick(self, session_id: str, reason: str = "kicked") -> bool:
        """End the session with this id; False when there is none."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        log.info("session {id} kicked: {reason}", id=session.id, reason=reason)
        session.close(reason)
        return True

    def _stream(self, key: str) -> Stream:
        stream = self.streams.get(key)
        if stream is None:
            stream = Stream(key, self.gop_num, self.single_gop_max_frame_num,
                            self.gop_cache_max_bytes, self._discard_if_idle)
            self.streams[key] = stream
        return stream

    # -- publish -------------------------------------------------------------------------
    def publish(self, session: Session, publisher: IPublisher,
                role: Role = Role.PUBLISH) -> defer.Deferred[Stream]:
        """Run the access chain, then make ``publisher`` the source of the
        session's stream.  Fires with the Stream, or fails with
        :class:`Refused` (:class:`StreamBusy` when the stream is live)."""
        session.role = role
        d = self._admit(session)
        return d.addCallback(lambda _: self._start_publish(session, publisher))

    def _admit(self, session: Session) -> defer.Deferred[None]:
        """Valid names first (whatever the checks would say), then the access chain."""
        problem = check_names(session.app, session.stream)
        if problem is not None:
            d: defer.Deferred[None] = defer.fail(
                Refused(f"invalid stream name: {problem}", kind=RefusalKind.BAD_NAME))
        else:
            d = check_access(self.access_checks, session, self.access_timeout, self.reactor)
        return d.addErrback(self._refused, session)

    def _refused(self, failure: Any, session: Session) -> Any:
        if failure.check(Refused):
            self.events.emit(SessionRefused(session, failure.value))
        return failure

    def _start_publish(self, session: Session, publisher: IPublisher) -> Stream:
        if session.ended:
            raise SessionGone(session.id)
        key = session.key
        stream = self._stream(key)
        if stream.publisher is not None and stream.publisher is not publisher:
            self._discard_if_idle(stream)
            busy = StreamBusy(key)
            self.events.emit(SessionRefused(session, busy))
            raise busy
        stream.start_publish(publisher)
        if self.dummy_audio_wait_ms is not None:
            stream.add_dummy_audio(self.dummy_audio_wait_ms)
        stream.publish_session = session
        self.sessions[session.id] = session
        log.info("stream {key} publishing from {who} ({subs} players waiting)", key=key,
                 who=session.remote_addr, subs=stream.player_count)
        self.events.emit(RelayPullStarted(session) if session.role == Role.RELAY_PULL
                         else PublishStarted(session))
        return stream

    def unpublish(self, session: Session, publisher: IPublisher) -> None:
        """The publisher stopped (or its connection closed)."""
        stream = self.streams.get(session.key)
        if stream is None or stream.publisher is not publisher:
            return
        stream.stop_publish()
        stream.publish_session = None
        self.sessions.pop(session.id, None)
        log.info("stream {key} unpublished ({n} packets in)", key=stream.key, n=stream.packets_in)
        self.events.emit(RelayPullStopped(session) if session.role == Role.RELAY_PULL
                         else PublishStopped(session))
        self._discard_if_idle(stream)

    # -- play ------------------------------------------------------------------------------
    def play(self, session: Session, sink: ISink, gop_num: int | None = None,
             role: Role = Role.PLAY) -> defer.Deferred[Stream]:
        """Run the access chain, then attach ``sink`` (it waits if nobody
        publishes yet).  ``gop_num`` limits how many cached GOPs it is sent
        first (None: all the cache holds).  Fires with the Stream or fails with
        :class:`Refused`."""
        session.role = role
        session.sink = sink
        d = self._admit(session)
        return d.addCallback(lambda _: self._start_play(session, sink, gop_num))

    def _start_play(self, session: Session, sink: ISink, gop_num: int | None) -> Stream:
        if session.ended:
            raise SessionGone(session.id)
        stream = self._stream(session.key)
        first_waiting = not stream.player_count and stream.publisher is None
        stream.add_sink(sink, gop_num)
        self.sessions[session.id] = session
        self.events.emit(PlayStarted(session))
        if first_waiting:
            self.events.emit(StreamWanted(stream.key, session))
        return stream

    def stop_play(self, session: Session, sink: ISink) -> None:
        """The player left."""
        if self.sessions.pop(session.id, None) is None:
            return
        stream = self.streams.get(session.key)
        if stream is None or sink not in stream.sinks:
            return
        stream.remove_sink(sink)
        self.events.emit(PlayStopped(session))
        if not stream.player_count:
            self.events.emit(StreamUnwatched(stream.key))
        self._discard_if_idle(stream)

    def check_play(self, session: Session) -> defer.Deferred[None]:
        """Run the name check and the access chain as a play would, and nothing
        else (an HTTP HEAD: the answer a GET would get, without a player).
        Fails with :class:`Refused`."""
        session.role = Role.PLAY
        return self._admit(session)

    def add_viewer(self, session: Session) -> defer.Deferred[None]:
        """Run the access chain for a player served request by request (an HLS
        viewer), then list it as a session and tell the subscribers
        (:class:`~lal_twisted.hub.events.PlayStarted`).  It gets no sink: its
        requests read what the stream's output keeps.  Fails with :class:`Refused`."""
        session.role = Role.PLAY
        d = self._admit(session)
        return d.addCallback(lambda _: self._start_viewer(session))

    def _start_viewer(self, session: Session) -> None:
        if session.ended:
            raise SessionGone(session.id)
        self.sessions[session.id] = session
        self.events.emit(PlayStarted(session))

    def remove_viewer(self, session: Session) -> None:
        """The viewer left (timed out): :class:`~lal_twisted.hub.events.PlayStopped`."""
        session.ended = True
        if self.sessions.pop(session.id, None) is not None:
            self.events.emit(PlayStopped(session))

    # -- describe ----------------------------------------------------------------------------
    def describe(self, session: Session, timeout: float | None = None) -> defer.Deferred[Tracks]:
        """Run the name check and the access chain as a play would, then fire
        with the stream's tracks: at once when they are known, else when its
        publisher's are (a publisher that comes later included), within
        ``timeout`` (``describe_timeout`` when None).  The session joins no
        table and no event but a refusal is told.  Fails with
        :class:`Refused`: ``NOT_FOUND`` when nobody published in that time,
        ``TIMEOUT`` when a publisher did but said nothing of its tracks; a
        publisher that showed some of them (audio, its video never came) gives
        those."""
        session.role = Role.PLAY
        wait = self.describe_timeout if timeout is None else timeout
        d = self._admit(session)
        return d.addCallback(lambda _: self._describe(session, wait))

    def _describe(self, session: Session, timeout: float) -> defer.Deferred[Tracks]:
        if session.ended:
            raise SessionGone(session.id)
        stream = self._stream(session.key)
        waiter = stream.when_tracks_known()
        if waiter.called:
            return waiter
        call: Any = None

        def give_up(_: Any) -> None:  # the caller cancelled (its client left)
            if call.active():
                call.cancel()
            waiter.cancel()
            self._discard_if_idle(stream)

        result: defer.Deferred[Tracks] = defer.Deferred(give_up)

        def expired() -> None:
            waiter.cancel()  # before the stream may be forgotten
            self._discard_if_idle(stream)
            if stream.publisher is not None and (stream.tracks.video or stream.tracks.audio):
                result.callback(Tracks(stream.tracks.video, stream.tracks.audio))
                return
            if stream.publisher is None:
                refusal = Refused(f"stream {stream.key} is not published",
                                  kind=RefusalKind.NOT_FOUND)
            else:
                refusal = Refused(f"stream {stream.key}: its tracks were not known within "
                                  f"{timeout:g}s", kind=RefusalKind.TIMEOUT)
            self.events.emit(SessionRefused(session, refusal))
            result.errback(refusal)

        call = self.reactor.callLater(timeout, expired)

        def known(tracks: Tracks) -> None:
            if call.active():
                call.cancel()
            result.callback(tracks)

        waiter.addCallbacks(known, lambda f: f.trap(defer.CancelledError) and None)
        return result

    def subscribe(self, key: str, sink: ISink, gop_num: int | None = None) -> Stream:
        """Attach ``sink`` to ``key`` directly, without a session, access checks or
        events (an in-process consumer such as a recording, a test or an analysis
        tool; it is not counted as a player)."""
        stream = self._stream(key)
        stream.add_sink(sink, gop_num, player=False)
        return stream

    def unsubscribe(self, key: str, sink: ISink) -> None:
        stream = self.streams.get(key)
        if stream is None:
            return
        stream.remove_sink(sink)
        self._discard_if_idle(stream)

    def _discard_if_idle(self, stream: Stream) -> None:
        if stream.idle and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]  # idle: its outputs were closed by their release

    # -- periodic update and lifecycle ---------------------------------------------------
    def _update(self) -> None:
        for session in self.sessions.values():
            session.update_bitrate()
        self.events.emit(PeriodicUpdate(self))

    def startService(self) -> None:  # noqa: N802 - Twisted interface
        super().startService()
        if self.update_interval > 0:
            self._updates = task.LoopingCall(self._update)
            self._updates.clock = self.reactor
            self._updates.start(self.update_interval, now=False)

    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        if self._updates is not None and self._updates.running:
            self._updates.stop()
        for stream in list(self.streams.values()):
            for sink in list(stream.sinks):
                sink.close("server shutting down")
            if stream.publisher is not None:
                stream.publisher.close("server shutting down")
        return super().stopService()
