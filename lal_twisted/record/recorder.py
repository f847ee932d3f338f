"""Recording: every publish written to a file per enabled format.

:class:`Recorder` is a service that follows the registry's events: when a
stream starts being published (or relay-pulled) it attaches one
:class:`RecordingSink` per format (``record.enable_flv``,
``record.enable_mpegts``) to the stream, without a session or access checks;
when the publisher stops, or the server shuts down, the file is flushed and
closed and a :class:`RecordFinished` event carries its :class:`Recorded`.
Files are named as lal names them: ``STREAM-UNIXTIME.flv`` / ``.ts`` under
the configured directory.

A recording writes the bytes its format's shared encoder made for the players
(encode once), through a :class:`~lal_twisted.record.writer.RecordFile`: the
reactor never waits for the disk, and a disk that fails or falls behind stops
that recording with one log line while the stream plays on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.application import service
from twisted.internet import defer, task
from zope.interface import implementer

from lal_twisted.httpflv.sink import stream_flags
from lal_twisted.hub.events import (
    Event,
    PublishStarted,
    PublishStopped,
    RelayPullStarted,
    RelayPullStopped,
    SessionEvent,
)
from lal_twisted.hub.sink import IStreamSink
from lal_twisted.log import Logger
from lal_twisted.media import flv
from lal_twisted.media.packet import VIDEO, AVPacket, Encoder
from lal_twisted.record.writer import DiskWriter, RecordFile

if TYPE_CHECKING:
    from lal_twisted.config import RecordConfig
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session
    from lal_twisted.hub.stream import Stream

__all__ = ["FLV", "MPEGTS", "RecordFinished", "RecordFormat", "Recorded", "Recorder",
           "RecordingSink", "record_formats"]

log = Logger("lal_twisted.record")

# How often collected bytes go to the writer thread whatever their size, so a
# file on disk is at most this far behind the stream (seconds).
FLUSH_INTERVAL = 0.5


@dataclass(frozen=True)
class RecordFormat:
    """A file format: its name (for logs and events), file extension, the
    shared encoder of the stream's packets, and the header that starts a file."""

    name: str
    ext: str
    encoder: Callable[[Stream], Encoder]
    header: Callable[[Stream, Encoder], bytes]


FLV = RecordFormat("flv", ".flv", lambda stream: flv.TAG_ENCODER,
                   lambda stream, encoder: flv.file_header(*stream_flags(stream)))
# PAT and PMT once at the start of the file: its packets come from the
# stream's shared muxer, whose continuity counters the file then follows.
MPEGTS = RecordFormat("mpegts", ".ts", lambda stream: stream.ts_muxer,
                      lambda stream, muxer: stream.ts_muxer.header(0))


def record_formats(config: RecordConfig) -> list[tuple[RecordFormat, str]]:
    """The formats ``record.*`` enables, each with its directory."""
    formats = []
    if config.enable_flv:
        formats.append((FLV, config.flv_out_path))
    if config.enable_mpegts:
        formats.append((MPEGTS, config.mpegts_out_path))
    return formats


@dataclass
class Recorded:
    """What a :class:`RecordFinished` event carries: one finished file."""

    key: str
    app: str
    stream: str
    session_id: str  # the publisher's
    format: str  # "flv" or "mpegts"
    path: str
    start_time: float  # wall clock, seconds
    end_time: float
    bytes: int
    duration_ms: int  # from the first to the last timestamp written
    error: str | None  # why it stopped early (the file holds what came before), or None


@dataclass(frozen=True)
class RecordFinished(Event):
    """A recorded file was closed (``record``: path, format, stream, times,
    bytes, and ``error`` when it stopped early)."""

    record: Recorded
    observer_method: ClassVar[str] = "record_finished"


@implementer(IStreamSink)
class RecordingSink:
    """One recording of one publish: every packet from the first video
    keyframe on (audio-only streams: from the first frame), as ``fmt``'s shared
    encoder wrote it, into a :class:`RecordFile`."""

    protocol_name = "record"
    max_backlog_bytes = 0  # the GOP cache replays nothing to a recording
    bytes_out = 0

    def __init__(self, fmt: RecordFormat, writer: DiskWriter, directory: str, base: str,
                 session: Session, on_stop: Callable[[RecordingSink], None],
                 on_done: Callable[[RecordingSink], None]) -> None:
        self.fmt = fmt
        self.session = session
        self.start_time = time.time()
        self.on_stop = on_stop
        self.file = RecordFile(writer, directory, base, fmt.ext, lambda _: on_done(self))
        self.stream: Stream | None = None
        self.encoder: Encoder | None = None
        self.started = False  # the file header is written
        self.first_dts: int | None = None
        self.last_dts = 0
        self.stopped = False

    def start(self, stream: Stream) -> None:
        self.stream = stream
        self.encoder = self.fmt.encoder(stream)

    def send(self, packet: AVPacket) -> None:
        file = self.file
        if file.closing:
            return  # stopped by the disk: detached once the file is closed
        if self.first_dts is None:
            if (packet.kind == VIDEO and not packet.is_keyframe
                    and not packet.is_sequence_header):
                return  # a picture that cannot be decoded yet
            self.first_dts = packet.dts
        self.last_dts = packet.dts
        encoder = self.encoder
        assert encoder is not None and self.stream is not None
        try:
            data = packet.encoded(encoder)
            if not data:
                return  # nothing in this format (TS: sequence headers, metadata)
            if not self.started:
                # At the first bytes, when the sequence headers have told the tracks.
                self.started = True
                file.write(self.fmt.header(self.stream, encoder))
        except Exception as e:  # whatever goes wrong here must not reach the publisher
            log.failure("record {fmt} {key}: cannot encode {packet}", fmt=self.fmt.name,
                        key=self.session.key, packet=packet)
            file.stop(f"cannot encode a packet: {e}")
            return
        file.write(data)

    def publish_started(self, stream: Stream) -> None:
        pass

    def publish_stopped(self, stream: Stream) -> None:
        self.finish()

    def close(self, reason: str) -> None:
        self.finish()

    def begin_burst(self) -> None:
        pass

    def end_burst(self, prefix: bytes = b"") -> None:
        pass

    def finish(self) -> None:
        """Flush and close the file (once); detach from the stream."""
        if self.stopped:
            return
        self.stopped = True
        flush = getattr(self.encoder, "flush", None)  # TS: the audio frames held
        if flush is not None and self.started and not self.file.closing:
            try:
                self.file.write(flush())
            except Exception:  # the file still closes
                log.failure("record {fmt} {key}: cannot flush", fmt=self.fmt.name,
                            key=self.session.key)
        self.file.close()
        self.on_stop(self)

    @property
    def duration_ms(self) -> int:
        if self.first_dts is None:
            return 0
        return (self.last_dts - self.first_dts) & 0xFFFFFFFF


