"""Write a small seed corpus for one fuzz target, made from real ffmpeg output.

``python tests/fuzz/seeds.py TARGET DIR``: one second of H.264 + AAC test
pattern from ffmpeg, as FLV, then as the bytes each target parses (tags, the
RTMP chunks of a publish, handshake packets, AMF0 commands).  Seeds are made
on demand and never committed; without ffmpeg the FLV is built by hand.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from lal_twisted.media import amf0, flv  # noqa: E402
from lal_twisted.media.packet import AVPacket  # noqa: E402
from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl  # noqa: E402
from lal_twisted.rtmp.handshake import HANDSHAKE_SIZE, ClientHandshake  # noqa: E402
from lal_twisted.rtmp.session import ServerSession  # noqa: E402

_MAX_SEED = 8192


def ffmpeg_flv() -> bytes:
    """One second of test pattern and tone as FLV (about 13 kB)."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error",
           "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=1",
           "-f", "lavfi", "-i", "sine=duration=1",
           "-c:v", "libx264", "-g", "5", "-c:a", "aac", "-f", "flv", "-"]
    try:
        return subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        meta = amf0.encode("onMetaData", amf0.ECMAArray(videocodecid=7.0, audiocodecid=10.0))
        tags = [(18, 0, meta), (9, 0, b"\x17\x00\x00\x00\x00\x01\x64\x00\x0a\xff\xe1"),
                (8, 0, b"\xaf\x00\x12\x10"), (9, 40, b"\x27\x01\x00\x00\x00" + bytes(60))]
        return flv.file_header() + b"".join(flv.encode_tag(*t) for t in tags)


def rtmp_publish(tags: list[flv.FlvTag]) -> tuple[bytes, bytes, bytes]:
    """What a publishing client sends: its handshake, then the chunks of its
    commands and the tags; and what the server answers to the handshake."""
    client = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/seed"), "publish",
                           chunk_size=128)
    server = ServerSession()
    client.start()
    sent = bytearray()
    answered = bytearray()
    while True:
        c2s = client.data_to_send()
        sent += c2s
        if c2s:
            server.receive(c2s)
        s2c = server.data_to_send()
        if not answered:
            answered += s2c
        if s2c:
            client.receive(s2c)
        if not c2s and not s2c:
            break
    server.accept_publish()
    client.receive(server.data_to_send())
    for tag in tags:
        client.send_packet(AVPacket(tag.tag_type, tag.timestamp, tag.payload))
    sent += client.data_to_send()
    return bytes(sent[:2 * HANDSHAKE_SIZE + 1]), bytes(sent[2 * HANDSHAKE_SIZE + 1:]), \
        bytes(answered)


def seeds(target: str) -> list[bytes]:
    """The seed inputs of ``target``."""
    data = ffmpeg_flv()
    tags = flv.FlvReader().feed(data)
    handshake, chunks, answer = rtmp_publish(tags)
    bodies = [t.payload for t in tags[:6]]
    if target == "handshake_server":
        simple = b"\x03" + bytes(2 * HANDSHAKE_SIZE)
        return [handshake + chunks[:200], simple, handshake[:HANDSHAKE_SIZE + 1]]
    if target == "handshake_client":
        complex_c1 = ClientHandshake(complex=True).start()
        return [answer + chunks[:200], answer[:HANDSHAKE_SIZE + 1], complex_c1]
    if target in ("chunk_reader", "server_session"):
        return [chunks[:n] for n in (600, 2000, _MAX_SEED)]
    if target == "amf0":
        return [b for t in tags if t.tag_type == flv.TAG_SCRIPT for b in (t.payload,)] + [
            amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}),
            amf0.encode("publish", 0.0, None, "seed", "live"),
            amf0.encode([1.0, "a", True], amf0.UNDEFINED, {"o": {"n": None}}),
        ]
    if target == "flv_reader":
        return [data[:_MAX_SEED], data[:500]]
    if target == "avpacket":
        selector = {flv.TAG_AUDIO: 0, flv.TAG_VIDEO: 1, flv.TAG_SCRIPT: 2}
        return [bytes((selector.get(t.tag_type, 0xFF),)) + t.timestamp.to_bytes(4, "big")
                + t.payload[:2000] for t in tags[:6]]
    if target in ("track", "enhanced"):
        return [b[:2000] for b in bodies]
    raise SystemExit(f"unknown target {target!r}")


def main(argv: list[str]) -> int:
    target, out = argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
