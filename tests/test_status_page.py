"""The status page's player scripts are pinned: exact versions, integrity hashes.

The hashes in ``lal_twisted/api/status.py`` must be those of the files the
browser tests load (``tests/web/package.json``), so a version bump without new
hashes fails here; the page served on both listeners carries them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from apitools import api_server, http
from browser import PLAYER_FILES, WEB

from lal_twisted.api.status import PLAYER_JS, StatusPage
from lal_twisted.config import from_dict

CONFIG_LINE = re.compile(r"^const CONFIG = (.*);$", re.M)


def _sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def test_pinned_versions_and_hashes_are_those_of_the_tested_files() -> None:
    pins = json.loads((WEB / "package.json").read_text())["dependencies"]
    assert {js.package for js in PLAYER_JS.values()} == set(pins)
    for name, js in PLAYER_JS.items():
        assert js.version == pins[js.package], (js, pins)
        package = WEB / "node_modules" / js.package
        assert json.loads((package / "package.json").read_text())["version"] == js.version
        dist = package / "dist" / js.file
        assert PLAYER_FILES[f"/{name}"] == dist
        assert js.integrity == _sri(dist), (name, "new version: put its new hash in status.py")
        assert js.cdn_url == (f"https://cdn.jsdelivr.net/npm/{js.package}@{js.version}"
                              f"/dist/{js.file}")


def _inline_config(html: str) -> dict[str, Any]:
    found = CONFIG_LINE.search(html)
    assert found is not None, html[:2000]
    config: dict[str, Any] = json.loads(found.group(1))
    return config


def test_served_page_loads_pinned_scripts_with_integrity(tmp_path: Path) -> None:
    with api_server(tmp_path) as s:
        pages = [f"http://127.0.0.1:{s.server.http_port}/",
                 f"http://127.0.0.1:{s.api_port}/lal.html"]
        for url in pages:
            status, body, _ = http(url)
            assert status == 200, (url, status)
            scripts = _inline_config(body.decode())["scripts"]
            assert scripts == {name: {"src": js.cdn_url, "integrity": js.integrity,
                                      "crossorigin": "anonymous",
                                      "expected": f"{js.package} {js.version}"}
                               for name, js in PLAYER_JS.items()}, url
            assert scripts["mpegts.js"]["src"].startswith(
                "https://cdn.jsdelivr.net/npm/mpegts.js@1.8.2/")
            assert scripts["hls.min.js"]["src"].startswith(
                "https://cdn.jsdelivr.net/npm/hls.js@1.7.4/")


def _scripts(status_page: dict[str, Any]) -> dict[str, Any]:
    plane = SimpleNamespace(config=from_dict({"status_page": status_page}))
    return StatusPage(plane, "http").scripts()  # type: ignore[arg-type]


def test_own_copy_is_checked_unless_integrity_is_off() -> None:
    checked = _scripts({"player_js_base_url": "https://js.example/players/"})
    assert checked["mpegts.js"] == {
        "src": "https://js.example/players/mpegts.js",
        "integrity": PLAYER_JS["mpegts.js"].integrity, "crossorigin": "anonymous",
        "expected": "mpegts.js 1.8.2"}
    assert checked["hls.min.js"]["src"] == "https://js.example/players/hls.min.js"
    assert checked["hls.min.js"]["integrity"] == PLAYER_JS["hls.min.js"].integrity
    assert _scripts({"player_js_base_url": "/"})["mpegts.js"]["src"] == "/mpegts.js"
    unchecked = _scripts({"player_js_base_url": "/js", "player_js_integrity": False})
    assert unchecked == {"mpegts.js": {"src": "/js/mpegts.js"},
                         "hls.min.js": {"src": "/js/hls.min.js"}}
