"""Spans leave the process through a pipe to an exporter process of their own.

Encoding a span as OTLP and sending it costs the process 40-50 µs of GIL time, several times
what making it costs, and a process at 1% sampling would spend a third of its throughput on
it (``docs/performance.md``). Here every finished span (the runtime's light records, and the
SDK's spans through :class:`RecordProcessor`) waits in the provider's bounded
:class:`~loom.runtime.lowlevel.SpanRecorder`; a writer thread takes what is there every
interval, encodes it with msgpack in one call and writes it to the stdin of
the script ``sdk/_span_exporter.py``, which turns the records into the SDK's spans and exports
them with the official OTLP exporter, acknowledging each frame on its stdout.

Threads, not tasks: the SDK calls ``force_flush`` and ``shutdown`` synchronously, from any
thread, as it does its own ``BatchSpanProcessor``'s.

What is lost where (``docs/observability.md``): the process crashing loses the records not
yet written (at most one interval's); the exporter process, reading to the end of the pipe,
exports what was written before it exits. A full buffer (the exporter behind, or gone)
drops records and counts them (:meth:`SpanPipe.statistics`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import msgspec

from loom.runtime.lowlevel import SpanRecord, SpanRecorder

from . import _span_exporter
from ._span_exporter import ACK, FRAME

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import Span as SdkSpan

from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["RecordProcessor", "SpanPipe", "SpanPipeStats", "record_of"]

log = logging.getLogger("loom.tracing")

MAX_FRAME_SPANS = 2048


class SpanPipeStats(msgspec.Struct, frozen=True, kw_only=True):
    """What the span pipe did.

    Attributes:
        recorded: spans taken into the buffer.
        dropped: spans refused by the full buffer.
        buffered: spans waiting in the buffer now.
        lost: spans written toward an exporter process that had died (never exported).
        export_failed: spans the collector did not take (the exporter's retries given up).
        sent: spans written to the exporter process.
        exported_frames: frames the exporter process acknowledged.
        exporter_alive: whether the exporter process runs.
    """

    recorded: int
    dropped: int
    buffered: int
    lost: int
    export_failed: int
    sent: int
    exported_frames: int
    exporter_alive: bool


def record_of(span: ReadableSpan) -> SpanRecord:
    """An SDK span as a record (``runtime/_span_records.py``)."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        f"{parent.span_id:016x}" if parent is not None else "",
        span.name,
        span.kind.value,
        span.start_time or 0,
        span.end_time or 0,
        dict(span.attributes or {}),
        span.status.status_code.value,
        span.status.description or "",
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        [
            (f"{ln.context.trace_id:032x}", f"{ln.context.span_id:016x}", dict(ln.attributes or {}))
            for ln in span.links
        ],
        scope.name if scope is not None else "",
        ctx.trace_state.to_header() if ctx.trace_state else "",
    )


