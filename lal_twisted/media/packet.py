"""AVPacket: the one in-memory media unit every protocol speaks.

A packet is an FLV tag body (equally, an RTMP audio/video/data message payload)
with its decode timestamp, its composition offset (so ``pts``), the codec its
header names and the keyframe / sequence-header flags.

Output formats turn a packet into bytes through an :class:`Encoder`; the result
is cached on the packet per encoder, so every subscriber of a format writes the
same ``bytes`` object and the work is done at most once per packet and format.
"""

from __future__ import annotations

from sys import getsizeof
from typing import Protocol

from lal_twisted.media import enhanced
from lal_twisted.media.tags import (
    AUDIO,
    DATA,
    VIDEO,
    AudioPacketType,
    AvcPacketType,
    Codec,
    FrameType,
    SoundFormat,
    VideoCodecId,
    VideoPacketType,
    audio_codec_of,
    video_codec_of,
)

__all__ = ["AUDIO", "BYTES_HEADER", "DATA", "VIDEO", "AVPacket", "Encoder", "encoded_size"]

# Plain ints and direct tables: a packet is built for every message a publisher sends.
_AVC_STYLE = (int(VideoCodecId.AVC), int(VideoCodecId.HEVC))  # AVCPacketType + CTS follow
_CTS_FOURCC = (b"avc1", b"hvc1")  # enhanced codecs whose CodedFrames carry a CTS
_KEY = int(FrameType.KEY)
_AVC_SEQUENCE_HEADER = int(AvcPacketType.SEQUENCE_HEADER)
_AVC_NALU = int(AvcPacketType.NALU)
_AVC_END_OF_SEQUENCE = int(AvcPacketType.END_OF_SEQUENCE)
_EX_SEQUENCE_START = int(VideoPacketType.SEQUENCE_START)
_EX_CODED_FRAMES = int(VideoPacketType.CODED_FRAMES)
_EX_SEQUENCE_END = int(VideoPacketType.SEQUENCE_END)
_EX_METADATA = int(VideoPacketType.METADATA)
_EX_TS_SEQUENCE_START = int(VideoPacketType.MPEG2TS_SEQUENCE_START)
_EX_VIDEO_WRAPPED = (int(VideoPacketType.MULTITRACK), int(VideoPacketType.MOD_EX))
_AUDIO_EX_MULTICHANNEL = int(AudioPacketType.MULTICHANNEL_CONFIG)
_EX_AUDIO_WRAPPED = (int(AudioPacketType.MULTITRACK), int(AudioPacketType.MOD_EX))
_COMMAND = int(FrameType.COMMAND)
_AUDIO_EX_SEQUENCE_START = int(AudioPacketType.SEQUENCE_START)
_SOUND_AAC = int(SoundFormat.AAC)
_AAC_SEQUENCE_HEADER = 0  # AACPacketType: 0 AudioSpecificConfig, 1 raw frames
_SOUND_EX_HEADER = int(SoundFormat.EX_HEADER)
_H264, _AAC = Codec.H264, Codec.AAC
BYTES_HEADER = getsizeof(b"")  # what a bytes object costs besides its length: 33 B


class Encoder(Protocol):
    """Turns a packet into the bytes of one output format (RTMP chunks at one
    chunk size, an FLV tag, TS packets...).  Encoders are compared by identity:
    use one shared instance per format and parameters.

    An encoder whose format has several units per packet, each framed per
    session by its sink (RTP packets, which RTSP interleaves with a channel id
    that differs per session), returns a tuple of them: the tuple is cached and
    shared as bytes are."""

    def encode(self, packet: AVPacket) -> bytes: ...


def encoded_size(data: bytes | tuple[bytes, ...]) -> int:
    """Memory an encoding holds, object headers included."""
    if isinstance(data, bytes):
        return len(data) + BYTES_HEADER
    units: tuple[bytes, ...] = data
    return getsizeof(units) + sum(len(unit) + BYTES_HEADER for unit in units)


def _si24(payload: bytes, at: int) -> int:
    value = int.from_bytes(payload[at:at + 3], "big")
    return value - 0x1000000 if value & 0x800000 else value


