"""Silent AAC for streams without audio (lal's ``in_session.add_dummy_audio_*``).

Some players (web players above all) start slowly or not at all on a stream
with video only.  With ``add_dummy_audio_enable``, a new publisher's packets
are held while the stream is analysed: audio within
``add_dummy_audio_wait_audio_ms`` (of media time) ends the analysis and
everything passes unchanged from then on; otherwise an AAC-LC sequence header
and silent frames are woven in, in timestamp order, for as long as the
publisher lasts (audio it sends later is dropped, with one log line, so the
players' audio track stays consistent).

The silent frames are generated here, bit by bit (ISO 14496-3 raw_data_block):
a channel pair element whose two channels have no scale-factor bands
(``max_sfb = 0``), so every spectral coefficient is zero, then ID_END.
"""

from __future__ import annotations

from collections.abc import Callable

from lal_twisted.log import Logger
from lal_twisted.media.packet import AUDIO, AVPacket

__all__ = ["DummyAudio", "SAMPLE_RATE", "sequence_header", "silent_frame"]

log = Logger("lal_twisted.hub.dummy_audio")

SAMPLE_RATE = 44100
CHANNELS = 2
SAMPLES_PER_FRAME = 1024
# What the analysis may hold before it decides without audio: a publisher that
# sends thousands of packets within the wait (or none with timestamps that
# move) must not grow it.
MAX_HELD_PACKETS = 1024
# A timestamp jump larger than this is not filled with silence (it would be
# thousands of frames at once): the silent track restarts at the new time.
MAX_FILL_MS = 5000

# FLV audio tag first byte: AAC (10), 44 kHz (3), 16-bit (1), stereo (1).
_AAC_TAG = 0xAF


def _bits(fields: list[tuple[int, int]]) -> bytes:
    """Pack (value, width) fields MSB first, zero-padded to a byte boundary."""
    value = width = 0
    for field, size in fields:
        value = (value << size) | field
        width += size
    pad = -width % 8
    return (value << pad).to_bytes((width + pad) // 8, "big")


def sequence_header() -> bytes:
    """The FLV body of an AAC sequence header: AudioSpecificConfig for AAC-LC
    (object type 2), 44100 Hz (index 4), 2 channels."""
    asc = _bits([(2, 5), (4, 4), (CHANNELS, 4), (0, 3)])  # + GASpecificConfig zeros
    return bytes([_AAC_TAG, 0]) + asc


def _silent_channel() -> list[tuple[int, int]]:
    return [
        (100, 8),  # global_gain (any value: no band uses it)
        (0, 1), (0, 2), (0, 1),  # ics_reserved_bit, window_sequence ONLY_LONG, window_shape
        (0, 6),  # max_sfb: no scale-factor bands, so no section or spectral data
        (0, 1),  # predictor_data_present
        (0, 1), (0, 1), (0, 1),  # pulse, tns, gain control data present
    ]


def silent_frame() -> bytes:
    """The FLV body of one silent AAC-LC frame (1024 samples, both channels)."""
    cpe = [(1, 3), (0, 4), (0, 1)]  # ID_CPE, element_instance_tag, common_window = 0
    block = _bits(cpe + _silent_channel() + _silent_channel() + [(7, 3)])  # ID_END
    return bytes([_AAC_TAG, 1]) + block


_SEQUENCE_HEADER = sequence_header()
_SILENT_FRAME = silent_frame()


class DummyAudio:
    """Sits in front of a Stream's ``feed`` for one publisher; ``done`` is
    called once audio is known to be there, so the stream can feed directly."""

    def __init__(self, feed: Callable[[AVPacket], None], wait_ms: int, key: str,
                 done: Callable[[], None]) -> None:
        self._feed = feed
        self.wait_ms = wait_ms
        self.key = key
        self._done = done
        self._held: list[AVPacket] = []
        self._first_dts: int | None = None
        self.adding = False  # deciding is over and silent audio is being added
        self._frames = 0  # silent frames made
        self._dropped_logged = False

    def feed(self, packet: AVPacket) -> None:
        if self.adding:
            self._add(packet)
            return
        if packet.kind == AUDIO:
            self._pass_through()
            self._feed(packet)
            return
        if self._first_dts is None:
            self._first_dts = packet.dts
        self._held.append(packet)
        waited = packet.dts - self._first_dts
        if waited > self.wait_ms or len(self._held) >= MAX_HELD_PACKETS:
            log.info("stream {key}: no audio within {ms} ms; adding silent AAC "
                     "(in_session.add_dummy_audio_enable)", key=self.key, ms=self.wait_ms)
            self.adding = True
            held, self._held = self._held, []
            self._feed(AVPacket(AUDIO, held[0].dts, _SEQUENCE_HEADER))
            for p in held:
                self._add(p)

    def flush(self) -> None:
        """The publisher left during the analysis: what was held goes out as is."""
        held, self._held = self._held, []
        for p in held:
            self._feed(p)

    def _pass_through(self) -> None:
        held, self._held = self._held, []
        self._done()
        for p in held:
            self._feed(p)

    def _add(self, packet: AVPacket) -> None:
        if packet.kind == AUDIO:
            if not self._dropped_logged:
                self._dropped_logged = True
                log.info("stream {key}: audio arrived after silent AAC was added; the "
                         "publisher's audio is dropped", key=self.key)
            return
        assert self._first_dts is not None
        since = packet.dts - self._first_dts
        if since < 0:
            since = -1  # a step back in time: no audio until the timeline catches up
        elif since - self._frames * SAMPLES_PER_FRAME * 1000 // SAMPLE_RATE > MAX_FILL_MS:
            self._first_dts, self._frames, since = packet.dts, 0, 0  # a jump: start afresh
        # Frame n starts at n * 1024 / 44100 s: computed from n, so no drift.
        while True:
            offset = self._frames * SAMPLES_PER_FRAME * 1000 // SAMPLE_RATE
            if offset > since:
                break
            self._frames += 1
            self._feed(AVPacket(AUDIO, self._first_dts + offset, _SILENT_FRAME))
        self._feed(packet)
