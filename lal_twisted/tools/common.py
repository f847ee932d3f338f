"""What the tools share: the error they report, running the reactor, URLs,
status lines.  It imports no other tool module, so any tool can import it."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet import defer, task
from twisted.python.failure import Failure


class ToolError(Exception):
    """A user-facing failure: bad file, bad URL, refused stream..."""


def add_tls_options(parser: Any) -> None:
    """``--ca-file`` and ``--insecure`` for rtmps:// and https:// URLs."""
    parser.add_argument("--ca-file", metavar="PEM",
                        help="rtmps:// / https://: trust the certificates in PEM instead of "
                             "the system store")
    parser.add_argument("--insecure", action="store_true",
                        help="rtmps:// / https://: do not check the server's certificate")


def tls_options(url: str, args: Any) -> Any:
    """Client TLS options for ``url`` from ``--ca-file`` / ``--insecure`` (None for a
    URL without TLS: the connection then needs none)."""
    from urllib.parse import urlsplit

    from lal_twisted.config import ConfigError
    from lal_twisted.tls import client_tls

    parts = urlsplit(url)
    if parts.scheme not in ("rtmps", "https"):
        return None
    try:
        return client_tls(parts.hostname or "", getattr(args, "ca_file", None) or "",
                          not getattr(args, "insecure", False))
    except ConfigError as e:
        raise ToolError(str(e).replace("tls_client.ca_file", "--ca-file")) from None


def expand_urls(url: str, count: int) -> list[str]:
    """``count`` URLs, ``{i}`` replaced by 0..count-1 (or the same URL repeated)."""
    if count < 1:
        raise ToolError(f"-n must be at least 1, got {count}")
    if "{i}" in url:
        return [url.replace("{i}", str(i)) for i in range(count)]
    return [url] * count


def run_reactor(main: Callable[[Any], defer.Deferred[int]]) -> int:
    """Run ``main(reactor)`` to completion; Ctrl-C / SIGTERM stop it gracefully."""
    from twisted.internet import reactor

    result: list[int] = []
    errors: list[Failure] = []

    def go() -> None:
        d = defer.maybeDeferred(main, reactor)
        d.addCallbacks(result.append, errors.append)
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)  # type: ignore[attr-defined]

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if errors:
        failure = errors[0]
        if isinstance(failure.value, ToolError):
            raise failure.value
        raise ToolError(failure.getErrorMessage())
    return result[0] if result else 130


def install_stop_handler(reactor: Any, stop: Callable[[], None]) -> None:
    """Call ``stop`` (once) on SIGINT/SIGTERM instead of killing the reactor at once."""
    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(stop)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class StatusLine:
    """A progress line on stderr at most every ``interval`` seconds; rewritten in
    place on a terminal, one line per update otherwise."""

    def __init__(self, reactor: Any, render: Callable[[], str], interval: float = 2.0,
                 stream: TextIO | None = None, quiet: bool = False) -> None:
        self.render = render
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self._loop = task.LoopingCall(self.show)
        self._loop.clock = reactor
        self.interval = interval

    def start(self) -> None:
        if not self.quiet:
            self._loop.start(self.interval, now=False)

    def show(self) -> None:
        text = self.render()
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Ending:
    """Ends a tool's run exactly once: on Ctrl-C/SIGTERM, after ``duration``
    seconds (0: never), or when ``finish()`` is called because the work is done.
    It calls ``stop()``, lets the last bytes drain, then fires ``done`` with
    ``result()``."""

    DRAIN = 0.2  # seconds for closing messages (deleteStream...) to leave

    def __init__(self, reactor: Any, stop: Callable[[], None], result: Callable[[], int],
                 duration: float = 0) -> None:
        self.reactor = reactor
        self.stop = stop
        self.result = result
        self.over = False
        self.done: defer.Deferred[int] = defer.Deferred()
        install_stop_handler(reactor, self.finish)
        if duration:
            reactor.callLater(duration, self.finish)

    def finish(self) -> None:
        if self.over:
            return
        self.over = True
        self.stop()
        self.reactor.callLater(self.DRAIN, lambda: self.done.callback(self.result()))


def open_in_batches(reactor: Any, starters: list[Callable[[], None]], rate: float,
                    stopped: Callable[[], bool]) -> None:
    """Call ``starters`` at about ``rate`` per second (batches every 10 ms) until
    all are called or ``stopped()`` says the run is over."""
    per_batch = max(1, int(rate / 100))

    def batch(start: int) -> None:
        for starter in starters[start:start + per_batch]:
            starter()
        if start + per_batch < len(starters) and not stopped():
            reactor.callLater(0.01, batch, start + per_batch)

    batch(0)


def mbit(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / 1e6 / seconds if seconds > 0 else 0.0


def now() -> float:
    return time.monotonic()