class AVPacket:
    """One audio, video or script-data message.

    ``kind`` is the FLV tag type / RTMP message type id (:data:`AUDIO`,
    :data:`VIDEO`, :data:`DATA`), ``dts`` the decode time in milliseconds (wide:
    the hub's time does not wrap; see :mod:`lal_twisted.media.clock`),
    ``cts`` the composition offset of H.264/H.265 frames (``pts = dts + cts``),
    ``codec`` the :class:`Codec` the header names (None for data), ``payload``
    the tag body, unchanged from the wire.

    ``is_sequence_header`` marks every packet a late joiner needs before the
    frames: sequence headers, and for enhanced RTMP also the MPEG-2 TS sequence
    start, video Metadata (colorInfo) and audio multichannel config.
    ``header_key`` is None for the stream's main header of its kind (track 0's
    sequence start), else a key telling the other headers apart (kind, packet
    type, FourCC, track ids), so a Stream keeps the latest of each.  In a
    multitrack stream only the main track's (0) keyframes are ``is_keyframe``:
    they start the GOPs a late joiner starts at.
    """

    __slots__ = ("kind", "dts", "cts", "payload", "codec", "is_keyframe",
                 "is_sequence_header", "header_key", "_first_encoder", "_first_encoding",
                 "_more_encodings")

    def __init__(self, kind: int, dts: int, payload: bytes) -> None:
        self.kind = kind
        self.dts = dts
        self.payload = payload
        self.cts = 0
        self.codec: Codec | None = None
        self.is_keyframe = False
        self.is_sequence_header = False
        self.header_key: tuple[int | bytes, ...] | None = None
        # The first format's bytes in two slots (most packets have one format),
        # any further formats in a dict made on demand.
        self._first_encoder: Encoder | None = None
        self._first_encoding = b""
        self._more_encodings: dict[Encoder, bytes] | None = None
        if not payload:
            return
        first = payload[0]
        if kind == VIDEO:
            self.is_keyframe = (first >> 4) & 0x07 == _KEY
            if first & 0x80:  # enhanced RTMP: [IsExHeader:1][FrameType:3][PacketType:4]
                packet_type = first & 0x0F
                if packet_type in _EX_VIDEO_WRAPPED or (first >> 4) & 0x07 == _COMMAND:
                    self._video_wrapped(payload)
                    return
                self.codec = video_codec_of(payload)
                if packet_type == _EX_CODED_FRAMES:
                    if payload[1:5] in _CTS_FOURCC:
                        self.cts = _si24(payload, 5)
                elif packet_type == _EX_SEQUENCE_START:
                    self.is_sequence_header = True
                elif packet_type == _EX_SEQUENCE_END:
                    self.is_keyframe = False
                elif packet_type == _EX_METADATA or packet_type == _EX_TS_SEQUENCE_START:
                    self.is_sequence_header = True
                    self.is_keyframe = False
                    self.header_key = (VIDEO, packet_type, payload[1:5], 0)
            elif first & 0x0F in _AVC_STYLE and len(payload) > 1:
                # [FrameType:4][CodecId:4][AVCPacketType:8][CompositionTime:SI24]
                self.codec = _H264 if first & 0x0F == 7 else Codec.H265
                self.is_sequence_header = payload[1] == _AVC_SEQUENCE_HEADER
                if payload[1] == _AVC_NALU and len(payload) > 4:
                    cts = (payload[2] << 16) | (payload[3] << 8) | payload[4]
                    self.cts = cts - 0x1000000 if cts & 0x800000 else cts
                elif payload[1] == _AVC_END_OF_SEQUENCE:
                    self.is_keyframe = False  # no picture: no GOP starts here
            else:
                self.codec = video_codec_of(payload)
        elif kind == AUDIO:
            fmt = first >> 4
            if fmt == _SOUND_AAC:
                self.codec = _AAC
                self.is_sequence_header = len(payload) > 1 and payload[1] == _AAC_SEQUENCE_HEADER
            else:
                self.codec = audio_codec_of(payload)
                if fmt == _SOUND_EX_HEADER:
                    packet_type = first & 0x0F
                    if packet_type in _EX_AUDIO_WRAPPED:
                        self._audio_wrapped(payload)
                    elif packet_type == _AUDIO_EX_SEQUENCE_START:
                        self.is_sequence_header = True
                    elif packet_type == _AUDIO_EX_MULTICHANNEL:
                        self.is_sequence_header = True
                        self.header_key = (AUDIO, packet_type, payload[1:5], 0)

    def _video_wrapped(self, payload: bytes) -> None:
        """An enhanced video tag with ModEx, multitrack or a command: the first
        track names the codec and carries the composition time."""
        try:
            header = enhanced.parse(payload, video=True)
        except enhanced.EnhancedError:
            self.codec, self.is_keyframe = Codec.UNKNOWN, False
            return
        packet_type, tracks = header.packet_type, header.tracks
        if not tracks:  # a command frame
            self.is_keyframe = False
            return
        first = tracks[0]
        self.codec = video_codec_of(b"\x80" + first.fourcc)
        if self.is_keyframe and all(t.track_id for t in tracks):
            # GOPs follow the main track (0): a late joiner starts at its keyframe.
            self.is_keyframe = packet_type == _EX_SEQUENCE_START
        if packet_type == _EX_CODED_FRAMES:
            if first.fourcc in _CTS_FOURCC and first.end - first.start >= 3:
                self.cts = _si24(payload, first.start)
        elif packet_type in (_EX_SEQUENCE_START, _EX_METADATA, _EX_TS_SEQUENCE_START):
            self.is_sequence_header = True
            if packet_type != _EX_SEQUENCE_START:
                self.is_keyframe = False
            if packet_type != _EX_SEQUENCE_START or first.track_id or len(tracks) > 1:
                self.header_key = (VIDEO, packet_type, first.fourcc,
                                   *(t.track_id for t in tracks))
        elif packet_type == _EX_SEQUENCE_END:
            self.is_keyframe = False

    def _audio_wrapped(self, payload: bytes) -> None:
        """An enhanced audio tag with ModEx or multitrack."""
        try:
            header = enhanced.parse(payload, video=False)
        except enhanced.EnhancedError:
            self.codec = Codec.UNKNOWN
            return
        packet_type, tracks = header.packet_type, header.tracks
        self.codec = audio_codec_of(b"\x90" + tracks[0].fourcc)
        if packet_type in (_AUDIO_EX_SEQUENCE_START, _AUDIO_EX_MULTICHANNEL):
            self.is_sequence_header = True
            if (packet_type != _AUDIO_EX_SEQUENCE_START or tracks[0].track_id
                    or len(tracks) > 1):
                self.header_key = (AUDIO, packet_type, tracks[0].fourcc,
                                   *(t.track_id for t in tracks))

    @property
    def pts(self) -> int:
        """Presentation time in milliseconds: ``dts`` plus the composition offset."""
        return self.dts + self.cts

    def encoded(self, encoder: Encoder) -> bytes:
        """This packet as ``encoder`` writes it: encoded on first use, then shared."""
        if self._first_encoder is encoder:
            return self._first_encoding
        if self._first_encoder is None:
            self._first_encoder = encoder
            data = self._first_encoding = encoder.encode(self)
            return data
        more = self._more_encodings
        if more is None:
            more = self._more_encodings = {}
        data = more.get(encoder)  # type: ignore[assignment]
        if data is None:
            data = more[encoder] = encoder.encode(self)
        return data

    def cached_size(self) -> int:
        """Memory held by the cached encodings, object headers included.

        O(number of formats), for the GOP cache's byte bound; 0 before the
        first encoding.
        """
        if self._first_encoder is None:
            return 0
        more = self._more_encodings
        first = self._first_encoding
        if more is None:
            if type(first) is bytes:
                return len(first) + BYTES_HEADER
            return encoded_size(first)
        # An encoding that is the first one's object (a format that adds bytes
        # to some packets only) costs nothing more.
        return (encoded_size(first) + getsizeof(more)
                + sum(encoded_size(data) for data in more.values() if data is not first))

    def __repr__(self) -> str:
        return (
            f"AVPacket(kind={self.kind}, dts={self.dts}, cts={self.cts}, codec={self.codec}, "
            f"len={len(self.payload)}, key={self.is_keyframe}, "
            f"seq={self.is_sequence_header})"
        )
