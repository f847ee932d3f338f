"""Streams over unix sockets, the link between the workers of one node: a server
listening on unix: paths, the tools and relay pulls dialling
``rtmp://unix:/PATH:/APP/STREAM`` and ``http://unix:/PATH:/APP/STREAM.flv``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, FPS, ROOT, Media, Server, start_server, stop_server, write_config
from mediatools import finish, probe, pull, wait_for
from test_tool_push_pull import lal, lal_bg, media_tags


class UnixServer:
    """twistd lals with its RTMP and HTTP listeners on unix sockets."""

    def __init__(self, tmp: Path, sockets: Path) -> None:
        self.rtmp_sock = sockets / "rtmp.sock"
        self.http_sock = sockets / "http.sock"
        conf = write_config(tmp / "lals.json", 0, 0,
                            rtmp={"addr": f"unix:{self.rtmp_sock}"},
                            default_http={"http_listen_addr": f"unix:{self.http_sock}"})
        self.log_path = tmp / "server.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "lals", "--config", str(conf)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        deadline = time.monotonic() + 20
        while not (self._accepts(self.rtmp_sock) and self._accepts(self.http_sock)):
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"not listening:\n{self.log()}"
            time.sleep(0.1)

    @staticmethod
    def _accepts(path: Path) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
            except OSError:
                return False
        return True

    def rtmp_url(self, name: str) -> str:
        return f"rtmp://unix:{self.rtmp_sock}:/live/{name}"

    def flv_url(self, name: str) -> str:
        return f"http://unix:{self.http_sock}:/live/{name}.flv"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_server(Server(0, 0, self.proc, self.log_path))  # type: ignore[arg-type]


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[UnixServer]:
    # A unix socket's path is at most 107 bytes: a short directory, not tmp_path.
    sockets = Path(tempfile.mkdtemp(prefix="lals-", dir="/tmp"))
    srv = UnixServer(tmp_path, sockets)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(sockets, ignore_errors=True)
    assert "Traceback" not in srv.log(), srv.log()


def test_the_tools_push_and_pull_over_unix_sockets(origin: UnixServer, media: Media,
                                                   tmp_path: Path) -> None:
    """lal pull (RTMP and HTTP-FLV) waits on the origin's sockets, lal push
    publishes through its RTMP socket: both pulls write the file's tags as
    they were pushed."""
    rtmp_out, http_out = tmp_path / "rtmp.flv", tmp_path / "http.flv"
    pullers = [lal_bg("pull", "-q", origin.rtmp_url("exact"), str(rtmp_out), "--duration", "12"),
               lal_bg("pull", "-q", origin.flv_url("exact"), str(http_out), "--duration", "12")]
    assert wait_for(lambda: origin.log().count("waiting for publisher") >= 2), origin.log()
    done = lal("push", "-q", str(media.av), origin.rtmp_url("exact"))
    assert done.returncode == 0, done.stdout + done.stderr
    for p in pullers:
        p.terminate()
        p.communicate(timeout=15)
    source = media_tags(media.av)
    for out in (rtmp_out, http_out):
        assert media_tags(out) == source, out
        info = probe(out)
        assert info.decode_errors == "" and info.video_frames == 6 * FPS


@pytest.mark.parametrize("kind", ["rtmp", "httpflv"])
def test_a_relay_pull_over_a_unix_socket_gets_the_stream(origin: UnixServer, media: Media,
                                                         tmp_path: Path, kind: str) -> None:
    """An edge on TCP whose static_relay_pull.addr names the origin's socket
    (``unix:/PATH``, lal's host:port key) pulls the stream a player asks for;
    ffmpeg plays it from the edge and every frame decodes."""
    addr = f"unix:{origin.rtmp_sock}" if kind == "rtmp" else f"http://unix:{origin.http_sock}"
    pusher = lal_bg("push", "-q", "--loop", "--duration", "30", str(media.av),
                    origin.rtmp_url("relayed"))
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    edge = start_server(edge_dir, static_relay_pull={"enable": True, "addr": addr})
    out = tmp_path / "played.flv"
    try:
        assert wait_for(lambda: "relayed" in origin.log() and "publish" in origin.log())
        code, err = finish(pull(edge.flv_url("relayed"), out, 3.0))
        assert code == 0, err + edge.log()
    finally:
        stop_server(edge)
        pusher.terminate()
        pusher.communicate(timeout=10)
    log = edge.log()
    sock = origin.rtmp_sock if kind == "rtmp" else origin.http_sock
    assert f"{'rtmp' if kind == 'rtmp' else 'http'}://unix:{sock}:/live/relayed" in log, log
    assert "Traceback" not in log, log
    info = probe(out)
    assert info.codecs == {"video": "h264", "audio": "aac"}
    assert info.decode_errors == "" and info.first_video_key
    assert info.video_frames >= 2 * FPS


def test_a_unix_url_without_the_closing_colon_is_explained(origin: UnixServer,
                                                           media: Media) -> None:
    done = lal("push", "-q", str(media.av), f"rtmp://unix:{origin.rtmp_sock}/live/x")
    assert done.returncode != 0
    assert "the socket's path ends at a colon" in done.stdout + done.stderr

