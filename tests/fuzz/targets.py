"""Fuzz targets: one function per parser, each taking arbitrary bytes.

Every target feeds its input to one sans-IO parser and lets through only the
parser's own error classes (``ALLOWED``); any other exception, a failed
invariant (an ``AssertionError``) or a buffer that holds more than the input
could justify is a crash.  ``scripts/fuzz.sh`` runs them under atheris and
``tests/test_fuzz_properties.py`` runs them on hypothesis inputs.

The targets import nothing from atheris or hypothesis, so both drivers share
them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from lal_twisted.media import amf0, enhanced, flv, track
from lal_twisted.media.amf0 import AMF0Error
from lal_twisted.media.packet import AUDIO, DATA, VIDEO, AVPacket
from lal_twisted.rtmp.chunk import MAX_HEADER_SIZE, ChunkReader
from lal_twisted.rtmp.handshake import (
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)
from lal_twisted.rtmp.message import RtmpProtocolError
from lal_twisted.rtmp.session import PlayRequest, PublishRequest, ServerSession

__all__ = ["ALLOWED", "TARGETS", "pieces"]

# Read sizes cycled through when a target feeds its input in pieces: a byte at
# a time, header-sized and chunk-sized reads, so every split point is reached.
_SPLITS = (1, 2, 3, 5, 7, 11, 13, 64, 129, 1000)

# A deterministic random source: handshakes are fuzzed, not the RNG.
_ZEROS: Callable[[int], bytes] = bytes

# Limits the fuzzed readers run with: small, so a too-large message or tag is
# reached by short inputs and the "held bytes" checks below bite early.
_MAX_MESSAGE = 64 * 1024
_MAX_PARTIAL = 128 * 1024
_MAX_TAG = 64 * 1024


def pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut into reads of the sizes in ``_SPLITS``, in turn."""
    pos, i = 0, 0
    while pos < len(data):
        size = _SPLITS[i % len(_SPLITS)]
        yield data[pos:pos + size]
        pos += size
        i += 1


# -- RTMP handshake --------------------------------------------------------------------

def handshake_server(data: bytes) -> None:
    """The server's handshake fed C0/C1/C2 bytes: one well-formed answer at most,
    and the bytes after C2 kept exactly."""
    hs = ServerHandshake(random_bytes=_ZEROS)
    replies = b""
    for piece in pieces(data):
        replies += hs.receive(piece)
    # S0+S1+S2 once C0+C1 are in, and done once C2 is.
    assert len(replies) == (1 + 2 * HANDSHAKE_SIZE if len(data) > HANDSHAKE_SIZE else 0)
    assert hs.done == (len(data) >= 1 + 2 * HANDSHAKE_SIZE)
    if hs.done:
        assert hs.leftover() == data[1 + 2 * HANDSHAKE_SIZE:]


def handshake_client(data: bytes) -> None:
    """The client's handshake (digest and simple) fed S0/S1/S2 bytes."""
    for complex_ in (True, False):
        hs = ClientHandshake(complex=complex_, random_bytes=_ZEROS)
        hs.start()
        replies = b""
        try:
            for piece in pieces(data):
                replies += hs.receive(piece)
        except HandshakeError:
            continue
        assert len(replies) in (0, HANDSHAKE_SIZE), len(replies)
        if hs.done:
            assert hs.leftover() == data[1 + 2 * HANDSHAKE_SIZE:]


# -- RTMP chunks and commands --------------------------------------------------------

def _messages(reader: ChunkReader, chunks: Iterator[bytes]) -> list[tuple[Any, ...]]:
    """Every message the reader returns, checking what it holds after each read."""
    out: list[tuple[Any, ...]] = []
    fed = 0
    for piece in chunks:
        fed += len(piece)
        for msg in reader.feed(piece):
            assert len(msg.payload) <= _MAX_MESSAGE
            out.append((msg.csid, msg.type_id, msg.stream_id, msg.timestamp, msg.payload))
        # Never more than the input, and partial messages within their limit.
        assert reader.buffered_bytes <= fed, (reader.buffered_bytes, fed)
        assert reader.buffered_bytes - reader.unparsed_bytes <= _MAX_PARTIAL
        # The unparsed tail is less than one chunk (header plus body).
        assert reader.unparsed_bytes < MAX_HEADER_SIZE + reader.chunk_size
    return out


def chunk_reader(data: bytes) -> None:
    """The chunk reader fed the input at once and in pieces: the same messages,
    or a ChunkError both ways."""
    whole: list[tuple[Any, ...]] | None
    split: list[tuple[Any, ...]] | None
    try:
        whole = _messages(ChunkReader(_MAX_MESSAGE, 8, _MAX_PARTIAL), iter((data,)))
    except RtmpProtocolError:
        whole = None
    try:
        split = _messages(ChunkReader(_MAX_MESSAGE, 8, _MAX_PARTIAL), pieces(data))
    except RtmpProtocolError:
        split = None
    assert whole == split, "the split of the input changed what was read"