class SpanPipe:
    """The writer thread, the acknowledgement reader and the exporter process."""

    def __init__(
        self,
        recorder: SpanRecorder,
        *,
        endpoint: str,
        resource: dict[str, object],
        interval_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        self.recorder = recorder
        self._interval = interval_s
        self._timeout = timeout_s
        config = msgspec.json.encode(
            {"endpoint": endpoint, "insecure": endpoint.startswith("http://"), "resource": resource}
        ).decode()
        # A session of its own: a Ctrl-C to the terminal's group stops the process that
        # traces, which then flushes here; the exporter ends when its stdin does.
        self._proc = subprocess.Popen(
            # -P: the script's folder (the ``loom`` package) is not put on the path.
            [sys.executable, "-P", _span_exporter.__file__, config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._encoder = msgspec.msgpack.Encoder()
        self._cond = threading.Condition()
        self._asked = self._served = 0  # flushes asked for, and served by the writer
        self._seq = self._served_seq = 0  # the last frame written; the last when serving
        self._acked = 0
        self._sent = 0
        self._lost = 0
        self._failed = 0
        self._closing = False
        self._started = threading.Event()
        self._dead = False
        self._writer = threading.Thread(target=self._write_loop, name="loom-span-pipe", daemon=True)
        self._reader = threading.Thread(target=self._read_acks, name="loom-span-acks", daemon=True)
        self._writer.start()
        self._reader.start()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                if not self._closing and self._asked == self._served:
                    self._cond.wait(self._interval)
                closing, asked = self._closing, self._asked
            self._send_all()
            with self._cond:
                self._served, self._served_seq = asked, self._seq
                self._cond.notify_all()
            if closing:
                return

    def _send_all(self) -> None:
        """Write what is buffered, a frame per ``MAX_FRAME_SPANS`` records."""
        while batch := self.recorder.take(MAX_FRAME_SPANS):
            body = self._encoder.encode(batch)
            with self._cond:
                self._seq += 1
                seq = self._seq
            if self._dead:
                self._lost += len(batch)
                continue
            try:
                stdin = self._proc.stdin
                assert stdin is not None
                stdin.write(FRAME.pack(len(body), seq) + body)
                stdin.flush()
                self._sent += len(batch)
            except (OSError, ValueError):  # the exporter is gone (EPIPE), or its pipe closed
                self._exporter_died()
                self._lost += len(batch)

    def _exporter_died(self) -> None:
        if not self._dead:
            self._dead = True
            log.error(
                "the span exporter process exited (%s): spans from now on are counted lost",
                self._proc.poll(),
            )
        with self._cond:
            self._acked = self._seq
            self._cond.notify_all()

    def _read_acks(self) -> None:
        out = self._proc.stdout
        assert out is not None
        while True:
            data = out.read(ACK.size)
            if len(data) < ACK.size:
                if not self._closing:
                    self._exporter_died()
                with self._cond:
                    self._acked = self._seq
                    self._cond.notify_all()
                return
            seq, failed = ACK.unpack(data)
            self._started.set()
            with self._cond:
                self._acked = max(self._acked, seq)
                self._failed += failed
                self._cond.notify_all()

    def wait_started(self, timeout_s: float) -> bool:
        """Wait until the exporter process has started (its imports done): for a measurement
        that should not share the CPU with them."""
        return self._started.wait(timeout_s)

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Send what is buffered and wait until the exporter process has exported it."""
        return self._flush(timeout_s, exported=True)

    def hand_off(self, timeout_s: float | None = None) -> bool:
        """Send what is buffered and wait until it is written to the exporter process (not
        until it is exported): this process's part of the work done."""
        return self._flush(timeout_s, exported=False)

    def _flush(self, timeout_s: float | None, *, exported: bool) -> bool:
        deadline = time.monotonic() + (self._timeout if timeout_s is None else timeout_s)
        with self._cond:
            self._asked += 1
            asked = self._asked
            self._cond.notify_all()
            while self._served < asked:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    return False
            target = self._served_seq
            while exported and self._acked < target and not self._dead:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    return False
        return not self._dead

    def shutdown(self) -> None:
        """Send the rest, end the exporter's input and wait for it to export and exit (bounded
        by the export timeout; then it is killed, and what it held is lost)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._writer.join(self._timeout)
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(self._timeout)
        except subprocess.TimeoutExpired:
            log.error("the span exporter process did not finish in %.0f s: killed", self._timeout)
            self._proc.kill()
            self._proc.wait()
        self._reader.join(self._timeout)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    @property
    def exporter_pid(self) -> int:
        """The exporter process's id."""
        return self._proc.pid

    def statistics(self) -> SpanPipeStats:
        stats = self.recorder.statistics()
        return SpanPipeStats(
            recorded=stats.recorded,
            dropped=stats.dropped,
            buffered=stats.buffered,
            lost=self._lost,
            export_failed=self._failed,
            sent=self._sent,
            exported_frames=self._acked,
            exporter_alive=not self._dead and self._proc.poll() is None,
        )


class RecordProcessor(SpanProcessor):
    """The SDK's spans into a recorder as they end; flush and shutdown through the pipe that
    empties it (without one, the recorder is read by whoever made it: a test)."""

    def __init__(self, recorder: SpanRecorder, pipe: SpanPipe | None = None) -> None:
        self._pipe = pipe
        self._add = recorder.add

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if ctx is not None and ctx.trace_flags.sampled:  # as the SDK's batch processor
            self._add(record_of(span))

    def shutdown(self) -> None:
        if self._pipe is not None:
            self._pipe.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self._pipe is None else self._pipe.force_flush(timeout_millis / 1000)
