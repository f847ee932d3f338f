"""The RTMP connection core shared by the server and client sessions, sans-IO.

Everything below the NetConnection/NetStream commands lives here, once: the
handshake (its replies queued, the bytes after it parsed as chunks), the chunk
reader/writer pair, the outbound queue, the peer's Window Acknowledgement Size
and the Acknowledgements it asks for, Ping answers, and the protocol-control
messages a side announces (Set Chunk Size, Window Ack Size, Set Peer Bandwidth).

Media timestamps leave as the hub's wide time: the 32-bit timestamps of the
connection's media stream (the one stream a session publishes or plays: media
on any message stream id feeds it) run through a
:class:`~lal_twisted.media.clock.WideClock`, so a publisher whose time wraps
past 2**32 ms goes on increasing; the writer takes the low 32 bits again for
what this side sends.

A subclass adds its command logic through two hooks: :meth:`_on_message` for
each complete message that is not protocol control (commands, data, aggregate)
and :meth:`_on_handshake_done`.  Audio and video skip the hook: ``receive``
turns them into :class:`AVPacket` events inline while the subclass has opened
``_media_in``, and drops them otherwise, so media costs no extra call.
"""

from __future__ import annotations

from typing import Any, Protocol

from lal_twisted.media import amf0
from lal_twisted.media.clock import WideClock
from lal_twisted.media.packet import AVPacket
from lal_twisted.rtmp import message as m
from lal_twisted.rtmp.chunk import DEFAULT_CHUNK_SIZE, ChunkReader, ChunkWriter
from lal_twisted.rtmp.message import AUDIO, CONTROL_TYPES, VIDEO, Message

__all__ = ["Handshake", "RtmpConnection", "command_payload"]


class Handshake(Protocol):
    """What the connection needs of a handshake state machine."""

    done: bool

    def receive(self, data: bytes) -> bytes: ...

    def leftover(self) -> bytes: ...


def command_payload(msg: Message) -> bytes:
    """The AMF0 body of a command message.

    An AMF3 command message starts with a format byte; 0 means the rest is plain
    AMF0 (what clients that announce objectEncoding 3 send), so it is dropped.
    """
    payload = msg.payload
    if msg.type_id == m.COMMAND_AMF3 and payload[:1] == b"\x00":
        return payload[1:]
    return payload


