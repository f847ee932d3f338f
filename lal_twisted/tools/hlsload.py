"""HLS players for load tests: N clients polling one live playlist.

Each player keeps one HTTP/1.1 connection, fetches the playlist every
``interval`` seconds and every segment it has not fetched yet, once, as an HLS
player does (a redirect of the playlist is followed once, and its target is
what the player polls from then on, as ffmpeg, VLC and hls.js do).  Run as
``python -m lal_twisted.tools.hlsload URL -n N --duration S --json OUT``; it
writes request counts, bytes, errors, and how late each player saw each new
segment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from urllib.parse import urljoin, urlsplit


class _Http:
    """A minimal keep-alive HTTP/1.1 GET client (Content-Length bodies only)."""

    def __init__(self, host: str, port: int, agent: str) -> None:
        self.host, self.port, self.agent = host, port, agent
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes, str]:
        """(status, body, Location header)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          f"User-Agent: {self.agent}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        location = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "location":
                location = value.strip()
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise ValueError("chunked bodies are not read by this client")
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body, location

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Stats:
    def __init__(self) -> None:
        self.playlists = 0
        self.segments = 0
        self.bytes = 0
        self.errors = 0
        self.not_found = 0
        self.first_error = ""
        self.latency_ms: list[float] = []  # request round trips
        self.segment_seen: dict[str, float] = {}  # first time any player saw a segment
        self.lag_ms: list[float] = []  # how long after the first player each player saw it


async def player(number: int, url: str, interval: float, until: float, stats: Stats) -> None:
    parts = urlsplit(url)
    # Each player its own User-Agent: a server keying viewers by client sees N viewers.
    http = _Http(parts.hostname or "127.0.0.1", parts.port or 80, f"hlsload/{number}")
    seen: set[str] = set()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    await asyncio.sleep(random.random() * interval)  # spread the polls
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status, body, location = await http.get(target)
            if status in (301, 302, 303, 307, 308) and location:
                moved = urlsplit(urljoin(url, location))
                target = moved.path + (f"?{moved.query}" if moved.query else "")
                status, body, _ = await http.get(target)
            stats.latency_ms.append((time.monotonic() - started) * 1000)
            if status == 200:
                stats.playlists += 1
                stats.bytes += len(body)
                names = [n for n in body.decode().splitlines() if n and not n.startswith("#")]
                if not seen:
                    seen.update(names[:-1])  # join at the live edge, as players do
                for line in names:
                    if line not in seen:
                        seen.add(line)
                        now = time.monotonic()
                        first = stats.segment_seen.setdefault(line, now)
                        stats.lag_ms.append((now - first) * 1000)
                        t0 = time.monotonic()
                        segment = urlsplit(urljoin(url, line))
                        code, data, _ = await http.get(
                            segment.path + (f"?{segment.query}" if segment.query else ""))
                        stats.latency_ms.append((time.monotonic() - t0) * 1000)
                        if code == 200:
                            stats.segments += 1
                            stats.bytes += len(data)
                        else:
                            stats.not_found += 1
            else:
                stats.not_found += 1
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            stats.errors += 1
            stats.first_error = stats.first_error or repr(e)
            http.close()
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    http.close()


async def main_async(args: argparse.Namespace) -> Stats:
    stats = Stats()
    until = time.monotonic() + args.duration
    tasks = []
    for number in range(args.n):
        tasks.append(asyncio.create_task(player(number, args.url, args.interval, until, stats)))
        await asyncio.sleep(1.0 / args.ramp)
    await asyncio.gather(*tasks)
    return stats


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url", help="http://host:port/hls/STREAM.m3u8")
    p.add_argument("-n", type=int, default=100, help="players (default 100)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--interval", type=float, default=1.0, help="playlist period (default 1 s)")
    p.add_argument("--ramp", type=float, default=200.0, help="players started per second")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    stats = asyncio.run(main_async(args))
    out = {
        "players": args.n, "playlists": stats.playlists, "segments": stats.segments,
        "bytes": stats.bytes, "errors": stats.errors, "not_found": stats.not_found,
        "first_error": stats.first_error,
        "latency_ms_median": percentile(stats.latency_ms, 0.5),
        "latency_ms_p99": percentile(stats.latency_ms, 0.99),
        "segment_lag_ms_p99": percentile(stats.lag_ms, 0.99),
        "distinct_segments": len(stats.segment_seen),
        "segments_per_player": round(stats.segments / args.n, 1) if args.n else 0,
        "latency_ms_mean": round(statistics.fmean(stats.latency_ms), 1)
        if stats.latency_ms else None,
    }
    text = json.dumps(out, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
