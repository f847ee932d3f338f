"""Load and validate the JSON configuration into typed objects.

Key names follow lal's ``lalserver.conf.json`` for every feature implemented here,
so a lal user's config carries over.  Every user mistake becomes one
:class:`ConfigError` whose message names the key (or file) and the fix.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lal_twisted.config.sections import (
    AccessCheckConfig,
    Config,
    HlsConfig,
    HttpApiConfig,
    HttpConfig,
    HttpFlvConfig,
    HttpHookConfig,
    HttpNotifyConfig,
    HttpTsConfig,
    InSessionConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    RecordConfig,
    RelayConfig,
    RelayPushConfig,
    RtmpConfig,
    SimpleAuthConfig,
    StaticRelayPullConfig,
    StatusPageConfig,
    StreamConfig,
    SubscriberConfig,
    TlsClientConfig,
)
from lal_twisted.errors import ConfigError
from lal_twisted.relay.address import UpstreamError, parse_base

__all__ = ["from_dict", "load", "parse_listen_addr"]

# lal's numeric log levels (naza's: trace, debug, info, warn, error, fatal,
# panic, nothing) and their twisted.logger names; "nothing" is as close as
# twisted.logger gets: critical lines only.
_LAL_LEVELS = {0: "debug", 1: "debug", 2: "info", 3: "warn", 4: "error", 5: "critical",
               6: "critical", 7: "critical"}
_LEVEL_NAMES = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warn",
                "warning": "warn", "error": "error", "fatal": "critical", "critical": "critical"}


# Below this a GOP cache would not hold one keyframe of a small picture.
_MIN_GOP_CACHE_BYTES = 64 * 1024


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
