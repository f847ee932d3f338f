"""Helpers for the codec tests: the newer ffmpeg of the imageio-ffmpeg wheel
(enhanced RTMP, libx265, SVT-AV1, libvpx, libopus), media it makes, and
framemd5 listings of stream-copied packets to compare published and played."""

from __future__ import annotations

import functools
import re
import subprocess
import threading
from pathlib import Path

import imageio_ffmpeg
import pytest
from mediatools import made_by
from wsclient import WsClient, WsClosed

FPS = 25
GOP = FPS  # one keyframe a second

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

VIDEO_ENCODERS = {
    "h264": ("libx264", ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(GOP),
                         "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0"]),
    "hevc": ("libx265", ["-c:v", "libx265", "-preset", "ultrafast",
                         "-x265-params", f"log-level=error:keyint={GOP}:min-keyint={GOP}"
                                         ":scenecut=0:bframes=0"]),
    "av1": ("libsvtav1", ["-c:v", "libsvtav1", "-preset", "12", "-g", str(GOP),
                          "-svtav1-params", f"keyint={GOP}:scd=0"]),
    "vp9": ("libvpx-vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                           "-g", str(GOP), "-keyint_min", str(GOP), "-b:v", "300k"]),
}
AUDIO_ENCODERS = {
    "aac": ("aac", ["-c:a", "aac", "-b:a", "64k"]),
    "opus": ("libopus", ["-c:a", "libopus", "-b:a", "64k"]),
    "flac": ("flac", ["-c:a", "flac"]),
    "ac3": ("ac3", ["-c:a", "ac3"]),
    "eac3": ("eac3", ["-c:a", "eac3"]),
    "mp3": ("libmp3lame", ["-c:a", "libmp3lame"]),
}


@functools.cache
def encoders() -> frozenset[str]:
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True,
                         text=True, timeout=60).stdout
    return frozenset(m.group(1) for m in re.finditer(r"^ [VAS][.\w]{5} (\S+)", out, re.M))


def need_encoders(*names: str) -> None:
    """Skip, naming them, when this ffmpeg build lacks some of ``names``."""
    missing = [n for n in names if n not in encoders()]
    if missing:
        pytest.skip(f"the imageio-ffmpeg build at {FFMPEG} has no {', '.join(missing)} "
                    "encoder, so it cannot make this stream")


def make_media(out: Path, video: str, audio: str, seconds: float = 6) -> Path:
    """An FLV of ``video`` + ``audio`` (keys of VIDEO_ENCODERS / AUDIO_ENCODERS), made
    by the newer ffmpeg: enhanced-RTMP tags for everything but H.264 and AAC."""
    vname, vopts = VIDEO_ENCODERS[video]
    aname, aopts = AUDIO_ENCODERS[audio]
    need_encoders(vname, aname)
    if not out.exists():
        made_by([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                 "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
                 "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                 "-t", str(seconds), "-pix_fmt", "yuv420p", "-ac", "2", *vopts, *aopts,
                 "-f", "flv"], out)
    return out


def push(src: Path, url: str, loop: bool = False) -> subprocess.Popen[bytes]:
    """Publish ``src`` in real time with the newer ffmpeg, asking for enhanced RTMP
    in connect (fourCcList)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(src), "-map", "0", "-c", "copy",
            "-rtmp_enhanced_codecs", "hvc1,av01,vp09", "-f", "flv", url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def framemd5_cmd(source: str, seconds: float | None = None) -> list[str]:
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-copyts",
           "-rw_timeout", "20000000", "-i", source, "-map", "0", "-c", "copy"]
    if source in ("pipe:", "-") or not source.startswith(("rtmp", "http")):
        cmd.remove("-rw_timeout")
        cmd.remove("20000000")
    if seconds is not None:
        cmd += ["-t", str(seconds)]
    return [*cmd, "-f", "framemd5", "-"]


def parse_framemd5(text: str) -> dict[str, list[tuple[int, int, int, str]]]:
    """Packets by codec name: (dts, pts, size, md5), in order.  Streams are named
    by codec (``#codec_id 0: hevc``) with a count for repeats, since a player
    numbers streams in the order it first sees them."""
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    out: dict[str, list[tuple[int, int, int, str]]] = {}
    for line in text.splitlines():
        m = re.match(r"#codec_id (\d+): (\S+)", line)
        if m:
            codec = m.group(2)
            seen[codec] = seen.get(codec, 0) + 1
            names[m.group(1)] = codec if seen[codec] == 1 else f"{codec}#{seen[codec]}"
            continue
        if not line or line.startswith("#"):
            continue
        index, dts, pts, _duration, size, md5 = (f.strip() for f in line.split(","))
        out.setdefault(names[index], []).append((int(dts), int(pts), int(size), md5))
    return out


def framemd5_of(path: Path) -> dict[str, list[tuple[int, int, int, str]]]:
    result = subprocess.run(framemd5_cmd(str(path)), capture_output=True, text=True,
                            timeout=120, check=True)
    return parse_framemd5(result.stdout)


def framemd5_pull(url: str) -> subprocess.Popen[str]:
    """Play ``url`` with ffmpeg writing framemd5 until the server ends the stream."""
    return subprocess.Popen(framemd5_cmd(url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_pull(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The framemd5 a player wrote once the server closed it (the publisher left
    and ``subscriber.publisher_wait_timeout_ms`` passed).  Stopping ffmpeg with a
    signal instead can lose the packet it was reading."""
    try:
        out, _err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the player was not closed after the publisher left") from None
    return out


def ws_collect(url: str, out: list[bytes]) -> threading.Thread:
    """Read WebSocket-FLV messages from ``url`` into ``out`` until the server
    closes the WebSocket (a thread)."""
    def run() -> None:
        client = WsClient(url, timeout=60)
        assert client.status == 101, client.head
        try:
            while True:
                opcode, payload = client.frame()
                assert opcode == 2, f"opcode {opcode}"
                out.append(payload)
        except WsClosed:
            pass
        finally:
            client.sock.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def framemd5_bytes(data: bytes) -> dict[str, list[tuple[int, int, int, str]]]:
    result = subprocess.run(framemd5_cmd("pipe:"), input=data, capture_output=True,
                            timeout=120, check=True)
    return parse_framemd5(result.stdout.decode())


def assert_played_run(played: dict[str, list[tuple[int, int, int, str]]],
                      published: dict[str, list[tuple[int, int, int, str]]],
                      min_packets: int, end_of_stream: bool = True) -> None:
    """Each played stream is a contiguous run of the published packets, byte for
    byte (size and md5), with their dts and pts, to the last one."""
    assert set(played) == set(published), (sorted(played), sorted(published))
    for name, packets in played.items():
        source = published[name]
        assert len(packets) >= min_packets, \
            f"{name}: only {len(packets)} packets played: {[p[:3] for p in packets]}"
        assert packets[0] in source, f"{name}: first played packet {packets[0]} not published"
        start = source.index(packets[0])
        if end_of_stream:
            assert start + len(packets) == len(source), \
                f"{name}: {len(source) - start - len(packets)} packets at the end not played"
        run = source[start:start + len(packets)]
        bad = next((i for i, (a, b) in enumerate(zip(packets, run, strict=False)) if a != b),
                   min(len(packets), len(run)))
        assert packets == run, (f"{name}: played packets are not the published run from "
                                f"{start}: from played #{bad} of {len(packets)}: "
                                f"{packets[bad:bad + 3]} vs {run[bad:bad + 3]}")
