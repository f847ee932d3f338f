"""RTMP handshake state machines, free of I/O.

RTMP opens with C0/C1/C2 from the client and S0/S1/S2 from the server. C0 and S0
are a single version byte (3); the other packets are 1536 bytes each::

    C1/S1:  time (4) | version (4) | 1528 bytes
    C2/S2:  1536 bytes answering the peer's C1/S1

The *simple* handshake of the published specification puts zeros in the version
field and answers with an echo of the peer's packet. The *complex* (digest)
handshake, introduced by Flash Player 9 and used by most real encoders, puts a
non-zero version there and hides an HMAC-SHA256 digest in the 1528 bytes. Those
bytes are two 764-byte blocks, a "key" block and a "digest" block, in either
order. The digest block starts with four bytes whose sum, modulo 728, gives the
digest's position after them:

    scheme 0 (key block first):    offset bytes at 772..775, digest at 776 + n
    scheme 1 (digest block first): offset bytes at 8..11,    digest at 12 + n

The answer packet (C2/S2) is then random data whose last 32 bytes are signed
with a key derived from the peer's digest. Some clients refuse to go on unless
the server answers in kind, so the server speaks whichever flavour it is given.

Both classes follow the sans-IO pattern: feed received bytes to ``receive()``
and write whatever it returns to the peer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

__all__ = [
    "FMS_KEY",
    "FP_KEY",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
]

RandomBytes = Callable[[int], bytes]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_SUFFIX = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_SUFFIX
"""Flash Player key (62 bytes); its first 30 bytes sign C1, all of it derives the C2 key."""
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_SUFFIX
"""Flash Media Server key (68 bytes); its first 36 bytes sign S1, all of it derives the S2 key."""
_FP_KEY_PARTIAL = FP_KEY[:30]
_FMS_KEY_PARTIAL = FMS_KEY[:36]

# Version fields advertised in a digest-carrying C1/S1; any non-zero value works.
_CLIENT_VERSION = bytes((0x0C, 0x00, 0x0D, 0x0E))
_SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))

_SCHEME_KEY_FIRST = 0
_SCHEME_DIGEST_FIRST = 1
# Where each scheme keeps the four bytes that locate the digest.
_OFFSET_FIELD = {_SCHEME_KEY_FIRST: 772, _SCHEME_DIGEST_FIRST: 8}
# Schemes in the order they are tried; digest-first is what most clients send.
_SCHEMES = (_SCHEME_DIGEST_FIRST, _SCHEME_KEY_FIRST)

# C0 values of the encrypted (RTMPE) handshake variants.
_ENCRYPTED_VERSIONS = frozenset((6, 8))


class HandshakeError(Exception):
    """The peer sent something that cannot start an RTMP session."""


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _random(random_bytes: RandomBytes, n: int) -> bytes:
    """Call the injected random source, making sure it honours the length."""
    data = random_bytes(n)
    if len(data) != n:
        raise ValueError(f"random_bytes({n}) returned {len(data)} bytes")
    return bytes(data)


def _digest_offset(packet: bytes | bytearray, scheme: int) -> int:
    """Position of the digest inside a C1/S1 packet for the given scheme."""
    field = _OFFSET_FIELD[scheme]
    return field + 4 + sum(packet[field : field + 4]) % 728


def _compute_digest(packet: bytes | bytearray, scheme: int, key: bytes) -> bytes:
    """HMAC of the packet with the 32 digest bytes left out."""
    pos = _digest_offset(packet, scheme)
    return _hmac_sha256(key, bytes(packet[:pos]) + bytes(packet[pos + DIGEST_SIZE :]))


def _find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Return (scheme, digest) if the packet carries a digest valid under key."""
    for scheme in _SCHEMES:
        pos = _digest_offset(packet, scheme)
        found = packet[pos : pos + DIGEST_SIZE]
        if hmac.compare_digest(found, _compute_digest(packet, scheme, key)):
            return scheme, found
    return None


