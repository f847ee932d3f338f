"""The ``lals`` service: the StreamRegistry plus the RTMP and HTTP listeners.

Run it with ``twistd -n lals --config conf/lals.json``, or compose it into
another Twisted application::

    from lal_twisted.config import load
    from lal_twisted.service import make_service

    lals = make_service(load("conf/lals.json"))
    lals.setServiceParent(application)
    registry = lals.registry          # the StreamRegistry
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.python import usage
from twisted.web import resource, server

from lal_twisted import log as lal_log
from lal_twisted.api.plane import ControlPlane
from lal_twisted.config import Config, ConfigError, load
from lal_twisted.hls.manager import HlsManager
from lal_twisted.hls.server import HlsResource
from lal_twisted.httpflv.server import HttpFlvResource
from lal_twisted.httpts.server import HttpTsResource
from lal_twisted.hub.events import ServerStarted
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.limits import ConnectionGuard, raise_fd_limit
from lal_twisted.listener import Listener
from lal_twisted.media import ts
from lal_twisted.net import lean_dispatch
from lal_twisted.record.recorder import Recorder, record_formats
from lal_twisted.relay.manager import RelayManager
from lal_twisted.rtmp.server import RTMPServerFactory
from lal_twisted.tls import ssl_endpoint
from lal_twisted.web.router import Router
from lal_twisted.web.site import LalSite

logger = lal_log.Logger("lal_twisted.service")


class Options(usage.Options):
    """Command-line options of ``twistd lals``."""

    synopsis = "[--config FILE]"
    optParameters = [
        ["config", "c", "conf/lals.json", "Path to the JSON configuration file."],
    ]

    def postOptions(self) -> None:  # noqa: N802 - Twisted interface
        # Build the service here so every configuration mistake (bad key, an
        # address Twisted cannot use, two features on one path) is a usage error.
        try:
            self["parsed"] = load(self["config"])
            self["service"] = make_service(self["parsed"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


# -- what listens where: one table of listeners, one of HTTP routes ------------------


@dataclass(frozen=True)
class ListenerSpec:
    """A listener: its name (``LalService.listeners`` key), the config key of
    its address, whether the config enables it, and how to build it: a
    callable that returns the IService that listens (:func:`stream_listener`
    for TCP, TLS and unix endpoints; a UDP, SRT or ICE listener brings its
    own).  ``build`` raises ConfigError for a config it cannot use.  A
    listener that may be ``optional`` (TLS, as lal: an RTMPS or HTTPS listener
    whose certificate files cannot be used) is then left out with one error
    line; any other listener's problem stops the server."""

    name: str
    addr_key: str
    enabled: Callable[[LalService], bool]
    build: Callable[[LalService, ListenerSpec], service.IService]
    optional: bool = False


def stream_listener(addr: Callable[[Config], str],
                    factory: Callable[[LalService], Factory | server.Site],
                    ) -> Callable[[LalService, ListenerSpec], Listener]:
    """How a listener on a stream endpoint is built: the endpoint description
    ``addr`` reads from the config, serving what ``factory`` builds, behind the
    server's connection guard."""
    def build(lals: LalService, spec: ListenerSpec) -> Listener:
        description = addr(lals.config)
        if not description:  # a config may hold one for a listener nothing enables
            raise ConfigError(f"{spec.addr_key}: the {spec.name} listener is enabled but its "
                              "address is empty; set one such as \":1935\" or turn it off")
        return Listener(spec.addr_key, description, factory(lals), lals.reactor, lals.guard)
    return build


@dataclass(frozen=True)
class RouteSpec:
    """A feature served over HTTP: the listener it is on, the config key of its
    ``url_pattern``, the suffix it serves, and how to build its resource."""

    listener: str
    pattern_key: str
    pattern: Callable[[Config], str]
    suffix: str
    enabled: Callable[[Config], bool]
    build: Callable[[LalService], resource.IResource]
    exact: bool = False


