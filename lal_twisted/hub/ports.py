"""What the hub offers and what it needs: the ports every protocol plugs into.

An input is an :class:`IPublisher`: the registry's ``publish`` gives it a
:class:`PublishedStream` to feed packets to and, where its protocol says so
before any media (an SDP, a WHIP offer, a TS PMT), to announce tracks to.

An output is an :class:`ISink`: five calls, nothing more.  A sink may also
offer a capability, declared with ``zope.interface`` and checked with
``providedBy``, never probed by attribute:

- :class:`IJoiningBurst`: the joining burst (metadata, sequence headers, the
  cached GOPs) is collected and written at once, within its backlog bound.
- :class:`ICorkable`: what a batch of packets (one read from a publisher)
  gives the sink leaves in one write (one system call per player per read,
  as lal's ``merge_write_size`` merges a player's writes).
- :class:`IFlowCounts`: what flow control did to the player (metrics read it).
- :class:`INotFound`: the sink can tell its client that the stream will not
  come (RTMP's ``NetStream.Play.StreamNotFound``), not just close.

Sinks and outputs read a stream through :class:`StreamView`, a read-only view
(its key, tracks, headers, whether it is published), never its internals.

Per-stream state that an output format needs (the TS muxer's continuity
counters and held audio; RTP sequence numbers; an fMP4 fragmenter; an
AAC-to-Opus transcoder) lives in a stream-owned output, an
:class:`IStreamOutput` the stream makes on first use from an
:class:`OutputKind`, feeds in stream order and closes with the stream.
Stateless encodings (RTMP chunks, FLV tags) need none: they are cached on the
packet (:meth:`~lal_twisted.media.packet.AVPacket.encoded`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from lal_twisted.hub.session import Session
    from lal_twisted.media.packet import AVPacket
    from lal_twisted.media.track import Tracks

__all__ = ["ICorkable", "IFlowCounts", "IJoiningBurst", "INotFound", "IPublisher", "ISink",
           "IStreamOutput", "OutputKind", "PublishedStream", "StreamView"]


class StreamView(Protocol):
    """A stream as sinks and outputs read it."""

    @property
    def key(self) -> str:
        """``app/stream``."""

    @property
    def tracks(self) -> Tracks:
        """What the stream carries, as far as it is known.  A change replaces a
        track object: the same objects as before mean nothing changed."""

    @property
    def publishing(self) -> bool:
        """Whether a publisher feeds the stream now."""

    @property
    def publish_session(self) -> Session | None:
        """The publisher's session (its id, address, protocol), if any."""

    def headers(self) -> list[AVPacket]:
        """What a new player needs before any frame: metadata and sequence headers."""

    def cached_packets(self) -> list[AVPacket]:
        """The GOP cache's packets, oldest first (a relay push that reconnects)."""

    def output(self, kind: OutputKind) -> Any:
        """The stream-owned output of ``kind``, made on first use; each call
        must be matched by a :meth:`release`."""

    def release(self, output: Any) -> None:
        """One user of ``output`` is done; the last one closes it."""


class PublishedStream(StreamView, Protocol):
    """What a publisher holds: the view, plus the two calls that change the stream."""

    def feed(self, packet: AVPacket) -> None:
        """The next packet, in the FLV body form :class:`AVPacket` carries."""

    def feed_many(self, packets: list[AVPacket]) -> None:
        """Several packets at once (one read from the publisher): each player
        gets what they bring in one write."""

    def announce(self, tracks: Tracks) -> None:
        """The tracks the publisher's protocol declared before its media."""


class IPublisher(Interface):
    """The source feeding a stream (an RTMP publisher session, a relay pull...)."""

    description = Attribute("Short text naming the peer, for logs.")

    def close(reason: str) -> None:
        """Stop publishing and disconnect (server shutdown, a kick)."""


class ISink(Interface):
    """One subscriber of a stream: a player, a recording, a relay push."""

    def start(stream: StreamView) -> None:
        """Attached to ``stream``; its headers and cached packets follow through ``send``."""

    def send(packet: AVPacket) -> None:
        """Deliver one packet (encodings are shared: ``packet.encoded(encoder)``)."""

    def publish_started(stream: StreamView) -> None:
        """A publisher started feeding the stream."""

    def publish_stopped(stream: StreamView) -> None:
        """The publisher left; the sink stays attached and waits for the next one."""

    def close(reason: str) -> None:
        """End this subscriber (server shutdown, a stall, a kick)."""


class IJoiningBurst(ISink):
    """A sink that takes its joining burst in one write."""

    max_backlog_bytes = Attribute(
        "At most this many bytes of the burst are written: the stream replays "
        "only the newest cached GOPs that may fit.")

    def begin_burst() -> None:
        """Collect what is sent until ``end_burst``."""

    def end_burst(prefix: bytes = b"") -> None:
        """Write ``prefix`` and what was collected, within ``max_backlog_bytes``."""


class ICorkable(ISink):
    """A sink that can hold its writes while the stream feeds a batch."""

    def cork() -> None:
        """Hold what is sent until ``uncork``."""

    def uncork() -> None:
        """Write what was held, as one write."""


class IFlowCounts(ISink):
    """A sink that counts what flow control did."""

    packets_dropped = Attribute("Packets not sent because the player read too slowly.")
    stalled = Attribute("Whether it was closed for not reading.")


class INotFound(ISink):
    """A sink that can say the stream will not come."""

    def not_found(reason: str) -> None:
        """The stream will not come (a relay pull gave up): tell the client, then close."""


class IStreamOutput(Interface):
    """A stateful encoder one stream owns (see the module's text).

    The stream calls ``feed`` for every packet, in stream order, after its
    tracks took the packet in and before any sink gets it, so whichever sink
    reads an encoding first, the encoder saw the packets in order.  An output
    may hold packets to encode them in batches; ``settle`` is then its cue to
    encode what it holds, before the stream's tracks or its publisher change.
    """

    def feed(packet: AVPacket) -> None:
        """The stream's next packet."""

    def settle() -> None:
        """Encode now what is held: the tracks or the publisher are about to change."""

    def publisher_changed() -> None:
        """A new publisher takes over (after ``settle``): forget what belonged
        to the old one."""

    def close() -> None:
        """The stream ended, or the output's last user released it."""


class OutputKind:
    """A kind of stream-owned output: its name and how to make one.

    ``make(stream, charge)`` builds the output for ``stream``; ``charge(n)``
    counts ``n`` bytes the output encoded after the packets were cached
    against the stream's memory bound (the one place those bytes are counted).
    Kinds are compared by identity: define each once, at module level.
    """

    __slots__ = ("name", "make")

    def __init__(self, name: str,
                 make: Callable[[StreamView, Callable[[int], None]], Any]) -> None:
        self.name = name
        self.make = make

    def __repr__(self) -> str:
        return f"OutputKind({self.name!r})"
