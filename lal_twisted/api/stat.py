"""lal's JSON views of the server: ``LalInfo``, ``StatGroup``, ``StatSession``.

The HTTP API (``/api/stat/*``), the HTTP notify payloads and the status page
all describe streams and sessions the way lal does, field for field, so a
backend written against lal reads ours unchanged.  The table of fields and
their sources is in docs/control-plane.md.

Everything here is computed when asked (an API call, a notify event, a
once-a-second frame-rate sample): nothing runs per packet.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from lal_twisted.hub.session import Role, Session
from lal_twisted.log import redact
from lal_twisted.media.tags import lal_codec_name
from lal_twisted.protocols import ProtocolName, lal_protocol_name

if TYPE_CHECKING:
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.stream import Stream

__all__ = ["API_VERSION", "LAL_VERSION", "NOTIFY_VERSION", "FrameRates", "base_type",
           "group_stat", "lal_info", "lal_time", "pending_pull_group", "protocol_name",
           "pull_stat", "session_event", "session_stat", "sessions_by_key", "split_key"]

# The lal release whose HTTP API and notify shapes these follow.
LAL_VERSION = "v0.37.4"
API_VERSION = "v0.4.8"
NOTIFY_VERSION = "v0.2.4"
WEB_UI_VERSION = "v0.0.3"

# lal's base types by role; an RTMP connection that has not published or
# played yet is "PUBSUB", as lal's RTMP server session starts.
_BASE_TYPES = {Role.PUBLISH: "PUB", Role.PLAY: "SUB", Role.RELAY_PULL: "PULL",
               Role.RELAY_PUSH: "PUSH"}

# How many seconds of input frame rate a group reports (lal keeps a ring of
# per-second counts; 10 s shows a trend and stays small in on_update).
FPS_SECONDS = 10


def lal_time(when: float) -> str:
    """A Unix time the way lal writes it (Go ``2006-01-02 15:04:05.999 Z0700 MST``,
    local time, milliseconds without trailing zeros)."""
    moment = datetime.fromtimestamp(when).astimezone()
    millis = f"{moment.microsecond // 1000:03d}".rstrip("0")
    text = moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{millis}" if millis else "")
    return f"{text} {moment.strftime('%z')} {moment.strftime('%Z')}"


def protocol_name(session: Session) -> str:
    """lal's name of the session's protocol (the ``protocol`` field)."""
    return lal_protocol_name(session.protocol)


def base_type(session: Session) -> str:
    if session.role is None:
        return "PUBSUB" if session.protocol == ProtocolName.RTMP else ""
    return _BASE_TYPES[session.role]


def split_key(key: str) -> tuple[str, str]:
    """A registry key ("live/test") as lal's (app_name, stream_name)."""
    app, _, name = key.rpartition("/")
    return app, name


def session_stat(session: Session | None) -> dict[str, Any]:
    """lal's ``StatSession``; all zero values for no session (lal's empty pub/pull)."""
    if session is None:
        return {"session_id": "", "protocol": "", "base_type": "", "remote_addr": "",
                "start_time": "", "read_bytes_sum": 0, "wrote_bytes_sum": 0,
                "bitrate_kbits": 0, "read_bitrate_kbits": 0, "write_bitrate_kbits": 0}
    reads = session.role in (Role.PUBLISH, Role.RELAY_PULL)
    read_rate, write_rate = session.bitrate_in_kbits, session.bitrate_out_kbits
    return {
        "session_id": session.id,
        "protocol": protocol_name(session),
        "base_type": base_type(session),
        "remote_addr": session.remote_addr,
        "start_time": lal_time(session.start_time),
        "read_bytes_sum": session.bytes_in,
        "wrote_bytes_sum": session.total_out(),
        "bitrate_kbits": read_rate if reads else write_rate,
        "read_bitrate_kbits": read_rate,
        "write_bitrate_kbits": write_rate,
    }


def _codec(track: Any) -> str:
    if track is None:
        return ""
    return lal_codec_name(track.codec)


def pull_stat(pull: Any) -> dict[str, Any]:
    """lal's ``StatSession`` for a relay pull (a
    :class:`~lal_twisted.relay.pull.RelayPull`), live or not, with ours:
    ``state`` (``live``, ``connecting``, ``waiting_to_retry``), ``url`` (its
    credentials and secrets masked) and ``attempts``."""
    session = pull.session if pull.stream is not None else None
    entry = session_stat(session)
    if session is None:
        http = pull.url.startswith(("http://", "https://"))
        protocol = ProtocolName.HTTP_FLV if http else ProtocolName.RTMP
        entry.update({"session_id": pull.session_id, "protocol": protocol.lal_name,
                      "base_type": "PULL", "remote_addr": pull.remote_addr,
                      "start_time": lal_time(pull.started_at)})
    entry.update({"state": pull.state, "url": redact(pull.url), "attempts": pull.attempts})
    return entry


def pending_pull_group(pull: Any) -> dict[str, Any]:
    """The ``StatGroup`` of a stream that only a relay pull (not live yet) names."""
    app, name = split_key(pull.key)
    return {"stream_name": name, "app_name": app, "audio_codec": "", "video_codec": "",
            "video_width": 0, "video_height": 0, "pub": session_stat(None), "subs": [],
            "pull": pull_stat(pull), "pushs": [], "in_frame_per_sec": []}


