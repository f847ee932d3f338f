"""Relay push to another server (lals and nginx-rtmp), static pull from nginx-rtmp,
backoff on a dead target, retries of an upstream that goes away, and loops."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from string import Template

import pytest
from conftest import (
    FPS,
    Media,
    Server,
    free_port,
    start_server,
    stop_server,
    wait_port,
)
from mediatools import finish, probe, pull, push, wait_for
from relaytools import http_status

HERE = Path(__file__).resolve().parent
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
WINDOW = 3.0


def _check(out: Path, seconds: float) -> None:
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}, info
    assert info.first_video_key and info.decode_errors == "", info
    assert info.video_frames >= 0.7 * seconds * FPS, info


def _server(tmp: Path, name: str, **overrides: dict) -> Server:
    d = tmp / name
    d.mkdir()
    return start_server(d, **overrides)


def _clean(*servers: Server) -> None:
    for s in servers:
        stop_server(s)
    for s in servers:
        assert "Traceback" not in s.log(), s.log()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary) or not os.path.exists(NGINX_MODULE):
        pytest.fail("nginx-rtmp peer tests need Debian's nginx and libnginx-mod-rtmp "
                    "(apt-get install nginx libnginx-mod-rtmp)")
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(Template((HERE / "nginx-relay.conf").read_text()).substitute(
        workdir=work, module=NGINX_MODULE, port=port))
    proc = subprocess.Popen([binary, "-p", str(work), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)  # type: ignore[arg-type]
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_push_to_another_lals_stops_with_the_publisher(media: Media, tmp_path: Path) -> None:
    target = _server(tmp_path, "target")
    origin = _server(tmp_path, "origin", relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{target.rtmp_port}"]})
    publisher = push(media.long_av, origin.rtmp_url("p"), loop=True)
    try:
        target.wait_live("p", 15)
        out = tmp_path / "from-target.flv"
        code, err = finish(pull(target.flv_url("p"), out, WINDOW))
        assert code == 0, err
        _check(out, WINDOW)
        publisher.kill()
        finish(publisher)
        # The push ends with the publisher: the target's stream goes away.
        assert wait_for(lambda: "stream live/p unpublished" in target.log(), 10), target.log()
        assert wait_for(lambda: "relay push RTMPPUSH" in origin.log()
                        and "the publisher stopped" in origin.log(), 10), origin.log()
    finally:
        publisher.kill()
        finish(publisher)
        _clean(origin, target)


def test_nginx_rtmp_both_ways(media: Media, tmp_path: Path, nginx: int) -> None:
    # Push into nginx: ffmpeg plays from nginx.
    origin = _server(tmp_path, "origin", relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{nginx}"]})
    edge = _server(tmp_path, "edge", static_relay_pull={
        "enable": True, "addr": f"rtmp://127.0.0.1:{nginx}", "auto_stop_pull_after_no_out_ms": 500})
    publishers = [push(media.long_av, origin.rtmp_url("n1"), loop=True),
                  push(media.long_av, f"rtmp://127.0.0.1:{nginx}/live/n2", loop=True)]
    try:
        assert wait_for(lambda: "publishing" in origin.log() and "relay push" in origin.log(),
                        15)
        time.sleep(1.5)
        # A player of nginx, and (static pull from nginx) a player of the edge that
        # gets what was published to nginx, at once.
        from_nginx, from_edge = tmp_path / "from-nginx.flv", tmp_path / "edge-from-nginx.flv"
        players = [pull(f"rtmp://127.0.0.1:{nginx}/live/n1", from_nginx, WINDOW),
                   pull(edge.rtmp_url("n2"), from_edge, WINDOW)]
        code, err = finish(players[0])
        assert code == 0, (err, origin.log())
        code, err = finish(players[1])
        assert code == 0, (err, edge.log())
        _check(from_nginx, WINDOW)
        _check(from_edge, WINDOW)
        assert "relay pull RTMPPULL" in edge.log()
    finally:
        for p in publishers:
            p.kill()
            finish(p)
        _clean(origin, edge)


def _delays(log: str) -> list[float]:
    return [float(d) for d in re.findall(r"relay push \S+ live/b to \S+: .*; retry \d+ in "
                                         r"([0-9.]+)s", log)]


def test_push_to_a_dead_address_backs_off_without_harming_the_stream(
        media: Media, tmp_path: Path) -> None:
    dead = free_port()
    origin = _server(tmp_path, "origin", relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{dead}"], "retry_min_ms": 200,
        "retry_max_ms": 2000})
    publisher = push(media.long_av, origin.rtmp_url("b"), loop=True)
    try:
        origin.wait_live("b", 15)
        out = tmp_path / "local.flv"
        code, err = finish(pull(origin.rtmp_url("b"), out, 5.0))
        assert code == 0, err
        _check(out, 5.0)  # the local players do not notice
        delays = _delays(origin.log())
        assert len(delays) >= 4, origin.log()
        # Exponential with jitter: each delay lies in [ceiling / 2, ceiling], and the
        # ceiling doubles from 0.2 s up to 2 s.
        for n, d in enumerate(delays, 1):
            ceiling = min(2.0, 0.2 * 2 ** (n - 1))
            assert ceiling / 2 - 0.05 <= d <= ceiling + 0.05, delays
        assert delays[3] > delays[0]
        publisher.kill()
        finish(publisher)
        assert wait_for(lambda: "the publisher stopped" in origin.log(), 10)
        time.sleep(2.5)
        assert len(_delays(origin.log())) <= len(delays) + 1  # no retries after the stop
        count = len(_delays(origin.log()))
        time.sleep(2.5)
        assert len(_delays(origin.log())) == count
    finally:
        publisher.kill()
        finish(publisher)
        _clean(origin)


def test_upstream_that_goes_away_is_retried_and_waiting_players_resume(
        media: Media, tmp_path: Path) -> None:
    origin = _server(tmp_path, "origin")
    edge = _server(tmp_path, "edge", static_relay_pull={
        "enable": True, "addr": f"127.0.0.1:{origin.rtmp_port}", "pull_retry_num": 6})
    publisher = push(media.long_av, origin.rtmp_url("r"), loop=True)
    try:
        origin.wait_live("r", 15)
        out = tmp_path / "through.flv"
        player = pull(edge.flv_url("r"), out, 8.0, timeout=20)
        assert wait_for(lambda: "relay pull FLVPULL" in edge.log() or
                        "relay pull RTMPPULL" in edge.log(), 10)
        time.sleep(2.0)
        publisher.kill()
        finish(publisher)
        assert wait_for(lambda: "retry 1 in" in edge.log(), 10), edge.log()
        time.sleep(1.0)
        publisher = push(media.long_av, origin.rtmp_url("r"), loop=True)
        code, err = finish(player, 60)
        assert code == 0, (err, edge.log())
        log = edge.log()
        assert log.count("relay pull RTMPPULL") >= 2, log  # pulled again after the gap
        assert "giving up" not in log
        info = probe(out)
        assert info.first_video_key and info.decode_errors == "", info
        assert info.video_frames >= 4 * FPS, info  # before and after the gap
    finally:
        publisher.kill()
        finish(publisher)
        _clean(origin, edge)



def test_two_servers_pulling_from_each_other_do_not_loop(tmp_path: Path) -> None:
    a_rtmp, b_rtmp = free_port(), free_port()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    # Each one's static pull points at the other.
    a = start_server(a_dir, rtmp_port=a_rtmp, static_relay_pull={"enable": True,
                                                    "addr": f"127.0.0.1:{b_rtmp}"})
    b = start_server(b_dir, rtmp_port=b_rtmp, static_relay_pull={"enable": True,
                                                    "addr": f"127.0.0.1:{a_rtmp}"})
    try:
        start = time.monotonic()
        assert http_status(a.flv_url("nowhere"), 30) == 404
        assert time.monotonic() - start < 10
        assert "relay loop: live/nowhere was relayed through this server already" in a.log()
        time.sleep(2.0)
        # One pull each way, and nothing keeps going afterwards.
        for s in (a, b):
            assert s.log().count(": starting") == 1, s.log()
    finally:
        _clean(a, b)


def test_push_holds_back_up_to_its_bound_then_restarts_at_a_keyframe(
        media: Media, tmp_path: Path) -> None:
    target = _server(tmp_path, "target")
    origin = _server(tmp_path, "origin", relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{target.rtmp_port}"],
        "max_backlog_bytes": 65536, "retry_min_ms": 200, "retry_max_ms": 1000})
    publisher = push(media.noisy, origin.rtmp_url("big"), loop=True)
    local = None
    try:
        target.wait_live("big", 15)
        # The target stops reading (its process is stopped): the kernel's buffers
        # fill, then the push's own backlog passes its bound.
        local = pull(origin.rtmp_url("big"), tmp_path / "local.flv", 12.0, timeout=30)
        target.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_for(lambda: "target too slow" in origin.log(), 25), origin.log()
        finally:
            target.proc.send_signal(signal.SIGCONT)
        code, err = finish(local, 60)
        assert code == 0, err
        info = probe(tmp_path / "local.flv")  # the local player did not notice
        assert info.first_video_key and info.decode_errors == "", info
        assert info.video_frames >= 0.9 * 12 * FPS, info
        # Reconnected: the target's stream starts again at a keyframe and decodes.
        assert wait_for(lambda: target.log().count("publishing live/big started") >= 2, 20), \
            target.log()
        out = tmp_path / "after.flv"
        code, err = finish(pull(target.rtmp_url("big"), out, 2.0))
        assert code == 0, err
        info = probe(out)
        assert info.first_video_key and info.decode_errors == "", info
    finally:
        for p in (publisher, local):
            if p is not None:
                p.kill()
                finish(p)
        _clean(origin, target)


def test_a_short_stall_of_the_target_loses_nothing(media: Media, tmp_path: Path) -> None:
    target = _server(tmp_path, "target")
    origin = _server(tmp_path, "origin", relay_push={
        "enable": True, "addr_list": [f"127.0.0.1:{target.rtmp_port}"],
        "max_backlog_bytes": 65536})
    publisher = push(media.long_av, origin.rtmp_url("s"), loop=True)
    try:
        target.wait_live("s", 15)
        out = tmp_path / "through.flv"
        player = pull(target.rtmp_url("s"), out, 6.0, timeout=30)
        time.sleep(2.0)
        target.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        target.proc.send_signal(signal.SIGCONT)
        code, err = finish(player, 60)
        assert code == 0, err
        info = probe(out)
        # 6 s of media, every frame: nothing was dropped on the way.
        assert info.first_video_key and info.decode_errors == "", info
        assert info.video_frames >= 6 * FPS - 2, info
        assert "target too slow" not in origin.log()
        assert target.log().count("publishing live/s started") == 1
    finally:
        publisher.kill()
        finish(publisher)
        _clean(origin, target)
