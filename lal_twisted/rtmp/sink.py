"""The RTMP player's sink: the stream's shared RTMP chunk bytes to one connection."""

from __future__ import annotations

from typing import Any, Protocol

from zope.interface import implementer

from lal_twisted.hub.ports import INotFound, StreamView
from lal_twisted.hub.sink import Sink
from lal_twisted.protocols import ProtocolName
from lal_twisted.rtmp.session import media_encoder

__all__ = ["RtmpSink"]


class PlayerConnection(Protocol):
    """What the sink uses of its RTMP server connection."""

    transport: Any
    session: Any  # the ServerSession: chunk size, play notifications
    close_reason: str | None

    def flush(self) -> None: ...


@implementer(INotFound)
class RtmpSink(Sink):
    """A player's side of a Stream: writes shared RTMP chunk bytes."""

    protocol_name = ProtocolName.RTMP

    def __init__(self, protocol: PlayerConnection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = protocol
        self.encoder = media_encoder(protocol.session.out_chunk_size)

    def write(self, data: bytes) -> None:
        self.protocol.transport.write(data)  # type: ignore[union-attr]

    def disconnect(self, reason: str) -> None:
        self.protocol.close_reason = reason
        self.protocol.transport.abortConnection()  # type: ignore[union-attr]

    def publish_started(self, stream: StreamView) -> None:
        super().publish_started(stream)
        self.protocol.session.play_publish_notify()
        self.protocol.flush()

    def publish_stopped(self, stream: StreamView) -> None:
        self.protocol.session.play_unpublish_notify()
        self.protocol.flush()

    def not_found(self, reason: str) -> None:
        """The stream will not come (a relay pull gave up): say
        ``NetStream.Play.StreamNotFound``, then close."""
        if self.closed:
            return
        self.closed = True
        self._cancel_stall()
        self._cancel_wait()
        self.protocol.session.reject_play(reason, not_found=True)
        self.protocol.flush()
        self.protocol.close_reason = reason
        self.protocol.transport.loseConnection()  # type: ignore[union-attr]