def group_stat(stream: Stream, players: Iterable[Session],
               rates: FrameRates | None = None,
               pushes: Iterable[Session] = (), pull: Any = None) -> dict[str, Any]:
    """lal's ``StatGroup`` for ``stream``; ``players`` are its play sessions,
    ``pushes`` its relay pushes to other servers (lal's ``pushs``), ``pull``
    the relay pull that feeds it or tries to (None: none)."""
    app, name = split_key(stream.key)
    video = stream.tracks.video
    source = stream.publish_session if stream.publisher is not None else None
    pulled = source is not None and source.role == Role.RELAY_PULL
    if pull is not None and source is None:
        pulled = True  # not live yet: the group shows the pull's state
    shown_pull = pull if pull is not None and pulled else None
    return {
        "stream_name": name,
        "app_name": app,
        "audio_codec": _codec(stream.tracks.audio),
        "video_codec": _codec(video),
        "video_width": video.width if video is not None else 0,
        "video_height": video.height if video is not None else 0,
        "pub": session_stat(None if pulled else source),
        "subs": [session_stat(s) for s in players],
        "pull": (pull_stat(shown_pull) if shown_pull is not None
                 else session_stat(source if pulled else None)),
        "pushs": [session_stat(s) for s in pushes],
        "in_frame_per_sec": rates.of(stream.key) if rates is not None else [],
    }


def sessions_by_key(registry: StreamRegistry, role: Role) -> dict[str, list[Session]]:
    """The sessions of ``role`` (players, relay pushes) by stream key."""
    out: dict[str, list[Session]] = {}
    for session in registry.sessions.values():
        if session.role == role:
            out.setdefault(session.key, []).append(session)
    return out


def players_by_key(registry: StreamRegistry) -> dict[str, list[Session]]:
    return sessions_by_key(registry, Role.PLAY)


def all_groups(registry: StreamRegistry, rates: FrameRates | None = None,
               pulls: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every stream's ``StatGroup``, and one for each relay pull (by stream key
    in ``pulls``) whose stream does not exist yet: connecting or waiting to
    retry with nobody waiting for it."""
    players = players_by_key(registry)
    pushes = sessions_by_key(registry, Role.RELAY_PUSH)
    pulls = pulls or {}
    groups = [group_stat(stream, players.get(key, ()), rates, pushes.get(key, ()),
                         pulls.get(key))
              for key, stream in list(registry.streams.items())]
    groups += [pending_pull_group(pull) for key, pull in pulls.items()
               if key not in registry.streams]
    return groups


def find_stream(registry: StreamRegistry, stream_name: str) -> Stream | None:
    """The stream lal's ``stream_name`` parameter names: lal keys groups by stream
    name alone, so any app matches; "APP/STREAM" names one app's stream."""
    stream = registry.streams.get(stream_name)
    if stream is not None:
        return stream
    for key, candidate in registry.streams.items():
        if split_key(key)[1] == stream_name:
            return candidate
    return None


def lal_info(server_id: str, start_time: float) -> dict[str, Any]:
    """lal's ``LalInfo`` (``/api/stat/lal_info``, ``on_server_start``)."""
    from lal_twisted import __version__

    return {
        "server_id": server_id,
        "bin_info": f"lal-twisted {__version__}",
        "lal_version": LAL_VERSION,
        "api_version": API_VERSION,
        "notify_version": NOTIFY_VERSION,
        "WebUiVersion": WEB_UI_VERSION,
        "start_time": lal_time(start_time),
    }


def session_event(session: Session, server_id: str, registry: StreamRegistry) -> dict[str, Any]:
    """lal's ``SessionEventCommonInfo``: the payload of on_pub_start/stop,
    on_sub_start/stop, on_relay_pull_start/stop and of the HTTP hook."""
    stream = registry.streams.get(session.key)
    has_in = stream is not None and stream.publisher is not None
    has_out = stream is not None and bool(stream.sinks)
    return {
        "server_id": server_id,
        "session_id": session.id,
        "protocol": protocol_name(session),
        "base_type": base_type(session),
        "remote_addr": session.remote_addr,
        "url": session.url,
        "app_name": session.app,
        "stream_name": session.stream,
        "url_param": session.query,
        "has_in_session": has_in,
        "has_out_session": has_out,
        "read_bytes_sum": session.bytes_in,
        "wrote_bytes_sum": session.total_out(),
    }


class FrameRates:
    """Video frames received per second by each stream, over the last
    :data:`FPS_SECONDS` seconds (lal's ``in_frame_per_sec``).

    One timer a second reads each stream's video packet counter; nothing is
    added per packet."""

    def __init__(self, registry: StreamRegistry, reactor: IReactorTime,
                 clock: Any = time.time) -> None:
        self.registry = registry
        self._clock = clock
        self._last: dict[str, tuple[Stream, int]] = {}
        self._history: dict[str, deque[dict[str, int]]] = {}
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = reactor

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(1.0, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        now = int(self._clock())
        streams = self.registry.streams
        for key in [k for k in self._last if k not in streams]:
            del self._last[key]
            self._history.pop(key, None)
        for key, stream in streams.items():
            count = stream.video_in
            last = self._last.get(key)
            self._last[key] = (stream, count)
            if last is None or last[0] is not stream:
                continue
            history = self._history.get(key)
            if history is None:
                history = self._history[key] = deque(maxlen=FPS_SECONDS)
            history.appendleft({"unix_sec": now - 1, "v": count - last[1]})

    def of(self, key: str) -> list[dict[str, int]]:
        """Newest first, as lal sorts them."""
        return list(self._history.get(key, ()))
