"""Light span records: what a kept span of the runtime's hot paths costs where it happens.

An OpenTelemetry SDK span costs the process that makes it about 16 µs, and its OTLP encoding
and export another 40-50 µs, on the same GIL as the bus (``docs/performance.md``). A tracer
provider that carries a :class:`SpanRecorder` (as ``loom_span_recorder``: ``open_tracing`` in
``sdk/_telemetry.py`` builds one) gets instead, for the ``publish`` and ``process`` spans of
sampled events, a plain tuple (:data:`SpanRecord`) appended to a bounded buffer; the records
are encoded in bulk and turned into OTLP elsewhere (an exporter process: ``sdk/_span_pipe.py``).
Spans of other kinds (an agent's turn, an LLM call, user code's own) stay SDK spans; their
processor appends the same record when they end, so every span leaves by one path.

The buffer is bounded: a record that does not fit is counted in
:attr:`SpanRecorderStats.dropped`, never lost silently.
"""

from __future__ import annotations

import collections
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from opentelemetry.trace import (
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes, AttributeValue

__all__ = [
    "LightSpan",
    "SpanRecord",
    "SpanRecorder",
    "SpanRecorderStats",
    "span_recorder",
]

SpanRecord = tuple[Any, ...]
"""One finished span: ``(trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns,
attributes, status_code, status_description, events, links, scope, tracestate)``. Ids are
lower-case hex (32, 16 and 16 characters; the parent ``""`` for a root), as the W3C header
carries them, so that a span continuing a ``traceparent`` parses nothing; ``kind`` and
``status_code`` are the OpenTelemetry enums' values; ``events`` are ``(name, time_ns,
attributes)`` and ``links`` ``(trace_id, span_id, attributes)``. Every field encodes as
msgpack as it is."""

DEFAULT_CAPACITY = 16384


class SpanRecorderStats(msgspec.Struct, frozen=True, kw_only=True):
    """What a :class:`SpanRecorder` took and dropped.

    Attributes:
        recorded: records accepted since it was made.
        dropped: records refused because the buffer was full (the exporter behind).
        buffered: records waiting to be taken now.
        capacity: the most it holds.
    """

    recorded: int
    dropped: int
    buffered: int
    capacity: int


class SpanRecorder:
    """A bounded buffer of finished span records, filled by the spans' threads and emptied
    by one exporter (:meth:`take`).

    ``collections.deque``'s ``append`` and ``popleft`` are atomic, so spans ending in worker
    threads need no lock; the bound is checked before appending (exact enough: a few records
    over it under a race, never unbounded)."""

    __slots__ = ("_buf", "capacity", "dropped", "recorded")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"a span recorder holds at least one record, not {capacity}")
        self.capacity = capacity
        self._buf: collections.deque[SpanRecord] = collections.deque()
        self.recorded = 0
        self.dropped = 0

    def add(self, record: SpanRecord) -> None:
        """Keep ``record`` for the exporter, or count it dropped when the buffer is full."""
        if len(self._buf) >= self.capacity:
            self.dropped += 1
            return
        self._buf.append(record)
        self.recorded += 1

    def take(self, limit: int | None = None) -> list[SpanRecord]:
        """The buffered records, oldest first (at most ``limit``), removed from the buffer."""
        buf = self._buf
        n = len(buf) if limit is None else min(limit, len(buf))
        pop = buf.popleft
        return [pop() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._buf)

    def statistics(self) -> SpanRecorderStats:
        return SpanRecorderStats(
            recorded=self.recorded,
            dropped=self.dropped,
            buffered=len(self._buf),
            capacity=self.capacity,
        )


def span_recorder(provider: object) -> SpanRecorder | None:
    """The recorder a tracer provider carries as ``loom_span_recorder``, or ``None``."""
    recorder = getattr(provider, "loom_span_recorder", None)
    return recorder if isinstance(recorder, SpanRecorder) else None


_UNSET = (StatusCode.UNSET.value, "")


def _kept(value: object) -> bool:
    return isinstance(value, str | bool | int | float) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )


class LightSpan(Span):
    """A span of the OpenTelemetry API that ends as a :data:`SpanRecord` in a recorder.

    It is current while a handler runs, so user code's own spans (through any tracer) nest
    under it by its ids, and its attributes, events and status can be set as on any
    recording span. Ids and timestamps are given by the runtime (``runtime/_tracing.py``).
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_kind",
        "_name",
        "_parent",
        "_recorder",
        "_span",
        "_start",
        "_state",
        "_status",
        "_trace",
    )

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        kind: int,
        trace_hex: str,
        span_id: int,
        parent_hex: str,
        attributes: dict[str, AttributeValue],
        tracestate: str = "",
    ) -> None:
        self._recorder = recorder
        self._name = name
        self._kind = kind  # SpanKind's value
        self._trace = trace_hex
        self._span = span_id
        self._parent = parent_hex
        self._attributes = attributes
        self._state = tracestate
        self._events: list[tuple[str, int, dict[str, AttributeValue]]] = []
        self._status: tuple[int, str] = _UNSET
        self._context: SpanContext | None = None
        self._ended = False
        self._start = time.time_ns()

    def get_span_context(self) -> SpanContext:
        if self._context is None:  # made on first ask: most handlers never ask
            self._context = SpanContext(
                trace_id=int(self._trace, 16),
                span_id=self._span,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState.from_header([self._state]) if self._state else None,
            )
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self._ended and _kept(value):
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if not self._ended:
            kept = {k: v for k, v in (attributes or {}).items() if _kept(v)}
            self._events.append((name, timestamp or time.time_ns(), kept))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        pass  # links are set at a span's start; the runtime's light spans have none

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended:
            return
        if isinstance(status, Status):
            code, text = status.status_code, status.description or ""
        else:
            code, text = status, description or ""
        # As the SDK's span: OK is final, and UNSET never overrides.
        if self._status[0] == StatusCode.OK.value or code is StatusCode.UNSET:
            return
        self._status = (code.value, text if code is StatusCode.ERROR else "")

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        stack = "".join(
            traceback.format_exception(type(exception), exception, exception.__traceback__)
        )
        event: dict[str, AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": stack,
            "exception.escaped": str(escaped),
        }
        event.update({k: v for k, v in (attributes or {}).items() if _kept(v)})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._recorder.add(
            (
                self._trace,
                f"{self._span:016x}",
                self._parent,
                self._name,
                self._kind,
                self._start,
                end_time or time.time_ns(),
                self._attributes,
                self._status[0],
                self._status[1],
                self._events,
                (),
                "loom.runtime.bus",
                self._state,
            )
        )
