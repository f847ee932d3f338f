"""Conversions between the FLV body form an :class:`~lal_twisted.media.packet.AVPacket`
carries and elementary-stream forms, in one place.

==========  =====================================  =====================================
codec       FLV body (legacy or enhanced RTMP)     elementary stream
==========  =====================================  =====================================
H.264/H.265 AVCC: length-prefixed NAL units; the   Annex-B: start codes; parameter sets
            parameter sets in the sequence header  in front of every keyframe
AAC         raw frames; the AudioSpecificConfig    ADTS: a 7-byte header per frame
            in the sequence header
AV1         the OBUs of a temporal unit; the       low overhead bitstream format: sized
            sequence header OBU in the av1C        OBUs, a temporal delimiter opening
            record                                 each temporal unit
==========  =====================================  =====================================

FLV to elementary stream, per track: :class:`AnnexBWriter`, :class:`AdtsWriter`,
:class:`ObuWriter` (``writer.frame(packet) -> bytes``), or the pieces the TS
muxer uses on its hot path (:func:`coded_frame`, :func:`access_unit`,
:class:`AdtsWriter`'s header table).  Elementary stream to FLV, a whole
stream at a time: :func:`annexb_to_flv`, :func:`adts_to_flv`,
:func:`obu_to_flv`, each yielding :class:`FlvBody` items.
"""

from lal_twisted.media.aac import AacError
from lal_twisted.media.av1 import Av1Error
from lal_twisted.media.convert.adts import (
    ADTS_HEADER_SIZE,
    MAX_ADTS_PAYLOAD,
    AdtsFrame,
    AdtsWriter,
    adts_frames,
    adts_header,
    adts_to_flv,
)
from lal_twisted.media.convert.annexb import (
    AUD,
    START_CODE,
    AnnexBError,
    AnnexBUnit,
    AnnexBWriter,
    access_unit,
    access_units,
    annexb_to_flv,
    annexb_units,
    avcc,
    join_annexb,
    nal_kind,
    parameter_sets,
    split_annexb,
    split_nalus,
)
from lal_twisted.media.convert.body import (
    MAIN_TRACK,
    FlvBody,
    audio_body,
    audio_sequence_start,
    coded_frame,
    video_body,
    video_sequence_start,
)
from lal_twisted.media.convert.obu import (
    TEMPORAL_DELIMITER,
    Obu,
    ObuUnit,
    ObuWriter,
    obu_to_flv,
    obu_units,
    split_obus,
    temporal_unit,
)

__all__ = [
    "ADTS_HEADER_SIZE", "AUD", "CONVERSION_ERRORS", "MAIN_TRACK", "MAX_ADTS_PAYLOAD",
    "START_CODE", "TEMPORAL_DELIMITER", "AacError", "AdtsFrame", "AdtsWriter", "AnnexBError",
    "AnnexBUnit", "AnnexBWriter", "Av1Error", "FlvBody", "Obu", "ObuUnit", "ObuWriter",
    "access_unit", "access_units", "adts_frames", "adts_header", "adts_to_flv",
    "annexb_to_flv", "annexb_units", "audio_body", "audio_sequence_start", "avcc",
    "coded_frame", "join_annexb", "nal_kind", "obu_to_flv", "obu_units", "parameter_sets",
    "split_annexb", "split_nalus", "split_obus", "temporal_unit", "video_body",
    "video_sequence_start",
]

# What a conversion raises for malformed or unsayable input (all ValueErrors).
CONVERSION_ERRORS = (AnnexBError, AacError, Av1Error)
