"""Project logging on twisted.logger.

All project loggers emit to one :data:`publisher`.  :func:`configure` points it
at the process log (stdout under ``twistd -n``) and/or a file, filtered by level,
so the config's ``log`` section works the same inside twistd and inside another
Twisted application.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.logger import Logger as _Logger
from twisted.python.logfile import DailyLogFile, LogFile
from zope.interface import implementer


@dataclass
class LogConfig:
    """lal's ``log`` section (read by :mod:`lal_twisted.config`)."""

    level: str = "info"
    filename: str = ""
    is_to_stdout: bool = True
    is_rotate_daily: bool = True


publisher = LogPublisher()
_installed: list[ILogObserver] = []
_open_files: list[IO[str]] = []

# Log fields often carry what a peer sent (stream names, tcUrl, queries, command
# names).  Each string field is cut to this many characters and its control
# characters are escaped, so a peer can neither grow the log without bound (a
# 1 MiB name) nor forge a line (a name with "\n").
MAX_FIELD_CHARS = 256


# A URL's user:password@, and the values of query parameters whose name says
# they are secret (lal_secret, token, password, key, sign, auth, hls_ctx, the
# HLS viewer token session_id...).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]+@")
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|[?&;\s])[^=&#\s?]*(?:secret|token|pass|pwd|auth|sign|key|ctx|credential|"
    r"session_id)[^=&#\s]*=)[^&#\s]+")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with the credentials of the URLs in it masked: userinfo
    (``rtmp://user:pass@host`` -> ``rtmp://***@host``) and secret-looking
    query values (``?lal_secret=abc`` -> ``?lal_secret=***``).  Log lines and
    the API's stat answers never carry them."""
    if "@" in text:
        text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\1{REDACTED}", text)
    return text


def safe(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` fit for one log line: control characters escaped, cut to ``limit``."""
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@implementer(ILogObserver)
def _sanitize(event: dict) -> None:
    """Make every string field of a project log event safe, with credentials
    masked, then publish it."""
    for key, value in event.items():
        if type(value) is str and not key.startswith("log_"):
            event[key] = safe(redact(value))
    publisher(event)


def Logger(namespace: str) -> _Logger:  # noqa: N802 - mirrors twisted.logger.Logger
    """A twisted.logger Logger bound to the project's publisher (string fields made
    safe on the way)."""
    return _Logger(namespace=namespace, observer=_sanitize)


@implementer(ILogObserver)
def _forward_to_global(event: dict) -> None:
    globalLogPublisher(event)


def configure(config: LogConfig) -> None:
    """(Re)install the observers the ``log`` config section asks for."""
    reset()
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.level))
    if config.is_to_stdout:
        _add(FilteringLogObserver(_forward_to_global, [predicate]))
    if config.filename:
        directory, name = os.path.split(os.path.abspath(config.filename))
        os.makedirs(directory, exist_ok=True)
        logfile: IO[str]
        if config.is_rotate_daily:
            logfile = DailyLogFile(name, directory)  # type: ignore[assignment]
        else:
            logfile = LogFile(name, directory, rotateLength=None)  # type: ignore[assignment]
        _open_files.append(logfile)
        _add(FilteringLogObserver(textFileLogObserver(logfile), [predicate]))


def _add(observer: ILogObserver) -> None:
    publisher.addObserver(observer)
    _installed.append(observer)


def reset() -> None:
    """Remove installed observers and close log files."""
    while _installed:
        publisher.removeObserver(_installed.pop())
    while _open_files:
        _open_files.pop().close()


# Until configured, project log lines at info and above reach the global log.
_add(FilteringLogObserver(_forward_to_global,
                          [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]))
