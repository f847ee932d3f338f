"""PES packets (ISO/IEC 13818-1 2.4.3.6) cut into TS packets: the per-frame
work of the TS muxer, so built for speed (header tables by PID and
continuity counter, payloads cut out in one call), and done by the compiled
packer (``_tspack.c``) where the install built it.

:func:`pes_packets` is the packer in use (:data:`PACKER` says which);
:func:`pes_packets_py` its Python form, which gives the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain

from lal_twisted.media.ts.psi import AUDIO_PID, VIDEO_PID

__all__ = ["PACKER", "TS_MASK", "pes_packets", "pes_packets_py"]

_PAYLOAD = 184  # a TS packet without an adaptation field
TS_MASK = (1 << 33) - 1  # PTS, DTS and PCR base are 33-bit


def _timestamp(prefix: int, ts: int) -> bytes:
    """A 33-bit PTS or DTS in the PES header's 5-byte layout, with its marker bits."""
    return ((prefix << 36) | ((ts >> 30) << 33) | (((ts >> 15) & 0x7FFF) << 17)
            | ((ts & 0x7FFF) << 1) | 0x100010001).to_bytes(5, "big")


# TS packet headers from tables, by PID and continuity counter: a PES becomes
# its packets in one join, without building a header per packet.
_PIDS = (VIDEO_PID, AUDIO_PID)
# Continuation packets (no payload_unit_start), payload only: for each starting
# counter, the headers of a run of packets (cc, cc+1, ...), long enough for a
# 128 KiB frame; longer runs repeat it (the counter cycles every 16).
_RUN = 16 * 45
_CONTINUATION = {pid: [bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16)]
                 for pid in _PIDS}
_RUNS = {pid: [[_CONTINUATION[pid][(cc + i) & 0x0F] for i in range(_RUN)] for cc in range(16)]
         for pid in _PIDS}
