"""VP9: the VPCodecConfigurationRecord (``vpcC``) an enhanced-RTMP ``vp09``
sequence start carries, and the picture size of a keyframe.

vpcC (VP codec ISO-BMFF binding, version 1) has no picture size; a VP9
keyframe's uncompressed header has it right after the sync code and colour
config (VP9 bitstream spec section 6.2).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Vp9Config", "Vp9Error", "keyframe_size", "parse_config"]

_SYNC_CODE = 0x498342
_CS_RGB = 7


class Vp9Error(ValueError):
    """Raised for a malformed vpcC record or frame header."""


@dataclass(frozen=True)
class Vp9Config:
    profile: int
    level: int  # 10 x the level number (10, 11, 20 ... 62)
    bit_depth: int
    chroma_subsampling: int

    @property
    def profile_name(self) -> str:
        return f"Profile {self.profile}"


def parse_config(record: bytes) -> Vp9Config:
    """Parse a vpcC record: version 1 with its 3 flag bytes (as ffmpeg and
    the E-RTMP spec write it), or the bare 8-byte body."""
    if len(record) >= 12 and record[0] == 1 and record[1:4] == b"\x00\x00\x00":
        record = record[4:]
    if len(record) < 8:
        raise Vp9Error(f"vpcC record too short ({len(record)} bytes)")
    return Vp9Config(record[0], record[1], record[2] >> 4, (record[2] >> 1) & 0x07)


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP9 frame's uncompressed header when it is a
    shown keyframe, else None."""
    if len(frame) < 10:
        return None
    bits = int.from_bytes(frame[:12], "big")
    total = min(len(frame), 12) * 8
    pos = 0

    def f(count: int) -> int:
        nonlocal pos
        pos += count
        if pos > total:
            raise Vp9Error("truncated VP9 frame header")
        return (bits >> (total - pos)) & ((1 << count) - 1)

    try:
        if f(2) != 2:  # frame_marker
            return None
        profile = f(1) | (f(1) << 1)
        if profile == 3:
            f(1)
        if f(1):  # show_existing_frame
            return None
        if f(1) != 0:  # frame_type: 0 is KEY_FRAME
            return None
        f(2)  # show_frame, error_resilient_mode
        if f(24) != _SYNC_CODE:
            return None
        if profile >= 2:
            f(1)
        if f(3) != _CS_RGB:
            f(1)  # color_range
            if profile in (1, 3):
                f(3)
        elif profile in (1, 3):
            f(1)
        return f(16) + 1, f(16) + 1
    except Vp9Error:
        return None
