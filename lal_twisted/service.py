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

from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.python import usage
from twisted.web import server

from lal_twisted import log as lal_log
from lal_twisted.config import Config, ConfigError, load
from lal_twisted.httpflv.server import HttpFlvResource
from lal_twisted.hub.registry import StreamRegistry
from lal_twisted.net import use_eager_writes
from lal_twisted.rtmp.server import RTMPServerFactory

logger = lal_log.Logger("lal_twisted.service")


class Options(usage.Options):
    """Command-line options of ``twistd lals``."""

    synopsis = "[--config FILE]"
    optParameters = [
        ["config", "c", "conf/lals.json", "Path to the JSON configuration file."],
    ]

    def postOptions(self) -> None:  # noqa: N802 - Twisted interface
        try:
            config = load(self["config"])
            check_endpoints(config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["parsed"] = config


def _endpoint(reactor: Any, key: str, description: str) -> Any:
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ConfigError(f"{key}: cannot listen on {description!r}: {e}") from None


def check_endpoints(config: Config, reactor: Any = None) -> None:
    """Raise ConfigError, naming the key, for an address Twisted cannot use."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    if config.rtmp.enable:
        _endpoint(reactor, "rtmp.addr", config.rtmp.addr)
    if config.httpflv.enable:
        _endpoint(reactor, "default_http.http_listen_addr", config.default_http.http_listen_addr)


class Listener(service.Service):
    """Listens on one endpoint description; ``port`` is the IListeningPort once started.

    Listening errors (port in use, bad interface) raise from ``startService`` so
    twistd stops with a clear message before the server half-starts.
    """

    # Set by the twistd entry point: a listening error then ends the process
    # with one line instead of a traceback (inside another application it raises).
    exit_on_error = False

    def __init__(self, key: str, description: str, factory: Factory | server.Site,
                 reactor: Any) -> None:
        self.key = key
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.endpoint = _endpoint(reactor, key, description)
        self.port: IListeningPort | None = None
        self._listening: defer.Deferred[IListeningPort] | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted interface
        super().startService()
        d = self.endpoint.listen(self.factory)
        failures: list[Any] = []
        d.addCallbacks(self._listened, failures.append)
        if failures:
            super().stopService()
            if self.exit_on_error:
                raise SystemExit(f"lals: {self.key}: {failures[0].getErrorMessage()}")
            failures[0].raiseException()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        use_eager_writes(port)
        address = port.getHost()
        logger.info("{name} listening on {host}:{port}", name=self.name,
                    host=getattr(address, "host", address), port=getattr(address, "port", ""))
        return port

    def stopService(self) -> Any:  # noqa: N802 - Twisted interface
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class LalService(service.MultiService):
    """The whole server: ``registry`` plus the ``rtmp`` and ``http`` listeners."""

    def __init__(self, config: Config, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.registry = StreamRegistry(
            gop_num=max(config.rtmp.gop_num, config.httpflv.gop_num),
            single_gop_max_frame_num=max(config.rtmp.single_gop_max_frame_num,
                                         config.httpflv.single_gop_max_frame_num),
        )
        self.registry.setServiceParent(self)
        sub = config.subscriber
        stall = sub.stall_timeout_ms / 1000.0
        self.rtmp: Listener | None = None
        self.http: Listener | None = None
        if config.rtmp.enable:
            factory = RTMPServerFactory(
                self.registry, reactor, chunk_size=config.rtmp.chunk_size,
                max_message_size=config.rtmp.max_message_size,
                gop_num=config.rtmp.gop_num, stall_timeout=stall,
                max_backlog_bytes=sub.max_backlog_bytes,
                read_batch_ms=config.rtmp.read_batch_ms)
            self.rtmp = Listener("rtmp.addr", config.rtmp.addr, factory, reactor)
            self.rtmp.setName("rtmp")
            self.rtmp.setServiceParent(self)
        if config.httpflv.enable:
            flv = HttpFlvResource(
                self.registry, reactor, url_pattern=config.httpflv.url_pattern,
                gop_num=config.httpflv.gop_num, stall_timeout=stall,
                max_backlog_bytes=sub.max_backlog_bytes)
            site = server.Site(flv)
            site.noisy = False
            site.displayTracebacks = False
            self.http = Listener("default_http.http_listen_addr",
                                 config.default_http.http_listen_addr, site, reactor)
            self.http.setName("http")
            self.http.setServiceParent(self)

    def startService(self) -> None:  # noqa: N802 - Twisted interface
        lal_log.configure(self.config.log)
        for warning in self.config.warnings:
            logger.warn("{warning}", warning=warning)
        super().startService()


def make_service(config: Config, reactor: Any = None) -> LalService:
    """Build the server as an IService; its ``registry`` attribute is the StreamRegistry."""
    return LalService(config, reactor)


def makeService(options: Options) -> LalService:  # noqa: N802 - twistd plugin entry point
    """twistd entry point: ``options["parsed"]`` is the validated Config."""
    config = options.get("parsed")
    if config is None:
        config = load(options["config"])
    lals = make_service(config)
    for listener in (lals.rtmp, lals.http):
        if listener is not None:
            listener.exit_on_error = True
    return lals
