"""MPEG-TS muxing (ISO/IEC 13818-1), sans-IO: AVPackets in, 188-byte TS packets out.

One :class:`TsMuxer` serves one stream and every consumer of its TS output
(HLS segments, HTTP-TS players, TS recordings).  ``feed(packet)`` returns the
packet's TS bytes, encoded on first use and cached on the packet
(``packet.encoded(muxer)``), so the work is done once per packet whatever the
number of consumers.  Each consumer starts its output with ``header(n)``
(PAT + PMT) and counts its own ``n`` so its PSI continuity counters run on.

What is written:

- PAT (program 1) and PMT (PID 0x1000): H.264 (stream type 0x1B) or H.265
  (0x24) on PID 0x100, AAC (0x0F, as ADTS) on PID 0x101.  Other codecs are
  left out of the PMT and their packets skipped, with one log line per track;
  the other track still plays.
- One PES per video frame with PTS, and DTS when they differ (B-frames); video
  frames get an access unit delimiter and, on keyframes, the parameter sets
  (SPS/PPS, VPS/SPS/PPS for H.265) in Annex-B form unless the frame has them.
- AAC frames (as ADTS) one per PES for a live muxer (``live``: what HTTP-TS
  players read) or when there is no video; otherwise several to a
  PES (see ``_AUDIO_FRAMES_PER_PES``): a held frame's bytes are b"" and the
  group leaves with the packet that completes it, or in front of the next
  video keyframe (``video_start`` finds where the video begins).  A consumer
  whose output ends writes ``flush()`` last.
- PCR in the first TS packet of every PES of the PCR PID (video, or audio for
  an audio-only stream), the random-access indicator on keyframes (and audio
  frames), continuity counters per PID, adaptation-field stuffing.  A PES is
  cut into its TS packets in one call (``_pes_packets``): the compiled packer
  (``_tspack.c``) where the install built it, else its Python form.

Timestamps are the packet's 32-bit milliseconds times 90.  2**32 ms * 90 is
45 * 2**33, so the 33-bit TS clock runs on unbroken across the wrap of RTMP
time; TS players handle the 33-bit wrap itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Protocol

from lal_twisted.log import Logger
from lal_twisted.media import aac, enhanced
from lal_twisted.media.packet import AUDIO, BYTES_HEADER, VIDEO, AVPacket
from lal_twisted.media.tags import (
    AudioPacketType,
    Codec,
    SoundFormat,
    VideoPacketType,
    audio_codec_of,
    video_codec_of,
)
from lal_twisted.media.track import AudioTrack, Tracks, VideoTrack, audio_track, video_track

__all__ = ["AUDIO_PID", "PMT_PID", "TS_PACKET_SIZE", "VIDEO_PID", "KeyframePsi", "TsMuxer",
           "crc32_mpeg2", "video_start"]

log = Logger("lal_twisted.media.ts")

TS_PACKET_SIZE = 188
_PAYLOAD = 184  # a TS packet without an adaptation field
PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
_PROGRAM = 1

_STREAM_TYPES = {Codec.H264: 0x1B, Codec.H265: 0x24, Codec.AAC: 0x0F}
_VIDEO_STREAM_ID = 0xE0
_AUDIO_STREAM_ID = 0xC0
_TS_MASK = (1 << 33) - 1
_MAX_ADTS_PAYLOAD = (1 << 13) - 1 - 7
# With video and no live reader (only HLS, which takes packets in batches, and
# recordings), AAC frames go out several to a PES, as ffmpeg (PES of up to about
# 2.9 KB) and nginx-rtmp (up to 300 ms of audio) write them: a PES and its TS
# packets cost about as much CPU as the frame itself, and a frame of 64 kbit/s
# AAC fills one TS packet and a bit of a second.  At most this many frames,
# bytes and milliseconds, only frames that follow each other without a gap
# (within the jitter of millisecond timestamps); those held when a video
# keyframe comes go out in front of it, so an HLS segment cut there ends with
# them.  A live reader (an HTTP-TS player) gets one frame per PES, never held.
_AUDIO_FRAMES_PER_PES = 12
_AUDIO_PES_MAX = 4096
_AUDIO_PES_MAX_MS = 300
_AUDIO_JITTER_MS = 2.5
# Held frames further than this from the next frame (the stream paused) are
# dropped rather than sent late.
_STALE_AUDIO_MS = 1000

# Access unit delimiters: H.264 NAL type 9 (primary_pic_type 7: any slice);
# H.265 NAL type 35 (pic_type 2: any slice).
_START = b"\x00\x00\x00\x01"
_AUD = {Codec.H264: _START + b"\x09\xf0", Codec.H265: _START + b"\x46\x01\x50"}
_START_AUD = {codec: aud + _START for codec, aud in _AUD.items()}
# NAL types (by h265) a frame of one NAL unit is not written directly for: an
# AUD (dropped: the muxer writes its own) and an SPS (no parameter sets added).
_NO_SINGLE = {False: (9, 7), True: (35, 33)}
_U32 = struct.Struct(">I").unpack_from
_NO_FRAMES = (False, False, 0, b"", b"")

# The offset of the NAL units in a video tag body: legacy [first][AVCPacketType][CTS:3];
# enhanced [first][FourCC:4] then a CTS for CodedFrames (packet type 1), none for
# CodedFramesX (3).
_LEGACY_NALU_OFFSET = 5
_CODED_FRAMES = int(VideoPacketType.CODED_FRAMES)
_CODED_FRAMES_X = int(VideoPacketType.CODED_FRAMES_X)
_ENHANCED_OFFSETS = {_CODED_FRAMES: 8, _CODED_FRAMES_X: 5}
_CTS_SIZE = {_CODED_FRAMES: 3, _CODED_FRAMES_X: 0}  # before the NAL units of a track body
# Enhanced tags whose body is found by parsing their header (ModEx, multitrack).
_VIDEO_WRAPPED = (int(VideoPacketType.MULTITRACK), int(VideoPacketType.MOD_EX))
_AUDIO_WRAPPED = (int(AudioPacketType.MULTITRACK), int(AudioPacketType.MOD_EX))
_AUDIO_CODED_FRAMES = int(AudioPacketType.CODED_FRAMES)
_SOUND_AAC = int(SoundFormat.AAC)
_MAIN_TRACK = 0  # the track a TS output carries from a multitrack stream


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


def _psi_packet(pid: int, cc: int, section: bytes) -> bytes:
    """One TS packet holding a whole PSI section (pointer field 0), 0xFF filled."""
    header = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | (cc & 0x0F), 0x00))
    body = header + section + struct.pack(">I", crc32_mpeg2(section))
    return body + b"\xff" * (TS_PACKET_SIZE - len(body))


def _pat() -> bytes:
    program = struct.pack(">HH", _PROGRAM, 0xE000 | PMT_PID)
    # section_length counts what follows it: 5 bytes of header, the loop, the CRC.
    length = 5 + len(program) + 4
    return struct.pack(">BHHBBB", 0x00, 0xB000 | length, 0x0001, 0xC1, 0, 0) + program


def _pmt(version: int, pcr_pid: int, streams: list[tuple[int, int]]) -> bytes:
    loop = b"".join(struct.pack(">BHH", stype, 0xE000 | pid, 0xF000) for stype, pid in streams)
    length = 9 + len(loop) + 4
    return (struct.pack(">BHHBBBHH", 0x02, 0xB000 | length, _PROGRAM,
                        0xC1 | ((version & 0x1F) << 1), 0, 0, 0xE000 | pcr_pid, 0xF000)
            + loop)


def _signed(diff: int) -> int:
    """A difference of 32-bit RTMP times as a signed number (wrap-safe)."""
    diff &= 0xFFFFFFFF
    return diff - 0x100000000 if diff & 0x80000000 else diff


def video_start(data: bytes) -> int:
    """Where the first video TS packet is in ``data`` (a keyframe's bytes, which
    may start with audio held before it); ``len(data)`` if there is none."""
    pos = 0
    end = len(data)
    while pos < end and ((data[pos + 1] & 0x1F) << 8 | data[pos + 2]) != VIDEO_PID:
        pos += TS_PACKET_SIZE
    return pos


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


def _pes_packets_py(pid: int, cc: int, stream_id: int, pts: int, dts: int, pcr: int,
                    random_access: bool, parts: Sequence[bytes]) -> tuple[bytes, int]:
    """One PES as TS packets: the PES header (``stream_id``, ``pts``, and ``dts``
    when it differs, both 90 kHz), then ``parts`` joined; the first packet
    carries counter ``cc``, the PCR (``pcr`` >= 0) and the random-access flag.
    Returns the packets and the last counter used.  The compiled form
    (``_tspack.pes_packets``) gives the same bytes."""
    pts &= _TS_MASK
    dts &= _TS_MASK
    if pcr >= 0:
        pcr &= _TS_MASK
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
    from lal_twisted.media._tspack import pes_packets as _pes_packets
    PACKER = "compiled"
except ImportError:  # not built (no C compiler where it was installed)
    _pes_packets = _pes_packets_py
    PACKER = "python"


class _TrackSource(Protocol):
    @property
    def tracks(self) -> Tracks: ...


class _OwnTracks:
    def __init__(self) -> None:
        self.tracks = Tracks()


class TsMuxer:
    """The MPEG-TS encoding of one stream, shared by all of its TS consumers.

    ``source`` is what holds the stream's current :class:`Tracks` (a hub
    Stream, whose tracks follow the sequence headers).  Without one, the muxer
    keeps its own, from the sequence headers it is fed.  Continuity counters
    belong to the muxer: feed every consumer's packets through the same muxer,
    in stream order.
    """

    def __init__(self, source: _TrackSource | None = None, name: str = "",
                 live: bool = False) -> None:
        self._owns_tracks = source is None
        self.source: _TrackSource = _OwnTracks() if source is None else source
        self.name = name
        self._cc = {VIDEO_PID: 0x0F, AUDIO_PID: 0x0F}  # the last one used
        self._pmt_key: tuple[object, ...] | None = None
        self._pmt_version = -1
        self._headers: list[bytes | None] = [None] * 16
        self._adts: tuple[bytes, aac.AscInfo | None] = (b"", None)
        self._skipped: set[str] = set()
        self._video: VideoTrack | None = None
        self._audio: AudioTrack | None = None
        self._params: tuple[VideoTrack | None, bytes] = (None, b"")
        self._seen_video: VideoTrack | None = None
        self._seen_audio: AudioTrack | None = None
        self._adts_base = 0  # the ADTS header as an int, frame length 0
        self._adts_sizes: dict[int, bytes] = {}  # ADTS headers by frame size
        # Whether a video track is written, as of the latest packet encoded
        # (has_video looks at the source's tracks first).
        self.writes_video = False
        self.made_bytes = 0  # what the last encode_many call encoded
        self._group_audio = False
        self._frames = _NO_FRAMES
        # Readers that must get every frame as it comes (HTTP-TS players):
        # audio frames are not grouped.
        self.live = live
        # Audio frames held for one PES: [ADTS header, frame, ...], their size,
        # the first one's PTS and the last one's RTMP time; one frame in ms.
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._held_pts = 0
        self._held_last = 0
        self._audio_frame_ms = 0.0
        self._held_pieces = 2 * _AUDIO_FRAMES_PER_PES

    # -- the API consumers use -------------------------------------------------------
    def feed(self, packet: AVPacket) -> bytes:
        """``packet`` as TS packets (b"" for headers, metadata and skipped codecs);
        encoded once, then the same bytes for every consumer."""
        return packet.encoded(self)

    def header(self, count: int = 0) -> bytes:
        """PAT and PMT for the stream's current tracks, with continuity counter
        ``count & 15``: a consumer passes 0, 1, 2... for its successive headers
        (each HLS segment, a player's start)."""
        self._refresh()
        cc = count & 0x0F
        data = self._headers[cc]
        if data is None:
            data = self._headers[cc] = self._psi(cc)
        return data

    @property
    def has_video(self) -> bool:
        """A video track the muxer writes (H.264 or H.265 with parameter sets)."""
        self._refresh()
        return self._video is not None

    @property
    def has_audio(self) -> bool:
        """An audio track the muxer writes (AAC with an AudioSpecificConfig)."""
        self._refresh()
        return self._audio is not None

    @property
    def pcr_pid(self) -> int:
        return VIDEO_PID if self.has_video else AUDIO_PID

    # -- Encoder ------------------------------------------------------------------
    def encode(self, packet: AVPacket) -> bytes:
        if self._owns_tracks:
            self._own_tracks(packet)
        if packet.is_sequence_header:
            return b""
        kind = packet.kind
        if kind == VIDEO:
            return self._encode_video(packet)
        if kind == AUDIO:
            return self._encode_audio(packet)
        return b""

    def encode_many(self, packets: list[AVPacket]) -> list[tuple[AVPacket, bytes]]:
        """The packets that have TS bytes, with them, as :meth:`feed` gives them
        (encoded once, cached on the packet), for a consumer that takes packets
        in batches (packets whose bytes are b"" are left out).  ``made_bytes``
        is then what the encodings this call made hold, as
        :meth:`AVPacket.cached_size` counts them (the others were made before,
        for another consumer).

        The tracks cannot change within a batch (the stream has its outputs
        settle before a new sequence header takes effect), so they are looked
        at once; the frames of the common kinds (a legacy H.264/H.265 frame of
        one NAL unit, a legacy AAC frame while frames are grouped) are encoded
        here in line, and the others by :meth:`encode`.
        """
        tracks = self.source.tracks
        if (self._owns_tracks
                or tracks.video is not self._seen_video or tracks.audio is not self._seen_audio):
            # New tracks (rare) are taken up by the first frame encoded one by one.
            fresh = [packet._first_encoder is None for packet in packets]
            pairs = [(packet, packet.encoded(self)) for packet in packets]
            self.made_bytes = sum(len(data) + BYTES_HEADER
                                  for (_, data), new in zip(pairs, fresh, strict=True) if new)
            return [pair for pair in pairs if pair[1]]
        single_nal, h265, legacy_id, plain, with_params = self._frames
        group_audio = self._group_audio and not self.live
        adts_sizes = self._adts_sizes
        frame_ms = self._audio_frame_ms
        out: list[tuple[AVPacket, bytes]] = []
        append = out.append
        made = already = 0
        for packet in packets:
            data: bytes | None = None
            if packet._first_encoder is not None:  # encoded already (another consumer)
                already += 1
                data = packet.encoded(self)
                if data:
                    append((packet, data))
                continue
            payload = packet.payload
            # The fast paths take raw frames only (AACPacketType / AVCPacketType
            # 1): sequence headers, empty tags and anything else go to encode().
            if packet.kind == AUDIO:
                end = len(payload)
                if (group_audio and 2 < end <= _MAX_ADTS_PAYLOAD + 2
                        and payload[0] >> 4 == _SOUND_AAC and payload[1] == 1):
                    size = end - 2
                    adts = adts_sizes.get(size)
                    if adts is None:
                        adts = adts_sizes[size] = (
                            self._adts_base | ((size + 7) << 13)).to_bytes(7, "big")
                    dts = packet.dts
                    held = self._held
                    if (held and self._held_bytes + size <= _AUDIO_PES_MAX
                            and -_AUDIO_JITTER_MS <= dts - self._held_last - frame_ms
                            <= _AUDIO_JITTER_MS):
                        # The next frame of the group (_hold_audio, in short).
                        held += (adts, payload[2:])
                        self._held_bytes += size + 7
                        self._held_last = dts
                        data = self._release() if len(held) >= self._held_pieces else b""
                    else:
                        data = self._hold_audio(dts, adts, payload[2:], size)
            elif packet.kind == VIDEO:
                end = len(payload)
                if (single_nal and end > 9 and payload[0] & 0x8F == legacy_id
                        and payload[1] == 1 and _U32(payload, 5)[0] + 9 == end):
                    nal = payload[9]
                    nal = (nal >> 1) & 0x3F if h265 else nal & 0x1F
                    if nal not in _NO_SINGLE[h265]:
                        # A legacy tag of one NAL unit: written from its 10th
                        # byte on, after the AUD (and parameter sets) and a
                        # start code.
                        keyframe = packet.is_keyframe
                        data = self._video_pes(packet, keyframe, packet.dts + packet.cts,
                                               (with_params if keyframe else plain,
                                                payload[9:]))
            if data is None:
                data = self.encode(packet)
            packet._first_encoder = self
            packet._first_encoding = data
            if data:
                made += len(data)
                append((packet, data))
        self.made_bytes = made + (len(packets) - already) * BYTES_HEADER  # as cached_size
        return out

    # -- internals -------------------------------------------------------------------
    def _refresh(self) -> None:
        """Follow the source's tracks; a change gives a new PMT version.
        Tracks are replaced, not changed, when a new header comes: the same
        objects as last time mean nothing changed."""
        tracks = self.source.tracks
        video, audio = tracks.video, tracks.audio
        if video is self._seen_video and audio is self._seen_audio:
            return
        self._seen_video, self._seen_audio = video, audio
        if video is not None and not self._usable_video(video):
            video = None
        if audio is not None and not self._usable_audio(audio):
            audio = None
        key = (video.codec if video else None, audio.codec if audio else None)
        self._video, self._audio = video, audio
        self.writes_video = video is not None
        self._group_audio = video is not None and audio is not None
        if video is not None and video.nal_length_size == 4:
            # For encode_many: frames of one NAL unit behind a 4-byte length (what
            # encoders send) are written in line; their codec id, and what goes
            # in front of the NAL unit without and with the parameter sets.
            h265 = video.codec == Codec.H265
            self._frames = (True, h265, 12 if h265 else 7, _START_AUD[video.codec],
                            _AUD[video.codec] + self._param_sets(video) + _START)
        else:
            self._frames = _NO_FRAMES
        if key != self._pmt_key:
            self._pmt_key = key
            self._pmt_version = (self._pmt_version + 1) & 0x1F
            self._headers = [None] * 16

    def _usable_video(self, track: VideoTrack) -> bool:
        if track.codec not in (Codec.H264, Codec.H265):
            self._skip("video", f"{track.codec} cannot be carried in MPEG-TS here "
                                f"(H.264 and H.265 can)")
            return False
        return bool(track.sps) and not track.error

    def _usable_audio(self, track: AudioTrack) -> bool:
        if track.codec != Codec.AAC:
            self._skip("audio", f"{track.codec} cannot be carried in MPEG-TS here (AAC can)")
            return False
        return self._asc(track) is not None

    def _skip(self, kind: str, why: str) -> None:
        if kind not in self._skipped:
            self._skipped.add(kind)
            log.info("stream {key}: TS output without its {kind} track: {why}", key=self.name,
                     kind=kind, why=why)

    def _psi(self, cc: int) -> bytes:
        streams = []
        if self._video is not None:
            streams.append((_STREAM_TYPES[self._video.codec], VIDEO_PID))
        if self._audio is not None:
            streams.append((_STREAM_TYPES[self._audio.codec], AUDIO_PID))
        pcr_pid = VIDEO_PID if self._video is not None else (
            AUDIO_PID if self._audio is not None else 0x1FFF)
        return (_psi_packet(0, cc, _pat())
                + _psi_packet(PMT_PID, cc, _pmt(self._pmt_version, pcr_pid, streams)))

    def _asc(self, track: AudioTrack) -> aac.AscInfo | None:
        config, info = self._adts
        if config != track.config or info is None:
            try:
                info = aac.parse_audio_specific_config(track.config)
                aac.adts_header(info, 0)  # can ADTS say it?
            except aac.AacError as e:
                if track.config:
                    self._skip("audio", f"AAC configuration unusable: {e}")
                info = None
            self._adts = (track.config, info)
            if info is not None:
                self._audio_frame_ms = 1024000 / (info.core_sample_rate or info.sample_rate)
                # [ADTS header, frame] per frame held: a PES is due at this many.
                self._held_pieces = 2 * max(1, min(
                    _AUDIO_FRAMES_PER_PES, int(_AUDIO_PES_MAX_MS // self._audio_frame_ms)))
                self._adts_base = int.from_bytes(aac.adts_header(info, 0), "big") & ~(
                    0x1FFF << 13)
                self._adts_sizes = {}
        return info

    def _own_tracks(self, packet: AVPacket) -> None:
        """Tracks from the packets, as a Stream keeps them (no source given)."""
        tracks = self.source.tracks
        # Only track 0's sequence start (header_key None) is a decoder
        # configuration; colorInfo, the other tracks' headers... are not.
        main_header = packet.is_sequence_header and packet.header_key is None
        if packet.kind == VIDEO:
            if main_header:
                tracks.video = video_track(packet.payload)
            elif (tracks.video is None and packet.codec is not None
                  and not packet.is_sequence_header):
                tracks.video = VideoTrack(packet.codec)
        elif packet.kind == AUDIO:
            if main_header or (tracks.audio is None and not packet.is_sequence_header):
                tracks.audio = audio_track(packet.payload)

    def _encode_video(self, packet: AVPacket) -> bytes:
        tracks = self.source.tracks
        if tracks.video is not self._seen_video or tracks.audio is not self._seen_audio:
            self._refresh()
        track = self._video
        payload = packet.payload
        if track is None or not payload:
            return b""
        first = payload[0]
        end = len(payload)
        pts = packet.pts
        if first & 0x80 and first & 0x0F in _VIDEO_WRAPPED:
            # ModEx / multitrack: track 0's body, wherever the header puts it (its
            # codec is checked there: packet.codec names the first track's).
            body = _main_track_body(payload, True, track.codec, _CTS_SIZE)
            if body is None:
                return b""
            offset, end, cts = body
            pts = packet.dts + cts
        elif packet.codec != track.codec:
            return b""
        elif first & 0x80:
            offset = _ENHANCED_OFFSETS.get(first & 0x0F)  # type: ignore[assignment]
            if offset is None:
                return b""
        else:
            if len(payload) < _LEGACY_NALU_OFFSET or payload[1] != 1:
                return b""
            offset = _LEGACY_NALU_OFFSET
        # The PES payload: [AUD, (parameter sets), NAL units...].
        parts: list[bytes] = [_AUD[track.codec]]
        try:
            has_params = _annexb(payload, offset, end, track.nal_length_size,
                                 track.codec == Codec.H265, parts)
        except ValueError:
            return b""  # a frame whose NAL lengths run past its end: not decodable
        if len(parts) == 1:
            return b""
        keyframe = packet.is_keyframe
        if keyframe and not has_params:
            parts.insert(1, self._param_sets(track))
        return self._video_pes(packet, keyframe, pts, parts)

    def _video_pes(self, packet: AVPacket, keyframe: bool, pts: int,
                   parts: Sequence[bytes]) -> bytes:
        """A video frame's TS packets: ``parts`` is its Annex-B data, ``pts`` in
        RTMP milliseconds (the packer keeps the low 33 bits of the 90 kHz times)."""
        dts = packet.dts * 90
        data, self._cc[VIDEO_PID] = _pes_packets(
            VIDEO_PID, (self._cc[VIDEO_PID] + 1) & 0x0F, _VIDEO_STREAM_ID,
            pts * 90, dts, dts, keyframe, parts)
        if self._held and (keyframe or self.live):
            # The audio held so far goes out first: an HLS segment starting at
            # this keyframe holds no audio from before it.
            audio = self._release(abs(_signed(packet.dts - self._held_last)) < _STALE_AUDIO_MS)
            return audio + data
        return data

    def _param_sets(self, track: VideoTrack) -> bytes:
        cached_track, data = self._params
        if cached_track is not track:
            data = b"".join(_START + nal for nal in (*track.vps, *track.sps, *track.pps))
            self._params = (track, data)
        return data

    def _encode_audio(self, packet: AVPacket) -> bytes:
        tracks = self.source.tracks
        if tracks.video is not self._seen_video or tracks.audio is not self._seen_audio:
            self._refresh()
        payload = packet.payload
        if self._audio is None or not payload:
            return b""
        first = payload[0]
        end = len(payload)
        if first >> 4 == _SOUND_AAC:
            # Legacy: [SoundFormat...][AACPacketType=1], then the raw frame.
            if end < 2 or payload[1] != 1:
                return b""
            offset = 2
        elif first >> 4 != 9 or (first & 0x0F not in _AUDIO_WRAPPED
                                 and packet.codec != Codec.AAC):
            return b""
        else:
            # Enhanced: [9x][FourCC:4] then the frame, or ModEx / multitrack wrappers.
            packet_type = first & 0x0F
            if packet_type in _AUDIO_WRAPPED:
                body = _main_track_body(payload, False, Codec.AAC, {_AUDIO_CODED_FRAMES: 0})
                if body is None:
                    return b""
                offset, end, _cts = body
            elif packet_type == _AUDIO_CODED_FRAMES:
                offset = 5
            else:
                return b""
        size = end - offset
        if size <= 0 or size > _MAX_ADTS_PAYLOAD:
            return b""
        adts = (self._adts_base | ((size + 7) << 13)).to_bytes(7, "big")
        frame = payload[offset:end] if offset or end != len(payload) else payload
        dts = packet.dts
        held = self._held
        if self._video is None or self.live:
            out = self._release(abs(_signed(dts - self._held_last)) < _STALE_AUDIO_MS) \
                if held else b""
            data = self._audio_pes(dts * 90, (adts, frame))
            return out + data if out else data
        return self._hold_audio(dts, adts, frame, size)

    def _hold_audio(self, dts: int, adts: bytes, frame: bytes, size: int) -> bytes:
        """Hold an AAC frame (``size`` bytes, with its ADTS header) for the next
        PES; the PES of the frames held before, if this one cannot join them,
        or of all of them, once there are enough."""
        held = self._held
        out = b""
        if held:
            step = (dts - self._held_last) & 0xFFFFFFFF
            if step & 0x80000000:
                step -= 0x100000000
            if (abs(step - self._audio_frame_ms) > _AUDIO_JITTER_MS
                    or self._held_bytes + size > _AUDIO_PES_MAX):
                out = self._release(abs(step) < _STALE_AUDIO_MS)
                held = self._held
        if not held:
            self._held_pts = (dts * 90) & _TS_MASK
        held.append(adts)
        held.append(frame)
        self._held_bytes += size + 7
        self._held_last = dts
        if len(held) >= self._held_pieces:
            return out + self._release() if out else self._release()
        return out

    def _release(self, keep: bool = True) -> bytes:
        """The held audio frames as one PES, now (none if not ``keep``)."""
        data = self._audio_pes(self._held_pts, self._held) if keep else b""
        self._held = []
        self._held_bytes = 0
        return data

    def flush(self) -> bytes:
        """The audio frames held for the next PES, as TS packets, for a consumer
        whose output ends here (a recording that stops, the last HLS segment of
        a publish).  The muxer keeps them: every consumer that ends now gets the
        same bytes, and the others get the frames later as usual."""
        if not self._held:
            return b""
        data, _cc = _pes_packets(AUDIO_PID, (self._cc[AUDIO_PID] + 1) & 0x0F,
                                 _AUDIO_STREAM_ID, self._held_pts, self._held_pts, -1, True,
                                 self._held)
        return data

    def drop_held(self) -> None:
        """Forget the held audio frames (a new publisher: they belong to the old one)."""
        self._held = []
        self._held_bytes = 0

    def _audio_pes(self, pts: int, parts: Sequence[bytes]) -> bytes:
        """An audio PES (``parts``: ADTS frames) as TS packets, with the PCR
        when audio carries it (no video)."""
        data, self._cc[AUDIO_PID] = _pes_packets(
            AUDIO_PID, (self._cc[AUDIO_PID] + 1) & 0x0F, _AUDIO_STREAM_ID, pts, pts,
            -1 if self._video is not None else pts, True, parts)
        return data


class KeyframePsi:
    """An encoder giving a :class:`TsMuxer`'s bytes for each packet, with PAT and
    PMT in front of every video keyframe's.  Other packets' bytes are the
    muxer's own objects; PAT/PMT continuity counters run on per stream."""

    def __init__(self, muxer: TsMuxer) -> None:
        self.muxer = muxer
        self.count = 0  # PAT/PMT pairs written

    def encode(self, packet: AVPacket) -> bytes:
        data = packet.encoded(self.muxer)
        if data and packet.is_keyframe and packet.kind == VIDEO:
            self.count += 1
            return self.muxer.header(self.count) + data
        return data


_LENGTH_READERS = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from,
                   4: struct.Struct(">I").unpack_from}


def _main_track_body(payload: bytes, video: bool, codec: Codec,
                     skip: dict[int, int]) -> tuple[int, int, int] | None:
    """Where the frame data of track 0 lies in an enhanced tag with ModEx or
    multitrack wrappers, and its composition time: (start, end, cts), the
    start past the composition time of video CodedFrames.  None when the tag
    is no coded frame of ``codec`` for track 0 (a sequence end, other tracks
    only, another codec) or is malformed."""
    try:
        header = enhanced.parse(payload, video)
    except enhanced.EnhancedError:
        return None
    before = skip.get(header.packet_type)
    if before is None:
        return None
    codec_of, prefix = (video_codec_of, b"\x80") if video else (audio_codec_of, b"\x90")
    for track in header.tracks:
        if track.track_id == _MAIN_TRACK:
            if codec_of(prefix + track.fourcc) != codec:
                return None
            start = track.start + before
            if start >= track.end:
                return None
            cts = 0
            if before:
                cts = int.from_bytes(payload[track.start:start], "big")
                if cts & 0x800000:
                    cts -= 0x1000000
            return start, track.end, cts
    return None


def _annexb(payload: bytes, offset: int, end: int, length_size: int, h265: bool,
            parts: list[bytes]) -> bool:
    """Append the AVCC/HVCC NAL units of ``payload[offset:end]`` in Annex-B form
    to ``parts``, without access unit delimiters; whether they include a
    sequence parameter set."""
    pos = offset
    has_sps = False
    aud, sps = (35, 33) if h265 else (9, 7)
    read = _LENGTH_READERS.get(length_size)
    append = parts.append
    while pos + length_size <= end:
        if read is None:
            size = int.from_bytes(payload[pos:pos + length_size], "big")
        else:
            (size,) = read(payload, pos)
        pos += length_size
        if pos + size > end:
            raise ValueError("NAL unit runs past the end of the frame")
        if size:
            nal_type = (payload[pos] >> 1) & 0x3F if h265 else payload[pos] & 0x1F
            if nal_type != aud:
                if nal_type == sps:
                    has_sps = True
                append(_START)
                append(payload[pos:pos + size])
        pos += size
    return has_sps
