"""MPEG-TS (ISO/IEC 13818-1), sans-IO: the program tables (:mod:`.psi`), PES
packets cut into TS packets (:mod:`.pes`), and the muxer that turns a
stream's AVPackets into them (:mod:`.muxer`)."""

from lal_twisted.media.ts.muxer import KeyframePsi, TsMuxer, video_start
from lal_twisted.media.ts.pes import PACKER
from lal_twisted.media.ts.psi import AUDIO_PID, PMT_PID, TS_PACKET_SIZE, VIDEO_PID, crc32_mpeg2

__all__ = ["AUDIO_PID", "PACKER", "PMT_PID", "TS_PACKET_SIZE", "VIDEO_PID", "KeyframePsi",
           "TsMuxer", "crc32_mpeg2", "video_start"]
