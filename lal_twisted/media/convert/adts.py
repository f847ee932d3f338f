"""AAC between FLV's raw frames (the AudioSpecificConfig in the sequence
header) and ADTS, where each frame carries a 7-byte header saying the same.

ADTS can say only part of what an AudioSpecificConfig can: object types 1 to
4 (Main, LC, SSR, LTP) as the core, the rates of the index table, channel
configurations 0 to 7.  HE-AAC is written as its LC core, as is usual in
ADTS (decoders find SBR and PS in the frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from lal_twisted.media.aac import (
    EXPLICIT_RATE_INDEX,
    SAMPLE_RATES,
    AacError,
    AscInfo,
    parse_audio_specific_config,
)
from lal_twisted.media.convert.body import FlvBody, audio_body, audio_sequence_start, coded_frame
from lal_twisted.media.packet import AUDIO, AVPacket
from lal_twisted.media.tags import Codec

__all__ = ["ADTS_HEADER_SIZE", "MAX_ADTS_PAYLOAD", "AdtsFrame", "AdtsWriter", "adts_frames",
           "adts_header", "adts_to_flv"]

ADTS_HEADER_SIZE = 7
_MAX_ADTS_FRAME = (1 << 13) - 1  # frame_length is 13 bits, header included
MAX_ADTS_PAYLOAD = _MAX_ADTS_FRAME - ADTS_HEADER_SIZE
_LENGTH_FIELD = 0x1FFF << 13


def adts_header(info: AscInfo, payload_length: int) -> bytes:
    """A 7-byte ADTS header (no CRC) for one raw AAC frame of ``payload_length``
    bytes.  Buffer fullness is 0x7FF (variable bit rate); what ADTS cannot
    say raises :class:`~lal_twisted.media.aac.AacError`."""
    core_type = info.core_object_type or info.object_type
    if not 1 <= core_type <= 4:
        raise AacError(f"audio object type {core_type} cannot be carried in ADTS")
    freq_index = info.freq_index
    if freq_index == EXPLICIT_RATE_INDEX or not 0 <= freq_index < len(SAMPLE_RATES):
        rate = info.core_sample_rate or info.sample_rate
        if rate not in SAMPLE_RATES:
            raise AacError(f"sampling rate {rate} cannot be carried in ADTS")
        freq_index = SAMPLE_RATES.index(rate)
    if not 0 <= info.channels <= 7:
        raise AacError(f"channel configuration {info.channels} cannot be carried in ADTS")
    frame_length = payload_length + ADTS_HEADER_SIZE
    if payload_length < 0 or frame_length > _MAX_ADTS_FRAME:
        raise AacError(f"AAC frame of {payload_length} bytes does not fit in ADTS")
    header = (
        (0xFFF << 44)  # syncword
        | (0 << 43)  # ID: MPEG-4
        | (0 << 41)  # layer
        | (1 << 40)  # protection_absent: no CRC
        | ((core_type - 1) << 38)  # profile
        | (freq_index << 34)
        | (0 << 33)  # private bit
        | (info.channels << 30)
        | (0 << 26)  # original/copy, home, copyright id bit and start
        | (frame_length << 13)
        | (0x7FF << 2)  # buffer fullness: VBR
        | 0  # number_of_raw_data_blocks_in_frame - 1
    )
    return header.to_bytes(ADTS_HEADER_SIZE, "big")


class AdtsWriter:
    """The ADTS headers of one AudioSpecificConfig, by frame size.

    ``base`` is the header as an int with frame length 0, ``headers`` the
    headers made so far (the TS muxer's loop reads both directly).  Raises
    :class:`~lal_twisted.media.aac.AacError` for a configuration that cannot
    be parsed or that ADTS cannot say.
    """

    __slots__ = ("info", "base", "headers")

    def __init__(self, config: bytes) -> None:
        self.info = parse_audio_specific_config(config)
        self.base = int.from_bytes(adts_header(self.info, 0), "big") & ~_LENGTH_FIELD
        self.headers: dict[int, bytes] = {}

    def header(self, size: int) -> bytes:
        """The header of a raw frame of ``size`` bytes (0 to :data:`MAX_ADTS_PAYLOAD`)."""
        header = self.headers.get(size)
        if header is None:
            if not 0 <= size <= MAX_ADTS_PAYLOAD:
                raise AacError(f"AAC frame of {size} bytes does not fit in ADTS")
            header = self.headers[size] = (self.base | ((size + 7) << 13)).to_bytes(7, "big")
        return header

    def frame(self, packet: AVPacket) -> bytes:
        """``packet``'s raw AAC frame as ADTS (b"" when it holds none)."""
        span = coded_frame(packet, Codec.AAC)
        if span is None:
            return b""
        start, end, _cts = span
        return self.header(end - start) + packet.payload[start:end]

    @property
    def frame_ms(self) -> float:
        """How long one frame (1024 samples at the core rate) plays, in ms."""
        return 1024000 / (self.info.core_sample_rate or self.info.sample_rate)


@dataclass(frozen=True, slots=True)
class AdtsFrame:
    """One frame of an ADTS stream: the AudioSpecificConfig its header says
    and the raw frame (CRC, if any, left out)."""

    config: bytes
    data: bytes


def adts_frames(data: bytes) -> Iterator[AdtsFrame]:
    """The frames of an ADTS stream.  Raises
    :class:`~lal_twisted.media.aac.AacError` where the stream loses its sync,
    ends inside a frame, or packs several raw data blocks in one frame."""
    pos = 0
    end = len(data)
    while pos < end:
        if pos + ADTS_HEADER_SIZE > end:
            raise AacError(f"ADTS stream ends inside a header at byte {pos}")
        fields = int.from_bytes(data[pos:pos + ADTS_HEADER_SIZE], "big")
        if fields >> 44 != 0xFFF:
            raise AacError(f"no ADTS sync word at byte {pos}")
        protection_absent = (fields >> 40) & 1
        profile = (fields >> 38) & 0x03
        freq_index = (fields >> 34) & 0x0F
        channels = (fields >> 30) & 0x07
        length = (fields >> 13) & 0x1FFF
        blocks = fields & 0x03
        header = ADTS_HEADER_SIZE + (0 if protection_absent else 2)
        if blocks:
            raise AacError(f"ADTS frame at byte {pos} holds {blocks + 1} raw data blocks "
                           "(one per frame is supported)")
        if length < header or pos + length > end:
            raise AacError(f"ADTS frame at byte {pos} runs past the end of the stream"
                           if length >= header else f"ADTS frame length {length} at byte {pos}")
        if freq_index >= len(SAMPLE_RATES):
            raise AacError(f"ADTS frame at byte {pos} with the reserved rate index {freq_index}")
        # AudioSpecificConfig: object type (profile + 1), rate index, channels.
        config = ((profile + 1) << 11 | freq_index << 7 | channels << 3).to_bytes(2, "big")
        yield AdtsFrame(config, data[pos + header:pos + length])
        pos += length


def adts_to_flv(data: bytes, enhanced_rtmp: bool = False) -> Iterator[FlvBody]:
    """An ADTS stream as FLV bodies: a sequence header (AudioSpecificConfig)
    first and again wherever the frames' headers change, then a frame per
    ADTS frame, each with its duration."""
    config = b""
    duration = 0.0
    for frame in adts_frames(data):
        if frame.config != config:
            config = frame.config
            info = parse_audio_specific_config(config)
            duration = 1024000 / info.sample_rate
            yield FlvBody(AUDIO, audio_sequence_start(Codec.AAC, config, enhanced_rtmp),
                          header=True)
        yield FlvBody(AUDIO, audio_body(Codec.AAC, frame.data, enhanced_rtmp),
                      duration=duration)
