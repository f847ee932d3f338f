"""A small MPEG-TS reader for tests: checks the packet layer independently of
the muxer (sync bytes, continuity counters, PSI, PCR, random access, PES starts)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PesStart:
    pid: int
    index: int  # TS packet index
    pcr: int | None
    random_access: bool
    first_bytes: bytes  # the PES bytes in the first TS packet

    @property
    def pts(self) -> int:
        """The PTS of the PES header, as written (33 bits)."""
        return _stamp(self.first_bytes[9:14])

    @property
    def dts(self) -> int:
        """The DTS of the PES header, as written; the PTS when there is none."""
        h = self.first_bytes
        return _stamp(h[14:19]) if h[7] & 0x40 else self.pts


def _stamp(b: bytes) -> int:
    return (((b[0] >> 1) & 7) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) \
        | (b[4] >> 1)


@dataclass
class TsInfo:
    packets: int = 0
    pmt_pid: int | None = None
    pcr_pid: int | None = None
    streams: dict[int, int] = field(default_factory=dict)  # pid -> stream type
    cc_errors: list[str] = field(default_factory=list)
    pes: list[PesStart] = field(default_factory=list)


def parse(data: bytes) -> TsInfo:
    assert len(data) % 188 == 0, f"{len(data)} bytes is not a whole number of TS packets"
    info = TsInfo()
    last_cc: dict[int, int] = {}
    for i in range(0, len(data), 188):
        p = data[i:i + 188]
        assert p[0] == 0x47, f"no sync byte at packet {i // 188}"
        info.packets += 1
        pusi = bool(p[1] & 0x40)
        pid = ((p[1] & 0x1F) << 8) | p[2]
        afc = (p[3] >> 4) & 3
        cc = p[3] & 0x0F
        pos = 4
        pcr = None
        rai = False
        if afc & 2:
            af_len = p[4]
            if af_len:
                flags = p[5]
                rai = bool(flags & 0x40)
                if flags & 0x10:
                    b = p[6:12]
                    pcr = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
            pos = 5 + af_len
            assert pos <= 188
        if afc & 1:
            if pid in last_cc and (last_cc[pid] + 1) & 0x0F != cc:
                info.cc_errors.append(f"pid {pid:#x} packet {i // 188}: {last_cc[pid]} -> {cc}")
            last_cc[pid] = cc
        payload = p[pos:] if afc & 1 else b""
        if pid == 0 and pusi:
            section = payload[1 + payload[0]:]
            info.pmt_pid = ((section[10] & 0x1F) << 8) | section[11]
        elif pid == info.pmt_pid and pusi:
            s = payload[1 + payload[0]:]
            length = ((s[1] & 0x0F) << 8) | s[2]
            info.pcr_pid = ((s[8] & 0x1F) << 8) | s[9]
            prog_info = ((s[10] & 0x0F) << 8) | s[11]
            j = 12 + prog_info
            end = 3 + length - 4
            info.streams = {}
            while j < end:
                es_pid = ((s[j + 1] & 0x1F) << 8) | s[j + 2]
                info.streams[es_pid] = s[j]
                j += 5 + (((s[j + 3] & 0x0F) << 8) | s[j + 4])
        elif pusi and pid in info.streams:
            info.pes.append(PesStart(pid, i // 188, pcr, rai, bytes(payload)))
    return info


def ffprobe_packets(path: Path, stream: str = "v") -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
         "packet=pts,dts,flags", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)["packets"]


def count_frames(path: Path | str, *opts: str) -> dict[str, tuple[str, int]]:
    """codec_type -> (codec name, decoded frame count) as ffprobe sees it."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", *opts, "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, check=True, timeout=120)
    return {s["codec_type"]: (s["codec_name"], int(s["nb_read_frames"]))
            for s in json.loads(out.stdout)["streams"]}
