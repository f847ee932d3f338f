"""Micro-benchmarks of the hot paths: chunk parsing, media through the RTMP
sessions' receive(), chunk writing, FLV parsing, the fan-out from one Stream
to many sinks, and HLS segmenters (TS muxing) of many streams.

A regression guard, not a test: it prints figures and asserts nothing about
time.  CI runs it after the tests (``python bench/micro.py``); compare the
figures across commits.  ``--quick`` shrinks every case for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from lal_twisted.hub.sink import Sink
from lal_twisted.hub.stream import Stream
from lal_twisted.media import amf0, flv
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.rtmp.chunk import ChunkReader, encode_message
from lal_twisted.rtmp.client_session import ClientSession, RtmpUrl
from lal_twisted.rtmp.session import ServerSession, encode_media, media_encoder


def timed(fn: Callable[[], int], repeat: int = 3) -> tuple[float, int]:
    """Best wall time of ``repeat`` runs of ``fn`` (which returns a unit count)."""
    best, units = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        units = fn()
        best = min(best, time.perf_counter() - t0)
    return best, units


def media_messages(count: int) -> list[tuple[int, int, bytes]]:
    """A 275 kbit/s-like mix: one 500-byte video frame, then ~2 audio frames of 200 bytes,
    with a 6 kB keyframe every 50 video frames."""
    out = []
    ts = 0
    for i in range(count):
        if i % 3 == 0:
            size = 6000 if (i // 3) % 50 == 0 else 500
            out.append((VIDEO, ts, b"\x27\x01\x00\x00\x00" + os.urandom(size)))
            ts += 40
        else:
            out.append((AUDIO, ts, b"\xaf\x01" + os.urandom(200)))
    return out


def bench_chunk_reader(n: int, chunk_size: int) -> dict[str, Any]:
    msgs = media_messages(n)
    data = b"".join(encode_message(chunk_size, 6 if k == VIDEO else 4, k, 1, ts, p)
                    for k, ts, p in msgs)
    if chunk_size != 128:  # the reader starts at 128: announce the size first
        data = encode_message(128, 2, 1, 0, 0, chunk_size.to_bytes(4, "big")) + data
    pieces = [data[i:i + 16384] for i in range(0, len(data), 16384)]  # socket-sized reads

    def run() -> int:
        reader = ChunkReader()
        count = 0
        for piece in pieces:
            for message in reader.feed(piece):
                count += message.type_id in (AUDIO, VIDEO)
        return count

    seconds, count = timed(run)
    return {"case": f"chunk reader, chunk size {chunk_size}", "messages": count,
            "MB_per_s": round(len(data) / seconds / 1e6, 1),
            "us_per_message": round(seconds / count * 1e6, 2)}


def linked_sessions(mode: str) -> tuple[ClientSession, ServerSession]:
    """A client and a server session, handshaken and publishing or playing."""
    client = ClientSession(RtmpUrl.parse("rtmp://127.0.0.1/live/bench"), mode)
    server = ServerSession()
    client.start()

    def pump() -> None:
        while True:
            c2s = client.data_to_send()
            if c2s:
                server.receive(c2s)
            s2c = server.data_to_send()
            if s2c:
                client.receive(s2c)
            if not c2s and not s2c:
                return

    pump()
    if mode == "publish":
        server.accept_publish()
    else:
        server.accept_play()
    pump()
    return client, server


def bench_session_receive(n: int, side: str) -> dict[str, Any]:
    """Media through a session's receive(): the chunk reader plus the dispatch of
    each message to an AVPacket event (a publisher on the server, a player client)."""
    msgs = [AVPacket(k, ts, p) for k, ts, p in media_messages(n)]
    client, server = linked_sessions("publish" if side == "server" else "play")
    if side == "server":
        session: ClientSession | ServerSession = server
        data = b"".join(client.encode_packet(packet) for packet in msgs)
    else:
        session = client
        data = b"".join(encode_media(packet, server.out_chunk_size) for packet in msgs)
    pieces = [data[i:i + 16384] for i in range(0, len(data), 16384)]

    def run() -> int:
        return sum(len(session.receive(piece)) for piece in pieces)

    seconds, count = timed(run)
    return {"case": f"{side} session receive, chunk size 4096", "messages": count,
            "MB_per_s": round(len(data) / seconds / 1e6, 1),
            "us_per_message": round(seconds / count * 1e6, 2)}


def bench_chunk_writer(n: int) -> dict[str, Any]:
    msgs = media_messages(n)

    def run() -> int:
        for k, ts, p in msgs:
            encode_message(4096, 6, k, 1, ts, p)
        return len(msgs)

    seconds, count = timed(run)
    return {"case": "chunk writer, chunk size 4096", "messages": count,
            "us_per_message": round(seconds / count * 1e6, 2)}


def bench_flv_reader(n: int) -> dict[str, Any]:
    data = flv.file_header() + b"".join(flv.encode_tag(k, ts, p) for k, ts, p in media_messages(n))
    pieces = [data[i:i + 16384] for i in range(0, len(data), 16384)]

    def run() -> int:
        reader = flv.FlvReader()
        return sum(len(reader.feed(p)) for p in pieces)

    seconds, count = timed(run)
    return {"case": "FLV reader", "tags": count, "MB_per_s": round(len(data) / seconds / 1e6, 1)}


def bench_amf0(n: int) -> dict[str, Any]:
    connect = amf0.encode("connect", 1.0, {
        "app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl":
        "rtmp://127.0.0.1:1935/live", "fpad": False, "capabilities": 15.0,
        "audioCodecs": 4071.0, "videoCodecs": 252.0, "videoFunction": 1.0})

    def run() -> int:
        for _ in range(n):
            amf0.decode(connect)
        return n

    seconds, count = timed(run)
    return {"case": "AMF0 decode of a connect command", "commands": count,
            "us_per_command": round(seconds / count * 1e6, 2)}


class NullSink(Sink):
    """A sink whose transport takes every write at once (measures our code only)."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.encoder = media_encoder(4096)
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def disconnect(self, reason: str) -> None:
        pass


