"""Recording: every publish written to a file per enabled format.

:class:`Recorder` is a service that follows the registry's events: when a
stream starts being published (or relay-pulled) it attaches one
:class:`RecordingSink` per format (``record.enable_flv``,
``record.enable_mpegts``) to the stream, without a session or access checks;
when the publisher stops, or the server shuts down, the file is flushed and
closed and a :class:`RecordFinished` event carries its :class:`Recorded`.
Files are named as lal names them: ``STREAM-UNIXTIME.flv`` / ``.ts`` under
the configured directory.

A recording writes the bytes its format's shared encoding made, encoded once
(the FLV tags HTTP-FLV players get; the TS output HLS segments are cut from),
through a :class:`~lal_twisted.record.writer.RecordFile`: the reactor never
waits for the disk, and a disk that fails or falls behind stops that
recording with one log line while the stream plays on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from twisted.application import service
from twisted.internet import defer, task
from zope.interface import implementer

from lal_twisted.httpflv.sink import stream_flags
from lal_twisted.hub.events import (
    Event,
    SessionEvent,
    SourceStarted,
    SourceStopped,
)
from lal_twisted.hub.ports import ISink
from lal_twisted.log import Logger
from lal_twisted.media import flv
from lal_twisted.media.packet import VIDEO, AVPacket
from lal_twisted.outputs.ts import TS_SEGMENTS
from lal_twisted.record.writer import DiskWriter, RecordFile

if TYPE_CHECKING:
    from lal_twisted.config import RecordConfig
    from lal_twisted.hub.ports import StreamView
    from lal_twisted.hub.registry import StreamRegistry
    from lal_twisted.hub.session import Session

__all__ = ["FLV", "MPEGTS", "RecordFinished", "RecordFormat", "Recorded", "Recorder",
           "RecordingSink", "record_formats"]

log = Logger("lal_twisted.record")

# How often collected bytes go to the writer thread whatever their size, so a
# file on disk is at most this far behind the stream (seconds).
FLUSH_INTERVAL = 0.5


class FormatWriter(Protocol):
    """One recording's view of its format: the shared bytes of each packet,
    the header that starts the file, what ends it, and the release."""

    def encode(self, packet: AVPacket) -> bytes: ...

    def header(self) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RecordFormat:
    """A file format: its name (for logs and events), file extension, and how
    a recording of a stream gets its bytes (:class:`FormatWriter`)."""

    name: str
    ext: str
    open: Callable[[StreamView], FormatWriter]


class _FlvWriter:
    """FLV tags as HTTP-FLV players get them, after the FLV file header."""

    def __init__(self, stream: StreamView) -> None:
        self.stream = stream

    def encode(self, packet: AVPacket) -> bytes:
        return packet.encoded(flv.TAG_ENCODER)

    def header(self) -> bytes:
        return flv.file_header(*stream_flags(self.stream))

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _TsWriter:
    """The stream's TS output (shared with HLS), PAT and PMT once at the
    start of the file; the audio the muxer holds, at its end."""

    def __init__(self, stream: StreamView) -> None:
        self.stream = stream
        self.output = stream.output(TS_SEGMENTS)

    def encode(self, packet: AVPacket) -> bytes:
        return self.output.bytes_of(packet)

    def header(self) -> bytes:
        return self.output.header(0)

    def flush(self) -> bytes:
        return self.output.flush()

    def close(self) -> None:
        self.stream.release(self.output)


FLV = RecordFormat("flv", ".flv", _FlvWriter)
MPEGTS = RecordFormat("mpegts", ".ts", _TsWriter)


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


@implementer(ISink)
class RecordingSink:
    """One recording of one publish: every packet from the first video
    keyframe on (audio-only streams: from the first frame), as ``fmt``'s shared
    encoding made it, into a :class:`RecordFile`."""

    protocol_name = "record"
    bytes_out = 0

    def __init__(self, fmt: RecordFormat, writer: DiskWriter, directory: str, base: str,
                 session: Session, on_stop: Callable[[RecordingSink], None],
                 on_done: Callable[[RecordingSink], None]) -> None:
        self.fmt = fmt
        self.session = session
        self.start_time = time.time()
        self.on_stop = on_stop
        self.file = RecordFile(writer, directory, base, fmt.ext, lambda _: on_done(self))
        self.stream: StreamView | None = None
        self.writer: FormatWriter | None = None
        self.started = False  # the file header is written
        self.first_dts: int | None = None
        self.last_dts = 0
        self.stopped = False

    def start(self, stream: StreamView) -> None:
        self.stream = stream
        if self.writer is None:
            self.writer = self.fmt.open(stream)

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
        writer = self.writer
        assert writer is not None
        try:
            data = writer.encode(packet)
            if not data:
                return  # nothing in this format (TS: sequence headers, metadata)
            if not self.started:
                # At the first bytes, when the sequence headers have told the tracks.
                self.started = True
                file.write(writer.header())
        except Exception as e:  # whatever goes wrong here must not reach the publisher
            log.failure("record {fmt} {key}: cannot encode {packet}", fmt=self.fmt.name,
                        key=self.session.key, packet=packet)
            file.stop(f"cannot encode a packet: {e}")
            return
        file.write(data)

    def publish_started(self, stream: StreamView) -> None:
        pass

    def publish_stopped(self, stream: StreamView) -> None:
        self.finish()

    def close(self, reason: str) -> None:
        self.finish()

    def finish(self) -> None:
        """Flush and close the file (once); detach from the stream."""
        if self.stopped:
            return
        self.stopped = True
        writer, self.writer = self.writer, None
        if writer is not None:
            if self.started and not self.file.closing:
                try:
                    self.file.write(writer.flush())  # TS: the audio frames held
                except Exception:  # the file still closes
                    log.failure("record {fmt} {key}: cannot flush", fmt=self.fmt.name,
                                key=self.session.key)
            writer.close()
        self.file.close()
        self.on_stop(self)

    @property
    def duration_ms(self) -> int:
        if self.first_dts is None:
            return 0
        return self.last_dts - self.first_dts


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
        events.subscribe(SourceStarted, self._source_started)
        events.subscribe(SourceStopped, self._source_stopped)

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