class RtmpConnection:
    """One RTMP connection below the command layer.

    ``receive(data)`` returns the events the bytes complete; whatever the
    connection answers is queued for ``data_to_send()``.  ``out_chunk_size`` is
    the chunk size this side announces with :meth:`_send_chunk_size`; the writer
    uses 128 until then.
    """

    def __init__(self, handshake: Handshake, chunk_size: int, max_message_size: int) -> None:
        self.handshake: Handshake | None = handshake
        self.reader = ChunkReader(max_message_size=max_message_size)
        self.writer = ChunkWriter(DEFAULT_CHUNK_SIZE)
        self.out_chunk_size = chunk_size
        # Set by the subclass while audio/video from the peer are wanted as events.
        self._media_in = False
        self._out: list[bytes] = []
        self._peer_ack_window = 0
        self._last_ack = 0
        self._clock = WideClock()  # the media stream's

    # -- input ------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Any]:
        """Feed bytes from the peer; returns events (AVPacket for media)."""
        handshake = self.handshake
        if handshake is not None:
            reply = handshake.receive(data)
            if reply:
                self._out.append(reply)
            if not handshake.done:
                return []
            data = handshake.leftover()
            self.handshake = None
            self._on_handshake_done()
            if not data:
                return []
        events: list[Any] = []
        append = events.append
        # The hot path reads the clock's window itself (a timestamp in it is
        # wide with one comparison and one addition, no call) and whether media
        # is wanted; both are read again after anything that may change them.
        media_in = self._media_in
        clock = self._clock
        lo, hi, base = clock.lo, clock.hi, clock.base
        for msg in self.reader.feed(data):
            type_id = msg.type_id
            if type_id == AUDIO or type_id == VIDEO:  # the hot path: no call
                if not media_in:
                    continue
                ts = msg.timestamp
                if lo <= ts < hi:  # (no new int while the time has not wrapped)
                    append(AVPacket(type_id, ts + base if base else ts, msg.payload))
                    continue
                append(AVPacket(type_id, clock.place(ts), msg.payload))
            elif type_id in CONTROL_TYPES:
                self._control(type_id, msg.payload)
                continue
            else:
                self._on_message(msg, events)
                media_in = self._media_in
            lo, hi, base = clock.lo, clock.hi, clock.base
        self._maybe_ack()
        return events

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer (handshake, control replies, commands)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _wide_time(self, msg: Message) -> int:
        """``msg``'s timestamp as wide time, on the media stream's clock (for
        the media that comes in data and aggregate messages)."""
        return self._clock.widen(msg.timestamp)

    # -- hooks ------------------------------------------------------------------------
    def _on_handshake_done(self) -> None:
        """Called once, when the handshake completes, before any chunk is parsed."""

    def _on_message(self, msg: Message, events: list[Any]) -> None:
        """Handle one complete message that is neither protocol control nor audio
        or video (commands, data, shared objects, aggregate); append events."""

    # -- protocol control -------------------------------------------------------------
    def _control(self, type_id: int, payload: bytes) -> None:
        if type_id == m.WINDOW_ACK_SIZE:
            self._peer_ack_window = m.parse_u32(payload)
        elif type_id == m.USER_CONTROL:
            event, value, _ = m.parse_user_control(payload)
            if event == m.PING_REQUEST:
                self._send_user_control(m.PING_RESPONSE, value)
        # SET_CHUNK_SIZE and ABORT are applied by the reader; ACK and
        # SET_PEER_BANDWIDTH need no action.

    def _maybe_ack(self) -> None:
        """Acknowledge once the bytes received since the last ACK reach the window."""
        window = self._peer_ack_window
        if window and self.reader.bytes_received - self._last_ack >= window:
            self._last_ack = self.reader.bytes_received
            self._send(m.CSID_PROTOCOL, m.ACK, 0,
                       m.ack_payload(self.reader.bytes_received & 0xFFFFFFFF))

    # -- output -----------------------------------------------------------------------
    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        """Queue one message with timestamp 0 at the current outbound chunk size."""
        self._out.append(self.writer.encode(csid, type_id, stream_id, 0, payload))

    def _send_chunk_size(self) -> None:
        """Announce ``out_chunk_size``, then encode everything after it with that size."""
        self._send(m.CSID_PROTOCOL, m.SET_CHUNK_SIZE, 0,
                   m.set_chunk_size_payload(self.out_chunk_size))
        self.writer.chunk_size = self.out_chunk_size

    def _send_window_ack_size(self, window: int) -> None:
        """Ask the peer to acknowledge every ``window`` bytes it receives."""
        self._send(m.CSID_PROTOCOL, m.WINDOW_ACK_SIZE, 0, m.window_ack_size_payload(window))

    def _send_peer_bandwidth(self, window: int, limit_type: int = m.LIMIT_DYNAMIC) -> None:
        """Limit the peer's output to ``window`` unacknowledged bytes."""
        self._send(m.CSID_PROTOCOL, m.SET_PEER_BANDWIDTH, 0,
                   m.set_peer_bandwidth_payload(window, limit_type))

    def _send_user_control(self, event: int, value: int, extra: int | None = None) -> None:
        """Queue a User Control event (Stream Begin, Ping Response...)."""
        self._send(m.CSID_PROTOCOL, m.USER_CONTROL, 0, m.user_control_payload(event, value, extra))

    def _send_command(self, name: str, txn: float, *values: Any, stream_id: int = 0) -> None:
        """Queue an AMF0 command message: name, transaction id, then ``values``."""
        self._send(m.CSID_COMMAND, m.COMMAND_AMF0, stream_id, amf0.encode(name, txn, *values))
