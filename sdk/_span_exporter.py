"""The span exporter process: span records in on stdin, OTLP out (``sdk/_span_pipe.py``).

Usage: ``python -P .../loom/_span_exporter.py CONFIG_JSON`` (``endpoint``, ``insecure``, the
``resource`` attributes), started by the process that traces. Each frame read (a header of
:data:`FRAME`, then a msgpack list of records) becomes the SDK's
``ReadableSpan``s, exported with the official ``OTLPSpanExporter`` (which reads the
``OTEL_EXPORTER_OTLP_*`` variables it always reads: headers, certificate, timeout,
compression) in batches of 512; then its number is written back on stdout. At the end of
stdin (the tracing process closed it, or died) it shuts the exporter down and exits.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

# Run as a script (``sdk/_span_pipe.py``), not as ``-m loom._span_exporter``: importing the
# ``loom`` package would cost the exporter process four times its own start-up. So this
# module imports nothing of Loom, and the OpenTelemetry SDK only where it is used.

__all__ = ["ACK", "FRAME", "readable_spans"]

FRAME = struct.Struct(">IQ")
"""A frame's header on the pipe: the msgpack body's length and the frame's number (the
exporter acknowledges a frame with :data:`ACK` once it has exported it)."""
ACK = struct.Struct(">QI")
"""An acknowledgement: the frame's number and how many of its spans the collector did not
take (the exporter's retries given up)."""
_BATCH = 512


def readable_spans(records: Sequence[Sequence[Any]], resource: Resource) -> list[ReadableSpan]:
    """Records (``runtime/_span_records.py``) as the SDK's finished spans."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
    from opentelemetry.trace.span import TraceState

    sampled = TraceFlags(TraceFlags.SAMPLED)

    def _context(trace: str, span: str, state: TraceState | None = None) -> SpanContext:
        return SpanContext(int(trace, 16), int(span, 16), False, sampled, state)

    scopes: dict[str, InstrumentationScope] = {}
    spans = []
    for (
        trace,
        span,
        parent,
        name,
        kind,
        start,
        end,
        attributes,
        code,
        description,
        events,
        links,
        scope,
        state,
    ) in records:
        if scope not in scopes:
            scopes[scope] = InstrumentationScope(scope)
        trace_state = TraceState.from_header([state]) if state else None
        spans.append(
            ReadableSpan(
                name,
                context=_context(trace, span, trace_state),
                parent=_context(trace, parent, trace_state) if parent else None,
                resource=resource,
                attributes=_attributes(attributes),
                events=[Event(n, _attributes(a), t) for n, t, a in events],
                links=[Link(_context(t, s), _attributes(a)) for t, s, a in links],
                kind=SpanKind(kind),
                status=Status(StatusCode(code), description or None),
                start_time=start,
                end_time=end,
                instrumentation_scope=scopes[scope],
            )
        )
    return spans


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    # msgpack gives arrays back as lists; the SDK's attribute values are tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}


def _read(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def main(argv: Sequence[str]) -> int:
    import logging

    import msgspec
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExportResult

    logging.basicConfig(level=logging.WARNING, format="loom span exporter: %(message)s")
    config = msgspec.json.decode(argv[0])
    resource = Resource(config["resource"])
    exporter = OTLPSpanExporter(endpoint=config["endpoint"], insecure=config["insecure"])
    decoder = msgspec.msgpack.Decoder()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    acking = True

    def ack(seq: int, failed: int) -> None:
        nonlocal acking
        if acking:
            try:
                stdout.write(ACK.pack(seq, failed))
                stdout.flush()
            except BrokenPipeError:
                # The tracing process is gone (a crash): nobody to acknowledge to, but what
                # it wrote before is still exported, to the end of the pipe.
                acking = False

    try:
        ack(0, 0)  # started: frame 0, which is never sent
        while (header := _read(stdin, FRAME.size)) is not None:
            size, seq = FRAME.unpack(header)
            body = _read(stdin, size)
            if body is None:
                break
            spans = readable_spans(decoder.decode(body), resource)
            failed = 0
            for i in range(0, len(spans), _BATCH):
                # A failure is logged by the exporter (after its retries) and counted back:
                # the frame is done with all the same, not to be waited for.
                batch = spans[i : i + _BATCH]
                if exporter.export(batch) is not SpanExportResult.SUCCESS:
                    failed += len(batch)
            ack(seq, failed)
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
