"""RTMPS and HTTPS: listeners from cert/key files, verified relays to TLS peers.

A throwaway CA and certificates are made in the test; ffmpeg publishes over
rtmps and plays over https; an edge relays from a TLS origin, and refuses one
whose certificate does not name the host it dialled.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, FPS, Media, Server, free_port, start_server, stop_server
from mediatools import finish, probe, pull, push, wait_for
from relaytools import http_status
from tlscerts import CA, Pair

from lal_twisted.config import from_dict
from lal_twisted.service import make_service

WINDOW = 3.0


def _tls_server(tmp: Path, pair: Pair, **more: dict) -> tuple[Server, int, int]:
    rtmps, https = free_port(), free_port()
    tmp.mkdir()
    srv = start_server(
        tmp,
        rtmp={"rtmps_enable": True, "rtmps_addr": f"127.0.0.1:{rtmps}",
              "rtmps_cert_file": str(pair.cert), "rtmps_key_file": str(pair.key)},
        default_http={"https_listen_addr": f"127.0.0.1:{https}",
                      "https_cert_file": str(pair.cert), "https_key_file": str(pair.key)},
        httpflv={"enable_https": True}, **more)
    return srv, rtmps, https


def _check(out: Path, seconds: float) -> None:
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}, info
    assert info.first_video_key and info.decode_errors == "", info
    assert info.video_frames >= 0.7 * seconds * FPS, info


def test_rtmps_publish_https_play_and_verified_relay(media: Media, tmp_path: Path) -> None:
    ca = CA(tmp_path)
    good = ca.issue("origin", ["localhost"], ["127.0.0.1"])
    origin, rtmps, https = _tls_server(tmp_path / "origin", good)
    edges: list[Server] = []
    publisher = push(media.long_av, f"rtmps://127.0.0.1:{rtmps}/live/t", loop=True)
    try:
        # Edges that trust the test CA pull over rtmps and https, by name; one
        # that trusts only the system store.
        for i, base in enumerate((f"rtmps://localhost:{rtmps}", f"https://localhost:{https}")):
            d = tmp_path / f"edge{i}"
            d.mkdir()
            edges.append(start_server(d, static_relay_pull={"enable": True, "addr": base},
                                      tls_client={"ca_file": str(ca.cert)}))
        d = tmp_path / "edge-untrusting"
        d.mkdir()
        untrusting = start_server(d, static_relay_pull={"enable": True,
                                                        "addr": f"rtmps://localhost:{rtmps}"})
        edges.append(untrusting)
        origin.wait_live("t")
        # ffmpeg plays over https and rtmps, and from both trusting edges, at once.
        outs = [tmp_path / "https.flv", tmp_path / "rtmps.flv", tmp_path / "edge0.flv",
                tmp_path / "edge1.flv"]
        players = [pull(f"https://127.0.0.1:{https}/live/t.flv", outs[0], WINDOW),
                   pull(f"rtmps://127.0.0.1:{rtmps}/live/t", outs[1], WINDOW),
                   pull(edges[0].rtmp_url("t"), outs[2], WINDOW),
                   pull(edges[1].rtmp_url("t"), outs[3], WINDOW)]
        for player, out, server in zip(players, outs, (origin, origin, edges[0], edges[1]),
                                       strict=True):
            code, err = finish(player)
            assert code == 0, (out.name, err, server.log())
        for out in outs:
            _check(out, WINDOW)
        # The tools: lal push over rtmps and lal pull over https, trusting the test CA.
        lal = str(BIN / "lal")
        pushed = subprocess.Popen([lal, "push", "-q", "--loop", "--duration", "8", "--ca-file",
                                   str(ca.cert), str(media.long_av),
                                   f"rtmps://localhost:{rtmps}/live/tool"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        origin.wait_live("tool")
        out = tmp_path / "tool-https.flv"
        done = subprocess.run([lal, "pull", "-q", "--duration", "4", "--ca-file", str(ca.cert),
                               f"https://localhost:{https}/live/tool.flv", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        _check(out, 2.0)
        pushed.terminate()
        finish(pushed)
        # Without the CA the certificate is refused, in one line.
        done = subprocess.run([lal, "pull", "-q", "--duration", "3",
                               f"https://localhost:{https}/live/t.flv", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "certificate verify failed" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        # The edge that trusts only the system store refuses the test CA's certificate.
        assert http_status(untrusting.flv_url("t"), 20) == 404
        assert "TLS certificate not trusted" in untrusting.log(), untrusting.log()
    finally:
        publisher.kill()
        finish(publisher)
        for e in edges:
            stop_server(e)
        stop_server(origin)
    for s in (origin, *edges):
        assert "Traceback" not in s.log(), s.log()


def test_relay_to_a_server_with_the_wrong_name_is_refused(media: Media, tmp_path: Path) -> None:
    ca = CA(tmp_path)
    wrong = ca.issue("wrong", ["wrong.example"])
    origin, rtmps, https = _tls_server(tmp_path / "origin", wrong)
    publisher = push(media.long_av, origin.rtmp_url("w"), loop=True)
    d = tmp_path / "edge"
    d.mkdir()
    # The edge pulls over rtmps and also pushes what is published to it over rtmps.
    edge = start_server(d, static_relay_pull={"enable": True, "addr": f"rtmps://localhost:{rtmps}"},
                        relay_push={"enable": True, "addr_list": [f"rtmps://localhost:{rtmps}"]},
                        tls_client={"ca_file": str(ca.cert)})
    local = None
    try:
        origin.wait_live("w")
        out = tmp_path / "refused.flv"
        start = time.monotonic()
        code, err = finish(pull(edge.rtmp_url("w"), out, WINDOW, timeout=15))
        assert code != 0 and time.monotonic() - start < 15
        assert "stream live/w not found (relay pull gave up)" in err, err
        log = edge.log()
        lines = [line for line in log.splitlines() if "refused: TLS certificate name does not "
                 "match" in line]
        assert len(lines) == 1, log
        # A push to the same origin is refused once, not retried.
        local = push(media.long_av, edge.rtmp_url("pushed"), loop=True)
        assert wait_for(lambda: "relay push" in edge.log() and "not retried" in edge.log(), 15), \
            edge.log()
        time.sleep(2.0)
        assert edge.log().count("not retried") == 1
        assert "publishing live/pushed started" not in origin.log()
    finally:
        for p in (publisher, local):
            if p is not None:
                p.kill()
                finish(p)
        stop_server(edge)
        stop_server(origin)
    for s in (origin, edge):
        assert "Traceback" not in s.log(), s.log()


def _config(tmp: Path, **rtmp: object) -> dict:
    return {"rtmp": {"addr": "127.0.0.1:0", "rtmps_enable": True, "rtmps_addr": "127.0.0.1:0",
                     **rtmp},
            "default_http": {"http_listen_addr": "127.0.0.1:0"}}


@pytest.mark.parametrize("case", ["missing", "not_pem", "mismatch"])
def test_tls_listener_startup_errors_are_one_clear_line(tmp_path: Path, case: str) -> None:
    ca = CA(tmp_path)
    a, b = ca.issue("a", ["a.example"]), ca.issue("b", ["b.example"])
    cert, key = str(a.cert), str(a.key)
    expected = ""
    if case == "missing":
        key = str(tmp_path / "nope.key")
        expected = f"rtmp.rtmps_key_file: file {key!r} not found"
    elif case == "not_pem":
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("hello")
        cert = str(garbage)
        expected = f"rtmp.rtmps_cert_file: {cert!r} is not a PEM certificate"
    else:
        key = str(b.key)
        expected = "does not match the certificate"
    config = from_dict(_config(tmp_path, rtmps_cert_file=cert, rtmps_key_file=key))
    # As lal: the RTMPS listener is left out with one error line; the rest starts.
    lals = make_service(config)
    assert "rtmps" not in lals.listeners and "rtmp" in lals.listeners
    (error,) = lals.startup_errors
    assert expected in error and "the rtmps listener is not started" in error
    assert "\n" not in error


def test_a_tls_listener_that_cannot_start_leaves_the_server_running(tmp_path: Path) -> None:
    """lal's shipped config turns RTMPS and HTTPS on with ./conf/cert.pem; run
    where that file is missing, the server starts without them and says so once."""
    srv = start_server(tmp_path, rtmp={"rtmps_enable": True, "rtmps_addr": "127.0.0.1:0",
                                       "rtmps_cert_file": "./no/cert.pem",
                                       "rtmps_key_file": "./no/key.pem"},
                       httpflv={"enable_https": True},
                       default_http={"https_listen_addr": "127.0.0.1:0",
                                     "https_cert_file": "./no/cert.pem",
                                     "https_key_file": "./no/key.pem"})
    try:
        log = srv.log()
        assert log.count("rtmp.rtmps_cert_file: file './no/cert.pem' not found") == 1, log
        assert log.count("default_http.https_cert_file: file './no/cert.pem' not found") == 1
        assert "the rtmps listener is not started" in log
        assert "the https listener is not started" in log
        assert srv.alive()
    finally:
        stop_server(srv)


def test_tls_listeners_are_built_from_good_files(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    a = ca.issue("a", ["a.example"])
    config = from_dict(_config(tmp_path, rtmps_cert_file=str(a.cert), rtmps_key_file=str(a.key)))
    lals = make_service(config)
    assert lals.listeners["rtmps"].description.startswith("ssl:0:interface=127.0.0.1:")
    assert "https" not in lals.listeners  # no feature has enable_https


def test_https_serves_http_ts_and_hls_when_asked(media: Media, tmp_path: Path) -> None:
    """``httpts.enable_https`` and ``hls.enable_https``: the HTTPS listener serves
    them as HTTP does; ffmpeg checks the certificate against the test CA."""
    ca = CA(tmp_path)
    pair = ca.issue("server", ["localhost"], ["127.0.0.1"])
    srv, _, https = _tls_server(
        tmp_path / "srv", pair, httpts={"enable_https": True},
        hls={"enable": True, "enable_https": True, "use_memory_as_disk_flag": True,
             "fragment_duration_ms": 1000, "fragment_num": 4})
    publisher = push(media.long_av, srv.rtmp_url("both"), loop=True)
    verify = ["-ca_file", str(ca.cert), "-tls_verify", "1"]
    try:
        srv.wait_live("both")
        ts_out = tmp_path / "ts.flv"
        ts_player = pull(f"https://localhost:{https}/live/both.ts", ts_out, WINDOW,
                         input_opts=verify)
        # The check is real: without the CA, ffmpeg refuses the certificate.
        code, err = finish(pull(f"https://localhost:{https}/live/both.ts",
                                tmp_path / "no.flv", 1.0, input_opts=["-tls_verify", "1"]))
        assert code != 0, err
        playlist = f"https://localhost:{https}/hls/both.m3u8"
        assert wait_for(lambda: http_status(f"http://127.0.0.1:{srv.http_port}/hls/both.m3u8",
                                            5) == 200, 20)
        out = tmp_path / "hls.flv"
        code, err = finish(pull(playlist, out, WINDOW, input_opts=verify))
        assert code == 0, err
        code, err = finish(ts_player)
        assert code == 0, err
        _check(ts_out, WINDOW)
        info = probe(out)
        assert info.codecs == {"video": "h264", "audio": "aac"}, info
        assert info.decode_errors == "" and info.video_frames >= 0.7 * WINDOW * FPS, info
    finally:
        publisher.kill()
        finish(publisher)
        stop_server(srv)
    assert "Traceback" not in srv.log(), srv.log()
