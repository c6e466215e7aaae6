"""Trace context on the runtime's paths: the spans of a publish, of handling an event and of a
tool call, and the W3C context carried in the envelope.

Only built when the bus is given a tracer provider; without one the bus, the cells and the
contexts never call in here, so tracing that is off costs one ``is None`` test per publish,
per handled event and per tool call. Names and attributes follow OpenTelemetry's messaging
and GenAI conventions (``docs/observability.md``).

**Head sampling without the SDK.** Asking the SDK for a span costs about 5 µs even when the
sampler drops it, four times an untraced publish. When the provider's sampler says what it
is (:class:`HeadSampling`, which ``loom``'s own provider carries: ``sdk/_telemetry.py``), the
decisions are made here instead and the SDK is asked only for spans that record:

* a root (no current span, no ``traceparent`` on the event) draws against the ratio, as a
  countdown of geometrically distributed length (one decrement per unsampled root, the same
  law as a draw per root); a sampled draw starts the span with :data:`SAMPLED_ROOT` set in
  its parent context, which Loom's sampler honours, so the ratio is not applied twice;
* under a parent-based sampler, a child of an unsampled parent is not started at all.

An unsampled publish leaves the event unstamped: in a process that samples this way, an
event with no trace context is one whose trace is not kept (where it was published, or
before). Where an event leaves the process (a bus's transport) it is stamped with
:data:`UNSAMPLED_TRACEPARENT`, one constant, valid W3C context per process with flags ``00``,
so every hop elsewhere (parent-based) follows the decision; a handler or a tool call with an
unsampled parent runs with that context current (a non-recording span), so what it sends
carries the decision on too.

**Light spans.** When the provider also carries a span recorder (``runtime/_span_records.py``;
``loom serve``'s does), a kept ``publish`` span is a record appended to it and a kept
``process`` span a :class:`~._span_records.LightSpan`: ids drawn here, no SDK span, the same
names, attributes and ``traceparent``. ``call_tool`` stays an SDK span.
"""

from __future__ import annotations

import contextvars
import math
import random
import re
import time
from contextvars import ContextVar
from typing import Protocol

import msgspec
from opentelemetry import context as otel_context
from opentelemetry.context import _RUNTIME_CONTEXT
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    TracerProvider,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._event import Envelope, Event
from ._span_records import LightSpan, SpanRecorder, span_recorder

__all__ = [
    "CURRENT_CONTEXT",
    "NO_CONTEXT",
    "SAMPLED_ROOT",
    "SPAN_KEY",
    "UNSAMPLED",
    "UNSAMPLED_SPAN",
    "UNSAMPLED_TRACEPARENT",
    "HeadSampling",
    "PublishTracer",
    "context_from_envelope",
    "current_context",
    "envelope_with_context",
    "head_sampling",
    "is_sampled",
]

_W3C = TraceContextTextMapPropagator()


class _ContextGetter(Protocol):
    def get(self) -> otel_context.Context: ...


class _ApiContext:
    """The current OpenTelemetry context through the API (a runtime context of another kind)."""

    __slots__ = ()

    def get(self) -> otel_context.Context:
        return otel_context.get_current()


# ``CURRENT_CONTEXT.get().get(SPAN_KEY)`` is the current span or ``None``. The API's own
# functions cost about 200 ns, a fifth of a whole publish; the context variable the default
# runtime context keeps (private, hence the fallback to the API) costs a third of that.
_var = getattr(_RUNTIME_CONTEXT, "_current_context", None)
CURRENT_CONTEXT: _ContextGetter = _var if isinstance(_var, ContextVar) else _ApiContext()
SPAN_KEY = _SPAN_KEY

current_context = CURRENT_CONTEXT.get
"""``CURRENT_CONTEXT.get``, bound once (the publish path reads it per event)."""
NO_CONTEXT: object = (
    contextvars.Context().run(_var.get) if isinstance(_var, ContextVar) else object()
)
"""What :func:`current_context` returns where no OpenTelemetry context was ever attached:
the variable's default (no span current). Compared by identity: one test per publish.
(Through the API, never: every publish then takes the general path.)"""

