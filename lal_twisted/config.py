"""Load and validate the JSON configuration into typed objects.

Key names follow lal's ``lalserver.conf.json`` for every feature implemented here,
so a lal user's config carries over.  Every user mistake becomes one
:class:`ConfigError` whose message names the key (or file) and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from lal_twisted.errors import ConfigError
from lal_twisted.log import LogConfig
from lal_twisted.relay.address import UpstreamError, parse_base

__all__ = ["Config", "ConfigError", "LogConfig", "from_dict", "load", "parse_listen_addr"]

# lal's numeric log levels (naza's: trace, debug, info, warn, error, fatal,
# panic, nothing) and their twisted.logger names; "nothing" is as close as
# twisted.logger gets: critical lines only.
_LAL_LEVELS = {0: "debug", 1: "debug", 2: "info", 3: "warn", 4: "error", 5: "critical",
               6: "critical", 7: "critical"}
_LEVEL_NAMES = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warn",
                "warning": "warn", "error": "error", "fatal": "critical", "critical": "critical"}


@dataclass
class RtmpConfig:
    enable: bool = True
    addr: str = ":1935"
    gop_num: int = 1
    single_gop_max_frame_num: int = 0
    chunk_size: int = 4096
    max_message_size: int = 16 * 1024 * 1024
    read_batch_ms: int = 40
    pub_timeout_sec: int = 30
    # lal's: a relay pull whose upstream sends nothing for this long is closed
    # (then retried or given up as its pull_retry_num says); 0: never.
    pull_timeout_sec: int = 30
    idle_timeout_sec: int = 30
    # RTMPS listener (lal's keys and shipped values; off unless enabled).
    rtmps_enable: bool = False
    rtmps_addr: str = ":4935"
    rtmps_cert_file: str = "./conf/cert.pem"
    rtmps_key_file: str = "./conf/key.pem"


@dataclass
class HttpConfig:
    http_listen_addr: str = ":8080"
    # Ours (lal has none): request headers must be complete within this long on
    # every HTTP listener, so slow clients cannot hold connections open.
    read_header_timeout_ms: int = 30000
    # HTTPS listener (lal's keys): it serves the features whose enable_https is true.
    https_listen_addr: str = ":4433"
    https_cert_file: str = "./conf/cert.pem"
    https_key_file: str = "./conf/key.pem"


@dataclass
class HttpFlvConfig:
    enable: bool = True
    url_pattern: str = "/"
    gop_num: int = 1
    single_gop_max_frame_num: int = 0
    # lal ships true; false here so a config without certificate files starts.
    enable_https: bool = False


@dataclass
class HttpTsConfig:
    """HTTP-TS: live MPEG-TS over one chunked HTTP response (``/APP/STREAM.ts``)."""

    enable: bool = True
    url_pattern: str = "/"
    # lal ships 0; 1 as for rtmp and httpflv here, so a player starts at once.
    gop_num: int = 1
    single_gop_max_frame_num: int = 0
    enable_https: bool = False  # lal's: serve HTTP-TS on the HTTPS listener too


@dataclass
class RecordConfig:
    """Recording of every publish to a file per format (lal's keys and defaults)."""

    enable_flv: bool = False
    flv_out_path: str = "./lal_record/flv/"
    enable_mpegts: bool = False
    mpegts_out_path: str = "./lal_record/mpegts"


@dataclass
class HlsConfig:
    """lal's ``hls`` section.  ``enable`` is off when the key is missing (lal's
    zero value); the shipped config turns it on, as lal's does."""

    enable: bool = False
    url_pattern: str = "/hls/"
    out_path: str = "./lal_record/hls/"
    fragment_duration_ms: int = 3000
    fragment_num: int = 6
    delete_threshold: int = -1  # lal: fragment_num when the key is missing
    cleanup_mode: int = 1
    use_memory_as_disk_flag: bool = False
    sub_session_timeout_ms: int = 30000
    # lal's: the key HLS viewer tokens (session_id) are made with; empty: from
    # simple_auth's secrets, or random at each start.
    sub_session_hash_key: str = ""
    enable_https: bool = False  # lal's: serve HLS on the HTTPS listener too
    # Ours: segments are served only to requests with an admitted viewer's token.
    segments_need_session: bool = False
    # Ours: viewer sessions one address (an IPv6 /64) may have; loopback is not
    # counted (a reverse proxy on the same machine); 0: no cap.
    max_viewers_per_addr: int = 100


@dataclass
class HttpApiConfig:
    """lal's ``http_api``; the keys after ``addr`` are ours (lal's API has no
    access control at all: see README, Security)."""

    enable: bool = False
    addr: str = ":8083"
    # When set, every request to the API listener needs it: "Authorization:
    # Bearer TOKEN", or Basic with any user name and TOKEN as the password.
    auth_token: str = ""
    # Host names (besides IP addresses and localhost) the API answers; "*": any.
    allowed_hosts: list[str] = field(default_factory=list)
    # Web origins ("https://admin.example.com") whose pages may call the API
    # (CORS); none by default, so no other site's page can drive or read it.
    cors_allowed_origins: list[str] = field(default_factory=list)


@dataclass
class AccessCheckConfig:
    """Bound on the access chain (ours; lal has no such section)."""

    timeout_ms: int = 5000


@dataclass
class SubscriberConfig:
    """Flow control for players (an extension; lal has no such section)."""

    stall_timeout_ms: int = 10000
    max_backlog_bytes: int = 2 * 1024 * 1024
    publisher_wait_timeout_ms: int = 3600000


@dataclass
class LimitsConfig:
    """Connection limits (ours; lal has none).  0 means: from the fd limit / none."""

    max_connections: int = 0
    max_connections_per_addr: int = 0


@dataclass
class StreamConfig:
    """Per-stream memory bounds (ours; lal has no such section)."""

    gop_cache_max_bytes: int = 16 * 1024 * 1024


@dataclass
class InSessionConfig:
    """lal's in_session: what is done to every incoming stream."""

    add_dummy_audio_enable: bool = False
    add_dummy_audio_wait_audio_ms: int = 150


# Below this a GOP cache would not hold one keyframe of a small picture.
_MIN_GOP_CACHE_BYTES = 64 * 1024


@dataclass
class RelayPushConfig:
    """lal's ``relay_push``: every published stream is pushed to each address."""

    enable: bool = False
    addr_list: list[str] = field(default_factory=list)
    # Ours: what one push may hold unsent while the target is slow, before it
    # reconnects and restarts at a keyframe; and its reconnect backoff bounds.
    max_backlog_bytes: int = 4 * 1024 * 1024
    retry_min_ms: int = 500
    retry_max_ms: int = 30000


@dataclass
class StaticRelayPullConfig:
    """lal's ``static_relay_pull``: a stream wanted here but not published is
    pulled from ``addr``.  The other keys are ours, named as lal's API fields."""

    enable: bool = False
    addr: str = ""
    pull_timeout_ms: int = 10000
    pull_retry_num: int = 0  # -1: retry as long as players wait
    auto_stop_pull_after_no_out_ms: int = 3000


@dataclass
class RelayConfig:
    """Bounds on the relay pulls the HTTP API starts (ours)."""

    max_api_pulls: int = 64
    # Hosts, IP addresses and networks ("10.0.0.0/8") API pulls may reach;
    # empty: any.
    allowed_upstreams: list[str] = field(default_factory=list)


@dataclass
class TlsClientConfig:
    """Outgoing rtmps:// and https:// (ours)."""

    ca_file: str = ""
    verify: bool = True


@dataclass
class HttpNotifyConfig:
    """lal's http_notify; ``queue_max`` and ``timeout_ms`` are ours (lal: 1024, 3 s)."""

    enable: bool = False
    update_interval_sec: int = 5
    on_server_start: str = ""
    on_update: str = ""
    on_pub_start: str = ""
    on_pub_stop: str = ""
    on_sub_start: str = ""
    on_sub_stop: str = ""
    on_relay_pull_start: str = ""
    on_relay_pull_stop: str = ""
    on_rtmp_connect: str = ""
    on_hls_make_ts: str = ""
    queue_max: int = 1024
    timeout_ms: int = 3000


@dataclass
class SimpleAuthConfig:
    """lal's simple_auth: ``lal_secret`` in the URL query is md5(key + stream_name)."""

    key: str = ""
    dangerous_lal_secret: str = ""
    pub_rtmp_enable: bool = False
    sub_rtmp_enable: bool = False
    sub_httpflv_enable: bool = False
    sub_httpts_enable: bool = False
    hls_m3u8_enable: bool = False
    pub_rtsp_enable: bool = False
    sub_rtsp_enable: bool = False


@dataclass
class HttpHookConfig:
    """Ours: an HTTP callback that can refuse a publish or a play."""

    enable: bool = False
    on_publish: str = ""
    on_play: str = ""
    timeout_ms: int = 3000


@dataclass
class MetricsConfig:
    """Ours: Prometheus metrics on the HTTP listener."""

    enable: bool = True
    url_path: str = "/metrics"


@dataclass
class StatusPageConfig:
    """Ours: the status page (``/`` on the HTTP listener, ``/lal.html`` on the API's).

    The page loads mpegts.js 1.8.2 and hls.js 1.7.4 with their integrity (SRI)
    hashes, from jsDelivr or, when ``player_js_base_url`` is set, from
    ``BASE/mpegts.js`` and ``BASE/hls.min.js``.  ``player_js_integrity: false``
    loads those without the check (a copy of other versions); it needs a base URL."""

    enable: bool = True
    player_js_base_url: str = ""
    player_js_integrity: bool = True


@dataclass
class Config:
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    default_http: HttpConfig = field(default_factory=HttpConfig)
    httpflv: HttpFlvConfig = field(default_factory=HttpFlvConfig)
    httpts: HttpTsConfig = field(default_factory=HttpTsConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    http_api: HttpApiConfig = field(default_factory=HttpApiConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    access_check: AccessCheckConfig = field(default_factory=AccessCheckConfig)
    subscriber: SubscriberConfig = field(default_factory=SubscriberConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    relay_push: RelayPushConfig = field(default_factory=RelayPushConfig)
    static_relay_pull: StaticRelayPullConfig = field(default_factory=StaticRelayPullConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    tls_client: TlsClientConfig = field(default_factory=TlsClientConfig)
    http_notify: HttpNotifyConfig = field(default_factory=HttpNotifyConfig)
    simple_auth: SimpleAuthConfig = field(default_factory=SimpleAuthConfig)
    http_hook: HttpHookConfig = field(default_factory=HttpHookConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    status_page: StatusPageConfig = field(default_factory=StatusPageConfig)
    in_session: InSessionConfig = field(default_factory=InSessionConfig)
    log: LogConfig = field(default_factory=LogConfig)
    server_id: str = "1"
    warnings: list[str] = field(default_factory=list)


# Keys lal knows that this server does not implement yet: accepted silently so a
# lal config loads, but listed by ``unimplemented_sections`` for one log line.
_LAL_SECTIONS_NOT_IMPLEMENTED = {
    "rtsp", "pprof", "debug",
}
_IGNORED_TOP_KEYS = {"# doc of config", "conf_version"}
_LAL_KEYS_NOT_IMPLEMENTED = {
    "rtmp": {"merge_write_size"},
    "log": {"short_file_flag", "timestamp_flag", "timestamp_with_ms_flag", "level_flag",
            "assert_behavior"},
}

_SECTIONS: dict[str, type] = {
    "rtmp": RtmpConfig,
    "default_http": HttpConfig,
    "httpflv": HttpFlvConfig,
    "httpts": HttpTsConfig,
    "record": RecordConfig,
    "http_api": HttpApiConfig,
    "hls": HlsConfig,
    "access_check": AccessCheckConfig,
    "subscriber": SubscriberConfig,
    "limits": LimitsConfig,
    "stream": StreamConfig,
    "relay_push": RelayPushConfig,
    "static_relay_pull": StaticRelayPullConfig,
    "relay": RelayConfig,
    "tls_client": TlsClientConfig,
    "http_notify": HttpNotifyConfig,
    "simple_auth": SimpleAuthConfig,
    "http_hook": HttpHookConfig,
    "metrics": MetricsConfig,
    "status_page": StatusPageConfig,
    "in_session": InSessionConfig,
    "log": LogConfig,
}

# Whole numbers that may be -1 (lal's "forever").
_MINUS_ONE_OK = {"static_relay_pull.pull_retry_num"}

_HOSTPORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d{1,5})$")
_ENDPOINT_PREFIXES = ("tcp:", "tcp6:", "ssl:", "unix:", "systemd:", "tls:")


def parse_listen_addr(value: str, key: str) -> str:
    """Turn lal's ``":1935"`` / ``"127.0.0.1:1935"`` or a Twisted endpoint string
    into a Twisted server endpoint description.  An empty address stays empty:
    lal configs hold one for listeners they do not use (``"https_listen_addr":
    ""``); the service refuses it only for a listener that is enabled."""
    if isinstance(value, str) and not value.strip():
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected an address such as \":1935\", "
                          f"\"127.0.0.1:1935\" or \"tcp:1935:interface=127.0.0.1\", got {value!r}")
    value = value.strip()
    if value.startswith(_ENDPOINT_PREFIXES):
        return value
    m = _HOSTPORT.match(value)
    if not m:
        raise ConfigError(f"{key}: cannot read address {value!r}; use \":1935\", "
                          "\"127.0.0.1:1935\" or a Twisted endpoint such as "
                          "\"tcp:1935:interface=127.0.0.1\"")
    port = int(m.group("port"))
    if port > 65535:
        raise ConfigError(f"{key}: port {port} is out of range (0-65535)")
    host = m.group("host")
    if not host:
        return f"tcp:{port}"
    if host.startswith("["):
        escaped = host[1:-1].replace(":", "\\:")
        return f"tcp6:{port}:interface={escaped}"
    return f"tcp:{port}:interface={host}"


def _check_type(key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {json.dumps(value)}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {json.dumps(value)}")
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
        return value
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {json.dumps(value)}")
        return value
    return value


_LIST_EXAMPLES = {
    "relay_push.addr_list": '["127.0.0.1:19351"]',
    "relay.allowed_upstreams": '["10.0.0.0/8", "origin.example.com"]',
    "http_api.allowed_hosts": '["lal.example.com"]',
    "http_api.cors_allowed_origins": '["https://admin.example.com"]',
}


def _string_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
        raise ConfigError(f"{key}: expected a list of non-empty strings such as "
                          f"{_LIST_EXAMPLES.get(key, '[...]')}, got {json.dumps(value)}")
    return [a.strip() for a in value]


def _log_level(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in _LAL_LEVELS:
        return _LAL_LEVELS[value]
    if isinstance(value, str) and value.lower() in _LEVEL_NAMES:
        return _LEVEL_NAMES[value.lower()]
    raise ConfigError(f"log.level: expected one of debug, info, warn, error (or lal's 0-7), "
                      f"got {json.dumps(value)}")


def from_dict(data: Any) -> Config:
    """Build a validated :class:`Config` from parsed JSON."""
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a JSON object ({...})")
    config = Config()
    for top, value in data.items():
        if top in _IGNORED_TOP_KEYS:
            continue
        if top == "server_id":
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise ConfigError(f"server_id: expected a string, got {json.dumps(value)}")
            config.server_id = str(value)
            continue
        if top in _LAL_SECTIONS_NOT_IMPLEMENTED:
            config.warnings.append(f"config: section {top!r} is not supported yet and is ignored")
            continue
        section_type = _SECTIONS.get(top)
        if section_type is None:
            config.warnings.append(f"config: unknown key {top!r} is ignored")
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{top}: expected an object ({{...}}), got {json.dumps(value)}")
        section = getattr(config, top)
        for key, item in value.items():
            full = f"{top}.{key}"
            if key in _LAL_KEYS_NOT_IMPLEMENTED.get(top, set()):
                config.warnings.append(f"config: {full} is not supported yet and is ignored")
                continue
            if not hasattr(section, key) or key == "warnings":
                config.warnings.append(f"config: unknown key {full!r} is ignored")
                continue
            if full == "log.level":
                setattr(section, key, _log_level(item))
                continue
            if full in _MINUS_ONE_OK and item == -1 and not isinstance(item, bool):
                setattr(section, key, -1)
                continue
            if isinstance(getattr(section, key), list):
                setattr(section, key, _string_list(full, item))
                continue
            setattr(section, key, _check_type(full, item, getattr(section, key)))
    _validate(config)
    return config


def _validate(config: Config) -> None:
    config.rtmp.addr = parse_listen_addr(config.rtmp.addr, "rtmp.addr")
    config.default_http.http_listen_addr = parse_listen_addr(
        config.default_http.http_listen_addr, "default_http.http_listen_addr")
    config.http_api.addr = parse_listen_addr(config.http_api.addr, "http_api.addr")
    config.rtmp.rtmps_addr = parse_listen_addr(config.rtmp.rtmps_addr, "rtmp.rtmps_addr")
    config.default_http.https_listen_addr = parse_listen_addr(
        config.default_http.https_listen_addr, "default_http.https_listen_addr")
    _validate_relays(config)
    if config.access_check.timeout_ms == 0:
        raise ConfigError("access_check.timeout_ms: must be greater than 0")
    if not 128 <= config.rtmp.chunk_size <= 0xFFFFFF:
        raise ConfigError(f"rtmp.chunk_size: must be between 128 and 16777215, "
                          f"got {config.rtmp.chunk_size}")
    if config.rtmp.read_batch_ms > 1000:
        raise ConfigError(f"rtmp.read_batch_ms: at most 1000 (ms), got "
                          f"{config.rtmp.read_batch_ms}; 0 turns read batching off")
    if config.rtmp.max_message_size < 1024:
        raise ConfigError("rtmp.max_message_size: must be at least 1024 bytes")
    for name in ("httpflv", "httpts"):
        section = getattr(config, name)
        pattern = section.url_pattern
        if not pattern.startswith("/"):
            raise ConfigError(f"{name}.url_pattern: must start with '/', got {pattern!r} "
                              "(use \"/\" to serve any path, or e.g. \"/live/\")")
        if not pattern.endswith("/"):
            section.url_pattern = pattern + "/"
    for key in ("flv_out_path", "mpegts_out_path"):
        if not getattr(config.record, key).strip():
            raise ConfigError(f"record.{key}: must name a directory, got an empty string "
                              "(e.g. \"./lal_record/flv/\")")
    _validate_hls(config.hls)
    if config.subscriber.stall_timeout_ms == 0:
        raise ConfigError("subscriber.stall_timeout_ms: must be greater than 0")
    if config.default_http.read_header_timeout_ms == 0:
        raise ConfigError("default_http.read_header_timeout_ms: must be greater than 0")
    _validate_control(config)
    if config.stream.gop_cache_max_bytes < _MIN_GOP_CACHE_BYTES:
        raise ConfigError(f"stream.gop_cache_max_bytes: must be at least {_MIN_GOP_CACHE_BYTES} "
                          f"(64 KiB), got {config.stream.gop_cache_max_bytes}; gop_num 0 "
                          "turns the cache off")


def _validate_hls(hls: HlsConfig) -> None:
    if not hls.url_pattern.startswith("/"):
        raise ConfigError(f"hls.url_pattern: must start with '/', got {hls.url_pattern!r} "
                          "(lal's default is \"/hls/\")")
    if not hls.url_pattern.endswith("/"):
        hls.url_pattern += "/"
    if hls.fragment_duration_ms < 100:
        raise ConfigError(f"hls.fragment_duration_ms: at least 100 (ms), got "
                          f"{hls.fragment_duration_ms}; lal's default is 3000")
    if hls.fragment_num < 1:
        raise ConfigError("hls.fragment_num: at least 1 segment in the playlist "
                          "(lal's default is 6)")
    if hls.delete_threshold == -1:
        hls.delete_threshold = hls.fragment_num
    if hls.cleanup_mode not in (0, 1, 2):
        raise ConfigError(f"hls.cleanup_mode: 0 (never delete), 1 (delete when the stream "
                          f"ends) or 2 (keep only the recent segments), got {hls.cleanup_mode}")
    if hls.enable and not hls.use_memory_as_disk_flag and not hls.out_path:
        raise ConfigError("hls.out_path: a directory for the HLS files is needed when "
                          "hls.use_memory_as_disk_flag is false")


def _validate_relays(config: Config) -> None:
    push, pull = config.relay_push, config.static_relay_pull
    if push.enable and not push.addr_list:
        raise ConfigError("relay_push.addr_list: relay_push is enabled but lists no address "
                          "(e.g. [\"127.0.0.1:19351\"])")
    if push.retry_min_ms == 0 or push.retry_max_ms < push.retry_min_ms:
        raise ConfigError("relay_push.retry_min_ms must be above 0 and at most "
                          "relay_push.retry_max_ms")
    if push.max_backlog_bytes < _MIN_GOP_CACHE_BYTES:
        raise ConfigError(f"relay_push.max_backlog_bytes: must be at least "
                          f"{_MIN_GOP_CACHE_BYTES} (64 KiB)")
    if pull.enable and not pull.addr.strip():
        raise ConfigError("static_relay_pull.addr: static_relay_pull is enabled but has no "
                          "address (\"host:port\" or an rtmp://, rtmps://, http:// or "
                          "https:// base URL)")
    if pull.pull_timeout_ms == 0:
        raise ConfigError("static_relay_pull.pull_timeout_ms: must be greater than 0")
    for addr in push.addr_list:
        try:
            parse_base(addr, push=True)
        except UpstreamError as e:
            raise ConfigError(f"relay_push.addr_list: {e}") from None
    if pull.addr.strip():
        try:
            parse_base(pull.addr.strip(), push=False)
        except UpstreamError as e:
            raise ConfigError(f"static_relay_pull.addr: {e}") from None


def _check_url(key: str, value: str) -> None:
    if value and not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f"{key}: expected an http:// or https:// URL, got {value!r}")


def _validate_control(config: Config) -> None:
    notify = config.http_notify
    for name in vars(notify):
        if name.startswith("on_"):
            _check_url(f"http_notify.{name}", getattr(notify, name))
    if notify.enable and notify.update_interval_sec == 0:
        raise ConfigError("http_notify.update_interval_sec: must be greater than 0")
    if notify.queue_max == 0:
        raise ConfigError("http_notify.queue_max: must be greater than 0")
    if notify.timeout_ms == 0:
        raise ConfigError("http_notify.timeout_ms: must be greater than 0")
    hook = config.http_hook
    _check_url("http_hook.on_publish", hook.on_publish)
    _check_url("http_hook.on_play", hook.on_play)
    if hook.timeout_ms == 0:
        raise ConfigError("http_hook.timeout_ms: must be greater than 0")
    if hook.enable and not (hook.on_publish or hook.on_play):
        raise ConfigError("http_hook: enabled without on_publish or on_play; set one of "
                          "them or set http_hook.enable to false")
    auth = config.simple_auth
    switches = [k for k in vars(auth) if k.endswith("_enable") and getattr(auth, k)]
    if switches and not auth.key and not auth.dangerous_lal_secret:
        raise ConfigError(f"simple_auth: {switches[0]} is on but simple_auth.key is empty; "
                          "set a key (lal_secret = md5(key + stream_name))")
    if not config.metrics.url_path.startswith("/"):
        raise ConfigError(f"metrics.url_path: must start with '/', got "
                          f"{config.metrics.url_path!r}")
    base = config.status_page.player_js_base_url
    if base and not re.match(r"^(https?:)?//|^/", base):
        raise ConfigError(f"status_page.player_js_base_url: expected a URL or an absolute "
                          f"path, got {base!r}")
    if not config.status_page.player_js_integrity and not base:
        raise ConfigError("status_page.player_js_integrity: false needs "
                          "status_page.player_js_base_url (the jsDelivr files are pinned "
                          "and always checked); set a base URL or set it to true")


def load(path: str) -> Config:
    """Read and validate a config file; every failure is one :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found; pass an existing file with "
                          "--config (the repository ships conf/lals.json)") from None
    except OSError as e:
        raise ConfigError(f"config file {path!r} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path!r} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path!r} is not valid JSON: {e.msg} at line {e.lineno} "
                          f"column {e.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r}: the top level must be a JSON object ({{...}})")
    return from_dict(data)
