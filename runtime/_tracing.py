"""Trace context on the runtime's paths: the spans of a publish, of handling an event and of a
tool call, and the W3C context carried in the envelope.

Only built when the bus is given a tracer provider; without one the bus, the cells and the
contexts never call in here, so tracing that is off costs one ``is None`` test per publish,
per handled event and per tool call. Names and attributes follow OpenTelemetry's messaging
and GenAI conventions (``docs/observability.md``).
"""

from __future__ import annotations

import msgspec
from opentelemetry import context as otel_context
from opentelemetry.trace import (
    Span,
    SpanKind,
    TracerProvider,
    get_current_span,
)
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
    """Makes the ``{topic} publish`` producer span and stamps its context on the event; and
    the spans of the agents on the bus (:meth:`process_span`, :meth:`tool_span`)."""

    __slots__ = ("_tracer", "provider")

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("loom.runtime.bus")

    def inject(self, topic: str, event: Event) -> Event:
        # The span being run (a handler's ``process``, a tool call) is the parent when there
        # is one: it is why the event is sent. Else the context the event arrived with (an
        # event relayed by the bridge continues its sender's trace).
        if get_current_span().get_span_context().is_valid:
            parent = None
        else:
            parent = context_from_envelope(event.envelope)
        # Attributes only on a span that records: most are not sampled, and building them
        # (and the SDK's bounded copy) is most of a span's cost. (A sampler therefore
        # decides on the name, kind and parent, not on attributes.)
        span = self._tracer.start_span(f"{topic} publish", context=parent, kind=SpanKind.PRODUCER)
        sc = span.get_span_context()
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": "loom",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": topic,
                    "messaging.message.id": event.id,
                }
            )
            span.end()
        # The W3C header written directly (what the propagator writes, at a fraction of its
        # cost); an unsampled span's context goes along too (flags 00), so every later hop
        # follows the root's decision.
        envelope = msgspec.structs.replace(
            event.envelope,
            traceparent=f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}",
            tracestate=sc.trace_state.to_header() if sc.trace_state else "",
        )
        return msgspec.structs.replace(event, envelope=envelope)

    def process_span(self, topic: str, event: Event, agent_id: str) -> Span:
        """The ``{topic} process`` consumer span of an agent handling ``event``: a child of
        the publish span whose context the event carries."""
        span = self._tracer.start_span(
            f"{topic} process",
            context=context_from_envelope(event.envelope),
            kind=SpanKind.CONSUMER,
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": "loom",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                    "messaging.message.id": event.id,
                    "messaging.consumer.group.name": agent_id,
                    "loom.agent.id": agent_id,
                }
            )
        return span

    def tool_span(self, name: str, agent_id: str) -> Span:
        """The ``call_tool {name}`` client span of an agent's ``ctx.tool`` (a child of the
        current span: the handler's ``process``, a turn's ``execute_tool``)."""
        return self._tracer.start_span(
            f"call_tool {name}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "loom.agent.id": agent_id,
            },
        )