def _rtmp_factory(lals: LalService) -> Factory:
    c = lals.config
    return RTMPServerFactory(
        lals.registry, lals.reactor, chunk_size=c.rtmp.chunk_size,
        max_message_size=c.rtmp.max_message_size, gop_num=c.rtmp.gop_num,
        stall_timeout=c.subscriber.stall_timeout_ms / 1000.0,
        max_backlog_bytes=c.subscriber.max_backlog_bytes, read_batch_ms=c.rtmp.read_batch_ms,
        wait_timeout=c.subscriber.publisher_wait_timeout_ms / 1000.0,
        idle_timeout=c.rtmp.idle_timeout_sec, pub_timeout=c.rtmp.pub_timeout_sec)


def _httpflv_resource(lals: LalService) -> resource.IResource:
    c = lals.config
    return HttpFlvResource(lals.registry, lals.reactor, gop_num=c.httpflv.gop_num,
                           stall_timeout=c.subscriber.stall_timeout_ms / 1000.0,
                           max_backlog_bytes=c.subscriber.max_backlog_bytes,
                           wait_timeout=c.subscriber.publisher_wait_timeout_ms / 1000.0)


def _httpts_resource(lals: LalService) -> resource.IResource:
    c = lals.config
    return HttpTsResource(lals.registry, lals.reactor, gop_num=c.httpts.gop_num,
                          stall_timeout=c.subscriber.stall_timeout_ms / 1000.0,
                          max_backlog_bytes=c.subscriber.max_backlog_bytes,
                          wait_timeout=c.subscriber.publisher_wait_timeout_ms / 1000.0)


def _hls_resource(lals: LalService) -> resource.IResource:
    c = lals.config.hls
    assert lals.hls is not None
    return HlsResource(lals.hls, lals.registry, lals.reactor, url_pattern=c.url_pattern,
                       session_timeout=c.sub_session_timeout_ms / 1000.0,
                       segments_need_session=c.segments_need_session)


def _site(name: str) -> Callable[[LalService], server.Site]:
    def build(lals: LalService) -> server.Site:
        timeout = lals.config.default_http.read_header_timeout_ms / 1000.0
        return LalSite(lals.routers[name], request_header_timeout=timeout)
    return build


def _rtmps_addr(c: Config) -> str:
    r = c.rtmp
    return ssl_endpoint(r.rtmps_addr, r.rtmps_cert_file, r.rtmps_key_file,
                        "rtmp.rtmps_cert_file", "rtmp.rtmps_key_file")


def _https_addr(c: Config) -> str:
    h = c.default_http
    return ssl_endpoint(h.https_listen_addr, h.https_cert_file, h.https_key_file,
                        "default_http.https_cert_file", "default_http.https_key_file")


HTTP_LISTENERS = ("http", "https", "http_api")

def _status_enabled(c: Config) -> bool:
    return c.status_page.enable


def _public_stat(path: str) -> RouteSpec:
    """A read-only stat endpoint on the HTTP listener, for the status page."""
    return RouteSpec("http", "status_page.enable", lambda c: path, "", _status_enabled,
                     lambda lals: lals.control.public_stat_resource(), exact=True)


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("http", "httpflv.url_pattern", lambda c: c.httpflv.url_pattern, ".flv",
              lambda c: c.httpflv.enable, _httpflv_resource),
    RouteSpec("http", "httpts.url_pattern", lambda c: c.httpts.url_pattern, ".ts",
              lambda c: c.httpts.enable, _httpts_resource),
    RouteSpec("http", "hls.url_pattern", lambda c: c.hls.url_pattern, "",
              lambda c: c.hls.enable, _hls_resource),
    RouteSpec("https", "httpflv.url_pattern", lambda c: c.httpflv.url_pattern, ".flv",
              lambda c: c.httpflv.enable and c.httpflv.enable_https, _httpflv_resource),
    RouteSpec("https", "httpts.url_pattern", lambda c: c.httpts.url_pattern, ".ts",
              lambda c: c.httpts.enable and c.httpts.enable_https, _httpts_resource),
    RouteSpec("https", "hls.url_pattern", lambda c: c.hls.url_pattern, "",
              lambda c: c.hls.enable and c.hls.enable_https, _hls_resource),
    # The control plane (lal_twisted/api): lal's HTTP API answers every path of
    # its listener (lal's JSON 404 for unknown ones); metrics and the status page.
    RouteSpec("http_api", "http_api.addr", lambda c: "/", "", lambda c: c.http_api.enable,
              lambda lals: lals.control.api_resource()),
    RouteSpec("http_api", "status_page.enable", lambda c: "/lal.html", "",
              lambda c: c.http_api.enable and c.status_page.enable,
              lambda lals: lals.control.status_page("http_api"), exact=True),
    RouteSpec("http", "metrics.url_path", lambda c: c.metrics.url_path, "",
              lambda c: c.metrics.enable, lambda lals: lals.control.metrics_resource(),
              exact=True),
    RouteSpec("http", "status_page.enable", lambda c: "/", "", _status_enabled,
              lambda lals: lals.control.status_page("http"), exact=True),
    *(_public_stat(p) for p in ("/api/stat/lal_info", "/api/stat/all_group",
                                "/api/stat/group")),
)

