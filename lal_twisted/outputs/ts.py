"""The MPEG-TS encoding of a stream, as two stream-owned outputs.

- :data:`TS_SEGMENTS` groups AAC frames several to a PES (as HLS players and
  recorders expect) and encodes in batches: the stream appends each packet to
  a list, and :meth:`TsOutput.drain` encodes what it holds in one go (many
  encodings in a row cost less CPU than one at a time between the server's
  other work) and hands the bytes to its readers (the HLS segmenter).  Anyone
  reading a packet's bytes through :meth:`TsOutput.bytes_of` (a TS recording)
  has the held packets encoded first, so the muxer sees them in stream order.
- :data:`TS_LIVE` writes every audio frame as it comes (an HTTP-TS player must
  not wait for a group) and encodes each packet when the stream feeds it.

Each has its own :class:`~lal_twisted.media.ts.TsMuxer`, continuity
counters and held audio; a packet's bytes are made once per output and shared
by all of its readers.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from lal_twisted.hub.ports import IStreamOutput, OutputKind, StreamView
from lal_twisted.media.packet import AVPacket
from lal_twisted.media.ts import KeyframePsi, TsMuxer

__all__ = ["TS_LIVE", "TS_SEGMENTS", "TsOutput"]

# What a reader of a batched output is handed: the packets that have TS bytes,
# with them, in stream order, and the muxer that made them.
Reader = Callable[[list[tuple[AVPacket, bytes]], TsMuxer], None]


@implementer(IStreamOutput)
class TsOutput:
    """One stream's TS muxer, fed by the stream (see the module's text)."""

    def __init__(self, stream: StreamView, charge: Callable[[int], None],
                 batched: bool) -> None:
        self.muxer = TsMuxer(stream, stream.key, live=not batched)
        self.batched = batched
        self._charge = charge
        self._queue: list[AVPacket] = []
        self.readers: list[Reader] = []
        self._draining = False
        self._keyframe_psi: KeyframePsi | None = None
        if batched:
            self.feed = self._queue.append  # type: ignore[method-assign,assignment]

    def feed(self, packet: AVPacket) -> None:
        packet.encoded(self.muxer)

    @property
    def keyframe_psi(self) -> KeyframePsi:
        """The muxer's bytes with PAT and PMT before every video keyframe (live
        HTTP-TS: a player that joins or resyncs finds them); made on first use."""
        psi = self._keyframe_psi
        if psi is None:
            psi = self._keyframe_psi = KeyframePsi(self.muxer)
        return psi

    def drain(self) -> None:
        """Encode the packets held so far and hand them to the readers."""
        queue = self._queue
        if not queue or self._draining:
            return
        todo = queue[:]
        queue.clear()  # the same list: the stream appends to it
        muxer = self.muxer
        self._draining = True
        try:
            pairs = muxer.encode_many(todo)
            # Encoded after the GOP cache took these packets: counted now.
            self._charge(muxer.made_bytes)
            for reader in list(self.readers):
                reader(pairs, muxer)
        finally:
            self._draining = False

    def bytes_of(self, packet: AVPacket) -> bytes:
        """``packet``'s TS bytes, the packets held before it encoded first."""
        if self._queue:
            self.drain()
        return packet.encoded(self.muxer)

    def header(self, count: int = 0) -> bytes:
        return self.muxer.header(count)

    def flush(self) -> bytes:
        """The audio the muxer holds for its next PES, as TS packets, for a
        reader whose output ends here (see :meth:`TsMuxer.flush`)."""
        self.drain()
        return self.muxer.flush()

    # -- IStreamOutput --------------------------------------------------------
    def settle(self) -> None:
        self.drain()

    def publisher_changed(self) -> None:
        self.muxer.drop_held()  # the old publisher's last audio

    def close(self) -> None:
        self.drain()
        self.readers.clear()


TS_SEGMENTS = OutputKind("mpegts (audio grouped, batched)",
                         lambda stream, charge: TsOutput(stream, charge, batched=True))
TS_LIVE = OutputKind("mpegts (live)",
                     lambda stream, charge: TsOutput(stream, charge, batched=False))
