"""Configuration loading: lal's address forms, lal config compatibility, one clear
error per mistake, and the real ``twistd lals`` plugin refusing bad configs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lal_twisted.config import Config, ConfigError, from_dict, load, parse_listen_addr
from lal_twisted.service import make_service

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"

# Shaped like lal's conf/lalserver.conf.json (v0.4.x), sections and all.
LAL_CONFIG: dict[str, Any] = {
    "# doc of config": "https://pengrl.com/lal/#/ConfigBrief",
    "conf_version": "v0.4.1",
    "rtmp": {
        "enable": True,
        "addr": ":1935",
        "rtmps_enable": True,
        "rtmps_addr": ":4935",
        "rtmps_cert_file": "./conf/cert.pem",
        "rtmps_key_file": "./conf/key.pem",
        "gop_num": 0,
        "single_gop_max_frame_num": 0,
        "merge_write_size": 0,
    },
    "in_session": {"add_dummy_audio_enable": False, "add_dummy_audio_wait_audio_ms": 150},
    "default_http": {
        "http_listen_addr": ":8080",
        "https_listen_addr": ":4433",
        "https_cert_file": "./conf/cert.pem",
        "https_key_file": "./conf/key.pem",
    },
    "httpflv": {
        "enable": True,
        "enable_https": True,
        "url_pattern": "/",
        "gop_num": 0,
        "single_gop_max_frame_num": 0,
    },
    "hls": {
        "enable": True,
        "enable_https": True,
        "url_pattern": "/hls/",
        "out_path": "./lal_record/hls/",
        "fragment_duration_ms": 3000,
        "fragment_num": 6,
        "delete_threshold": 6,
        "cleanup_mode": 1,
        "use_memory_as_disk_flag": False,
    },
    "httpts": {
        "enable": True,
        "enable_https": True,
        "url_pattern": "/",
        "gop_num": 0,
        "single_gop_max_frame_num": 0,
    },
    "rtsp": {
        "enable": True,
        "addr": ":5544",
        "rtsps_enable": True,
        "rtsps_addr": ":5322",
        "out_wait_key_frame_flag": True,
    },
    "record": {
        "enable_flv": False,
        "flv_out_path": "./lal_record/flv/",
        "enable_mpegts": False,
        "mpegts_out_path": "./lal_record/mpegts",
    },
    "relay_push": {"enable": False, "addr_list": []},
    "static_relay_pull": {"enable": False, "addr": ""},
    "http_api": {"enable": True, "addr": ":8083"},
    "server_id": "1",
    "http_notify": {"enable": False, "update_interval_sec": 5, "on_server_start": ""},
    "simple_auth": {"key": "q191201771", "dangerous_lal_secret": "pengrl"},
    "pprof": {"enable": True, "addr": ":8084"},
    "log": {
        "level": 1,
        "filename": "./logs/lalserver.log",
        "is_to_stdout": True,
        "is_rotate_daily": True,
        "short_file_flag": True,
        "timestamp_flag": True,
        "timestamp_with_ms_flag": True,
        "level_flag": True,
        "assert_behavior": 1,
    },
    "debug": {"log_group_interval_sec": 30},
}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    return str(info.value)


# -- parse_listen_addr ------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (":1935", "tcp:1935"),
    ("127.0.0.1:1935", "tcp:1935:interface=127.0.0.1"),
    ("0.0.0.0:8080", "tcp:8080:interface=0.0.0.0"),
    ("[::1]:1935", "tcp6:1935:interface=\\:\\:1"),
    ("[::]:1935", "tcp6:1935:interface=\\:\\:"),
    (" :1935 ", "tcp:1935"),
    (":0", "tcp:0"),
    (":65535", "tcp:65535"),
])
def test_listen_addr_lal_forms(value: str, expected: str) -> None:
    assert parse_listen_addr(value, "rtmp.addr") == expected


@pytest.mark.parametrize("value", [
    "tcp:1935:interface=127.0.0.1",
    "tcp6:1935:interface=\\:\\:1",
    "ssl:1936:privateKey=key.pem:certKey=cert.pem",
    "unix:/tmp/lals.sock",
])
def test_listen_addr_endpoint_strings_pass_through(value: str) -> None:
    assert parse_listen_addr(value, "rtmp.addr") == value


@pytest.mark.parametrize("value", ["abc", ":99999", ":65536", 1935, None,
                                   "127.0.0.1", "127.0.0.1:", "::1:1935", "[::1]"])
def test_listen_addr_errors_name_the_key(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen_addr(value, "default_http.http_listen_addr")
    assert str(info.value).startswith("default_http.http_listen_addr:")


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_address_is_kept_for_a_listener_nothing_enables(value: str) -> None:
    # lal configs hold them ("https_listen_addr": "" with HTTPS unused), and lal starts.
    assert parse_listen_addr(value, "default_http.https_listen_addr") == ""
    config = from_dict({"default_http": {"http_listen_addr": "127.0.0.1:0",
                                         "https_listen_addr": value},
                        "rtmp": {"addr": "127.0.0.1:0", "rtmps_addr": value},
                        "http_api": {"addr": value}})
    lals = make_service(config)
    assert set(lals.listeners) == {"rtmp", "http"}


@pytest.mark.parametrize(("data", "key"), [
    ({"rtmp": {"addr": ""}}, "rtmp.addr"),
    ({"default_http": {"http_listen_addr": ""}}, "default_http.http_listen_addr"),
    ({"http_api": {"enable": True, "addr": ""}}, "http_api.addr"),
])
def test_an_empty_address_of_an_enabled_listener_stops_the_server(data: dict, key: str) -> None:
    data = {"rtmp": {"addr": "127.0.0.1:0"}, "default_http": {"http_listen_addr": "127.0.0.1:0"},
            **data}
    with pytest.raises(ConfigError) as info:
        make_service(from_dict(data))
    assert str(info.value).startswith(f"{key}: the ") and "address is empty" in str(info.value)


def test_listen_addr_out_of_range_port_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"rtmp\.addr: port 99999 is out of range"):
        parse_listen_addr(":99999", "rtmp.addr")


# -- from_dict ------------------------------------------------------------------------

def test_defaults() -> None:
    config = from_dict({})
    assert config.rtmp.enable is True
    assert config.rtmp.addr == "tcp:1935"
    assert config.rtmp.gop_num == 1
    assert config.rtmp.single_gop_max_frame_num == 0
    assert config.rtmp.chunk_size == 4096
    assert config.rtmp.max_message_size == 16 * 1024 * 1024
    assert config.default_http.http_listen_addr == "tcp:8080"
    assert config.default_http.read_header_timeout_ms == 30000
    assert config.httpflv.enable is True
    assert config.httpflv.url_pattern == "/"
    assert config.httpflv.gop_num == 1
    assert config.subscriber.stall_timeout_ms == 10000
    assert config.subscriber.max_backlog_bytes == 2 * 1024 * 1024
    assert config.httpts.enable is True
    assert config.httpts.url_pattern == "/"
    assert (config.httpts.gop_num, config.httpts.single_gop_max_frame_num) == (1, 0)
    assert config.record.enable_flv is False and config.record.enable_mpegts is False
    assert config.record.flv_out_path == "./lal_record/flv/"
    assert config.record.mpegts_out_path == "./lal_record/mpegts"
    assert config.log.level == "info"
    assert config.log.filename == ""
    assert config.log.is_to_stdout is True
    assert config.log.is_rotate_daily is True
    assert config.warnings == []


def test_configs_are_independent() -> None:
    first = from_dict({"rtmp": {"gop_num": 5}})
    second = from_dict({})
    assert first.rtmp.gop_num == 5
    assert second.rtmp.gop_num == 1
    assert Config().rtmp.gop_num == 1


def test_lal_config_loads_with_warnings() -> None:
    config = from_dict(json.loads(json.dumps(LAL_CONFIG)))
    assert config.rtmp.addr == "tcp:1935"
    assert config.rtmp.gop_num == 0
    assert config.default_http.http_listen_addr == "tcp:8080"
    assert config.httpflv.url_pattern == "/"
    assert config.httpflv.gop_num == 0
    assert config.httpts.enable and config.httpts.url_pattern == "/"
    assert config.httpts.gop_num == 0
    assert not config.record.enable_flv and not config.record.enable_mpegts
    assert config.record.flv_out_path == "./lal_record/flv/"
    assert config.record.mpegts_out_path == "./lal_record/mpegts"
    assert config.log.level == "debug"  # lal's numeric level 1
    assert config.log.filename == "./logs/lalserver.log"
    assert config.http_api.enable and config.http_api.addr == "tcp:8083"
    assert config.server_id == "1"
    assert config.simple_auth.key == "q191201771"
    assert config.simple_auth.dangerous_lal_secret == "pengrl"
    assert config.http_notify.update_interval_sec == 5 and not config.http_notify.enable
    text = "\n".join(config.warnings)
    assert config.hls.enable and config.hls.url_pattern == "/hls/"
    assert config.hls.delete_threshold == config.hls.fragment_num
    for section in ("rtsp", "pprof", "debug"):
        assert f"section {section!r} is not supported yet" in text
    assert "in_session" not in text
    assert not config.in_session.add_dummy_audio_enable
    for key in ("rtmp.merge_write_size", "log.short_file_flag", "log.assert_behavior"):
        assert f"{key} is not supported yet" in text
    assert "enable_https" not in text and "pull_timeout_sec" not in text
    # Relays and TLS are lal's keys too.
    assert "relay" not in text and "rtmps" not in text
    assert "default_http" not in text and "httpflv.enable_https" not in text
    assert config.default_http.https_listen_addr == "tcp:4433"
    # The documentation link and version marker are lal's own bookkeeping.
    assert "doc of config" not in text
    assert "conf_version" not in text


def test_repository_config_loads_cleanly() -> None:
    config = load(str(ROOT / "conf" / "lals.json"))
    assert config.warnings == []
    assert config.rtmp.addr.startswith(("tcp", "ssl", "unix"))
    # the API can kick sessions: the shipped config keeps it on loopback
    assert config.http_api.enable and config.http_api.addr.endswith("interface=127.0.0.1")


@pytest.mark.parametrize(("level", "expected"), [
    (0, "debug"), (1, "debug"), (2, "info"), (3, "warn"), (4, "error"), (5, "critical"),
    (6, "critical"), (7, "critical"),  # naza's panic and "nothing" (lal's benchonlyrtmp: 7)
    ("debug", "debug"), ("INFO", "info"), ("warning", "warn"), ("trace", "debug"),
    ("fatal", "critical"),
])
def test_log_levels(level: Any, expected: str) -> None:
    assert from_dict({"log": {"level": level}}).log.level == expected


@pytest.mark.parametrize("level", [8, -1, "loud", True, None, 2.0])
def test_bad_log_level(level: Any) -> None:
    assert error_of({"log": {"level": level}}).startswith("log.level:")


def test_unknown_keys_are_warnings_naming_the_key() -> None:
    config = from_dict({"rtmp": {"gopnum": 3}, "rmtp": {}, "log": {"warnings": 1}})
    assert config.rtmp.gop_num == 1
    assert "config: unknown key 'rtmp.gopnum' is ignored" in config.warnings
    assert "config: unknown key 'rmtp' is ignored" in config.warnings
    assert "config: unknown key 'log.warnings' is ignored" in config.warnings


def test_top_level_warnings_key_is_only_a_warning() -> None:
    config = from_dict({"warnings": ["x"]})
    assert config.warnings == ["config: unknown key 'warnings' is ignored"]


@pytest.mark.parametrize(("data", "key", "detail"), [
    ({"rtmp": {"gop_num": "2"}}, "rtmp.gop_num", 'expected a whole number, got "2"'),
    ({"rtmp": {"gop_num": 1.5}}, "rtmp.gop_num", "expected a whole number, got 1.5"),
    ({"rtmp": {"gop_num": True}}, "rtmp.gop_num", "expected a whole number, got true"),
    ({"rtmp": {"gop_num": -1}}, "rtmp.gop_num", "must not be negative, got -1"),
    ({"rtmp": {"enable": 1}}, "rtmp.enable", "expected true or false, got 1"),
    ({"httpflv": {"enable": "yes"}}, "httpflv.enable", 'expected true or false, got "yes"'),
    ({"rtmp": {"addr": 1935}}, "rtmp.addr", "expected a string, got 1935"),
    ({"rtmp": []}, "rtmp", "expected an object ({...}), got []"),
    ({"log": "debug"}, "log", 'expected an object ({...}), got "debug"'),
    ({"rtmp": None}, "rtmp", "expected an object ({...}), got null"),
    ({"httpflv": {"single_gop_max_frame_num": -5}}, "httpflv.single_gop_max_frame_num",
     "must not be negative"),
    ({"subscriber": {"max_backlog_bytes": -1}}, "subscriber.max_backlog_bytes",
     "must not be negative"),
    ({"subscriber": {"stall_timeout_ms": 0}}, "subscriber.stall_timeout_ms",
     "must be greater than 0"),
    ({"default_http": {"read_header_timeout_ms": 0}}, "default_http.read_header_timeout_ms",
     "must be greater than 0"),
    ({"log": {"filename": 3}}, "log.filename", "expected a string, got 3"),
    ({"log": {"is_to_stdout": "true"}}, "log.is_to_stdout", "expected true or false"),
    ({"rtmp": {"addr": "abc"}}, "rtmp.addr", "cannot read address 'abc'"),
    ({"default_http": {"http_listen_addr": ":99999"}}, "default_http.http_listen_addr",
     "port 99999 is out of range"),
    ({"rtmp": {"max_message_size": 100}}, "rtmp.max_message_size", "at least 1024"),
])
def test_wrong_values_name_the_full_key(data: dict[str, Any], key: str, detail: str) -> None:
    message = error_of(data)
    assert message.startswith(f"{key}:")
    assert detail in message


@pytest.mark.parametrize("data", [[], "x", 1, None, [{"rtmp": {}}]])
def test_top_level_must_be_an_object(data: Any) -> None:
    assert "top level must be a JSON object" in error_of(data)


@pytest.mark.parametrize(("pattern", "expected"), [
    ("/", "/"), ("/live/", "/live/"), ("/live", "/live/"), ("/a/b", "/a/b/"),
])
def test_url_pattern_gets_a_trailing_slash(pattern: str, expected: str) -> None:
    assert from_dict({"httpflv": {"url_pattern": pattern}}).httpflv.url_pattern == expected


@pytest.mark.parametrize("pattern", ["live/", "live", ""])
@pytest.mark.parametrize("section", ["httpflv", "httpts"])
def test_url_pattern_needs_a_leading_slash(section: str, pattern: str) -> None:
    message = error_of({section: {"url_pattern": pattern}})
    assert message.startswith(f"{section}.url_pattern: must start with '/'")


def test_httpts_url_pattern_gets_a_trailing_slash() -> None:
    assert from_dict({"httpts": {"url_pattern": "/live"}}).httpts.url_pattern == "/live/"


@pytest.mark.parametrize("key", ["flv_out_path", "mpegts_out_path"])
def test_record_paths_must_not_be_empty(key: str) -> None:
    assert error_of({"record": {key: " "}}).startswith(f"record.{key}: must name a directory")


@pytest.mark.parametrize("size", [128, 4096, 60000, 0xFFFFFF])
def test_chunk_size_in_range(size: int) -> None:
    assert from_dict({"rtmp": {"chunk_size": size}}).rtmp.chunk_size == size


@pytest.mark.parametrize("size", [0, 1, 127, 0x1000000])
def test_chunk_size_out_of_range(size: int) -> None:
    message = error_of({"rtmp": {"chunk_size": size}})
    assert message == f"rtmp.chunk_size: must be between 128 and 16777215, got {size}"


# -- load -----------------------------------------------------------------------------

def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rtmp": {"addr": "127.0.0.1:19350", "gop_num": 2}}))
    config = load(str(path))
    assert config.rtmp.addr == "tcp:19350:interface=127.0.0.1"
    assert config.rtmp.gop_num == 2


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    assert "cannot be read" in str(info.value)


def test_load_invalid_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "rtmp": {\n    "gop_num": 1,\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "is not valid JSON" in message
    assert "line 4 column 3" in message


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("")
    with pytest.raises(ConfigError, match="is not valid JSON: .* at line 1 column 1"):
        load(str(path))


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"rtmp"', "3", "null"])
def test_load_non_object_top_level_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in str(info.value)
    assert "top level must be a JSON object" in str(info.value)


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"log": {"filename": "caf\u00e9.log"}}'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in str(info.value)
    assert "not UTF-8" in str(info.value)


def test_load_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"httpflv": {"gop_num": "1"}}))
    with pytest.raises(ConfigError, match=r"^httpflv\.gop_num: expected a whole number"):
        load(str(path))


# -- the twistd plugin ----------------------------------------------------------------

def run_twistd(config_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", "lals", "--config", str(config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30)


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "lals.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_twistd_missing_config(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    result = run_twistd(path)
    assert result.returncode != 0
    assert f"config file {str(path)!r} not found" in result.stdout + result.stderr


def test_twistd_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{"rtmp": {"addr": ":1935",}}')
    result = run_twistd(path)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "is not valid JSON" in out
    assert "line 1 column 27" in out


def test_twistd_wrong_type(tmp_path: Path) -> None:
    result = run_twistd(write(tmp_path, {"rtmp": {"gop_num": "2"}}))
    assert result.returncode != 0
    assert 'rtmp.gop_num: expected a whole number, got "2"' in result.stdout + result.stderr


def test_twistd_bad_address(tmp_path: Path) -> None:
    result = run_twistd(write(tmp_path, {"default_http": {"http_listen_addr": "localhost"}}))
    assert result.returncode != 0
    assert ("default_http.http_listen_addr: cannot read address 'localhost'"
            in result.stdout + result.stderr)


def test_twistd_port_in_use_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, {"rtmp": {"addr": f"127.0.0.1:{port}"},
                                "default_http": {"http_listen_addr": "127.0.0.1:0"}})
        # subprocess.run raises TimeoutExpired (failing the test) if it keeps running.
        result = run_twistd(path)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "Address already in use" in out
    assert f"127.0.0.1:{port}" in out
    assert "rtmp.addr" in out and "Traceback" not in out


def test_twistd_endpoint_twisted_cannot_parse(tmp_path: Path) -> None:
    result = run_twistd(write(tmp_path, {"rtmp": {"addr": "tcp:notaport"}}))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "rtmp.addr: cannot listen on 'tcp:notaport'" in out
    assert "Traceback" not in out


def _free_privileged_port() -> int:
    for port in range(990, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="binding a port below 1024 and dropping privileges needs root")
def test_twistd_binds_privileged_ports_then_drops_privileges(tmp_path: Path) -> None:
    """Listeners bind in privilegedStartService, before twistd --uid switches user."""
    port = _free_privileged_port()
    path = write(tmp_path, {"rtmp": {"addr": f"127.0.0.1:{port}"},
                            "default_http": {"http_listen_addr": "127.0.0.1:0"}})
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o644)
    proc = subprocess.Popen(
        [str(TWISTD), "-n", "--pidfile=", "--uid=65534", "--gid=65534", "lals",
         "--config", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"\x03" + bytes(1536))  # C0 + C1: the server answers S0
                    assert conn.recv(1)[:1] == b"\x03"
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not listen"
                time.sleep(0.1)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4  # real, effective, saved, fs
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
    assert "Traceback" not in out


@pytest.mark.parametrize(("data", "message"), [
    ({"server_id": ["a"]}, "server_id: expected a string"),
    ({"http_notify": {"on_pub_start": "ftp://x"}}, "http_notify.on_pub_start: expected an http"),
    ({"http_notify": {"enable": True, "update_interval_sec": 0}},
     "http_notify.update_interval_sec: must be greater than 0"),
    ({"http_notify": {"queue_max": 0}}, "http_notify.queue_max"),
    ({"http_hook": {"enable": True}}, "http_hook: enabled without on_publish or on_play"),
    ({"http_hook": {"on_play": "localhost:1"}}, "http_hook.on_play: expected an http"),
    ({"http_hook": {"timeout_ms": 0}}, "http_hook.timeout_ms"),
    ({"simple_auth": {"pub_rtmp_enable": True}}, "simple_auth: pub_rtmp_enable is on but"),
    ({"simple_auth": {"sub_rtmp_enable": "yes"}}, "simple_auth.sub_rtmp_enable: expected true"),
    ({"metrics": {"url_path": "metrics"}}, "metrics.url_path: must start with '/'"),
    ({"status_page": {"player_js_base_url": "cdn"}}, "status_page.player_js_base_url"),
    ({"status_page": {"player_js_integrity": False}},
     "status_page.player_js_integrity: false needs status_page.player_js_base_url"),
])
def test_control_plane_config_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(data)


def test_control_plane_config_defaults() -> None:
    config = from_dict({"server_id": 7})
    assert config.server_id == "7"
    assert not config.http_notify.enable and config.http_notify.queue_max == 1024
    assert not config.http_hook.enable and config.http_hook.timeout_ms == 3000
    assert config.metrics.enable and config.metrics.url_path == "/metrics"
    assert config.status_page.enable and config.status_page.player_js_base_url == ""
    assert config.status_page.player_js_integrity
    assert not any(getattr(config.simple_auth, k) for k in vars(config.simple_auth)
                   if k.endswith("_enable"))


def test_every_config_key_is_documented_in_the_readme() -> None:
    """Each key of each section appears in README.md, as `section.key` or, in a
    row that names the section's keys together, as `key`."""
    import dataclasses

    from lal_twisted.config import Config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = []
    for section in dataclasses.fields(Config):
        if section.name == "warnings":
            continue
        value = getattr(Config(), section.name)
        if not dataclasses.is_dataclass(value):
            if f"`{section.name}`" not in readme:
                missing.append(section.name)
            continue
        for key in dataclasses.fields(value):
            full = f"{section.name}.{key.name}"
            if f"`{full}`" not in readme and f"`{key.name}`" not in readme:
                missing.append(full)
    assert missing == []
