"""MPEG-TS muxing (ISO/IEC 13818-1), sans-IO: AVPackets in, 188-byte TS packets out.

One :class:`TsMuxer` serves one stream and every consumer of its TS output
(HLS segments, HTTP-TS players, TS recordings).  ``feed(packet)`` returns the
packet's TS bytes, encoded on first use and cached on the packet
(``packet.encoded(muxer)``), so the work is done once per packet whatever the
number of consumers.  Each consumer starts its output with ``header(n)``
(PAT + PMT) and counts its own ``n`` so its PSI continuity counters run on.

What is written:

- PAT (program 1) and PMT (PID 0x1000, :mod:`.psi`): H.264 (stream type
  0x1B) or H.265 (0x24) on PID 0x100, AAC (0x0F, as ADTS) on PID 0x101.
  Other codecs are left out of the PMT and their packets skipped, with one
  log line per track; the other track still plays.
- One PES per video frame with PTS, and DTS when they differ (B-frames); video
  frames get an access unit delimiter and, on keyframes, the parameter sets
  (SPS/PPS, VPS/SPS/PPS for H.265) in Annex-B form unless the frame has them
  (:mod:`lal_twisted.media.convert` makes the Annex-B and ADTS forms).
- AAC frames (as ADTS) one per PES for a live muxer (``live``: what HTTP-TS
  players read) or when there is no video; otherwise several to a
  PES (see ``_AUDIO_FRAMES_PER_PES``): a held frame's bytes are b"" and the
  group leaves with the packet that completes it, or in front of the next
  video keyframe (``video_start`` finds where the video begins).  A consumer
  whose output ends writes ``flush()`` last.
- PCR in the first TS packet of every PES of the PCR PID (video, or audio for
  an audio-only stream), the random-access indicator on keyframes (and audio
  frames), continuity counters per PID, adaptation-field stuffing.  A PES is
  cut into its TS packets in one call (:mod:`.pes`).

Timestamps are the packets' wide milliseconds (the hub's time, which does
not wrap) times 90; the 33-bit TS clock is taken from them only where a PES
header is written, so it runs on unbroken, and TS players handle its own
wrap.

This module is over the usual size because :meth:`TsMuxer.encode_many`
inlines the common frames of the HLS hot path (a legacy frame of one NAL
unit, a legacy AAC frame) instead of calling the general conversion.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from sys import getsizeof
from typing import Protocol

from lal_twisted.log import Logger
from lal_twisted.media.convert import (
    AUD,
    MAX_ADTS_PAYLOAD,
    START_CODE,
    AacError,
    AdtsWriter,
    AnnexBError,
    access_unit,
    coded_frame,
    parameter_sets,
)
from lal_twisted.media.packet import AUDIO, BYTES_HEADER, VIDEO, AVPacket
from lal_twisted.media.tags import Codec, SoundFormat
from lal_twisted.media.track import AudioTrack, Tracks, VideoTrack, audio_track, video_track
from lal_twisted.media.ts.pes import pes_packets as _pes_packets
from lal_twisted.media.ts.psi import (
    AUDIO_PID,
    PMT_PID,
    TS_PACKET_SIZE,
    VIDEO_PID,
    pat,
    pmt,
    psi_packet,
)

__all__ = ["KeyframePsi", "TsMuxer", "video_start"]


# What a packet's dict of further encodings costs, made for its TS bytes.
_EMPTY_DICT = getsizeof({0: 0})

log = Logger("lal_twisted.media.ts")

_STREAM_TYPES = {Codec.H264: 0x1B, Codec.H265: 0x24, Codec.AAC: 0x0F}
_VIDEO_STREAM_ID = 0xE0
_AUDIO_STREAM_ID = 0xC0
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

# For encode_many's frames of one NAL unit: what goes before the NAL unit (the
# AUD and a start code), the NAL types (by h265) such a frame is not written
# directly for: an AUD (dropped: the muxer writes its own) and an SPS (no
# parameter sets added), and those (IDR / IRAP) that get the parameter sets.
_START_AUD = {codec: aud + START_CODE for codec, aud in AUD.items()}
_NO_SINGLE: dict[bool, tuple[int, ...]] = {False: (9, 7), True: (35, 33)}
_RANDOM_ACCESS = {False: range(5, 6), True: range(16, 24)}
_U32 = struct.Struct(">I").unpack_from
_NO_FRAMES: tuple[bool, bool, int, bytes, bytes, tuple[int, ...], range] = (
    False, False, 0, b"", b"", (), range(0))
_SOUND_AAC = int(SoundFormat.AAC)


def video_start(data: bytes) -> int:
    """Where the first video TS packet is in ``data`` (a keyframe's bytes, which
    may start with audio held before it); ``len(data)`` if there is none."""
    pos = 0
    end = len(data)
    while pos < end and ((data[pos + 1] & 0x1F) << 8 | data[pos + 2]) != VIDEO_PID:
        pos += TS_PACKET_SIZE
    return pos


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
        # The AAC configuration last looked at, and its ADTS headers (None: unusable).
        self._adts: tuple[bytes, AdtsWriter | None] = (b"", None)
        self._skipped: set[str] = set()
        self._video: VideoTrack | None = None
        self._audio: AudioTrack | None = None
        self._params: tuple[VideoTrack | None, bytes] = (None, b"")
        self._seen_video: VideoTrack | None = None
        self._seen_audio: AudioTrack | None = None
        self._adts_sizes: dict[int, bytes] = {}  # the ADTS headers made, by frame size
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
            made = 0
            pairs = []
            for packet in packets:
                before = packet.cached_size()
                pairs.append((packet, packet.encoded(self)))
                made += packet.cached_size() - before
            self.made_bytes = made
            return [pair for pair in pairs if pair[1]]
        single_nal, h265, legacy_id, plain, with_params, not_single, random_access = \
            self._frames
        group_audio = self._group_audio and not self.live
        adts_sizes = self._adts_sizes
        adts_writer = self._adts[1]
        frame_ms = self._audio_frame_ms
        out: list[tuple[AVPacket, bytes]] = []
        append = out.append
        made = 0
        for packet in packets:
            data: bytes | None = None
            first = packet._first_encoder
            more = packet._more_encodings
            if first is self or (more is not None and self in more):
                # Encoded already by this muxer (a TS recording read it first).
                data = packet.encoded(self)
                if data:
                    append((packet, data))
                continue
            # Not yet in TS: encoded here, also when another format (the RTMP
            # players' chunks) was made first.
            payload = packet.payload
            # The fast paths take raw frames only (AACPacketType / AVCPacketType
            # 1): sequence headers, empty tags and anything else go to encode().
            if packet.kind == AUDIO:
                end = len(payload)
                if (group_audio and 2 < end <= MAX_ADTS_PAYLOAD + 2
                        and payload[0] >> 4 == _SOUND_AAC and payload[1] == 1):
                    size = end - 2
                    adts = adts_sizes.get(size)
                    if adts is None:
                        assert adts_writer is not None  # group_audio: a usable AAC track
                        adts = adts_writer.header(size)
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
                    if nal not in not_single:
                        # A legacy tag of one NAL unit: written from its 10th
                        # byte on, after the AUD (and parameter sets) and a
                        # start code, as access_unit() writes it.
                        keyframe = packet.is_keyframe
                        params = keyframe or nal in random_access
                        data = self._video_pes(packet, keyframe, packet.dts + packet.cts,
                                               (with_params if params else plain,
                                                payload[9:]))
            if data is None:
                data = self.encode(packet)
            if first is None:
                packet._first_encoder = self
                packet._first_encoding = data
                made += len(data) + BYTES_HEADER  # as cached_size counts it
            else:
                if more is None:
                    more = packet._more_encodings = {}
                    made += _EMPTY_DICT
                more[self] = data
                if data is not packet._first_encoding:
                    made += len(data) + BYTES_HEADER
            if data:
                append((packet, data))
        self.made_bytes = made
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
            # encoders send) are written in line; their codec id, what goes in
            # front of the NAL unit without and with the parameter sets, the NAL
            # types not written so, those that get the parameter sets.
            h265 = video.codec == Codec.H265
            self._frames = (True, h265, 12 if h265 else 7, _START_AUD[video.codec],
                            AUD[video.codec] + self._param_sets(video) + START_CODE,
                            _NO_SINGLE[h265], _RANDOM_ACCESS[h265])
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
        return self._adts_writer(track) is not None

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
        return (psi_packet(0, cc, pat())
                + psi_packet(PMT_PID, cc, pmt(self._pmt_version, pcr_pid, streams)))

    def _adts_writer(self, track: AudioTrack) -> AdtsWriter | None:
        config, writer = self._adts
        if config != track.config or writer is None:
            try:
                writer = AdtsWriter(track.config)
            except AacError as e:
                if track.config:
                    self._skip("audio", f"AAC configuration unusable: {e}")
                writer = None
            self._adts = (track.config, writer)
            if writer is not None:
                self._audio_frame_ms = writer.frame_ms
                # [ADTS header, frame] per frame held: a PES is due at this many.
                self._held_pieces = 2 * max(1, min(
                    _AUDIO_FRAMES_PER_PES, int(_AUDIO_PES_MAX_MS // self._audio_frame_ms)))
                self._adts_sizes = writer.headers
        return writer

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
        if track is None:
            return b""
        span = coded_frame(packet, track.codec)
        if span is None:
            return b""
        start, end, cts = span
        keyframe = packet.is_keyframe
        try:
            # The PES payload: [AUD, (parameter sets), NAL units...].
            parts = access_unit(packet.payload, start, end, track.nal_length_size,
                                track.codec == Codec.H265, keyframe, self._param_sets(track),
                                AUD[track.codec])
        except AnnexBError:
            return b""  # a frame whose NAL lengths run past its end: not decodable
        if not parts:
            return b""
        return self._video_pes(packet, keyframe, packet.dts + cts, parts)

    def _video_pes(self, packet: AVPacket, keyframe: bool, pts: int,
                   parts: Sequence[bytes]) -> bytes:
        """A video frame's TS packets: ``parts`` is its Annex-B data, ``pts`` in
        milliseconds (the packer keeps the low 33 bits of the 90 kHz times)."""
        dts = packet.dts * 90
        data, self._cc[VIDEO_PID] = _pes_packets(
            VIDEO_PID, (self._cc[VIDEO_PID] + 1) & 0x0F, _VIDEO_STREAM_ID,
            pts * 90, dts, dts, keyframe, parts)
        if self._held and (keyframe or self.live):
            # The audio held so far goes out first: an HLS segment starting at
            # this keyframe holds no audio from before it.
            audio = self._release(abs(packet.dts - self._held_last) < _STALE_AUDIO_MS)
            return audio + data
        return data

    def _param_sets(self, track: VideoTrack) -> bytes:
        cached_track, data = self._params
        if cached_track is not track:
            data = parameter_sets(track.vps, track.sps, track.pps)
            self._params = (track, data)
        return data

    def _encode_audio(self, packet: AVPacket) -> bytes:
        tracks = self.source.tracks
        if tracks.video is not self._seen_video or tracks.audio is not self._seen_audio:
            self._refresh()
        writer = self._adts[1]
        if self._audio is None or writer is None:
            return b""
        span = coded_frame(packet, Codec.AAC)
        if span is None:
            return b""
        start, end, _cts = span
        size = end - start
        if size > MAX_ADTS_PAYLOAD:
            return b""
        adts = writer.header(size)
        payload = packet.payload
        frame = payload[start:end] if start or end != len(payload) else payload
        dts = packet.dts
        if self._video is None or self.live:
            out = self._release(abs(dts - self._held_last) < _STALE_AUDIO_MS) \
                if self._held else b""
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
            step = dts - self._held_last
            if (abs(step - self._audio_frame_ms) > _AUDIO_JITTER_MS
                    or self._held_bytes + size > _AUDIO_PES_MAX):
                out = self._release(abs(step) < _STALE_AUDIO_MS)
                held = self._held
        if not held:
            self._held_pts = dts * 90
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

