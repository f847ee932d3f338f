"""Relay pull: a stream played from another server and published here.

A :class:`RelayPull` is the publisher of its stream (a ``relay_pull`` session,
``RTMPPULL`` / ``FLVPULL`` id).  It plays the upstream URL; once the upstream
accepted, it publishes the stream through the registry (the access chain, the
``relay_pull_started`` event) and feeds it every packet.  Players already
waiting get the stream from its first keyframe (their sinks wait for one).

A start that fails or times out (``timeout``: connect, accept and the first
packet), or an upstream that ends, is retried ``retry_num`` times (-1: as long
as it is wanted), one second apart doubling up to ten; then the players are
told (RTMP ``NetStream.Play.StreamNotFound``; HTTP-FLV a 404 if nothing was
sent yet, else the end of the body).  A retry count starts afresh once a
pull has delivered media for ``_STABLE_AFTER`` seconds.  An upstream that
stops sending mid-stream (``idle_timeout``, lal's ``rtmp.pull_timeout_sec``)
is closed and counts as ended: a check a few times per timeout compares the
packet count, so nothing is added per packet.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from lal_twisted.hub.ports import INotFound, IPublisher
from lal_twisted.hub.registry import Refused, SessionGone, StreamBusy
from lal_twisted.hub.session import FLV_PULL, RTMP_PULL, Role
from lal_twisted.log import Logger
from lal_twisted.media.packet import AVPacket
from lal_twisted.protocols import ProtocolName
from lal_twisted.relay.upstream import Upstream
from lal_twisted.target import TargetError, target_of
from lal_twisted.tls import verification_error

if TYPE_CHECKING:
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session
    from lal_twisted.hub.stream import Stream

log = Logger("lal_twisted.relay.pull")

_RETRY_FIRST = 1.0
_RETRY_MAX = 10.0
_STABLE_AFTER = 10.0
# Packets that arrive while the publish goes through the access chain.
_EARLY_PACKETS = 2000


@implementer(IPublisher)
class RelayPull:
    """Pulls ``url`` into ``app/stream``; see the module docstring.

    ``on_end(pull)`` is called once when it stops for good.
    """

    def __init__(self, registry: StreamRegistry, reactor: Any, app: str, stream: str,
                 url: str, *, timeout: float = 10.0, retry_num: int = 0,
                 auto_stop_after: float = -1.0, tls: Any = None, static: bool = True,
                 on_end: Any = None, idle_timeout: float = 0.0) -> None:
        self.registry = registry
        self.reactor = reactor
        self.app = app
        self.stream_name = stream
        self.url = url
        self.timeout = timeout
        self.retry_num = retry_num
        self.auto_stop_after = auto_stop_after
        self.tls = tls
        self.static = static
        self.on_end = on_end
        self.idle_timeout = idle_timeout  # 0: an upstream may be silent forever
        self.description = url
        self.started_at = time.time()
        self.session: Session | None = None
        self.stream: Stream | None = None
        self.upstream: Upstream | None = None
        self.failures = 0
        self.attempts = 0
        self.ended = False
        self.packets_in = 0
        self._early: list[AVPacket] | None = None
        self._timer: IDelayedCall | None = None  # retry, first-packet deadline
        self._stop_timer: IDelayedCall | None = None
        self._live_since: float | None = None
        self._reserved_id: str | None = None
        self._idle_check: task.LoopingCall | None = None
        self._idle_seen = (0, 0.0)  # packets_in at the last check, and when it last moved

    @property
    def session_id(self) -> str:
        """The id its session has (or will have: the first start has not connected
        yet), as lal answers start_relay_pull at once."""
        if self.session is None and self._reserved_id is None:
            from lal_twisted.hub.session import FLV_PULL, RTMP_PULL

            http = self.url.startswith(("http://", "https://"))
            self._reserved_id = self.registry.session_ids.new(FLV_PULL if http else RTMP_PULL)
        return self.session.id if self.session is not None else self._reserved_id or ""

    @property
    def key(self) -> str:
        from lal_twisted.hub.session import stream_key

        return stream_key(self.app, self.stream_name)

    @property
    def state(self) -> str:
        """``live`` (publishing here), ``connecting`` (an attempt is under way),
        ``waiting_to_retry`` or ``stopped``: what the stat group shows."""
        if self.ended:
            return "stopped"
        if self.stream is not None:
            return "live"
        return "connecting" if self.upstream is not None else "waiting_to_retry"

    @property
    def remote_addr(self) -> str:
        """The upstream's ``host:port`` (or ``unix:PATH:``)."""
        try:
            return target_of(self.url).netloc
        except TargetError:
            return ""

    # -- life ----------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.time()
        self._attempt()
        if not self.static and self.auto_stop_after >= 0 and not self._players():
            # lal counts the time without players from the start of the pull.
            self.player_left_all()

    def _attempt(self) -> None:
        self._timer = None
        if self.ended:
            return
        self.attempts += 1
        self._early = []
        upstream = self.upstream = Upstream(self.reactor, self.url, self._packet, self.timeout,
                                            self.tls)
        try:
            d = upstream.start()
        except Exception as e:  # a URL or TLS setup problem: retrying will not help
            self.give_up(f"cannot pull {self.url}: {e}")
            return
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(self._accepted, self._failed, callbackArgs=(upstream,),
                       errbackArgs=(upstream,))

    def _accepted(self, upstream: Upstream, _: Upstream) -> defer.Deferred[Any] | None:
        if upstream is not self.upstream or self.ended:
            upstream.stop()
            return None
        upstream.done.addBoth(self._upstream_ended, upstream)
        # Accepted but silent (an upstream waiting for its own publisher) counts as
        # a failed start once the timeout passes.
        self._timer = self.reactor.callLater(self.timeout, self._no_media, upstream)
        http = upstream.url.startswith(("http://", "https://"))
        session = self.registry.new_session(FLV_PULL if http else RTMP_PULL,
                                            ProtocolName.HTTP_FLV if http else ProtocolName.RTMP,
                                            self.remote_addr, closer=self.close)
        if self._reserved_id is not None:  # the id the API answered with
            session.id, self._reserved_id = self._reserved_id, None
        session.app, session.stream, session.url = self.app, self.stream_name, upstream.url
        self.session = session
        d = self.registry.publish(session, self, role=Role.RELAY_PULL)
        d.addCallbacks(self._published, self._refused, callbackArgs=(upstream,),
                       errbackArgs=(upstream,))
        return None

    def _published(self, stream: Stream, upstream: Upstream) -> None:
        if upstream is not self.upstream or self.ended:
            return
        self.stream = stream
        early, self._early = self._early or [], None
        for packet in early:
            stream.feed(packet)
        log.info("relay pull {id} {key} from {url} started", id=self.session.id,  # type: ignore[union-attr]
                 key=self.key, url=self.url)

    def _refused(self, failure: Failure, upstream: Upstream) -> None:
        if failure.check(SessionGone):
            return
        why = failure.value.reason if failure.check(Refused) else failure.getErrorMessage()  # type: ignore[union-attr]
        # A local publisher has the stream (its players are served): nothing to tell.
        # Refused otherwise (an access check): the waiting players will not get it.
        self.stop(f"publish refused here: {why}", tell_players=not failure.check(StreamBusy))

    def _packet(self, packet: AVPacket) -> None:
        self.packets_in += 1
        stream = self.stream
        if stream is not None:
            self.session.bytes_in += len(packet.payload)  # type: ignore[union-attr]
            if self._live_since is None:
                self._went_live()
            stream.feed(packet)
        elif self._early is not None and len(self._early) < _EARLY_PACKETS:
            self._early.append(packet)

    def _went_live(self) -> None:
        self._cancel(self._timer)
        self._timer = None
        self._live_since = now = self.reactor.seconds()
        if self.idle_timeout > 0 and self._idle_check is None:
            self._idle_seen = (self.packets_in, now)
            self._idle_check = task.LoopingCall(self._check_idle)
            self._idle_check.clock = self.reactor
            self._idle_check.start(self.idle_timeout / 4, now=False)

    def _check_idle(self) -> None:
        upstream, now = self.upstream, self.reactor.seconds()
        count, since = self._idle_seen
        if self.packets_in != count:
            self._idle_seen = (self.packets_in, now)
        elif upstream is not None and now - since >= self.idle_timeout:
            self._stop_idle_check()
            upstream.error = (f"no data from the upstream for {now - since:.1f}s "
                              f"(rtmp.pull_timeout_sec {self.idle_timeout:g})")
            upstream.stop()
            self._upstream_ended(None, upstream, stopped=True)

    def _stop_idle_check(self) -> None:
        check, self._idle_check = self._idle_check, None
        if check is not None and check.running:
            check.stop()

    def _no_media(self, upstream: Upstream) -> None:
        self._timer = None
        if upstream is self.upstream and self._live_since is None:
            upstream.error = f"no media within {self.timeout:g}s"
            upstream.stop()
            self._upstream_ended(None, upstream, stopped=True)

    def _failed(self, failure: Failure, upstream: Upstream) -> None:
        if upstream is not self.upstream or self.ended:
            return
        upstream.stop()
        self.upstream = None
        if failure.check(defer.TimeoutError, defer.CancelledError, ConnectingCancelledError):
            cause = f"no answer within {self.timeout:g}s (pull_timeout_ms)"
        else:
            cause = failure.getErrorMessage() or type(failure.value).__name__
        self._retry_or_give_up(cause)

    def _upstream_ended(self, result: Any, upstream: Upstream, stopped: bool = False) -> None:
        if upstream is not self.upstream or self.ended:
            return
        self.upstream = None
        self._cancel(self._timer)
        self._timer = None
        self._stop_idle_check()
        self._unpublish()
        live = self._live_since is not None and (
            self.reactor.seconds() - self._live_since >= _STABLE_AFTER)
        self._live_since = None
        if live:
            self.failures = 0
        self._retry_or_give_up(upstream.error or "the upstream ended the stream")

    def _retry_or_give_up(self, cause: str) -> None:
        tls_problem = verification_error(cause)
        if tls_problem is not None:
            log.error("relay pull {key} from {url} refused: {why} (check the certificate, "
                      "tls_client.ca_file or tls_client.verify)", key=self.key, url=self.url,
                      why=tls_problem)
            self.stop("refused by TLS verification", tell_players=True)
            return
        self.failures += 1
        wanted = not self.static or self._players() > 0
        if wanted and (self.retry_num < 0 or self.failures <= self.retry_num):
            delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** (self.failures - 1))
            log.warn("relay pull {key} from {url}: {why}; retry {n} in {d:g}s", key=self.key,
                     url=self.url, why=cause, n=self.failures, d=delay)
            self._timer = self.reactor.callLater(delay, self._attempt)
            return
        self.give_up(f"relay pull from {self.url} failed: {cause}")

    def _players(self) -> int:
        stream = self.registry.get(self.key)
        return stream.player_count if stream is not None else 0

    def give_up(self, reason: str) -> None:
        """Stop and tell the players the stream will not come."""
        log.warn("relay pull {key}: {why}; giving up", key=self.key, why=reason)
        self.stop(reason, tell_players=True)

    # -- players come and go -----------------------------------------------------------------
    def player_left_all(self) -> None:
        """The last player left: stop after ``auto_stop_after`` (-1: never)."""
        if self.auto_stop_after < 0 or self.ended:
            return
        self._cancel(self._stop_timer)
        self._stop_timer = self.reactor.callLater(
            self.auto_stop_after, self.stop,
            f"no players for {self.auto_stop_after:g}s")

    def player_came(self) -> None:
        self._cancel(self._stop_timer)
        self._stop_timer = None

    # -- ending --------------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """IPublisher: server shutdown or a kick."""
        self.stop(reason)

    def stop(self, reason: str, tell_players: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        self._stop_idle_check()
        for timer in (self._timer, self._stop_timer):
            self._cancel(timer)
        self._timer = self._stop_timer = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.stop()
        self._unpublish()
        log.info("relay pull {key} from {url} stopped: {why} ({n} packets)", key=self.key,
                 url=self.url, why=reason, n=self.packets_in)
        if tell_players:
            # Players learn that the stream is not there, not where it was sought.
            told = f"stream {self.key} not found (relay pull gave up)"
            stream = self.registry.get(self.key)
            if stream is not None and stream.publisher is None:
                for sink in list(stream.sinks):
                    if INotFound.providedBy(sink):
                        sink.not_found(told)
                    else:
                        sink.close(told)
        if self.on_end is not None:
            self.on_end(self)

    def _unpublish(self) -> None:
        session, stream = self.session, self.stream
        self.stream = None
        self._early = None
        if session is not None:
            session.ended = True
            if stream is not None:
                self.registry.unpublish(session, self)
            self.session = None

    @staticmethod
    def _cancel(timer: IDelayedCall | None) -> None:
        if timer is not None and timer.active():
            timer.cancel()
