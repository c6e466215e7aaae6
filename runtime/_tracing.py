"""Trace context on the publish path: a producer span per publish, carried in the envelope.

Only built when the bus is given a tracer provider; without one the bus never calls in here,
so tracing that is off costs one ``is None`` test per publish.
"""

from __future__ import annotations

import msgspec
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, TracerProvider, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._event import Envelope, Event

__all__ = ["PublishTracer", "context_from_envelope", "envelope_with_context"]

_W3C = TraceContextTextMapPropagator()


def context_from_envelope(envelope: Envelope) -> otel_context.Context | None:
    """The OpenTelemetry context an envelope's ``traceparent`` names, or ``None``."""
    if not envelope.traceparent:
        return None
    carrier = {"traceparent": envelope.traceparent}
    if envelope.tracestate:
        carrier["tracestate"] = envelope.tracestate
    return _W3C.extract(carrier)


def envelope_with_context(envelope: Envelope, ctx: otel_context.Context | None) -> Envelope:
    """``envelope`` with the trace context of ``ctx`` (the current one when ``None``)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    if "traceparent" not in carrier:
        return envelope
    return msgspec.structs.replace(
        envelope,
        traceparent=carrier["traceparent"],
        tracestate=carrier.get("tracestate", ""),
    )


class PublishTracer:
    """Makes the ``publish {topic}`` producer span and stamps its context on the event."""

    __slots__ = ("_tracer",)

    def __init__(self, provider: TracerProvider) -> None:
        self._tracer = provider.get_tracer("loom.runtime.bus")

    def inject(self, topic: str, event: Event) -> Event:
        parent = context_from_envelope(event.envelope)
        span = self._tracer.start_span(
            f"publish {topic}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "loom",
                "messaging.operation.type": "publish",
                "messaging.destination.name": topic,
                "messaging.message.id": event.id,
            },
        )
        try:
            envelope = envelope_with_context(event.envelope, set_span_in_context(span))
            return msgspec.structs.replace(event, envelope=envelope)
        finally:
            span.end()
