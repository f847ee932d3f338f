"""Tests for the sans-IO RTMP handshake (lal_twisted.rtmp.handshake)."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lal_twisted.rtmp.handshake import ClientHandshake, HandshakeError, ServerHandshake

# Keys spelled out independently of the module under test.
SUFFIX = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8,
        0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
        0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip
FP_FULL = b"Genuine Adobe Flash Player 001" + SUFFIX
FMS_FULL = b"Genuine Adobe Flash Media Server 001" + SUFFIX
SIZE = 1536


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_pos(packet: bytes, digest_first: bool) -> int:
    """Digest position: scheme 1 (digest block first) or scheme 0 (key block first)."""
    base = 8 if digest_first else 772
    return base + 4 + sum(packet[base : base + 4]) % 728


def has_digest(packet: bytes, key: bytes, digest_first: bool) -> bool:
    pos = digest_pos(packet, digest_first)
    expected = mac(key, packet[:pos] + packet[pos + 32 :])
    return packet[pos : pos + 32] == expected


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def build_c1(version: bytes, digest_first: bool | None, seed: int = 7) -> bytes:
    """Hand-build a C1; digest_first=None means no digest at all."""
    packet = bytearray(struct.pack(">I", 1234) + version + random.Random(seed).randbytes(1528))
    if digest_first is not None:
        pos = digest_pos(bytes(packet), digest_first)
        packet[pos : pos + 32] = mac(FP_FULL[:30], bytes(packet[:pos] + packet[pos + 32 :]))
    return bytes(packet)


def feed(hs: ServerHandshake | ClientHandshake, data: bytes, cuts: list[int]) -> bytes:
    """Feed data split at the given cut points; return everything the machine emitted."""
    out = b""
    edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in zip(edges, edges[1:], strict=False):
        out += hs.receive(data[start:end])
    return out


def run_pair(
    complex_mode: bool,
    cuts: tuple[list[int], list[int], list[int]] = ([], [], []),
    trailer: bytes = b"",
    seed: int = 1,
) -> tuple[ServerHandshake, ClientHandshake, bytes, bytes, bytes]:
    server = ServerHandshake(random_bytes=seeded(seed), epoch=99)
    client = ClientHandshake(complex=complex_mode, random_bytes=seeded(seed + 1))
    c01 = client.start()
    s012 = feed(server, c01, cuts[0])
    c2 = feed(client, s012, cuts[1])
    assert feed(server, c2 + trailer, cuts[2]) == b""
    return server, client, c01, s012, c2


@pytest.mark.parametrize("complex_mode", [True, False])
def test_pair_completes(complex_mode: bool) -> None:
    server, client, c01, s012, c2 = run_pair(complex_mode)
    assert server.done and client.done
    assert server.complex is complex_mode
    assert client.server_complex is complex_mode
    assert len(c01) == 1 + SIZE and len(s012) == 1 + 2 * SIZE and len(c2) == SIZE
    assert server.leftover() == b"" and client.leftover() == b""


cut_lists = st.lists(st.integers(min_value=0, max_value=4 * SIZE), max_size=6)


@settings(max_examples=60, deadline=None)
@given(complex_mode=st.booleans(), a=cut_lists, b=cut_lists, c=cut_lists, trailer=st.binary())
def test_any_split_gives_same_result(
    complex_mode: bool, a: list[int], b: list[int], c: list[int], trailer: bytes
) -> None:
    whole = run_pair(complex_mode, trailer=trailer)
    split = run_pair(complex_mode, cuts=(a, b, c), trailer=trailer)
    assert split[2:] == whole[2:]
    for ref, got in ((whole[0], split[0]), (whole[1], split[1])):
        assert got.done and ref.done
        assert got.leftover() == ref.leftover()
    assert split[0].leftover() == trailer
    assert split[0].complex is complex_mode


def test_byte_by_byte() -> None:
    server, client, _, _, _ = run_pair(True, cuts=(list(range(SIZE + 2)), [], []))
    assert server.done and server.complex


def test_complex_digests_validate_independently() -> None:
    _, _, c01, s012, c2 = run_pair(True)
    c1, s1, s2 = c01[1:], s012[1 : 1 + SIZE], s012[1 + SIZE :]
    assert c01[0] == 3 and s012[0] == 3
    # C1: non-zero version, digest-first scheme keyed with the 30-byte FP key.
    assert any(c1[4:8])
    assert has_digest(c1, FP_FULL[:30], digest_first=True)
    # S1: non-zero version, digest at the same scheme keyed with the 36-byte FMS key.
    assert any(s1[4:8])
    assert struct.unpack(">I", s1[:4])[0] == 99
    assert has_digest(s1, FMS_FULL[:36], digest_first=True)
    # S2 is signed with a key derived from C1's digest.
    c1_pos = digest_pos(c1, True)
    s2_key = mac(FMS_FULL, c1[c1_pos : c1_pos + 32])
    assert s2[-32:] == mac(s2_key, s2[:-32])
    # C2 is signed with a key derived from S1's digest.
    s1_pos = digest_pos(s1, True)
    c2_key = mac(FP_FULL, s1[s1_pos : s1_pos + 32])
    assert c2[-32:] == mac(c2_key, c2[:-32])


def test_key_first_scheme_detected() -> None:
    c1 = build_c1(b"\x09\x00\x7c\x02", digest_first=False)
    assert not has_digest(c1, FP_FULL[:30], digest_first=True)
    server = ServerHandshake(random_bytes=seeded(3))
    out = server.receive(b"\x03" + c1)
    assert server.complex
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert has_digest(s1, FMS_FULL[:36], digest_first=False)
    c1_pos = digest_pos(c1, False)
    assert s2[-32:] == mac(mac(FMS_FULL, c1[c1_pos : c1_pos + 32]), s2[:-32])


def test_simple_c1_is_echoed() -> None:
    c1 = build_c1(bytes(4), digest_first=None)
    server = ServerHandshake(random_bytes=seeded(4), epoch=0x1_0000_0005)
    out = server.receive(b"\x03" + c1)
    assert not server.complex
    assert len(out) == 1 + 2 * SIZE
    assert out[0] == 3
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert s1[:4] == b"\x00\x00\x00\x05" and s1[4:8] == bytes(4)
    assert s2 == c1
    assert server.receive(s1) == b""
    assert server.done


def test_zero_version_with_valid_digest_is_simple() -> None:
    c1 = build_c1(bytes(4), digest_first=True)
    server = ServerHandshake()
    out = server.receive(b"\x03" + c1)
    assert not server.complex and out[1 + SIZE :] == c1


def test_bad_digest_falls_back_to_simple() -> None:
    c1 = bytearray(build_c1(b"\x0c\x00\x0d\x0e", digest_first=True))
    c1[digest_pos(bytes(c1), True)] ^= 0xFF
    server = ServerHandshake()
    out = server.receive(b"\x03" + bytes(c1))
    assert not server.complex and out[1 + SIZE :] == bytes(c1)


def test_random_c1_is_simple() -> None:
    c1 = random.Random(5).randbytes(SIZE)
    server = ServerHandshake()
    out = server.receive(b"\x03" + c1)
    assert not server.complex
    assert out[1 + SIZE :] == c1


def test_everything_in_one_call_with_pipelined_data() -> None:
    c1 = build_c1(b"\x0c\x00\x0d\x0e", digest_first=True)
    chunk_data = b"\x03\x00\x00\x00\x00\x00\x9b\x14\x00\x00\x00\x00connect..."
    server = ServerHandshake()
    out = server.receive(b"\x03" + c1 + bytes(SIZE) + chunk_data)
    assert len(out) == 1 + 2 * SIZE
    assert server.done and server.complex
    assert server.leftover() == chunk_data
    assert server.receive(b"more") == b""
    assert server.leftover() == chunk_data + b"more"


def test_leftover_empty_before_done() -> None:
    server = ServerHandshake()
    server.receive(b"\x03" + bytes(SIZE) + bytes(100))
    assert not server.done and server.leftover() == b""


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n"])
def test_http_request_rejected_on_first_byte(request_line: bytes) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match="HTTP") as info:
        server.receive(request_line)
    assert f"0x{request_line[0]:02x}" in str(info.value)
    with pytest.raises(HandshakeError, match="already failed"):
        server.receive(b"\x03")


def test_unknown_version_rejected() -> None:
    with pytest.raises(HandshakeError, match="0x05"):
        ServerHandshake().receive(b"\x05" + bytes(SIZE))


def test_encrypted_version_rejected() -> None:
    with pytest.raises(HandshakeError, match="0x06.*encrypted"):
        ServerHandshake().receive(b"\x06")


def test_tls_client_rejected() -> None:
    with pytest.raises(HandshakeError, match="TLS"):
        ServerHandshake().receive(b"\x16\x03\x01\x02\x00")


def test_client_rejects_bad_s0() -> None:
    client = ClientHandshake()
    client.start()
    with pytest.raises(HandshakeError, match="0x06"):
        client.receive(b"\x06" + bytes(10))


def test_client_echoes_s1_from_simple_server() -> None:
    client = ClientHandshake(complex=True, random_bytes=seeded(6))
    c01 = client.start()
    s1 = struct.pack(">I", 7) + bytes(4) + random.Random(8).randbytes(SIZE - 8)
    c2 = client.receive(b"\x03" + s1 + c01[1:] + b"pipelined")
    assert c2 == s1
    assert client.done and not client.server_complex
    assert client.leftover() == b"pipelined"


def test_client_c1_versions() -> None:
    simple = ClientHandshake(complex=False).start()[1:]
    assert simple[4:8] == bytes(4)
    complex_c1 = ClientHandshake(complex=True).start()[1:]
    assert complex_c1[4:8] == b"\x0c\x00\x0d\x0e"


def test_client_usage_errors() -> None:
    client = ClientHandshake()
    with pytest.raises(RuntimeError):
        client.receive(b"\x03")
    client.start()
    with pytest.raises(RuntimeError):
        client.start()