class Recorder(service.Service):
    """Records every publish in each of ``formats`` (pairs of a
    :class:`RecordFormat` and its directory)."""

    name = "record"

    def __init__(self, registry: StreamRegistry, formats: list[tuple[RecordFormat, str]],
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.registry = registry
        self.formats = formats
        self.reactor = reactor
        self.writer = DiskWriter(reactor)
        self.recordings: dict[RecordingSink, None] = {}
        self._by_session: dict[str, list[RecordingSink]] = {}
        self._flusher = task.LoopingCall(self._flush)
        self._flusher.clock = reactor
        self._closing: list[defer.Deferred[None]] = []
        events = registry.events
        events.subscribe(PublishStarted, self._source_started)
        events.subscribe(RelayPullStarted, self._source_started)
        events.subscribe(PublishStopped, self._source_stopped)
        events.subscribe(RelayPullStopped, self._source_stopped)

    # -- events -----------------------------------------------------------------------
    def _source_started(self, event: SessionEvent) -> None:
        session = event.session
        stream = self.registry.get(session.key)
        if stream is None or not self.running:
            return
        base = f"{session.stream}-{int(time.time())}"
        sinks = []
        for fmt, directory in self.formats:
            sink = RecordingSink(fmt, self.writer, directory, base, session,
                                 self._sink_stopped, self._file_done)
            sinks.append(sink)
            self.recordings[sink] = None
            self.registry.subscribe(session.key, sink, gop_num=0)
            log.info("record {fmt} {key}: writing {path}", fmt=fmt.name, key=session.key,
                     path=sink.file.path)
        self._by_session[session.id] = sinks

    def _source_stopped(self, event: SessionEvent) -> None:
        for sink in self._by_session.pop(event.session.id, []):
            sink.finish()

    # -- recordings -------------------------------------------------------------------
    def _sink_stopped(self, sink: RecordingSink) -> None:
        session = sink.session
        self.registry.unsubscribe(session.key, sink)
        sinks = self._by_session.get(session.id)
        if sinks is not None and sink in sinks:
            sinks.remove(sink)
            if not sinks:
                del self._by_session[session.id]

    def _file_done(self, sink: RecordingSink) -> None:
        file = sink.file
        self.recordings.pop(sink, None)
        if not sink.stopped:  # the disk stopped it before the publisher did
            sink.finish()
        session = sink.session
        record = Recorded(
            key=session.key, app=session.app, stream=session.stream, session_id=session.id,
            format=sink.fmt.name, path=file.path, start_time=sink.start_time,
            end_time=time.time(), bytes=file.written, duration_ms=sink.duration_ms,
            error=file.error)
        if file.error is not None:
            kept = (f"{file.path} holds {file.written} bytes" if file.opened
                    else "no file was written")
            log.error("record {fmt} {key}: recording stopped, {why}; the stream plays on "
                      "({kept})", fmt=sink.fmt.name, key=session.key, why=file.error,
                      kept=kept)
        else:
            log.info("record {fmt} {key}: {path} finished ({n} bytes, {d:.1f}s)",
                     fmt=sink.fmt.name, key=session.key, path=file.path, n=file.written,
                     d=sink.duration_ms / 1000)
        self.registry.events.emit(RecordFinished(record))

    def _flush(self) -> None:
        for sink in self.recordings:
            sink.file.flush()

    # -- service ------------------------------------------------------------------------
    def startService(self) -> None:  # noqa: N802 - Twisted interface
        super().startService()
        self._flusher.start(FLUSH_INTERVAL, now=False)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802 - Twisted interface
        """Close every recording and wait for the files to be on disk."""
        super().stopService()
        if self._flusher.running:
            self._flusher.stop()
        for sink in list(self.recordings):
            sink.finish()
        return self.writer.stop()
