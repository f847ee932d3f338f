"""Timeouts and connection limits against the real server, with real sockets.

Each test is bounded (a few seconds) and stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, ROOT, Media, free_port, start_server, stop_server, wait_port, write_config
from mediatools import finish, http_flv_bytes, push
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from lal_twisted.limits import ConnectionGuard
from lal_twisted.rtmp.client_session import ClientSession, Ready, RtmpUrl

# Timeouts are judged by the wall clock (closed within so many seconds): those
# tests are ``serial``.


class RawClient:
    """The project's RTMP client engine on a blocking socket, so a test decides
    exactly what is sent and when (and can stop sending, or stop reading)."""

    def __init__(self, url: str, mode: str, rcvbuf: int = 0) -> None:
        parsed = RtmpUrl.parse(url)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((parsed.host, parsed.port))
        self.session = ClientSession(parsed, mode)
        self.session.start()
        self.sock.sendall(self.session.data_to_send())

    def until(self, want: type, send: bool = True) -> None:
        """Read until an event of type ``want``; send what the engine answers."""
        while True:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            events = self.session.receive(data)
            out = self.session.data_to_send()
            if send and out:
                self.sock.sendall(out)
            if any(isinstance(e, want) for e in events):
                return

    def connected(self) -> None:
        """Handshake and send connect (it leaves with C2), then stop: no createStream."""
        while self.session.handshake is not None:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.session.receive(data)
            self.sock.sendall(self.session.data_to_send())

    def closed_within(self, seconds: float) -> float:
        """Seconds until the server closes the connection (reading everything)."""
        start = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        return time.monotonic() - start


@pytest.mark.serial
def test_a_silent_connection_and_a_silent_publisher_are_closed(tmp_path: Path,
                                                               media: Media) -> None:
    server = start_server(tmp_path, rtmp={"idle_timeout_sec": 1, "pub_timeout_sec": 1})
    try:
        idle = RawClient(server.rtmp_url("idle"), "publish")
        idle.connected()
        assert idle.closed_within(5) < 3
        silent = RawClient(server.rtmp_url("quiet"), "publish")
        silent.until(Ready)
        assert silent.closed_within(5) < 3  # published, then no media for 1 s
        # the key is free again: a real publisher takes it
        publisher = push(media.long_av, server.rtmp_url("quiet"))
        time.sleep(1.5)
        _, body = http_flv_bytes(server.flv_url("quiet"), 1.0)
        publisher.kill()
        finish(publisher)
        assert body[:3] == b"FLV" and len(body) > 10_000
    finally:
        stop_server(server)
    log = server.log()
    assert "no publish or play within 1s of connect" in log
    assert "no media for 1s" in log


@pytest.mark.serial
def test_a_player_waits_for_a_publisher_only_so_long(tmp_path: Path) -> None:
    server = start_server(tmp_path, subscriber={"publisher_wait_timeout_ms": 1000})
    try:
        start = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as info:
            http_flv_bytes(server.flv_url("nobody"), 10.0, idle=10.0)
        waited = time.monotonic() - start
    finally:
        stop_server(server)
    assert 0.8 < waited < 5
    assert info.value.code == 404 and b"no publisher for 1s" in info.value.read()
    assert "no publisher for 1s" in server.log()


@pytest.mark.serial
def test_a_peer_that_never_reads_is_closed_and_costs_bounded_memory(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # subscriber.stall_timeout_ms is 3000 here
    try:
        client = RawClient(server.rtmp_url("x"), "publish", rcvbuf=4096)
        client.connected()
        rss_before = rss_kib(server.proc.pid)
        ping = bytes.fromhex("02 000000 000006 04 00000000") + b"\x00\x06" + b"\x00" * 4
        sent, start = 0, time.monotonic()
        client.sock.setblocking(False)
        while time.monotonic() - start < 8:
            try:
                sent += client.sock.send(ping * 256)
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:
                break  # closed by the server
        elapsed = time.monotonic() - start
        rss_after = rss_kib(server.proc.pid)
    finally:
        stop_server(server)
    assert elapsed < 7, "the server kept a peer that does not read"
    assert rss_after - rss_before < 16 * 1024, (rss_before, rss_after, sent)
    assert "not reading what it is sent for 3s" in server.log()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_with_64_fds_waiting_sockets_cannot_lock_a_publisher_out(tmp_path: Path,
                                                                  media: Media) -> None:
    rtmp_port, http_port = free_port(), free_port()
    conf = write_config(tmp_path / "lals.json", rtmp_port, http_port)
    log_path = tmp_path / "server.log"

    def small_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "lals", "--config", str(conf)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=small_fd_limit,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    hogs: list[socket.socket] = []
    try:
        wait_port(rtmp_port, proc)
        wait_port(http_port, proc)
        # 60 idle RTMP connections and 40 HTTP-FLV players of streams nobody publishes
        for i in range(100):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", rtmp_port if i < 60 else http_port))
                if i >= 60:
                    s.sendall(f"GET /live/none{i}.flv HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            except OSError:
                s.close()
                continue
            hogs.append(s)
        time.sleep(0.5)
        publisher = push(media.long_av, f"rtmp://127.0.0.1:{rtmp_port}/live/real")
        time.sleep(2.0)
        headers, body = http_flv_bytes(f"http://127.0.0.1:{http_port}/live/real.flv", 1.5)
        publisher.kill()
        finish(publisher)
        assert proc.poll() is None
    finally:
        for s in hogs:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    log = log_path.read_text(errors="replace")
    assert body[:3] == b"FLV" and len(body) > 10_000, log[-3000:]
    assert "publishing live/real started" in log
    assert "closed the oldest idle or waiting connection" in log
    assert "Too many open files" not in log and "Traceback" not in log


class Conn(Protocol):
    busy = False

    def is_waiting(self) -> bool:
        return not self.busy


def open_conn(factory: Any, host: str) -> Conn | None:
    proto = factory.buildProtocol(IPv4Address("TCP", host, 5000))
    if proto is not None:
        proto.makeConnection(StringTransport())
    return proto


def test_guard_caps_per_listener_and_address_and_evicts_the_oldest_waiting() -> None:
    guard = ConnectionGuard(Clock(), max_per_listener=3, max_per_addr=2, max_total=100)
    rtmp = guard.wrap(Factory.forProtocol(Conn), "rtmp")
    a1, a2 = open_conn(rtmp, "10.0.0.1"), open_conn(rtmp, "10.0.0.1")
    assert a1 is not None and a2 is not None
    assert open_conn(rtmp, "10.0.0.1") is None  # a third from one address
    b1 = open_conn(rtmp, "10.0.0.2")
    assert b1 is not None
    a1.busy = True  # publishing: never evicted
    b2 = open_conn(rtmp, "10.0.0.2")  # the listener is full: a2 (oldest waiting) goes
    assert b2 is not None and a2.transport.disconnecting  # type: ignore[union-attr]
    a2.connectionLost(Failure(ConnectionDone()))
    for p in (b1, b2):
        p.busy = True  # type: ignore[union-attr]
    assert open_conn(rtmp, "10.0.0.3") is None  # all busy: refused
    assert (guard.evicted, guard.refused) == (1, 2)
    b1.connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
    assert open_conn(rtmp, "10.0.0.3") is not None
    assert guard.per_listener == {"rtmp": 3} and guard.per_host["10.0.0.2"] == 1


def test_hls_memfds_are_kept_out_of_the_connection_cap(tmp_path: Path) -> None:
    """With HLS segments served from memfds, the default connection cap leaves
    their descriptors free: the cap refuses a connection before the memfds and
    the sockets together would run out (EMFILE)."""
    from lal_twisted.config import from_dict
    from lal_twisted.limits import default_max_connections
    from lal_twisted.service import make_service

    def build(hls: dict[str, Any]) -> Any:
        return make_service(from_dict({
            "rtmp": {"addr": "127.0.0.1:0"},
            "default_http": {"http_listen_addr": "127.0.0.1:0"},
            "hls": {"enable": True, "out_path": str(tmp_path) + "/", **hls},
            "log": {"level": "error", "filename": str(tmp_path / "s.log"),
                    "is_to_stdout": False},
        }))

    memory = build({"use_memory_as_disk_flag": True})
    share = memory.hls.store.fd_share()
    assert share >= 16
    assert memory.guard.max_total == default_max_connections() - share
    disk = build({"use_memory_as_disk_flag": False})
    assert disk.guard.max_total == default_max_connections()
    guard = ConnectionGuard(Clock())
    guard.fd_users.append(lambda: default_max_connections())  # nothing left: the floor
    assert guard.max_total == 8
