"""MPEG-TS program tables (ISO/IEC 13818-1 2.4.4): the PIDs of the one
program a stream becomes, PAT and PMT sections with their CRC, each in one
TS packet."""

from __future__ import annotations

import struct

__all__ = ["AUDIO_PID", "PMT_PID", "TS_PACKET_SIZE", "VIDEO_PID", "crc32_mpeg2", "pat",
           "pmt", "psi_packet"]

TS_PACKET_SIZE = 188
PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
_PROGRAM = 1


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """The CRC of PSI sections: polynomial 0x04C11DB7, MSB first, init all ones."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc



def psi_packet(pid: int, cc: int, section: bytes) -> bytes:
    """One TS packet holding a whole PSI section (pointer field 0), 0xFF filled."""
    header = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | (cc & 0x0F), 0x00))
    body = header + section + struct.pack(">I", crc32_mpeg2(section))
    return body + b"\xff" * (TS_PACKET_SIZE - len(body))


def pat() -> bytes:
    """The program association section: program 1 on :data:`PMT_PID`."""
    program = struct.pack(">HH", _PROGRAM, 0xE000 | PMT_PID)
    # section_length counts what follows it: 5 bytes of header, the loop, the CRC.
    length = 5 + len(program) + 4
    return struct.pack(">BHHBBB", 0x00, 0xB000 | length, 0x0001, 0xC1, 0, 0) + program


def pmt(version: int, pcr_pid: int, streams: list[tuple[int, int]]) -> bytes:
    """The program map section of program 1: ``streams`` as (stream type, PID)."""
    loop = b"".join(struct.pack(">BHH", stype, 0xE000 | pid, 0xF000) for stype, pid in streams)
    length = 9 + len(loop) + 4
    return (struct.pack(">BHHBBBHH", 0x02, 0xB000 | length, _PROGRAM,
                        0xC1 | ((version & 0x1F) << 1), 0, 0, 0xE000 | pcr_pid, 0xF000)
            + loop)
