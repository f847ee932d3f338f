"""The configuration's sections as typed objects, with their defaults.

Each section and key is named as in lal's ``lalserver.conf.json`` where lal
has it (the README documents every key); :mod:`lal_twisted.config.loading`
fills them from a JSON file and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lal_twisted.log import LogConfig

__all__ = [
    "AccessCheckConfig", "Config", "HlsConfig", "HttpApiConfig", "HttpConfig", "HttpFlvConfig",
    "HttpHookConfig", "HttpNotifyConfig", "HttpTsConfig", "InSessionConfig", "LimitsConfig",
    "LogConfig", "MetricsConfig", "RecordConfig", "RelayConfig", "RelayPushConfig", "RtmpConfig",
    "SimpleAuthConfig", "StaticRelayPullConfig", "StatusPageConfig", "StreamConfig",
    "SubscriberConfig", "TlsClientConfig",
]


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
