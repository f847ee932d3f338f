"""Helpers for end-to-end tests: run ffmpeg/ffprobe and inspect what they produced."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lal_twisted.media.flv import TAG_AUDIO, TAG_VIDEO, FlvReader, FlvTag


def push(src: Path, url: str, realtime: bool = True, loop: bool = False,
         extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Publish ``src`` to ``url`` with ffmpeg (-c copy)."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(src), "-c", "copy", *(extra or []), "-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def pull(url: str, out: Path, seconds: float, timeout: float = 30.0,
         input_opts: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Record ``seconds`` of ``url`` into ``out`` with ffmpeg (-c copy)."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout",
           str(int(timeout * 1e6)), *(input_opts or []), "-i", url, "-map", "0",
           "-c", "copy", "-t", str(seconds), "-f", "flv", "-y", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, err.decode(errors="replace") + "\n[killed after timeout]"
    return proc.returncode, err.decode(errors="replace")


def media_cache_dir() -> Path:
    """Where generated test media is kept between runs: ``$LAL_TEST_MEDIA_CACHE``,
    else ``lal-twisted/test-media`` in the user's cache directory."""
    configured = os.environ.get("LAL_TEST_MEDIA_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lal-twisted" / "test-media"


def _tool_identity(tool: str) -> str:
    """The resolved path, size and mtime of an executable: another build of ffmpeg
    (a Debian upgrade, a new imageio-ffmpeg wheel) makes other files."""
    path = shutil.which(tool) or tool
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def made_by(cmd: Sequence[str], out: Path, timeout: float = 300) -> Path:
    """``out``, written by the command line ``cmd`` followed by an output path.

    What the command writes is kept in ``media_cache_dir()`` under a hash of the
    exact command line (and of the executable it runs), so each file is made once
    and copied from then on.  Processes making the same file at once (pytest-xdist
    workers) take turns on a lock; the file is written under a temporary name and
    renamed, so no reader ever sees half of it."""
    key = hashlib.sha256(json.dumps([_tool_identity(cmd[0]), *cmd[1:], out.suffix])
                         .encode()).hexdigest()[:32]
    cache = media_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / f"{key}{out.suffix}"
    if not kept.exists():
        with open(cache / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not kept.exists():
                partial = cache / f".{key}.{os.getpid()}.partial{out.suffix}"
                try:
                    subprocess.run([*cmd, str(partial)], check=True, timeout=timeout,
                                   capture_output=True)
                    os.replace(partial, kept)
                finally:
                    partial.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kept, out)
    return out


def decode_errors(source: Path | str | bytes, *before_input: str,
                  after_input: Sequence[str] = (), ffmpeg: str = "ffmpeg",
                  timeout: float = 120) -> str:
    """What ffmpeg reports at level error while decoding ``source`` (a file, a URL,
    or the bytes of a file, fed on stdin) to its end, or as far as
    ``after_input`` (``-t 3``, ``-map 0:v``) asks: "" when it decodes cleanly.
    An exit status other than 0 is reported too."""
    data = source if isinstance(source, bytes) else None
    name = "pipe:" if data is not None else str(source)
    done = subprocess.run([ffmpeg, "-hide_banner", "-v", "error", "-nostdin", *before_input,
                           "-i", name, *after_input, "-f", "null", "-"], input=data,
                          capture_output=True, timeout=timeout)
    errors = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        errors += f"\n[ffmpeg exited with {done.returncode}]"
    return errors.strip()


@dataclass
class Probe:
    codecs: dict[str, str]
    width: int
    height: int
    video_frames: int
    audio_frames: int
    decode_errors: str
    first_video_key: bool


def probe(path: Path) -> Probe:
    """Decode ``path`` fully: codecs, size, decoded frame counts, errors."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=120)
    streams = json.loads(out.stdout)["streams"]
    codecs = {s["codec_type"]: s["codec_name"] for s in streams}
    video = next((s for s in streams if s["codec_type"] == "video"), {})
    audio = next((s for s in streams if s["codec_type"] == "audio"), {})
    errors = decode_errors(path)
    first = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
         "-show_entries", "frame=key_frame,pict_type", "-of", "json", str(path)],
        capture_output=True, timeout=60)
    frames = json.loads(first.stdout or b"{}").get("frames", [])
    return Probe(
        codecs=codecs,
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        video_frames=int(video.get("nb_read_frames", 0)),
        audio_frames=int(audio.get("nb_read_frames", 0)),
        decode_errors=errors,
        first_video_key=bool(frames) and frames[0].get("key_frame") == 1,
    )


def read_tags(path: Path) -> list[FlvTag]:
    reader = FlvReader()
    return reader.feed(path.read_bytes())


def http_flv_bytes(url: str, seconds: float, max_bytes: int = 64 * 1024 * 1024,
                   idle: float = 2.0) -> tuple[dict[str, str], bytes]:
    """Read an HTTP-FLV response for ``seconds`` (or until ``idle`` seconds pass
    with no data); returns headers and raw body."""
    req = urllib.request.Request(url)
    chunks: list[bytes] = []
    with urllib.request.urlopen(req, timeout=idle) as resp:
        headers = {k.lower(): v for k, v in resp.headers.items()}
        deadline = time.monotonic() + seconds
        total = 0
        while time.monotonic() < deadline and total < max_bytes:
            try:
                data = resp.read1(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
    return headers, b"".join(chunks)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def to_enhanced(tag: FlvTag) -> FlvTag:
    """Rewrap a legacy H.264/AAC tag with an enhanced-RTMP header (avc1 / mp4a)."""
    p = tag.payload
    if tag.tag_type == TAG_VIDEO:
        frame_type, packet_type = p[0] >> 4, p[1]
        if packet_type == 0:
            body = bytes([0x80 | frame_type << 4 | 0]) + b"avc1" + p[5:]
        elif packet_type == 1 and p[2:5] == b"\x00\x00\x00":
            body = bytes([0x80 | frame_type << 4 | 3]) + b"avc1" + p[5:]
        elif packet_type == 1:
            body = bytes([0x80 | frame_type << 4 | 1]) + b"avc1" + p[2:]
        else:
            body = bytes([0x80 | frame_type << 4 | 2]) + b"avc1"
        return FlvTag(TAG_VIDEO, tag.timestamp, body)
    if tag.tag_type == TAG_AUDIO:
        return FlvTag(TAG_AUDIO, tag.timestamp, bytes([0x90 | p[1]]) + b"mp4a" + p[2:])
    return tag
