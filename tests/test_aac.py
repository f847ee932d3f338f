"""Tests for lal_twisted.media.aac."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mediatools import made_by

from lal_twisted.media import aac, convert
from lal_twisted.media.aac import AacError, AscInfo

FFMPEG = shutil.which("ffmpeg") or ("/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None)


@pytest.mark.parametrize(
    ("asc", "object_type", "rate", "channels", "index"),
    [
        ("1210", 2, 44100, 2, 4),
        ("1190", 2, 48000, 2, 3),
        ("1408", 2, 16000, 1, 8),  # 00010 1000 0001 000
        ("1388", 2, 22050, 1, 7),
        ("15b0", 2, 8000, 6, 11),
        ("0a10", 1, 44100, 2, 4),  # AAC Main
        # ffmpeg's native encoder appends a backward-compatible SBR sync extension
        # (0x2b7, "no SBR"); it is not examined.
        ("121056e500", 2, 44100, 2, 4),
        ("119056e500", 2, 48000, 2, 3),
    ],
)
def test_parse_asc(asc: str, object_type: int, rate: int, channels: int, index: int) -> None:
    info = aac.parse_audio_specific_config(bytes.fromhex(asc))
    assert (info.object_type, info.sample_rate, info.channels, info.freq_index) == (
        object_type,
        rate,
        channels,
        index,
    )
    assert info.core_object_type == object_type
    assert info.core_sample_rate == rate


def test_lc_info_and_name() -> None:
    info = aac.parse_audio_specific_config(b"\x12\x10")
    assert info == AscInfo(2, 44100, 2, 4, 2, 44100)
    assert info.profile_name == "LC"


def test_profile_names() -> None:
    assert AscInfo(1, 48000, 2, 3).profile_name == "Main"
    assert AscInfo(5, 48000, 2, 3).profile_name == "HE-AAC (SBR)"
    assert AscInfo(29, 48000, 2, 3).profile_name == "HE-AACv2"
    assert AscInfo(42, 48000, 2, 3).profile_name == "AOT 42"


def _bits(*fields: tuple[int, int]) -> bytes:
    """Pack (width, value) fields MSB first, zero-padded to whole bytes."""
    value = 0
    width = 0
    for size, field in fields:
        value = (value << size) | field
        width += size
    pad = -width % 8
    return (value << pad).to_bytes((width + pad) // 8, "big")


def test_he_aac_explicit_sbr() -> None:
    # AOT 5, core 22050 Hz, stereo, extension 44100 Hz, core AOT 2 (LC).
    data = _bits((5, 5), (4, 7), (4, 2), (4, 4), (5, 2), (3, 0))
    assert data == bytes.fromhex("2b920800")
    info = aac.parse_audio_specific_config(data)
    assert info == AscInfo(5, 44100, 2, 7, 2, 22050)
    assert info.profile_name == "HE-AAC (SBR)"


def test_he_aac_v2_explicit_ps() -> None:
    data = _bits((5, 29), (4, 6), (4, 1), (4, 3), (5, 2), (3, 0))
    assert data == bytes.fromhex("eb098800")
    info = aac.parse_audio_specific_config(data)
    assert info == AscInfo(29, 48000, 1, 6, 2, 24000)
    assert info.profile_name == "HE-AACv2"


def test_escaped_object_type() -> None:
    data = _bits((5, 31), (6, 10), (4, 4), (4, 2))
    info = aac.parse_audio_specific_config(data)
    assert (info.object_type, info.sample_rate, info.channels) == (42, 44100, 2)


def test_explicit_sample_rate() -> None:
    data = _bits((5, 2), (4, 15), (24, 44100), (4, 2), (3, 0))
    info = aac.parse_audio_specific_config(data)
    assert info == AscInfo(2, 44100, 2, 15, 2, 44100)
    # ADTS has no explicit rate but 44100 is in the table.
    assert convert.adts_header(info, 10) == convert.adts_header(AscInfo(2, 44100, 2, 4), 10)
    odd = aac.parse_audio_specific_config(_bits((5, 2), (4, 15), (24, 44000), (4, 2)))
    assert odd.sample_rate == 44000
    with pytest.raises(AacError, match="44000"):
        convert.adts_header(odd, 10)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x12",
        _bits((5, 2), (4, 15), (7, 0)),  # explicit rate cut short
        _bits((5, 31), (6, 10), (5, 0)),  # escaped type, no room for the rest
        _bits((5, 5), (4, 7), (4, 2), (3, 0)),  # SBR without its extension fields
    ],
)
def test_too_short(data: bytes) -> None:
    with pytest.raises(AacError, match="too short"):
        aac.parse_audio_specific_config(data)


def test_invalid_fields() -> None:
    with pytest.raises(AacError, match="reserved"):
        aac.parse_audio_specific_config(_bits((5, 2), (4, 13), (4, 2), (3, 0)))
    with pytest.raises(AacError, match="object type 0"):
        aac.parse_audio_specific_config(b"\x00\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=8))
def test_random_asc_only_raises_aac_error(data: bytes) -> None:
    try:
        aac.parse_audio_specific_config(data)
    except AacError:
        pass


# --- ADTS ------------------------------------------------------------------


# Headers ffmpeg's ADTS muxer wrote for the first frame of a native-encoder stream.
@pytest.mark.parametrize(
    ("asc", "payload_length", "header"),
    [
        ("1210", 338, "fff150802b3ffc"),
        ("1190", 288, "fff14c8024fffc"),
        ("1388", 504, "fff15c403ffffc"),
        ("1408", 514, "fff16040413ffc"),
        ("15b0", 678, "fff16d8055bffc"),
    ],
)
def test_adts_header_vectors(asc: str, payload_length: int, header: str) -> None:
    info = aac.parse_audio_specific_config(bytes.fromhex(asc))
    assert convert.adts_header(info, payload_length) == bytes.fromhex(header)


def test_adts_header_fields() -> None:
    header = convert.adts_header(AscInfo(2, 44100, 2, 4), 100)
    value = int.from_bytes(header, "big")
    assert len(header) == 7
    assert value >> 44 == 0xFFF  # syncword
    assert (value >> 40) & 1 == 1  # no CRC
    assert (value >> 38) & 3 == 1  # LC
    assert (value >> 34) & 0xF == 4
    assert (value >> 30) & 7 == 2
    assert (value >> 13) & 0x1FFF == 107
    assert (value >> 2) & 0x7FF == 0x7FF
    assert value & 3 == 0


def test_adts_he_aac_uses_lc_at_core_rate() -> None:
    info = aac.parse_audio_specific_config(bytes.fromhex("2b920800"))
    assert convert.adts_header(info, 100) == convert.adts_header(AscInfo(2, 22050, 2, 7), 100)
    v2 = aac.parse_audio_specific_config(bytes.fromhex("eb098800"))
    assert convert.adts_header(v2, 100) == convert.adts_header(AscInfo(2, 24000, 1, 6), 100)


def test_adts_errors() -> None:
    lc = AscInfo(2, 44100, 2, 4)
    assert len(convert.adts_header(lc, 8191 - 7)) == 7
    with pytest.raises(AacError):
        convert.adts_header(lc, 8191 - 6)
    with pytest.raises(AacError):
        convert.adts_header(lc, -1)
    with pytest.raises(AacError, match="object type 42"):
        convert.adts_header(AscInfo(42, 44100, 2, 4), 10)
    with pytest.raises(AacError, match="channel"):
        convert.adts_header(AscInfo(2, 44100, 8, 4), 10)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not available")
def test_adts_matches_ffmpeg(tmp_path: Path) -> None:
    from lal_twisted.media import flv
    from lal_twisted.tools import flvfile

    assert FFMPEG is not None
    flv_path = tmp_path / "a.flv"
    adts_path = tmp_path / "a.aac"
    made_by(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=32000",
            "-ac",
            "2",
            "-t",
            "0.5",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ],
        flv_path,
        timeout=60,
    )
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-i",
            str(flv_path),
            "-c:a",
            "copy",
            "-f",
            "adts",
            str(adts_path),
        ],
        check=True,
        timeout=60,
    )
    audio = [t.payload for t in flvfile.iter_file(str(flv_path)) if t.tag_type == flv.TAG_AUDIO]
    assert audio[0][:2] == b"\xaf\x00"
    info = aac.parse_audio_specific_config(audio[0][2:])
    assert (info.object_type, info.sample_rate, info.channels) == (2, 32000, 2)
    rebuilt = b"".join(convert.adts_header(info, len(p) - 2) + p[2:] for p in audio[1:])
    assert rebuilt == adts_path.read_bytes()