def _make_digest_packet(
    time: int, version: bytes, scheme: int, key: bytes, random_bytes: RandomBytes
) -> bytes:
    """Build a C1/S1 carrying a digest at the scheme's position."""
    packet = bytearray(struct.pack(">I", time & 0xFFFFFFFF) + version)
    packet += _random(random_bytes, HANDSHAKE_SIZE - 8)
    pos = _digest_offset(packet, scheme)
    packet[pos : pos + DIGEST_SIZE] = _compute_digest(packet, scheme, key)
    return bytes(packet)


def _make_simple_packet(time: int, random_bytes: RandomBytes) -> bytes:
    """Build a C1/S1 for the simple handshake: time, four zero bytes, random."""
    return (
        struct.pack(">I", time & 0xFFFFFFFF)
        + bytes(4)
        + _random(random_bytes, HANDSHAKE_SIZE - 8)
    )


def _make_signed_answer(peer_digest: bytes, full_key: bytes, random_bytes: RandomBytes) -> bytes:
    """Build a C2/S2: random bytes signed with a key derived from the peer's digest."""
    body = _random(random_bytes, HANDSHAKE_SIZE - DIGEST_SIZE)
    return body + _hmac_sha256(_hmac_sha256(full_key, peer_digest), body)


def _check_client_version(c0: int) -> None:
    """Reject a C0 we cannot serve, guessing what the peer really is."""
    if c0 == RTMP_VERSION:
        return
    if c0 in _ENCRYPTED_VERSIONS:
        raise HandshakeError(
            f"RTMP version 0x{c0:02x} requests an encrypted (RTMPE) handshake, "
            "which is not supported"
        )
    if c0 in b"GPHO":
        raise HandshakeError(
            f"unsupported RTMP version 0x{c0:02x} ({chr(c0)!r}): "
            "looks like an HTTP request, not an RTMP client"
        )
    if c0 == 0x16:
        raise HandshakeError(
            "unsupported RTMP version 0x16: looks like a TLS handshake "
            "(RTMPS client on a plain RTMP port?)"
        )
    raise HandshakeError(f"unsupported RTMP version 0x{c0:02x} (not an RTMP client?)")


class _Feeder:
    """Accumulates exactly the bytes a fixed-size packet needs, no more."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def fill(self, data: bytes, pos: int, size: int) -> int:
        """Copy up to size - len(buf) bytes from data[pos:]; return the new pos."""
        take = data[pos : pos + size - len(self.buf)]
        self.buf += take
        return pos + len(take)

    def take(self) -> bytes:
        packet = bytes(self.buf)
        self.buf.clear()
        return packet


_WAIT_PACKET = 0  # C0+C1 (server) or S0+S1 (client)
_WAIT_ECHO = 1  # C2 (server) or S2 (client)
_DONE = 2


class _Handshake:
    """The machine both sides run: take the peer's version byte and 1536-byte
    packet, answer it, take the peer's 1536-byte echo, then pass bytes through.

    Subclasses check the version byte (``_check_version``) and build the answer
    (``_answer``).
    """

    def __init__(self, random_bytes: RandomBytes) -> None:
        self._random_bytes = random_bytes
        self._state = _WAIT_PACKET
        self._feeder = _Feeder()
        self._leftover = bytearray()
        self._error: HandshakeError | None = None
        self.done = False

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the peer; returns bytes to send now (may be b"").

        Raises HandshakeError if the peer is not speaking plain RTMP; the
        connection should then be dropped. Once failed, every later call raises.
        """
        if self._error is not None:
            raise HandshakeError(f"handshake already failed: {self._error}")
        try:
            return self._receive(data)
        except HandshakeError as exc:
            self._error = exc
            raise

    def leftover(self) -> bytes:
        """Bytes received after the handshake (the start of the chunk stream).

        Empty until ``done``. Bytes passed to ``receive()`` after completion are
        appended here too, though callers normally route them elsewhere by then.
        """
        return bytes(self._leftover)

    def _check_version(self, version: int) -> None:
        raise NotImplementedError

    def _answer(self, packet: bytes) -> bytes:
        raise NotImplementedError

    def _receive(self, data: bytes) -> bytes:
        if self._state == _DONE:
            self._leftover += data
            return b""
        out = b""
        pos = 0
        if self._state == _WAIT_PACKET:
            pos = self._feeder.fill(data, pos, 1 + HANDSHAKE_SIZE)
            if self._feeder.buf:
                # Check the version byte at once: an HTTP client never sends 1537 bytes.
                self._check_version(self._feeder.buf[0])
            if len(self._feeder.buf) < 1 + HANDSHAKE_SIZE:
                return b""
            out = self._answer(self._feeder.take()[1:])
            self._state = _WAIT_ECHO
        if self._state == _WAIT_ECHO:
            # The echo (C2/S2) is not validated: real peers disagree about what it holds.
            pos = self._feeder.fill(data, pos, HANDSHAKE_SIZE)
            if len(self._feeder.buf) == HANDSHAKE_SIZE:
                self._feeder.take()
                self._state = _DONE
                self.done = True
                self._leftover += data[pos:]
        return out