# C0 + C1 + C2 of a simple handshake: what every server_session input follows.
_HANDSHAKE = b"\x03" + bytes(2 * HANDSHAKE_SIZE)


def server_session(data: bytes) -> None:
    """A server session after a valid handshake: the whole command layer.

    Publish and play are accepted as soon as asked, so media, data and
    aggregate messages reach their handlers too.  Replies stay proportional to
    the input (no amplification)."""
    session = ServerSession(chunk_size=128, max_message_size=_MAX_MESSAGE)
    session.receive(_HANDSHAKE)
    session.data_to_send()
    sent = 0
    try:
        for piece in pieces(data):
            for event in session.receive(piece):
                if isinstance(event, PublishRequest) and session.role is None:
                    session.accept_publish()
                elif isinstance(event, PlayRequest) and session.role is None:
                    session.accept_play()
            sent += len(session.data_to_send())
            assert session.reader.buffered_bytes <= len(data)
    except (RtmpProtocolError, AMF0Error):
        pass
    assert sent <= 64 * len(data) + 8192, (sent, len(data))


# -- AMF0, FLV, packets, tracks ------------------------------------------------------

def amf0_decode(data: bytes) -> None:
    """AMF0 decoding; what decodes re-encodes, and the re-encoding is stable."""
    try:
        values = amf0.decode(data)
    except AMF0Error:
        return
    encoded = amf0.encode(*values)
    assert amf0.encode(*amf0.decode(encoded)) == encoded
    if data:
        try:
            amf0.decode_one(data)
        except AMF0Error:
            raise AssertionError("decode_one failed where decode succeeded") from None


def _tags(reader: flv.FlvReader, chunks: Iterator[bytes]) -> list[tuple[int, int, bytes]]:
    out = []
    fed = 0
    for piece in chunks:
        fed += len(piece)
        for tag in reader.feed(piece):
            assert len(tag.payload) <= _MAX_TAG
            out.append((tag.tag_type, tag.timestamp, tag.payload))
        assert reader.buffered() <= fed
    return out


def flv_reader(data: bytes) -> None:
    """The FLV reader fed the input at once and in pieces: the same tags, or an
    FlvError both ways."""
    whole: list[tuple[int, int, bytes]] | None
    split: list[tuple[int, int, bytes]] | None
    try:
        whole = _tags(flv.FlvReader(_MAX_TAG), iter((data,)))
    except flv.FlvError:
        whole = None
    try:
        split = _tags(flv.FlvReader(_MAX_TAG), pieces(data))
    except flv.FlvError:
        split = None
    assert whole == split, "the split of the input changed what was read"


_KINDS = (AUDIO, VIDEO, DATA)


def _packet(data: bytes) -> AVPacket:
    """A packet whose kind the first byte picks (audio, video, data or anything)."""
    selector = data[0] if data else 0
    kind = _KINDS[selector % 3] if selector < 0xF0 else selector
    return AVPacket(kind, int.from_bytes(data[1:5], "big"), data[5:])


def avpacket(data: bytes) -> None:
    """AVPacket construction from any tag body, and its FLV and RTMP encodings."""
    from lal_twisted.rtmp.session import encode_media

    packet = _packet(data)
    repr(packet)
    assert packet.pts == packet.dts + packet.cts
    assert -0x800000 <= packet.cts < 0x800000
    assert packet.encoded(flv.TAG_ENCODER).endswith((11 + len(packet.payload)).to_bytes(4, "big"))
    if packet.kind in _KINDS:
        encode_media(packet, 128)


def tracks(data: bytes) -> None:
    """video_track, audio_track and announced_tracks on any body: never raise."""
    for found in (track.video_track(data), track.audio_track(data)):
        track.describe(found)
        found.as_dict()
    announced = track.announced_tracks(data)
    announced.as_dict()


def enhanced_header(data: bytes) -> None:
    """The enhanced-RTMP header reader (ModEx, multitrack) on any video or audio
    body: EnhancedError or tracks whose bodies lie within the input."""
    for video in (True, False):
        try:
            header = enhanced.parse(data, video)
        except enhanced.EnhancedError:
            continue
        for found in header.tracks:
            assert 0 <= found.start <= found.end <= len(data)
            if video:
                track.vp9_frame_size(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "handshake_server": handshake_server,
    "handshake_client": handshake_client,
    "chunk_reader": chunk_reader,
    "server_session": server_session,
    "amf0": amf0_decode,
    "flv_reader": flv_reader,
    "avpacket": avpacket,
    "track": tracks,
    "enhanced": enhanced_header,
}

# What each target may raise: the parser's own error classes, nothing else.
# (Targets already catch them; listed for the drivers and the reader.)
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "handshake_server": (HandshakeError,),
    "handshake_client": (),
    "chunk_reader": (),
    "server_session": (),
    "amf0": (),
    "flv_reader": (),
    "avpacket": (),
    "track": (),
    "enhanced": (),
}
