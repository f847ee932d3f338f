"""Every configuration file lal ships (its conf/ directory, v0.37.4, in
tests/lal_conf/) starts the server as it is, in lal's layout (``./conf/cert.pem``
beside it): each key the server does not implement is reported once, nothing
refuses to start, and a stream published over RTMP plays back.

Only the listen addresses are changed, to free loopback ports, so that tests can
run side by side (and, where a file leaves one out and the default would listen
on every interface at a fixed port, one is added)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, FPS, ROOT, Media, free_port, wait_port
from mediatools import finish, probe, pull, push
from tlscerts import CA

from lal_twisted.config import Config

LAL_CONF = Path(__file__).parent / "lal_conf"
FILES = sorted(p.name for p in LAL_CONF.glob("*.json*"))
_ADDR = re.compile(r"^[^:]*:\d+$")


def _loopback(data: Any) -> Any:
    """Every ``...addr`` value (``":1935"``, ``"127.0.0.1:8080"``) to a free port."""
    if isinstance(data, dict):
        return {k: (f"127.0.0.1:{free_port()}" if k.endswith("addr") and isinstance(v, str)
                    and _ADDR.match(v) else _loopback(v)) for k, v in data.items()}
    return data


def _ours() -> dict[str, set[str]]:
    """The keys this server reads, by section."""
    out: dict[str, set[str]] = {}
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = {k.name for k in dataclasses.fields(value)}
    return out


def _lacking(data: dict[str, Any]) -> list[str]:
    """What the server should report as not read: whole sections, or keys."""
    ours = _ours()
    lacking = []
    for section, value in data.items():
        if section in ("# doc of config", "conf_version", "server_id"):
            continue
        if section not in ours:
            lacking.append(section)
        elif isinstance(value, dict):
            lacking += [f"{section}.{key}" for key in value if key not in ours[section]]
    return lacking


def test_the_list_is_lals_conf_directory() -> None:
    assert FILES == ["benchonlyrtmp.conf.json", "edge.conf.json", "lalserver.conf.json",
                     "lalserver.conf.json.tmpl", "node2.conf.json"]


@pytest.mark.parametrize("name", FILES)
def test_lal_config_starts_the_server(name: str, tmp_path: Path, media: Media) -> None:
    original = json.loads((LAL_CONF / name).read_text())
    data = _loopback(original)
    data.setdefault("default_http", {}).setdefault("http_listen_addr",
                                                   f"127.0.0.1:{free_port()}")
    if "http_api" not in data:
        data["http_api"] = {"enable": False}
    (tmp_path / "conf").mkdir()
    pair = CA(tmp_path).issue("lal", ["localhost"], ["127.0.0.1"])
    shutil.copy(pair.cert, tmp_path / "conf" / "cert.pem")
    shutil.copy(pair.key, tmp_path / "conf" / "key.pem")
    conf = tmp_path / "conf" / name
    conf.write_text(json.dumps(data, indent=2))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(BIN / "twistd"), "-n", "--pidfile=", "lals", "--config",
                                 str(conf)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
    rtmp_port = int(data["rtmp"]["addr"].rpartition(":")[2])
    player = publisher = None
    try:
        wait_port(rtmp_port, proc)
        # lal's TLS listeners start from ./conf/cert.pem, as with lal.
        if data["rtmp"].get("rtmps_enable"):
            wait_port(int(data["rtmp"]["rtmps_addr"].rpartition(":")[2]), proc)
        # It serves: a stream published over RTMP plays back.
        url = f"rtmp://127.0.0.1:{rtmp_port}/live/conf"
        publisher = push(media.long_av, url, loop=True)
        player = pull(url, tmp_path / "out.flv", 2.0)  # it waits for the publisher
        code, err = finish(player)
        assert code == 0, err
        info = probe(tmp_path / "out.flv")
        assert info.first_video_key and info.video_frames >= FPS, info
        log = log_path.read_text()
        # Each key lal has and this server lacks is reported, once (as a warning:
        # benchonlyrtmp.conf.json's log.level 7, lal's "nothing", shows none).
        warnings_shown = original.get("log", {}).get("level", 2) <= 3
        for key in _lacking(original) if warnings_shown else []:
            section, _, leaf = key.partition(".")
            named = [line for line in log.splitlines()
                     if f"'{key}'" in line or f" {key} " in line
                     or (not leaf and f"section {section!r}" in line)]
            assert len(named) == 1, (key, named, log)
        assert "Traceback" not in log and "#error]" not in log and "#critical]" not in log, log
    finally:
        for p in (publisher, player):
            if p is not None:
                p.kill()
                finish(p)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    # twistd ends a clean shutdown on SIGTERM by that signal (exit status -15).
    assert proc.returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert "Server Shut Down" in log_path.read_text()
