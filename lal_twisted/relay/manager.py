"""The relay manager: starts and stops pushes and pulls from the registry's events.

- ``relay_push``: every stream published here (or pulled here) gets a
  :class:`~lal_twisted.relay.push.RelayPush` per address, stopped when its
  publisher stops; a pulled stream is not pushed back to where it came from.
- ``static_relay_pull``: the first player of a stream nobody publishes here
  (:class:`~lal_twisted.hub.events.StreamWanted`) starts a
  :class:`~lal_twisted.relay.pull.RelayPull`; the last player leaving
  (:class:`~lal_twisted.hub.events.StreamUnwatched`) stops it after
  ``auto_stop_pull_after_no_out_ms``.
- :meth:`start_pull` / :meth:`stop_pull`: pulls started on request (lal's
  ``/api/ctrl/start_relay_pull``), kept until stopped.

It is also a link of the access chain, for the loop rules of
:mod:`lal_twisted.relay.upstream` and so that a publisher arriving here takes
over from a pull of the same stream.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from twisted.application import service
from twisted.python.failure import Failure

from lal_twisted.hub.access import Refused
from lal_twisted.hub.events import (
    PlayStarted,
    PublishStarted,
    PublishStopped,
    RelayPullStarted,
    RelayPullStopped,
    StreamUnwatched,
    StreamWanted,
)
from lal_twisted.hub.session import RTMP_PUSH, Role, check_names, stream_key
from lal_twisted.log import Logger
from lal_twisted.protocols import ProtocolName
from lal_twisted.relay.address import (
    LOOP_REFUSAL,
    MAX_HOPS,
    Base,
    parse_base,
    relay_via,
    with_via,
)
from lal_twisted.relay.policy import MAX_PULL_TIMEOUT_MS, AllowList, PullUrlError, check_pull_url
from lal_twisted.relay.pull import RelayPull
from lal_twisted.relay.push import RelayPush
from lal_twisted.tls import client_tls

if TYPE_CHECKING:
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session

__all__ = ["PullError", "RelayManager"]

log = Logger("lal_twisted.relay.manager")


class RelaySettings(Protocol):
    """The config sections relays read (:class:`lal_twisted.config.Config` has
    them; relays sit below the config's layer and name only what they use)."""

    relay_push: Any
    static_relay_pull: Any
    relay: Any
    tls_client: Any
    rtmp: Any


class PullError(ValueError):
    """A pull that cannot be started (bad URL, already pulled or published)."""

    def __init__(self, message: str, exists: bool = False) -> None:
        super().__init__(message)
        self.exists = exists


class RelayManager(service.Service):
    """Relays of one server; ``pushes`` by stream key, ``pulls`` by stream key."""

    name = "relay"

    def __init__(self, registry: StreamRegistry, reactor: Any, config: RelaySettings) -> None:
        self.registry = registry
        self.reactor = reactor
        self.config = config
        push, pull = config.relay_push, config.static_relay_pull
        self.push_bases: list[Base] = (
            [parse_base(a, push=True) for a in push.addr_list] if push.enable else [])
        self.pull_base: Base | None = parse_base(pull.addr, push=False) if (
            pull.enable and pull.addr.strip()) else None
        self.pushes: dict[str, list[RelayPush]] = {}
        self.pulls: dict[str, RelayPull] = {}
        self.allowed_upstreams = AllowList(config.relay.allowed_upstreams)
        self._insecure_logged = False
        # This server's relay id in the loop marker (lal_twisted.relay.address).
        self.relay_id = secrets.token_hex(4)
        events = registry.events
        events.subscribe(PublishStarted, self._publish_started)
        events.subscribe(RelayPullStarted, self._relay_pull_started)
        events.subscribe(PublishStopped, self._publish_stopped)
        events.subscribe(RelayPullStopped, self._relay_pull_stopped)
        events.subscribe(StreamWanted, self._stream_wanted)
        events.subscribe(StreamUnwatched, self._stream_unwatched)
        events.subscribe(PlayStarted, self._play_started)
        registry.add_access_check(self)

    # -- TLS ------------------------------------------------------------------------------
    def tls_for(self, url: str) -> Any:
        """Client TLS options for an rtmps:// or https:// URL, None otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("rtmps", "https"):
            return None
        tls = self.config.tls_client
        if not tls.verify and not self._insecure_logged:
            self._insecure_logged = True
            log.warn("tls_client.verify is false: relay peers' certificates are not checked")
        return client_tls(parts.hostname or "", tls.ca_file, tls.verify)

    # -- access chain ---------------------------------------------------------------------
    def check(self, session: Session) -> Refused | None:
        key = session.key
        via = relay_via(session.query)
        if self.relay_id in via:
            return Refused(f"{LOOP_REFUSAL} {key} was relayed through this server already",
                           not_found=True)
        if len(via) >= MAX_HOPS:
            return Refused(f"{LOOP_REFUSAL} {key} was relayed {len(via)} times already "
                           f"(at most {MAX_HOPS - 1} relays)", not_found=True)
        if session.role == Role.PUBLISH:
            pull = self.pulls.get(key)
            if pull is not None:
                pull.stop(f"a publisher from {session.remote_addr} took over")
            return None
        if session.role != Role.PLAY or not via:
            return None
        stream = self.registry.get(key)
        if stream is not None and stream.publisher is not None:
            return None
        pull = self.pulls.get(key)
        if pull is None and self.pull_base is None:
            return Refused(f"stream {key} is not published here", not_found=True)
        if pull is not None and not pull.static:
            # Two servers whose API pulls point at each other would each wait on
            # the other's pull: refused here at once, as not (yet) found.
            return Refused(f"stream {key} is not live here: its relay pull has no media yet",
                           not_found=True)
        return None

    # -- pushes ---------------------------------------------------------------------------
    def _publish_started(self, event: PublishStarted) -> None:
        session = event.session
        self._start_pushes(session, relay_via(session.query), None)

    def _relay_pull_started(self, event: RelayPullStarted) -> None:
        session = event.session
        pull = self.pulls.get(session.key)
        source = pull.remote_addr if pull is not None else None
        self._start_pushes(session, relay_via(urlsplit(session.url).query)[:-1], source)

    def _start_pushes(self, publisher: Session, via: list[str], source: str | None) -> None:
        if not self.push_bases:
            return
        if len(via) + 1 >= MAX_HOPS:
            log.warn("stream {key} not pushed: it came through {n} relays already",
                     key=publisher.key, n=len(via))
            return
        cfg = self.config.relay_push
        pushes = self.pushes.setdefault(publisher.key, [])
        for base in self.push_bases:
            if base.netloc == source:
                continue  # not back to where it came from
            url = base.url(publisher.app, publisher.stream, [*via, self.relay_id])
            slot: list[RelayPush] = []  # the push, for the session's closer (a kick)
            session = self.registry.new_session(
                RTMP_PUSH, ProtocolName.RTMP, base.netloc,
                closer=lambda reason, slot=slot: slot[0].close(reason) if slot else None)
            session.app, session.stream, session.url = publisher.app, publisher.stream, url
            push = RelayPush(self.reactor, session, url, tls=self.tls_for(url),
                             max_backlog_bytes=cfg.max_backlog_bytes,
                             retry_min=cfg.retry_min_ms / 1000, retry_max=cfg.retry_max_ms / 1000,
                             on_close=self._push_closed)
            slot.append(push)
            pushes.append(push)
            d = self.registry.play(session, push, 0, role=Role.RELAY_PUSH)
            d.addErrback(self._push_refused, session, push)

    def _push_closed(self, push: RelayPush) -> None:
        """A push stopped (its publisher left, a kick, a refused certificate)."""
        push.session.ended = True
        pushes = self.pushes.get(push.session.key)
        if pushes is not None and push in pushes:
            pushes.remove(push)
            if not pushes:
                del self.pushes[push.session.key]
        self.registry.stop_play(push.session, push)

    def _push_refused(self, failure: Failure, session: Session, push: RelayPush) -> None:
        reason = failure.value.reason if failure.check(Refused) else failure.getErrorMessage()  # type: ignore[union-attr]
        log.warn("relay push {key} to {url} refused here: {why}", key=session.key, url=push.url,
                 why=reason)
        push.on_close = None
        push.close("refused here")
        pushes = self.pushes.get(session.key)
        if pushes is not None and push in pushes:
            pushes.remove(push)

    def _publish_stopped(self, event: PublishStopped) -> None:
        self._stop_pushes(event.session.key, "the publisher stopped")
        self._end_relayed_plays(event.session.key)

    def _relay_pull_stopped(self, event: RelayPullStopped) -> None:
        self._stop_pushes(event.session.key, "the pull stopped")
        self._end_relayed_plays(event.session.key)

    def _stop_pushes(self, key: str, reason: str) -> None:
        for push in list(self.pushes.get(key, [])):
            push.close(reason)

    def _end_relayed_plays(self, key: str) -> None:
        """Other servers' pulls of a stream whose publisher left end with it (they
        retry or tell their players), rather than wait here."""
        for session in list(self.registry.sessions.values()):
            if (session.key == key and session.role == Role.PLAY and relay_via(session.query)
                    and not session.ended):
                session.close("the publisher stopped")

    # -- pulls ----------------------------------------------------------------------------
    def _stream_wanted(self, event: StreamWanted) -> None:
        key, session = event.key, event.session
        base = self.pull_base
        if base is None or key in self.pulls or session.role != Role.PLAY:
            return
        via = relay_via(session.query)
        if len(via) + 1 >= MAX_HOPS:
            return
        cfg = self.config.static_relay_pull
        url = base.url(session.app, session.stream, [*via, self.relay_id])
        self._start(RelayPull(
            self.registry, self.reactor, session.app, session.stream, url,
            timeout=cfg.pull_timeout_ms / 1000, retry_num=cfg.pull_retry_num,
            auto_stop_after=cfg.auto_stop_pull_after_no_out_ms / 1000,
            tls=self.tls_for(url), static=True, on_end=self._pull_ended,
            idle_timeout=self.config.rtmp.pull_timeout_sec))

    def _start(self, pull: RelayPull) -> None:
        self.pulls[pull.key] = pull
        log.info("relay pull {key} from {url}: starting", key=pull.key, url=pull.url)
        pull.start()

    def _pull_ended(self, pull: RelayPull) -> None:
        if self.pulls.get(pull.key) is pull:
            del self.pulls[pull.key]

    def _stream_unwatched(self, event: StreamUnwatched) -> None:
        pull = self.pulls.get(event.key)
        if pull is not None:
            pull.player_left_all()

    def _play_started(self, event: PlayStarted) -> None:
        pull = self.pulls.get(event.session.key)
        if pull is not None:
            pull.player_came()

    def start_pull(self, url: str, stream_name: str = "", pull_timeout_ms: int = 10000,
                   pull_retry_num: int = 0,
                   auto_stop_pull_after_no_out_ms: int = -1) -> RelayPull:
        """Pull ``url`` now, served as its app and stream name (``stream_name``
        replaces the latter); lal's start_relay_pull, with lal's meanings:
        ``pull_timeout_ms`` 0 is no timeout of its own (here: the longest,
        :data:`~lal_twisted.relay.policy.MAX_PULL_TIMEOUT_MS`), a negative
        ``pull_retry_num`` retries until stopped, a negative
        ``auto_stop_pull_after_no_out_ms`` never stops, 0 stops as soon as no
        one plays.  The URL is checked first (:mod:`lal_twisted.relay.policy`).
        Raises :class:`PullError`."""
        try:
            target = check_pull_url(url)
        except PullUrlError as e:
            raise PullError(f"bad url: {e}") from None
        if not self.allowed_upstreams.allows(target.host):
            raise PullError(f"{target.host} is not one of relay.allowed_upstreams")
        app, name = target.app, stream_name or target.stream
        problem = check_names(app, name)
        if problem is not None:
            raise PullError(f"bad stream_name: {problem}")
        key = stream_key(app, name)
        if key in self.pulls:
            raise PullError(f"stream {key} is already being pulled", exists=True)
        stream = self.registry.get(key)
        if stream is not None and stream.publisher is not None:
            raise PullError(f"stream {key} is already published here", exists=True)
        running = sum(1 for pull in self.pulls.values() if not pull.static)
        cap = self.config.relay.max_api_pulls
        if running >= cap:
            raise PullError(f"{running} relay pulls started through the API run already "
                            f"(relay.max_api_pulls is {cap}); stop one first")
        if auto_stop_pull_after_no_out_ms == 0 and (stream is None or not stream.player_count):
            raise PullError(f"should auto stop pull: nobody plays {key} here and "
                            "auto_stop_pull_after_no_out_ms is 0 (stop when nobody plays)")
        timeout_ms = pull_timeout_ms if pull_timeout_ms > 0 else MAX_PULL_TIMEOUT_MS
        # The loop marker, as static pulls carry it (lal_twisted.relay.address).
        url = with_via(url, [self.relay_id])
        pull = RelayPull(self.registry, self.reactor, app, name, url,
                         timeout=timeout_ms / 1000, retry_num=max(-1, pull_retry_num),
                         auto_stop_after=(auto_stop_pull_after_no_out_ms / 1000
                                          if auto_stop_pull_after_no_out_ms >= 0 else -1.0),
                         tls=self.tls_for(url), static=False, on_end=self._pull_ended,
                         idle_timeout=self.config.rtmp.pull_timeout_sec)
        self._start(pull)
        return pull

    def find_pull(self, stream_name: str) -> RelayPull | None:
        """The pull of the stream named ``stream_name`` (any app, or ``APP/STREAM``)."""
        for pull in self.pulls.values():
            if pull.stream_name == stream_name or pull.key == stream_name:
                return pull
        return None

    def stop_pull(self, stream_name: str) -> RelayPull | None:
        """Stop the pull of the stream named ``stream_name``; None if there is none."""
        pull = self.find_pull(stream_name)
        if pull is not None:
            pull.stop("stopped on request")
        return pull

    # -- lifecycle ------------------------------------------------------------------------
    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        for pull in list(self.pulls.values()):
            pull.stop("server shutting down")
        for key in list(self.pushes):
            self._stop_pushes(key, "server shutting down")
        return super().stopService()