def bench_fan_out(players: int, packets: int) -> dict[str, Any]:
    reactor = MemoryReactorClock()
    msgs = media_messages(packets)
    key = AVPacket(VIDEO, 0, b"\x17\x01\x00\x00\x00" + os.urandom(6000))

    def run() -> int:
        stream = Stream("live/bench", gop_num=1)
        stream.start_publish(object())
        sinks = [NullSink(reactor) for _ in range(players)]
        for s in sinks:
            stream.add_sink(s)
        stream.feed(AVPacket(VIDEO, 0, key.payload))
        for k, ts, p in msgs:
            stream.feed(AVPacket(k, ts, p))
        return len(msgs) * players

    seconds, deliveries = timed(run)
    return {"case": f"fan-out to {players} RTMP sinks", "deliveries": deliveries,
            "ns_per_delivery": round(seconds / deliveries * 1e9, 1),
            "packets_per_s_per_core": round(len(msgs) / seconds, 1)}


# Real H.264 (SPS, PPS) and AAC sequence headers for the HLS case.
_AVC_HEADER = bytes.fromhex("17000000000164000dffe1001967640 00dacd94141fb0110000003001000000303"
                            " 20f142996001000568ebecb22c".replace(" ", ""))
_AAC_HEADER = b"\xaf\x00\x12\x10"


def hls_stream(seconds: int) -> list[tuple[int, int, bytes]]:
    """A 275 kbit/s-like H.264 + AAC stream, as encoders send it: 25 fps of
    one-NAL frames (500 bytes, a 6 kB keyframe every 2 s, B-frame offsets) and
    44.1 kHz AAC frames of 200 bytes."""
    out = [(VIDEO, 0, _AVC_HEADER), (AUDIO, 0, _AAC_HEADER)]
    frames = []
    for i in range(seconds * 25):
        key = i % 50 == 0
        size = 6000 if key else 500
        cts = (0, 80, 40)[i % 3] if not key else 0
        nal = bytes((0x65 if key else 0x41,)) + os.urandom(size - 1)
        frames.append((i * 40, VIDEO, bytes((0x17 if key else 0x27, 1)) + cts.to_bytes(3, "big")
                       + size.to_bytes(4, "big") + nal))
    for i in range(int(seconds * 44100 / 1024)):
        frames.append((int(i * 1024000 / 44100), AUDIO, b"\xaf\x01" + os.urandom(200)))
    frames.sort(key=lambda f: f[0])
    return out + [(kind, ts, payload) for ts, kind, payload in frames]


def bench_hls_segmenters(streams: int, seconds: int) -> dict[str, Any]:
    """``streams`` streams published at once with HLS in memory: each 200 ms of
    media, every stream's packets fed, then every segmenter drained (as the
    server's HlsManager does).  Timed: the drains (TS muxing and segments)."""
    from lal_twisted.hls.segmenter import HlsStream, SegmenterConfig
    from lal_twisted.hls.store import MemoryStore

    source = hls_stream(seconds)
    batches: dict[int, list[tuple[int, int, bytes]]] = {}
    for message in source:
        batches.setdefault(message[1] // 200, []).append(message)

    def run() -> int:
        store = MemoryStore(max_bytes=1 << 40)
        pairs = []
        for i in range(streams):
            stream = Stream(f"live/s{i}")
            stream.start_publish(object())
            hls = HlsStream(f"s{i}", store, SegmenterConfig(), schedule=lambda h: None)
            hls.begin(stream)
            pairs.append((stream, hls))
        spent = 0.0
        for key in sorted(batches):
            batch = batches[key]
            for stream, _hls in pairs:
                for kind, ts, payload in batch:
                    stream.feed(AVPacket(kind, ts, payload))
            t0 = time.perf_counter()
            for _stream, hls in pairs:
                hls.drain()
            spent += time.perf_counter() - t0
        return int(spent * 1e9)

    best = min(run() for _ in range(3)) / 1e9
    packets = streams * (len(source) - 2)
    return {"case": f"hls segmenters ({streams} streams, {seconds}s)",
            "us_per_packet": round(best / packets * 1e6, 2),
            "cpu_pct_for_200_streams": round(best / (streams * seconds) * 200 * 100, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    scale = 1 if args.quick else 20
    results = [
        bench_chunk_reader(300 * scale, 128),
        bench_chunk_reader(300 * scale, 4096),
        bench_session_receive(300 * scale, "server"),
        bench_session_receive(300 * scale, "client"),
        bench_chunk_writer(300 * scale),
        bench_flv_reader(300 * scale),
        bench_amf0(200 * scale),
        bench_fan_out(100 if args.quick else 1000, 30 if args.quick else 300),
        bench_hls_segmenters(10 if args.quick else 100, 4 if args.quick else 12),
    ]
    for r in results:
        figures = ", ".join(f"{k} {v}" for k, v in r.items() if k != "case")
        print(f"{r['case']:40s} {figures}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
