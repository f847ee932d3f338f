"""The servers ``lal bench`` measures, and how it measures a process.

:class:`OwnServer` runs the project's server under twistd on free loopback
ports; :class:`NginxServer` runs nginx with the RTMP module (its own HLS with
``--hls``) and :class:`NginxHlsServer` nginx serving the segments lals writes;
:class:`ProcStat` reads a process's CPU and RSS from /proc over a window.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lal_twisted.tools.common import ToolError

__all__ = ["NGINX_CONF", "NGINX_MODULE", "TICK", "NginxHlsServer", "NginxServer", "OwnServer",
           "ProcStat", "free_port", "stop_process", "wait_port"]

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcStat:
    """CPU and memory of one process over a window, from /proc."""

    pid: int
    start_ticks: int = 0
    start_time: float = 0.0
    cpu_percent: float = 0.0
    rss_max_mb: float = 0.0
    samples: list[float] = field(default_factory=list)

    @staticmethod
    def ticks(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    @staticmethod
    def rss_mb(pid: int) -> float:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def begin(self) -> None:
        self.start_ticks = self.ticks(self.pid)
        self.start_time = time.monotonic()

    def sample(self) -> None:
        self.rss_max_mb = max(self.rss_max_mb, self.rss_mb(self.pid))

    def end(self) -> None:
        elapsed = time.monotonic() - self.start_time
        used = (self.ticks(self.pid) - self.start_ticks) / TICK
        self.cpu_percent = 100.0 * used / elapsed if elapsed > 0 else 0.0
        self.sample()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError(f"the server exited with status {proc.returncode} on start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ToolError(f"the server did not listen on port {port} within {timeout:g}s")


def stop_process(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Ask a server process to stop with ``sig``; kill it after 15 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class OwnServer:
    """The project's server under twistd on free loopback ports."""

    name = "lals"

    def __init__(self, workdir: Path, hls: str | None = None, fragment_ms: int = 3000,
                 extra: dict[str, Any] | None = None) -> None:
        self.rtmp_port, self.http_port = free_port(), free_port()
        conf: dict[str, Any] = {
            "rtmp": {"addr": f"127.0.0.1:{self.rtmp_port}", "gop_num": 1},
            "default_http": {"http_listen_addr": f"127.0.0.1:{self.http_port}"},
            "httpflv": {"gop_num": 1},
            "log": {"level": "warn", "filename": ""},
            **(extra or {}),
        }
        self.hls_root = workdir / "hls"
        if hls:
            conf["hls"] = {"enable": True, "use_memory_as_disk_flag": hls == "memory",
                           "out_path": str(self.hls_root) + "/", "cleanup_mode": 2,
                           "fragment_duration_ms": fragment_ms, "fragment_num": 6}
        path = workdir / "lals.json"
        path.write_text(json.dumps(conf))
        twistd = Path(sys.executable).with_name("twistd")
        command = [str(twistd) if twistd.exists() else "twistd", "-n", "--pidfile=", "lals",
                   "--config", str(path)]
        self.log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.rtmp_port, self.proc)
        wait_port(self.http_port, self.proc)
        self.pid = self.proc.pid
        self.rtmp = f"rtmp://127.0.0.1:{self.rtmp_port}/bench"
        self.http = f"http://127.0.0.1:{self.http_port}/bench"
        self.hls = f"http://127.0.0.1:{self.http_port}/hls"

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.log.close()


NGINX_HLS_CONF = Path(__file__).resolve().with_name("nginx-hls.conf")


def _nginx() -> str | None:
    """Debian's nginx, on the PATH or where it installs it."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                     else None)


class NginxHlsServer:
    """lals writing HLS files (disk mode) and nginx serving them as static files;
    the measured process is nginx."""

    name = "nginx-static"

    def __init__(self, workdir: Path, fragment_ms: int = 3000) -> None:
        nginx = _nginx()
        if nginx is None:
            raise ToolError("scenario 4 with --compare nginx needs nginx: apt-get install nginx")
        self.source = OwnServer(workdir, hls="disk", fragment_ms=fragment_ms)
        self.port = free_port()
        conf = string.Template(NGINX_HLS_CONF.read_text()).safe_substitute(
            workdir=workdir, port=self.port, root=self.source.hls_root)
        path = workdir / "nginx-hls.conf"
        path.write_text(conf)
        self.log = open(workdir / "nginx-hls.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([nginx, "-p", str(workdir), "-c", str(path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        self.pid = self.proc.pid
        self.rtmp = self.source.rtmp
        self.http = ""
        self.hls = f"http://127.0.0.1:{self.port}/hls"

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT)
        self.log.close()
        self.source.stop()


NGINX_CONF = Path(__file__).resolve().with_name("nginx-rtmp.conf")
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"


class NginxServer:
    """nginx + the RTMP module in one process on a free loopback port."""

    name = "nginx-rtmp"

    def __init__(self, workdir: Path, hls: str | None = None, fragment_ms: int = 3000) -> None:
        nginx = _nginx()
        if nginx is None or not os.path.exists(NGINX_MODULE):
            raise ToolError("--compare nginx needs nginx and its RTMP module: "
                            "apt-get install nginx libnginx-mod-rtmp")
        if not NGINX_CONF.exists():
            raise ToolError(f"{NGINX_CONF} is missing (it ships with the project's sources)")
        self.rtmp_port = free_port()
        self.hls_dir: Path | None = None
        hls_lines = ""
        if hls:
            self.hls_dir = (Path(tempfile.mkdtemp(prefix="nginx-hls-", dir="/dev/shm"))
                            if hls == "memory" and os.path.isdir("/dev/shm")
                            else workdir / "nginx-hls")
            self.hls_dir.mkdir(parents=True, exist_ok=True)
            # As lals makes it: fragments of fragment_ms, a playlist of 6.
            hls_lines = (f"            hls on;\n            hls_path {self.hls_dir};\n"
                         f"            hls_fragment {fragment_ms}ms;\n"
                         f"            hls_playlist_length {fragment_ms * 6}ms;\n"
                         f"            hls_cleanup on;")
        conf = string.Template(NGINX_CONF.read_text()).safe_substitute(
            workdir=workdir, port=self.rtmp_port, module=NGINX_MODULE, hls=hls_lines)
        path = workdir / "nginx.conf"
        path.write_text(conf)
        self.log = open(workdir / "nginx.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([nginx, "-p", str(workdir), "-c", str(path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.rtmp_port, self.proc)
        self.pid = self.proc.pid
        self.rtmp = f"rtmp://127.0.0.1:{self.rtmp_port}/bench"
        self.http = ""

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT)  # nginx: graceful shutdown
        self.log.close()
        if self.hls_dir is not None and str(self.hls_dir).startswith("/dev/shm/"):
            shutil.rmtree(self.hls_dir, ignore_errors=True)