LISTENERS: tuple[ListenerSpec, ...] = (
    ListenerSpec("rtmp", "rtmp.addr", lambda lals: lals.config.rtmp.enable,
                 stream_listener(lambda c: c.rtmp.addr, _rtmp_factory)),
    ListenerSpec("rtmps", "rtmp.rtmps_addr", lambda lals: lals.config.rtmp.rtmps_enable,
                 stream_listener(_rtmps_addr, _rtmp_factory), optional=True),
    ListenerSpec("http", "default_http.http_listen_addr",
                 lambda lals: bool(lals.routers["http"].routes),
                 stream_listener(lambda c: c.default_http.http_listen_addr, _site("http"))),
    ListenerSpec("https", "default_http.https_listen_addr",
                 lambda lals: bool(lals.routers["https"].routes),
                 stream_listener(_https_addr, _site("https")), optional=True),
    ListenerSpec("http_api", "http_api.addr", lambda lals: lals.config.http_api.enable,
                 stream_listener(lambda c: c.http_api.addr, _site("http_api"))),
)


class LalService(service.MultiService):
    """The whole server: ``registry``, one ``Router`` per HTTP listener
    (``routers["http"]``, ``routers["http_api"]``) and the ``listeners`` built
    from :data:`LISTENERS` (``rtmp``, ``http`` and ``api`` name the usual ones)."""

    config: Config
    routers: dict[str, Router]
    control: ControlPlane

    def __init__(self, config: Config, reactor: Any = None,
                 listeners: Sequence[ListenerSpec] = ()) -> None:
        """``listeners`` are entries added to :data:`LISTENERS` (a protocol
        an application brings: its entry builds the service that listens from
        this one, whose ``registry`` it publishes to and plays from; for a
        stream endpoint, :func:`stream_listener` with its factory)."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.registry = StreamRegistry(
            gop_num=max(config.rtmp.gop_num, config.httpflv.gop_num,
                        config.httpts.gop_num if config.httpts.enable else 0),
            single_gop_max_frame_num=max(config.rtmp.single_gop_max_frame_num,
                                         config.httpflv.single_gop_max_frame_num,
                                         config.httpts.single_gop_max_frame_num
                                         if config.httpts.enable else 0),
            reactor=reactor, access_timeout=config.access_check.timeout_ms / 1000.0,
            gop_cache_max_bytes=config.stream.gop_cache_max_bytes,
            dummy_audio_wait_ms=(config.in_session.add_dummy_audio_wait_audio_ms
                                 if config.in_session.add_dummy_audio_enable else None),
        )
        self.registry.setServiceParent(self)
        # Recording: a service that follows publishes (stopped before the registry).
        self.recorder: Recorder | None = None
        formats = record_formats(config.record)
        if formats:
            self.recorder = Recorder(self.registry, formats, reactor)
            self.recorder.setServiceParent(self)
        # HLS: a segmenter on every published stream (nothing at all when disabled).
        self.hls: HlsManager | None = None
        if config.hls.enable:
            self.hls = HlsManager(self.registry, config.hls, reactor,
                                  token_secret=hls_token_secret(config))
            self.hls.setServiceParent(self)
        # API, notify, auth, hook, metrics, status page.
        self.control = ControlPlane(config, self.registry, reactor)
        self.control.setServiceParent(self)
        # Relays (pushes, static pulls and pulls started on request): events only,
        # nothing on the per-packet path of streams that are not relayed.
        self.relays = RelayManager(self.registry, reactor, config)
        self.relays.setServiceParent(self)
        self.routers = {name: Router(name) for name in HTTP_LISTENERS}
        for route in ROUTES:
            if route.enabled(config):
                self.routers[route.listener].mount(route.pattern_key, route.pattern(config),
                                                   route.build(self), suffix=route.suffix,
                                                   exact=route.exact)
        self.guard = ConnectionGuard(reactor, config.limits.max_connections,
                                     config.limits.max_connections_per_addr)
        fd_share = getattr(self.hls.store, "fd_share", None) if self.hls else None
        if fd_share is not None:  # HLS segments in memfds: not the connections' descriptors
            self.guard.fd_users.append(fd_share)
        self.listeners: dict[str, service.IService] = {}
        context = self.control.context  # what the API and the status page read
        context.relays, context.guard = self.relays, self.guard
        context.listeners, context.routers = self.listeners, self.routers
        # Problems that leave an optional listener out, logged once at start.
        self.startup_errors: list[str] = []
        for spec in (*LISTENERS, *listeners):
            if spec.enabled(self):
                try:
                    listener = spec.build(self, spec)
                except ConfigError as e:
                    if not spec.optional:
                        raise
                    self.startup_errors.append(f"{e}; the {spec.name} listener is not started "
                                               "(the others are)")
                    continue
                listener.setName(spec.name)
                listener.setServiceParent(self)
                self.listeners[spec.name] = listener

    @property
    def rtmp(self) -> Listener | None:
        return self._stream_listener("rtmp")

    @property
    def http(self) -> Listener | None:
        return self._stream_listener("http")

    @property
    def api(self) -> Listener | None:
        return self._stream_listener("http_api")

    def _stream_listener(self, name: str) -> Listener | None:
        listener = self.listeners.get(name)
        return listener if isinstance(listener, Listener) else None

    def startService(self) -> None:  # noqa: N802 - Twisted interface
        lal_log.configure(self.config.log)
        for warning in [*self.config.warnings, *packer_warnings(self.config)]:
            logger.warn("{warning}", warning=warning)
        for error in self.startup_errors:
            logger.error("{error}", error=error)
        super().startService()
        self.registry.events.emit(ServerStarted(self))


def hls_token_secret(config: Config) -> bytes | None:
    """What HLS viewer tokens are signed with: lal's ``hls.sub_session_hash_key``,
    else simple_auth's secrets, else nothing (a random key at each start)."""
    auth = config.simple_auth
    secret = config.hls.sub_session_hash_key or (
        f"{auth.key}\0{auth.dangerous_lal_secret}" if auth.key or auth.dangerous_lal_secret
        else "")
    return secret.encode("utf-8") if secret else None


