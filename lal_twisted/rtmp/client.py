"""RTMP client protocol: the Twisted adapter around :class:`ClientSession`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from lal_twisted.dial import dial
from lal_twisted.media.amf0 import AMF0Error
from lal_twisted.media.packet import AVPacket
from lal_twisted.rtmp.client_session import ClientSession, Ready, RtmpUrl, Status
from lal_twisted.rtmp.handshake import HandshakeError
from lal_twisted.rtmp.message import RtmpProtocolError

_PEER_ERRORS = (HandshakeError, RtmpProtocolError, AMF0Error)
_CONNECTION_DONE = Failure(ConnectionDone())


class RTMPClientProtocol(Protocol):
    """Publishes or plays one stream.

    ``ready`` fires once the server accepted the publish/play; ``done`` fires with
    None on a clean close or errbacks with the cause.  ``on_packet`` receives
    each media packet while playing; ``on_status`` each onStatus.
    """

    def __init__(
        self,
        session: ClientSession,
        on_packet: Callable[[AVPacket], None] | None = None,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        self.session = session
        self.on_packet = on_packet
        self.on_status = on_status
        self.ready: defer.Deferred[RTMPClientProtocol] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: str | None = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted interface
        self.session.start()
        self.flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted interface
        self.bytes_in += len(data)
        try:
            events = self.session.receive(data)
        except _PEER_ERRORS as e:
            self.fail(str(e))
            return
        self.flush()
        on_packet = self.on_packet
        for event in events:
            if type(event) is AVPacket:
                if on_packet is not None:
                    on_packet(event)
            elif isinstance(event, Ready):
                if not self.ready.called:
                    self.ready.callback(self)
            elif isinstance(event, Status) and self.on_status is not None:
                self.on_status(event)

    def send_packet(self, packet: AVPacket) -> None:
        data = self.session.encode_packet(packet)
        self.bytes_out += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.bytes_out += len(out)
            self.transport.write(out)  # type: ignore[union-attr]

    def fail(self, cause: str) -> None:
        self.error = cause
        self.transport.abortConnection()  # type: ignore[union-attr]

    def stop(self) -> None:
        """End the stream politely and close the connection."""
        self.session.close_stream()
        self.flush()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:  # noqa: N802
        cause = self.error
        if not self.ready.called:
            self.ready.errback(Failure(ConnectionError(
                cause or f"connection closed before the server accepted the "
                         f"{self.session.mode}: {reason.getErrorMessage()}")))
        if cause is not None:
            self.done.errback(Failure(ConnectionError(cause)))
        else:
            self.done.callback(None)


class RTMPClientFactory(Factory):
    """Creates the protocol of one connection (:func:`lal_twisted.dial.dial`
    makes the connection)."""

    noisy = False

    def __init__(self, make_protocol: Callable[[], RTMPClientProtocol]) -> None:
        self.make_protocol = make_protocol

    def buildProtocol(self, addr: Any) -> RTMPClientProtocol:  # noqa: N802
        proto = self.make_protocol()
        proto.factory = self  # type: ignore[attr-defined]
        return proto


def connect(reactor: Any, url: str | RtmpUrl, mode: str,
            on_packet: Callable[[AVPacket], None] | None = None,
            on_status: Callable[[Status], None] | None = None,
            timeout: float = 10.0, tls: Any = None) -> defer.Deferred[RTMPClientProtocol]:
    """Connect, handshake and publish/play; fires with the protocol once ready.

    An ``rtmps://`` URL connects with TLS: ``tls`` is the client TLS options
    (:func:`lal_twisted.tls.client_tls`); by default the peer's certificate and
    name are checked against the system trust store.  The connection is made
    by :func:`lal_twisted.dial.dial` (a host name, an address or a unix socket)."""
    parsed = url if isinstance(url, RtmpUrl) else RtmpUrl.parse(url)
    factory = RTMPClientFactory(lambda: RTMPClientProtocol(
        ClientSession(parsed, mode), on_packet=on_packet, on_status=on_status))
    d: defer.Deferred[Any] = dial(reactor, parsed.target, factory, timeout=timeout, tls=tls)
    d.addCallback(lambda proto: proto.ready)
    return d

