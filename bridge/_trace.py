"""Trace context on tool calls: carried in ``ToolCall.headers``, both ways, and the
``execute_tool {tool}`` span of each call served over the wire.

Events carry theirs in the envelope (``bridge/_convert.py``); a tool call carries the W3C
``traceparent`` / ``tracestate`` of the span that made it as two ``headers`` entries, a field
every peer already has (an old peer ignores keys it does not know), so a caller, the server
and the agent that runs the tool add to one trace. RPCs also carry it in their metadata
(``bridge/_client.py``), which the server reads when the headers have none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    Span,
    SpanKind,
    TracerProvider,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from loom.runtime.lowlevel import UNSAMPLED_SPAN, head_sampling, is_sampled

from ._wire_types import ToolCallRequest

__all__ = ["TRACE_KEYS", "metadata_context", "metadata_trace", "tool_call_span", "trace_headers"]

TRACE_KEYS = ("traceparent", "tracestate")
"""The ``ToolCall.headers`` keys (and gRPC metadata keys) of the trace context."""

_W3C = TraceContextTextMapPropagator()


def trace_headers() -> dict[str, str]:
    """The current span's context as headers; empty when no span is current (tracing off:
    one context-variable read)."""
    if not get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def metadata_trace(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The trace context keys of a call's gRPC metadata."""
    found: dict[str, str] = {}
    for key, value in metadata or ():
        if key in TRACE_KEYS and isinstance(value, str):
            found[key] = value
    return found


def metadata_context(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context | None:
    """The trace context a call's gRPC metadata names, or ``None``."""
    carrier = metadata_trace(metadata)
    return _W3C.extract(carrier) if "traceparent" in carrier else None


def tool_call_span(provider: TracerProvider, request: ToolCallRequest, side: str) -> Span:
    """The ``execute_tool {tool}`` server span of a call served here (``side``: ``server``
    or ``agent``), a child of the caller's span named in the call's headers."""
    carrier: Mapping[str, str] = request.headers
    traceparent = carrier.get("traceparent", "")
    head = head_sampling(provider)
    if head is not None and head.parent_based and is_sampled(traceparent) is False:
        return UNSAMPLED_SPAN  # the caller's decision not to keep it, without the SDK's span
    parent = _W3C.extract(carrier) if traceparent else None
    return provider.get_tracer("loom.bridge").start_span(
        f"execute_tool {request.name}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": request.name,
            "gen_ai.tool.call.id": request.id,
            "rpc.system": "grpc",
            "loom.bridge.side": side,
        },
    )