def packer_warnings(config: Config) -> list[str]:
    """What to tell at start about the MPEG-TS packer, when TS is written (HLS,
    HTTP-TS, TS recording) with its Python form: the compiled one was not built."""
    writes_ts = config.hls.enable or config.httpts.enable or config.record.enable_mpegts
    if not writes_ts or ts.PACKER == "compiled":
        return []
    return ["MPEG-TS is packed by the Python fallback: lal_twisted/media/_tspack.c was not "
            "compiled at install (no C compiler or Python headers), so HLS, HTTP-TS and TS "
            "recording cost more CPU; reinstall with gcc and the Python headers present"]


def make_service(config: Config, reactor: Any = None,
                 listeners: Sequence[ListenerSpec] = ()) -> LalService:
    """Build the server as an IService; its ``registry`` attribute is the
    StreamRegistry.  ``listeners`` add protocols to the listener table."""
    return LalService(config, reactor, listeners)


def makeService(options: Options) -> LalService:  # noqa: N802 - twistd plugin entry point
    """twistd entry point: ``options["service"]`` was built from the validated config."""
    lals = options.get("service")
    if lals is None:
        lals = make_service(options.get("parsed") or load(options["config"]))
    for listener in lals.listeners.values():
        if isinstance(listener, Listener):
            listener.exit_on_error = True
    raise_fd_limit()  # the connection cap follows the fd limit (lal_twisted.limits)
    from twisted.internet import reactor

    lean_dispatch(reactor)  # the process is the server's own
    return lals
