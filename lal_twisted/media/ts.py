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
- One PES per frame with PTS, and DTS when they differ (B-frames); video
  frames get an access unit delimiter and, on keyframes, the parameter sets
  (SPS/PPS, VPS/SPS/PPS for H.265) in Annex-B form unless the frame has them.
- PCR in the first TS packet of every PES of the PCR PID (video, or audio for
  an audio-only stream), the random-access indicator on keyframes (and audio
  frames), continuity counters per PID, adaptation-field stuffing.

Timestamps are the packet's 32-bit milliseconds times 90.  2**32 ms * 90 is
45 * 2**33, so the 33-bit TS clock runs on unbroken across the wrap of RTMP
time; TS players handle the 33-bit wrap itself.
"""

from __future__ import annotations

import struct
from typing import Protocol

from lal_twisted.log import Logger
from lal_twisted.media import aac, enhanced
from lal_twisted.media.packet import AUDIO, VIDEO, AVPacket
from lal_twisted.media.tags import (
    AudioPacketType,
    Codec,
    VideoPacketType,
    audio_codec_of,
    video_codec_of,
)
from lal_twisted.media.track import AudioTrack, Tracks, VideoTrack, audio_track, video_track

__all__ = ["AUDIO_PID", "PMT_PID", "TS_PACKET_SIZE", "VIDEO_PID", "TsMuxer",
           "crc32_mpeg2"]

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
_AUDIO_PES_START = b"\x00\x00\x01\xc0"
_MAX_ADTS_PAYLOAD = (1 << 13) - 1 - 7

# Access unit delimiters: H.264 NAL type 9 (primary_pic_type 7: any slice);
# H.265 NAL type 35 (pic_type 2: any slice).
_START = b"\x00\x00\x00\x01"
_AUD = {Codec.H264: _START + b"\x09\xf0", Codec.H265: _START + b"\x46\x01\x50"}

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


def _timestamp(prefix: int, ts: int) -> bytes:
    """A 33-bit PTS or DTS in the PES header's 5-byte layout, with its marker bits."""
    return ((prefix << 36) | ((ts >> 30) << 33) | (((ts >> 15) & 0x7FFF) << 17)
            | ((ts & 0x7FFF) << 1) | 0x100010001).to_bytes(5, "big")


# Headers of continuation packets (no payload_unit_start, payload only), by PID and cc.
_CONTINUATION = {pid: [bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16)]
                 for pid in (VIDEO_PID, AUDIO_PID)}


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
    elif random_access:
        field = b"\x40"
    else:
        field = b""
    first_len = _PAYLOAD - 1 - len(field) if field else _PAYLOAD
    if first_len > size:
        first_len = size
    parts = [_packet(pid, 0x40, cc, field, pes[:first_len])]
    pos = first_len
    full_end = pos + (size - pos) // _PAYLOAD * _PAYLOAD
    if full_end > pos:
        continuation = _CONTINUATION[pid]
        for start in range(pos, full_end, _PAYLOAD):
            cc = (cc + 1) & 0x0F
            parts.append(continuation[cc])
            parts.append(pes[start:start + _PAYLOAD])
    if full_end < size:
        cc = (cc + 1) & 0x0F
        parts.append(_packet(pid, 0, cc, b"", pes[full_end:]))
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


class _TrackSource(Protocol):
    tracks: Tracks


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

    def __init__(self, source: _TrackSource | None = None, name: str = "") -> None:
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
                self._adts_base = int.from_bytes(aac.adts_header(info, 0), "big") & ~(
                    0x1FFF << 13)
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
        h265 = track.codec == Codec.H265
        try:
            nalus, has_params = _annexb(payload, offset, end, track.nal_length_size, h265)
        except ValueError:
            return b""  # a frame whose NAL lengths run past its end: not decodable
        if not nalus:
            return b""
        parts = [_AUD[track.codec]]
        keyframe = packet.is_keyframe
        if keyframe and not has_params:
            parts.append(self._param_sets(track))
        parts.append(nalus)
        es = b"".join(parts)
        dts = (packet.dts * 90) & _TS_MASK
        pts = (pts * 90) & _TS_MASK
        if pts != dts:
            flags, stamps = b"\x80\xc0\x0a", _timestamp(3, pts) + _timestamp(1, dts)
        else:
            flags, stamps = b"\x80\x80\x05", _timestamp(2, pts)
        length = 3 + len(stamps) + len(es)
        pes = b"".join((b"\x00\x00\x01\xe0", struct.pack(">H", length if length <= 0xFFFF else 0),
                        flags, stamps, es))
        return self._pes_packets(VIDEO_PID, pes, dts, keyframe)

    def _param_sets(self, track: VideoTrack) -> bytes:
        cached_track, data = self._params
        if cached_track is not track:
            data = b"".join(_START + nal for nal in (*track.vps, *track.sps, *track.pps))
            self._params = (track, data)
        return data

    def _encode_audio(self, packet: AVPacket) -> bytes:
        self._refresh()
        payload = packet.payload
        if self._audio is None or not payload:
            return b""
        first = payload[0]
        end = len(payload)
        if first >> 4 == 9 and first & 0x0F not in _AUDIO_WRAPPED and packet.codec != Codec.AAC:
            return b""
        if first >> 4 == 9:
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
        else:
            # Legacy: [SoundFormat...][AACPacketType=1], then the raw frame.
            if packet.codec != Codec.AAC or len(payload) < 2 or payload[1] != 1:
                return b""
            offset = 2
        size = end - offset
        if size <= 0 or size > _MAX_ADTS_PAYLOAD:
            return b""
        adts = (self._adts_base | ((size + 7) << 13)).to_bytes(7, "big")
        pts = (packet.dts * 90) & _TS_MASK
        pes = b"".join((_AUDIO_PES_START, (15 + size).to_bytes(2, "big"), b"\x80\x80\x05",
                        _timestamp(2, pts), adts, payload[offset:end]))
        return self._pes_packets(AUDIO_PID, pes, pts, True)

    def _pes_packets(self, pid: int, pes: bytes, dts: int, random_access: bool) -> bytes:
        pcr = dts if pid == VIDEO_PID or self._video is None else None
        data, self._cc[pid] = _packetize(pid, (self._cc[pid] + 1) & 0x0F, pes, pcr,
                                         random_access)
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


def _annexb(payload: bytes, offset: int, end: int, length_size: int,
            h265: bool) -> tuple[bytes, bool]:
    """The AVCC/HVCC NAL units of ``payload[offset:end]`` in Annex-B form, without
    access unit delimiters, and whether they include a sequence parameter set."""
    parts: list[bytes] = []
    pos = offset
    has_sps = False
    aud, sps = (35, 33) if h265 else (9, 7)
    read = _LENGTH_READERS.get(length_size)
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
                parts.append(_START)
                parts.append(payload[pos:pos + size])
        pos += size
    return b"".join(parts), has_sps
