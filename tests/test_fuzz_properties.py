"""The fuzz targets (tests/fuzz/targets.py) as hypothesis properties.

Each target gets arbitrary bytes and, for the parsers that need a valid start
to go deep (handshake, session, FLV), bytes behind a valid prefix.  Only the
target's own error classes may escape; the targets check their invariants
(same result for any split of the input, buffers bounded by the input,
stable AMF0 re-encoding) themselves.  ``scripts/fuzz.sh`` runs the same
targets for longer under atheris.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fuzz.targets import ALLOWED, TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lal_twisted.media import amf0, flv
from lal_twisted.rtmp.chunk import encode_message
from lal_twisted.rtmp.handshake import HANDSHAKE_SIZE

_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])

# Valid starts that get past the first checks of each parser.
_C0C1C2 = b"\x03" + bytes(2 * HANDSHAKE_SIZE)
_CONNECT = encode_message(128, 3, 20, 0, 0, amf0.encode(
    "connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"}))
_PUBLISH = encode_message(128, 3, 20, 1, 0, amf0.encode("publish", 0.0, None, "t", "live"))
_PREFIXES: dict[str, list[bytes]] = {
    "handshake_server": [_C0C1C2[:1 + HANDSHAKE_SIZE], _C0C1C2],
    "handshake_client": [_C0C1C2[:1 + HANDSHAKE_SIZE], _C0C1C2],
    "chunk_reader": [_CONNECT],
    "server_session": [_CONNECT, _CONNECT + _PUBLISH],
    "amf0": [amf0.encode("onMetaData")],
    "flv_reader": [flv.file_header()],
    "avpacket": [b"\x01\x00\x00\x00\x00\x17\x01", b"\x00\x00\x00\x00\x00\xaf\x00"],
    "track": [b"\x17\x00\x00\x00\x00\x01\x64", b"\xaf\x00", b"\x9c\x00hvc1"],
    "enhanced": [b"\x96\x10hvc1\x00", b"\x97\x02abc\x06\x20", b"\x95\x20Opus\x00"],
}


def _run(name: str, data: bytes) -> None:
    target: Callable[[bytes], None] = TARGETS[name]
    try:
        target(data)
    except ALLOWED[name]:
        pass


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_any_bytes(name: str) -> None:
    @_SETTINGS
    @given(st.binary(max_size=2048))
    def check(data: bytes) -> None:
        _run(name, data)

    check()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_bytes_after_a_valid_start(name: str) -> None:
    @_SETTINGS
    @given(st.sampled_from(_PREFIXES[name]), st.binary(max_size=2048))
    def check(prefix: bytes, data: bytes) -> None:
        _run(name, prefix + data)

    check()


def test_every_target_has_a_valid_start() -> None:
    assert sorted(_PREFIXES) == sorted(TARGETS) == sorted(ALLOWED)
