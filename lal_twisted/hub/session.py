"""Sessions: every connection that publishes or plays, whatever its protocol.

A :class:`Session` is what the registry, the access checks and the observers
see of a publisher or a player: a unique id in lal's style (``RTMPPUBSUB1``,
``FLVSUB2``), protocol, role, remote address, app, stream, URL query, start
time, byte counters and bitrates.  The protocol adapter that owns the
connection creates it, keeps its byte counters current and gives it a
``closer`` so the registry can end it (``kick``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

__all__ = ["MAX_NAME_LENGTH", "Role", "Session", "SessionIds", "check_names", "stream_key"]


class Role(StrEnum):
    """What a session does with its stream (lal's base types PUB/SUB/PULL/PUSH)."""

    PUBLISH = "publish"
    PLAY = "play"
    RELAY_PULL = "relay_pull"  # a publisher fed from another server
    RELAY_PUSH = "relay_push"  # a player that forwards to another server


# Prefixes of session ids, as lal names its session types.
RTMP_SERVER = "RTMPPUBSUB"
FLV_PLAYER = "FLVSUB"
TS_PLAYER = "TSSUB"
RTMP_PUSH = "RTMPPUSH"
RTMP_PULL = "RTMPPULL"
FLV_PULL = "FLVPULL"


# Stream and app names become keys, URLs, log fields and (with HLS and
# recording) file names.  A name is 1-128 bytes of UTF-8; an app is 0-128 bytes
# in "/"-separated segments.  Neither may hold control characters or
# \ ? # % " < > | * ; a stream name has no "/", so "APP/STREAM" splits at its
# last "/" one way only, and no segment is "." or ".." or starts with ".".
#
# The limit is in bytes, not characters, because a file name is at most 255
# bytes (NAME_MAX) and a character takes up to 4.  The longest names made of a
# 128-byte stream name:
#   recording  STREAM-UNIXTIME-99.flv        128 + 1 + 11 + 3 + 4      = 147
#              (11 digits last until the year 5138; -1 .. -99 on collision)
#   HLS        STREAM (the directory)                                   = 128
#              STREAM-MILLIS-SEQUENCE.ts     128 + 1 + 14 + 1 + 20 + 3 = 167
#              (14 digits of ms until the year 5138, a 64-bit sequence)
#              playlist.m3u8.tmp (the disk store's temporary name)      = 17
# all under 255.  The app is in no file name; it has the same limit.
MAX_NAME_LENGTH = 128  # bytes of UTF-8
_FORBIDDEN = frozenset('\\?#%"<>|*') | frozenset(chr(c) for c in range(32)) | {"\x7f"}


def _check(value: str, what: str) -> str | None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape)
        return f"{what} is not valid UTF-8"
    if size > MAX_NAME_LENGTH:
        return f"{what} is {size} bytes long in UTF-8, at most {MAX_NAME_LENGTH}"
    bad = next((c for c in value if c in _FORBIDDEN), None)
    if bad is not None:
        return f"{what} contains the character {bad!r}"
    return None


def check_names(app: str, stream: str) -> str | None:
    """Why ``app`` / ``stream`` cannot name a stream, or None when they can."""
    if not stream:
        return "the stream name is empty"
    if "/" in stream:
        return "the stream name contains '/'"
    problem = _check(stream, "the stream name") or _check(app, "the app name")
    if problem:
        return problem
    for segment in [stream, *app.split("/")] if app else [stream]:
        if not segment:
            return "the app name has an empty path segment"
        if segment.startswith("."):
            return f"a name segment starts with '.': {segment[:20]!r}"
    return None


def stream_key(app: str, name: str) -> str:
    """The registry key for an app and stream name ("live", "test" -> "live/test")."""
    app = app.strip("/")
    return f"{app}/{name}" if app else name


class SessionIds:
    """Unique session ids: one counter for every prefix, as lal does."""

    def __init__(self) -> None:
        self._next = 0

    def new(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}{self._next}"


class Session:
    """One publish or play.  ``bytes_in`` / ``bytes_out`` are kept current by
    the adapter; the bitrates (kbit/s) are refreshed by the registry's
    periodic update from the bytes moved since the previous one."""

    def __init__(
        self,
        session_id: str,
        protocol: str,
        remote_addr: str,
        closer: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = session_id
        self.protocol = protocol
        self.remote_addr = remote_addr
        self.role: Role | None = None
        self.app = ""
        self.stream = ""
        self.query = ""
        self.url = ""
        self.start_time = time.time()  # wall clock, for people and the API
        self.bytes_in = 0
        self.bytes_out = 0
        self.bitrate_in_kbits = 0
        self.bitrate_out_kbits = 0
        self.ended = False
        self._closer = closer
        self._clock = clock
        self._last_stat: tuple[float, int, int] = (clock(), 0, 0)
        # Bytes a sink counts on the session's behalf (a player's media).
        self.sink: Any = None

    @property
    def key(self) -> str:
        return stream_key(self.app, self.stream)

    @property
    def query_params(self) -> dict[str, str]:
        """The URL query as a dict (the last value of a repeated name wins)."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    def total_out(self) -> int:
        sink = self.sink
        return self.bytes_out + (sink.bytes_out if sink is not None else 0)

    def update_bitrate(self) -> None:
        now = self._clock()
        then, was_in, was_out = self._last_stat
        out = self.total_out()
        elapsed = now - then
        if elapsed > 0:
            self.bitrate_in_kbits = int((self.bytes_in - was_in) * 8 / 1000 / elapsed)
            self.bitrate_out_kbits = int((out - was_out) * 8 / 1000 / elapsed)
        self._last_stat = (now, self.bytes_in, out)

    def close(self, reason: str) -> None:
        """End the session's connection (kick, shutdown)."""
        if self._closer is not None and not self.ended:
            self._closer(reason)

    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id, "protocol": self.protocol, "role": str(self.role or ""),
            "remote_addr": self.remote_addr, "app": self.app, "stream": self.stream,
            "query": self.query, "start_time": self.start_time, "bytes_in": self.bytes_in,
            "bytes_out": self.total_out(), "bitrate_in_kbits": self.bitrate_in_kbits,
            "bitrate_out_kbits": self.bitrate_out_kbits,
        }

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.protocol} {self.role} {self.key} from {self.remote_addr}>"
