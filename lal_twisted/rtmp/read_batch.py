"""Read batching for RTMP publishers: one timer reads every busy publisher
once per ``rtmp.read_batch_ms`` instead of a wakeup and a read per message
(see :class:`ReadBatcher`; the figures are in bench/README.md)."""

from __future__ import annotations

import socket
import sys
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from lal_twisted.log import Logger

__all__ = ["BATCH_MIN", "BATCH_WINDOW", "CAN_BATCH", "ReadBatcher"]

log = Logger("lal_twisted.rtmp.server")

# Read batching for publishers (ReadBatcher): every BATCH_WINDOW seconds of
# publishing, a publisher that sent at least BATCH_MIN bytes per read_batch_ms
# in that window is read by the batcher; below that, the reactor reads each
# message as it comes again.
BATCH_WINDOW = 5.0
BATCH_MIN = 512
# SO_RCVLOWAT of a batched socket: the reactor still reads it at once past this
# (bursts; streams above ~6 Mbit/s at 20 ms). Small enough that Linux need not
# grow the receive buffer, and clamp the TCP window, to honour it.
_BATCH_LOW_WATER = 16384
CAN_BATCH = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVLOWAT")


class Batched(Protocol):
    """What the batcher reads of a publisher's protocol."""

    transport: Any
    description: str
    reading_paused: bool


class ReadBatcher:
    """Reads every batched publisher once per read_batch_ms, from one timer.

    The reactor reads a publisher as soon as anything arrives: a wakeup, a recv
    and a parser call per message. A batched socket wakes it only past
    _BATCH_LOW_WATER bytes (SO_RCVLOWAT) or at its end; each tick reads it
    (``doRead``: a non-blocking recv, which on Linux returns what is queued even
    below the mark), so a read takes what came in the last read_batch_ms and
    nothing waits longer (but for the timer's lateness), whatever the bitrate.

    200 publishers of the bench stream (25 fps + 43 AAC frames/s, sent every
    10 ms): ~57 reads/s each unbatched, 50 at 20 ms, 25 at 40 ms; with 200
    players too, 0.89 and 0.75 of the unbatched server CPU. (A mark of 20 ms of
    the bitrate, the earlier way, read ~25/s (0.77) by holding audio for the
    next video frame, up to 40 ms; and when the bitrate dropped, 112-byte
    packets every 100 ms waited seconds for data that did not come.)
    """

    def __init__(self, reactor: IReactorTime, read_batch_ms: int) -> None:
        self.interval = read_batch_ms / 1000
        self._batched: dict[Batched, None] = {}  # in the order they came
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def __contains__(self, protocol: object) -> bool:
        return protocol in self._batched

    def add(self, protocol: Batched) -> None:
        if protocol in self._batched or not self._low_water(protocol, _BATCH_LOW_WATER):
            return
        self._batched[protocol] = None
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def discard(self, protocol: Batched) -> None:
        if protocol not in self._batched:
            return
        del self._batched[protocol]
        self._low_water(protocol, 1)
        if not self._batched:
            self._loop.stop()

    @staticmethod
    def _low_water(protocol: Batched, low_water: int) -> bool:
        sock = getattr(protocol.transport, "socket", None)  # None once the connection is lost
        if sock is None:
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low_water)
        except OSError as e:
            log.debug("rtmp {peer}: SO_RCVLOWAT not set: {e}", peer=protocol.description, e=e)
            return False
        return True

    @staticmethod
    def _selectable(transport: Any) -> Any:
        """The TCP connection under any protocol wrappers (TLS for RTMPS): the
        object the reactor reads, and whose end is reported to the wrappers."""
        while not hasattr(type(transport), "doRead") and getattr(transport, "transport", None):
            transport = transport.transport
        return transport

    def _tick(self) -> None:
        for protocol in list(self._batched):
            transport: Any = self._selectable(protocol.transport)
            try:
                if (protocol in self._batched and not transport.disconnecting
                        and not protocol.reading_paused):
                    why = transport.doRead()
                    if why is not None:  # end of stream or error: as the reactor does
                        transport.connectionLost(Failure(why))
            except Exception:
                log.failure("rtmp {peer}: batched read failed", peer=protocol.description)
                transport.abortConnection()