SAMPLED_ROOT = otel_context.create_key("loom.sampled-root")
"""Set (``True``) in the parent context of a root span that Loom's head sampling drew as
sampled: Loom's sampler records it without drawing again."""

_SAMPLED_ROOT_CONTEXT = otel_context.set_value(SAMPLED_ROOT, True, otel_context.Context())

# This process's unsampled context. The low 64 bits of the trace id are all ones, so a
# ``traceidratio`` sampler elsewhere (below 1.0) drops it too, as it would the root's own id.
_UNSAMPLED = SpanContext(
    trace_id=(random.getrandbits(64) << 64) | 0xFFFF_FFFF_FFFF_FFFF,
    span_id=random.getrandbits(64) or 1,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.DEFAULT),
)
UNSAMPLED_SPAN: Span = NonRecordingSpan(_UNSAMPLED)
"""The span current where the trace is not kept: a handler, a tool call (non-recording)."""
UNSAMPLED_TRACEPARENT = f"00-{_UNSAMPLED.trace_id:032x}-{_UNSAMPLED.span_id:016x}-00"
"""The ``traceparent`` an unsampled event carries out of this process."""
_UNSAMPLED_CONTEXT = set_span_in_context(UNSAMPLED_SPAN, otel_context.Context())


class HeadSampling(msgspec.Struct, frozen=True, kw_only=True):
    """What a tracer provider's sampler decides, so that the runtime can decide it alone.

    A sampler that carries one as its ``loom_head_sampling`` attribute promises: a root is
    kept with probability ``ratio`` (and kept for sure when its parent context has
    :data:`SAMPLED_ROOT`); with ``parent_based``, a child follows its parent's sampled flag;
    without, every span is kept (``ratio`` 1) or none (``ratio`` 0).

    Attributes:
        ratio: the share of roots kept, 0..1.
        parent_based: whether a child follows its parent's decision.
    """

    ratio: float
    parent_based: bool = True


def head_sampling(provider: TracerProvider) -> HeadSampling | None:
    """The head sampling of ``provider``'s sampler, or ``None`` (unknown: the SDK decides)."""
    head = getattr(getattr(provider, "sampler", None), "loom_head_sampling", None)
    if not isinstance(head, HeadSampling):
        return None
    if not head.parent_based and head.ratio not in (0.0, 1.0):
        return None  # a per-hop ratio decides on the trace id, which only the SDK draws
    return head


def is_sampled(traceparent: str) -> bool | None:
    """Whether a W3C ``traceparent``'s flags say sampled; ``None`` if it is not one (W3C:
    then it is ignored). The flags are characters 53-54 in every version."""
    if len(traceparent) < 55 or traceparent[52] != "-":
        return None
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return None