class ServerHandshake(_Handshake):
    """Server side of the handshake: answers C0+C1 with S0+S1+S2, then awaits C2.

    ``done`` turns True once C2 has arrived; ``complex`` tells whether the client
    used the digest handshake. Bytes that follow C2 are kept for ``leftover()``.
    """

    def __init__(self, random_bytes: RandomBytes = os.urandom, epoch: int = 0) -> None:
        """random_bytes fills S1/S2 (injectable for tests); epoch is S1's time field."""
        super().__init__(random_bytes)
        self._epoch = epoch
        self.complex = False

    def _check_version(self, version: int) -> None:
        _check_client_version(version)

    def _answer(self, c1: bytes) -> bytes:
        """Build S0+S1+S2 for the given C1, in the flavour the client used."""
        found = _find_digest(c1, _FP_KEY_PARTIAL) if any(c1[4:8]) else None
        if found is None:
            s1 = _make_simple_packet(self._epoch, self._random_bytes)
            s2 = c1
        else:
            scheme, c1_digest = found
            self.complex = True
            s1 = _make_digest_packet(
                self._epoch, _SERVER_VERSION, scheme, _FMS_KEY_PARTIAL, self._random_bytes
            )
            s2 = _make_signed_answer(c1_digest, FMS_KEY, self._random_bytes)
        return bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake(_Handshake):
    """Client side of the handshake: sends C0+C1, answers S0+S1 with C2, awaits S2.

    With ``complex=True`` C1 carries a digest, and C2 is signed if the server's
    S1 carries one too (``server_complex``); otherwise C2 echoes S1.
    """

    def __init__(self, complex: bool = True, random_bytes: RandomBytes = os.urandom) -> None:
        """complex selects the digest handshake; random_bytes fills C1/C2."""
        super().__init__(random_bytes)
        self.complex = complex
        self._started = False
        self.server_complex = False

    def start(self) -> bytes:
        """Return C0+C1, the first bytes to send on a fresh connection."""
        if self._started:
            raise RuntimeError("ClientHandshake.start() called twice")
        self._started = True
        if self.complex:
            c1 = _make_digest_packet(
                0, _CLIENT_VERSION, _SCHEME_DIGEST_FIRST, _FP_KEY_PARTIAL, self._random_bytes
            )
        else:
            c1 = _make_simple_packet(0, self._random_bytes)
        return bytes((RTMP_VERSION,)) + c1

    def receive(self, data: bytes) -> bytes:
        """Feed S0/S1/S2 bytes; returns C2 once S0+S1 are in (b"" otherwise).

        Raises HandshakeError if the server does not answer with RTMP version 3.
        """
        if not self._started:
            raise RuntimeError("call ClientHandshake.start() before receive()")
        return super().receive(data)

    def _check_version(self, version: int) -> None:
        if version != RTMP_VERSION:
            raise HandshakeError(
                f"server answered with RTMP version 0x{version:02x}, "
                f"expected 0x{RTMP_VERSION:02x}"
            )

    def _answer(self, s1: bytes) -> bytes:
        """Build C2: signed if both sides speak the digest handshake, else an echo."""
        found = _find_digest(s1, _FMS_KEY_PARTIAL) if self.complex else None
        if found is None:
            return s1
        self.server_complex = True
        return _make_signed_answer(found[1], FP_KEY, self._random_bytes)
