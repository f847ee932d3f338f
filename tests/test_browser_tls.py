"""TLS in a browser: headless Chromium plays HTTPS-FLV (mpegts.js), WebSocket-FLV
over ``wss://`` and HLS over HTTPS (hls.js) from the HTTPS listener.

The certificate comes from a throwaway CA made in the test.  Chromium is told
to trust exactly that server key (``--ignore-certificate-errors-spki-list``
with the SHA-256 of the leaf's SubjectPublicKeyInfo), not to skip certificate
checks.  The player page is served over plain HTTP from another origin; the
media comes over https:// and wss:// (an http page may fetch https media).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, PlayerSite, assert_played, watch
from conftest import Media, Server, free_port, start_server, stop_server
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mediatools import finish, push, wait_for
from tlscerts import CA, Pair


def spki_sha256(cert: Path) -> str:
    """Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo (Chromium's pin)."""
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class TlsServer:
    def __init__(self, server: Server, https_port: int, ca: CA) -> None:
        self.server, self.https_port, self.ca = server, https_port, ca

    def url(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.https_port}{path}"


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[TlsServer, Pair]]:
    ca = CA(tmp_path)
    pair = ca.issue("server", ["localhost"], ["127.0.0.1"])
    https = free_port()
    (tmp_path / "srv").mkdir()
    srv = start_server(
        tmp_path / "srv",
        default_http={"https_listen_addr": f"127.0.0.1:{https}",
                      "https_cert_file": str(pair.cert), "https_key_file": str(pair.key)},
        httpflv={"enable_https": True},
        hls={"enable": True, "enable_https": True, "use_memory_as_disk_flag": True,
             "fragment_duration_ms": 1000, "fragment_num": 4})
    yield TlsServer(srv, https, ca), pair
    stop_server(srv)
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture
def pinned(chromium: Any, tls: tuple[TlsServer, Pair]) -> Iterator[Any]:
    """A Chromium that trusts the test server's key and nothing else untrusted."""
    _, pair = tls
    browser = chromium.browser_type.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_sha256(pair.cert)}"])
    try:
        yield browser
    finally:
        browser.close()


def _https_ok(url: str, ca: CA) -> bool:
    context = ssl.create_default_context(cafile=str(ca.cert))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["flv", "ws-flv", "hls"])
def test_chromium_plays_over_tls(tls: tuple[TlsServer, Pair], pinned: Any, media: Media,
                                 player_site: PlayerSite, kind: str) -> None:
    server, _ = tls
    name = f"tls{kind.replace('-', '')}"
    publisher = push(media.long_av, server.server.rtmp_url(name), loop=True)
    try:
        if kind == "hls":
            url = server.url(f"/hls/{name}.m3u8")
            assert wait_for(lambda: _https_ok(url, server.ca), timeout=20, interval=0.3)
        elif kind == "flv":
            url = server.url(f"/live/{name}.flv")
        else:
            url = server.url(f"/live/{name}.flv", scheme="wss")
        seen = watch(pinned, player_site, kind, url, seconds=9)
        assert_played(seen)
    finally:
        publisher.kill()
        finish(publisher)
    log = server.server.log()
    if kind == "ws-flv":
        assert "wsflv session" in log


def test_an_unpinned_chromium_refuses_the_certificate(tls: tuple[TlsServer, Pair],
                                                     chromium: Any, media: Media,
                                                     player_site: PlayerSite) -> None:
    """The pin is what makes the tests above play: without it the browser
    refuses the throwaway CA's certificate, so nothing is skipped silently."""
    server, _ = tls
    publisher = push(media.long_av, server.server.rtmp_url("unpinned"), loop=True)
    try:
        seen = watch(chromium, player_site, "flv", server.url("/live/unpinned.flv"), seconds=4)
        assert seen.frames == 0 and seen.advanced == 0, seen
        assert seen.errors, seen
    finally:
        publisher.kill()
        finish(publisher)