def _next_skip(ratio: float) -> float:
    """How many roots to leave unsampled before the next sampled one: geometric, so that
    each root is kept with probability ``ratio``, independently."""
    if ratio >= 1.0:
        return 0
    if ratio <= 0.0:
        return math.inf
    return math.floor(math.log(1.0 - random.random()) / math.log1p(-ratio))


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

    __slots__ = ("_head", "_recorder", "_tracer", "bare_unsampled", "left", "provider")

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("loom.runtime.bus")
        self._head = head_sampling(provider)
        # Light records for the kept publish and process spans (``runtime/_span_records.py``):
        # only under head sampling, where every span reaching the SDK is one that is kept.
        self._recorder = None if self._head is None else span_recorder(provider)
        # Roots still to leave unsampled before the next sampled one (0 without head
        # sampling: every publish goes through :meth:`inject`). The bus reads it inline.
        self.left = 0.0 if self._head is None else _next_skip(self._head.ratio)
        # Whether an event without trace context is known not kept (head sampling: the
        # module docs), so that a handler of one needs no span: read inline per event.
        self.bare_unsampled = self._head is not None

    def _draw(self) -> bool:
        """A root's decision: the countdown to the next sampled root."""
        if self.left > 0:
            self.left -= 1
            return False
        assert self._head is not None
        self.left = _next_skip(self._head.ratio)
        return True

    def _follows_unsampled(self, span: Span | None, traceparent: str) -> bool | None:
        """With head sampling: whether the work done now is not kept (``True``), is kept as a
        child (``False``: the SDK makes it), or is a root (``None``)."""
        head = self._head
        assert head is not None
        if span is not None:
            sc = span.get_span_context()
            if sc.is_valid:
                return (not sc.trace_flags.sampled) if head.parent_based else head.ratio == 0
        sampled = is_sampled(traceparent) if traceparent else None
        if sampled is not None:
            return (not sampled) if head.parent_based else head.ratio == 0
        return None  # no context, or a malformed one (ignored, as W3C says)

    def inject(self, topic: str, event: Event) -> Event:
        if self._head is not None:
            # The current span, read without the API's wrappers (a publish's budget is
            # about 1 µs).
            current = CURRENT_CONTEXT.get().get(_SPAN_KEY)
            traceparent = event.envelope.traceparent
            if current is None and not traceparent:
                # A root: the common case, kept to a countdown and nothing else.
                if self.left > 0:
                    self.left -= 1
                    return event  # unstamped: not kept (the module docs)
                unsampled = None
            else:
                unsampled = self._follows_unsampled(
                    current if isinstance(current, Span) else None, traceparent
                )
            if unsampled is None:
                if not self._draw():
                    # Not kept: bare (a malformed context it came with is dropped).
                    return _stamped(event, "") if traceparent else event
                return self._recorded(topic, event, _SAMPLED_ROOT_CONTEXT)
            if unsampled:
                if not traceparent or is_sampled(traceparent) is False:
                    return event  # bare, or the unsampled context it came with
                # A current unsampled span wins over a kept context the event came with.
                return _stamped(event, "")
        return self._recorded(topic, event, None)

    def outbound(self, event: Event) -> Event:
        """``event`` as it leaves the process: stamped unsampled if this bus left it bare."""
        if self._head is None or event.envelope.traceparent:
            return event
        return _stamped(event, UNSAMPLED_TRACEPARENT)

    def _recorded(self, topic: str, event: Event, root: otel_context.Context | None) -> Event:
        if self._recorder is not None:
            return self._light_publish(self._recorder, topic, event, root is not None)
        # The span being run (a handler's ``process``, a tool call) is the parent when there
        # is one: it is why the event is sent. Else the context the event arrived with (an
        # event relayed by the bridge continues its sender's trace).
        if root is not None:
            parent: otel_context.Context | None = root  # known: no span, no context
        elif get_current_span().get_span_context().is_valid:
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
        return _stamped(
            event,
            f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}",
            sc.trace_state.to_header() if sc.trace_state else "",
        )

    def _light_publish(self, recorder: SpanRecorder, topic: str, event: Event, root: bool) -> Event:
        """The kept ``{topic} publish`` span as a light record; the event stamped with it."""
        parent = ""
        state = ""
        if not root:
            current = CURRENT_CONTEXT.get().get(_SPAN_KEY)
            if isinstance(current, LightSpan):  # a handler's ``process``: its ids as they are
                trace, parent, state = current._trace, f"{current._span:016x}", current._state
            elif isinstance(current, Span) and (sc := current.get_span_context()).is_valid:
                trace, parent = f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
                state = sc.trace_state.to_header() if sc.trace_state else ""
            elif found := _parent_ids(event.envelope.traceparent):
                (trace, parent), state = found, event.envelope.tracestate
        if parent:
            span = f"{random.getrandbits(64) or 1:016x}"
        else:  # both ids from one draw (all zeros, invalid, has odds of 2**-192)
            ids = f"{random.getrandbits(192):048x}"
            trace, span = ids[:32], ids[32:]
        now = time.time_ns()
        recorder.add(
            (
                trace,
                span,
                parent,
                f"{topic} publish",
                _PRODUCER,
                now,
                now,
                {
                    "messaging.system": "loom",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": topic,
                    "messaging.message.id": event.id,
                },
                0,
                "",
                (),
                (),
                "loom.runtime.bus",
                state,
            )
        )
        return _stamped(event, f"00-{trace}-{span}-01", state)

    def process_span(self, topic: str, event: Event, agent_id: str) -> Span:
        """The ``{topic} process`` consumer span of an agent handling ``event``: a child of
        the publish span whose context the event carries (:data:`UNSAMPLED_SPAN`, no SDK
        span, when head sampling knows it is not kept; a bare event is such a one)."""
        if self._head is not None:
            tp = event.envelope.traceparent
            if not tp or self._follows_unsampled(None, tp):
                return UNSAMPLED_SPAN
            if self._recorder is not None:  # kept: a light record (``_span_records``)
                ids = _parent_ids(tp)
                return LightSpan(
                    self._recorder,
                    f"{topic} process",
                    _CONSUMER,
                    ids[0] if ids else f"{random.getrandbits(128) or 1:032x}",
                    random.getrandbits(64) or 1,
                    ids[1] if ids else "",
                    {
                        "messaging.system": "loom",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": topic,
                        "messaging.message.id": event.id,
                        "messaging.consumer.group.name": agent_id,
                        "loom.agent.id": agent_id,
                    },
                    event.envelope.tracestate if ids else "",
                )
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
        current span: the handler's ``process``, a turn's ``execute_tool``).
        :data:`UNSAMPLED_SPAN` (no SDK span) when head sampling decides it is not kept."""
        root = None
        if self._head is not None:
            unsampled = self._follows_unsampled(get_current_span(), "")
            if unsampled is None:
                if not self._draw():
                    return UNSAMPLED_SPAN
                root = _SAMPLED_ROOT_CONTEXT
            elif unsampled:
                return UNSAMPLED_SPAN
        return self._tracer.start_span(
            f"call_tool {name}",
            context=root,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "loom.agent.id": agent_id,
            },
        )


def unsampled_context() -> otel_context.Context:
    """A context whose current span is :data:`UNSAMPLED_SPAN`."""
    return _UNSAMPLED_CONTEXT


class _Unsampled:
    """Makes :data:`UNSAMPLED_SPAN` current and restores what was: through the default
    runtime context's variable (a ``set`` and a ``reset``, half of what the API's ``attach``
    and ``detach`` cost per handled event), else through the API."""

    __slots__ = ()

    def enter(self) -> object:
        return otel_context.attach(_UNSAMPLED_CONTEXT)

    def leave(self, token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]


class _UnsampledVar(_Unsampled):
    __slots__ = ("_var",)

    def __init__(self, var: ContextVar[otel_context.Context]) -> None:
        self._var = var

    def enter(self) -> object:
        return self._var.set(_UNSAMPLED_CONTEXT)

    def leave(self, token: object) -> None:
        self._var.reset(token)  # type: ignore[arg-type]


UNSAMPLED: _Unsampled = _UnsampledVar(_var) if isinstance(_var, ContextVar) else _Unsampled()
"""``UNSAMPLED.enter()`` / ``UNSAMPLED.leave(token)``: the unsampled decision made current
around a handler whose event's trace is not kept."""


# The enums' values, read once (``Enum.value`` is a property: a few hundred ns).
_PRODUCER, _CONSUMER = SpanKind.PRODUCER.value, SpanKind.CONSUMER.value
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _parent_ids(traceparent: str) -> tuple[str, str] | None:
    """The trace and span ids of a valid W3C ``traceparent`` (as hex), or ``None``."""
    match = _TRACEPARENT.match(traceparent)
    if match is None or traceparent.startswith("ff"):
        return None
    trace, span = match.group(1), match.group(2)
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return trace, span


def _stamped(event: Event, traceparent: str, tracestate: str = "") -> Event:
    envelope = msgspec.structs.replace(
        event.envelope, traceparent=traceparent, tracestate=tracestate
    )
    return msgspec.structs.replace(event, envelope=envelope)