# First packets (payload_unit_start): payload only; or with an adaptation field
# of n bytes (n = 1: flags, 7: flags and PCR), by PID, cc and n.
_FIRST = {pid: [bytes((0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16)]
          for pid in _PIDS}
_FIRST_WITH_FIELD = {pid: [[bytes((0x47, 0x40 | pid >> 8, pid & 0xFF, 0x30 | cc, n))
                            for n in range(8)] for cc in range(16)]
                     for pid in _PIDS}
# With an adaptation field holding only the random-access flag: header and field.
_FIRST_RANDOM_ACCESS = {pid: [bytes((0x47, 0x40 | pid >> 8, pid & 0xFF, 0x30 | cc, 1, 0x40))
                              for cc in range(16)] for pid in _PIDS}
# The last packet of a PES, when short: header with an adaptation field by PID
# and cc, then (by the room left) the field's length, flags 0 and stuffing.
_LAST = {pid: [bytes((0x47, pid >> 8, pid & 0xFF, 0x30 | cc)) for cc in range(16)]
         for pid in _PIDS}
_FILL = [b"\x00"] + [bytes((room - 1,)) + b"\x00" + b"\xff" * (room - 2)
                     for room in range(2, _PAYLOAD + 1)]
_FILL.insert(0, b"")  # index by room: _FILL[1] is a field of length 0

def _splitter(count: int) -> Callable[[bytes, int], tuple[bytes, ...]]:
    """What cuts ``count`` 184-byte TS payloads out of a buffer from an offset."""
    split = _SPLITTERS.get(count)
    if split is None:
        split = _SPLITTERS[count] = struct.Struct("184s" * count).unpack_from
    return split


_SPLITTERS: dict[int, Callable[[bytes, int], tuple[bytes, ...]]] = {}


def _packetize(pid: int, cc: int, pes: bytes, pcr: int | None,
               random_access: bool) -> tuple[bytes, int]:
    """Split one PES into TS packets starting at continuity counter ``cc``;
    returns them and the last counter used.

    The first packet carries the adaptation field (PCR, random access); the last
    one, if short, is filled with adaptation-field stuffing.
    """
    size = len(pes)
    if pcr is not None:
        field = ((0x50 if random_access else 0x10) << 48 | (pcr << 15) | 0x7E00).to_bytes(
            7, "big")
        pos = _PAYLOAD - 8
        if size < pos:  # one short packet
            return _packet(pid, 0x40, cc, field, pes), cc
        parts = [_FIRST_WITH_FIELD[pid][cc][7], field, pes[:pos]]
    elif random_access:
        pos = _PAYLOAD - 2
        if size < pos:
            return _packet(pid, 0x40, cc, b"\x40", pes), cc
        parts = [_FIRST_RANDOM_ACCESS[pid][cc], pes[:pos]]
    elif size >= _PAYLOAD:
        pos = _PAYLOAD
        parts = [_FIRST[pid][cc], pes[:_PAYLOAD]]
    else:
        return _packet(pid, 0x40, cc, b"", pes), cc
    full = (size - pos) // _PAYLOAD
    if full:
        end = pos + full * _PAYLOAD
        if full <= 7:  # most frames: a plain loop is quickest
            headers = _CONTINUATION[pid]
            append = parts.append
            while pos < end:
                cc = (cc + 1) & 0x0F
                append(headers[cc])
                append(pes[pos:pos + _PAYLOAD])
                pos += _PAYLOAD
        else:
            # [header, payload] pairs: headers from the run table, payloads cut
            # out in one call.
            run = _RUNS[pid][(cc + 1) & 0x0F]
            if full <= _RUN:
                parts += chain.from_iterable(zip(run, _splitter(full)(pes, pos), strict=False))
            else:
                middle: list[bytes] = [b""] * (2 * full)
                middle[0::2] = [run[i % _RUN] for i in range(full)]
                middle[1::2] = [pes[i:i + _PAYLOAD] for i in range(pos, end, _PAYLOAD)]
                parts += middle
            pos = end
            cc = (cc + full) & 0x0F
    if pos < size:
        cc = (cc + 1) & 0x0F
        parts.append(_LAST[pid][cc])
        parts.append(_FILL[_PAYLOAD - (size - pos)])
        parts.append(pes[pos:])
    return b"".join(parts), cc


def _packet(pid: int, start: int, cc: int, field: bytes, payload: bytes) -> bytes:
    """One TS packet (``start``: 0x40 for a payload unit start); an adaptation
    field (``field``: flags byte and options) is written, and stuffed with 0xFF,
    when there is one or the payload is short."""
    room = _PAYLOAD - len(payload)
    if not field and not room:
        return bytes((0x47, start | (pid >> 8), pid & 0xFF, 0x10 | cc)) + payload
    # adaptation_field_control 3: adaptation field, then payload.
    header = bytes((0x47, start | (pid >> 8), pid & 0xFF, 0x30 | cc, room - 1))
    if room == 1:
        return header + payload  # an adaptation field of length 0
    if not field:
        field = b"\x00"
    return b"".join((header, field, _STUFFING[room - 1 - len(field)], payload))


_STUFFING = [b"\xff" * n for n in range(_PAYLOAD + 1)]


def pes_packets_py(pid: int, cc: int, stream_id: int, pts: int, dts: int, pcr: int,
                   random_access: bool, parts: Sequence[bytes]) -> tuple[bytes, int]:
    """One PES as TS packets: the PES header (``stream_id``, ``pts``, and ``dts``
    when it differs, both 90 kHz), then ``parts`` joined; the first packet
    carries counter ``cc``, the PCR (``pcr`` >= 0) and the random-access flag.
    Returns the packets and the last counter used.  The compiled form
    (``_tspack.pes_packets``) gives the same bytes."""
    pts &= TS_MASK
    dts &= TS_MASK
    if pcr >= 0:
        pcr &= TS_MASK
    body = b"".join(parts)
    # Flags (PTS, or PTS and DTS), header data length, the times.
    times = (b"\x80\xc0\x0a" + _timestamp(3, pts) + _timestamp(1, dts) if pts != dts
             else b"\x80\x80\x05" + _timestamp(2, pts))
    length = len(times) + len(body)
    header = b"\x00\x00\x01" + bytes((stream_id,)) + (length if length <= 0xFFFF
                                                       else 0).to_bytes(2, "big")
    return _packetize(pid, cc, header + times + body, pcr if pcr >= 0 else None,
                      random_access)


try:
    from lal_twisted.media._tspack import pes_packets
    PACKER = "compiled"
except ImportError:  # not built (no C compiler where it was installed)
    pes_packets = pes_packets_py
    PACKER = "python"
