"""The README's embedding example, run as written, against real ffmpeg clients.

Its access check refuses a publisher and players without the right token
(RTMP ``NetStream.Publish.Unauthorized`` / ``NetStream.Play.Failed``, HTTP 403)
while a publisher and a player with it, on another stream, are unaffected; its
observer reports the sessions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from conftest import FPS, ROOT, free_port, generate, require
from mediatools import probe
from twisted.application import service
from twisted.internet import defer, protocol, reactor, task
from twisted.web.client import Agent, readBody

from lal_twisted import log as lal_log
from lal_twisted.media.flv import FlvReader


def readme_example() -> str:
    """The section's python blocks, in order: the access check and observer, then
    the control-plane observer reading the session table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it inside another Twisted application", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the README's embedding section has two python blocks"
    return "\n".join(blocks)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.err += data

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.ended.callback(reason.value.exitCode)


def ffmpeg(*args: str) -> tuple[Any, Collect]:
    proc = Collect()
    cmd = [require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    transport = reactor.spawnProcess(proc, cmd[0], cmd, env=None)  # type: ignore[attr-defined]
    return transport, proc


@pytest_twisted.inlineCallbacks
def test_readme_embedding_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    src = generate(tmp_path / "src.flv", 4)
    rtmp_port, http_port = free_port(), free_port()
    conf = tmp_path / "lals.json"
    conf.write_text(json.dumps({
        "rtmp": {"addr": f"127.0.0.1:{rtmp_port}"},
        "default_http": {"http_listen_addr": f"127.0.0.1:{http_port}"},
        "log": {"filename": str(tmp_path / "lals.log"), "is_to_stdout": False},
    }))
    code = readme_example().replace('"conf/lals.json"', repr(str(conf)))
    namespace: dict[str, Any] = {"__name__": "embedded"}
    exec(compile(code, "README.md", "exec"), namespace)
    app = service.IService(namespace["application"])
    app.startService()
    rtmp = f"rtmp://127.0.0.1:{rtmp_port}/live"
    http = f"http://127.0.0.1:{http_port}/live"
    publisher = None
    try:
        # The right token: published and played (RTMP out, FLV over HTTP in).
        publisher, _ = ffmpeg("-re", "-stream_loop", "-1", "-i", str(src), "-c", "copy",
                              "-f", "flv", f"{rtmp}/test?token=s3cret")
        for _ in range(100):
            if namespace["lals"].registry.get("live/test") is not None and \
                    namespace["lals"].registry.get("live/test").publisher is not None:
                break
            yield sleep(0.05)
        good = tmp_path / "good.flv"
        _, player = ffmpeg("-i", f"{http}/test.flv?token=s3cret", "-c", "copy", "-t", "3",
                           "-f", "flv", "-y", str(good))

        # Wrong token: the publisher is told Unauthorized and gives up.
        _, bad_pub = ffmpeg("-re", "-i", str(src), "-c", "copy", "-f", "flv",
                            f"{rtmp}/other?token=guess")
        assert (yield bad_pub.ended) != 0
        assert b"wrong or missing token for live/other" in bad_pub.err

        # No token: an RTMP player is told Play.Failed, an HTTP-FLV player gets 403.
        _, bad_rtmp_player = ffmpeg("-i", f"{rtmp}/test", "-t", "1", "-f", "null", "-")
        assert (yield bad_rtmp_player.ended) != 0
        assert b"wrong or missing token for live/test" in bad_rtmp_player.err
        response = yield Agent(reactor).request(b"GET", f"{http}/test.flv".encode())
        body = yield readBody(response)
        assert response.code == 403 and b"wrong or missing token" in body

        # The player with the token got the stream all along.
        assert (yield player.ended) == 0, player.err
        info = probe(good)
        assert info.codecs == {"video": "h264", "audio": "aac"}
        assert info.decode_errors == "" and info.first_video_key
        assert info.video_frames >= 2 * FPS
        tags = FlvReader().feed(good.read_bytes())
        assert tags[0].tag_type == 18  # onMetaData first
    finally:
        namespace["report"].stop()
        if publisher is not None:
            publisher.signalProcess("TERM")
        yield sleep(0.3)
        yield app.stopService()
        lal_log.reset()
    out = capsys.readouterr().out
    assert re.search(r"live/test is live \(RTMPPUBSUB\d+ from 127\.0\.0\.1:\d+\)", out), out
    assert re.search(r"FLVSUB\d+ stopped playing live/test after \d+ bytes", out), out
    # the second block: events of the control plane's kind
    assert re.search(r"RTMPPUBSUB\d+ connected to live with FMLE/3\.0", out), out
    assert re.search(r"RTMPPUBSUB\d+ publish live/other refused: wrong or missing token", out), out
    log = (tmp_path / "lals.log").read_text()
    assert "publish live/other refused: wrong or missing token" in log
    assert "Traceback" not in log
