"""Runtime values <-> ``loom.v1`` protobuf messages: pure functions, no I/O.

This is the only place where ``_pb2`` types meet runtime Structs; the server and the client
transport call these functions and never build a runtime value from a message themselves.

The envelope on the wire
------------------------
An old client keeps the envelope in ``Event.metadata``; ours has a typed ``Event.envelope``.

Reading (:func:`event_from_proto`): the typed ``envelope`` field when present; otherwise the
metadata keys of :data:`ENVELOPE_KEYS`, each looked up ``loom.``-prefixed first, then
unprefixed (an empty value counts as absent). ``ttl`` (hop budget, default 16) and ``hop``
must be decimal integers in ``0 .. 2**32-1``, else :class:`WireError`. A trace context given as
``trace_id`` / ``span_id`` / ``trace_flags`` becomes a W3C ``traceparent`` (version 00;
``trace_flags`` as two hex digits, or a decimal 0-255; ``01`` when missing, since a sender that
propagates a trace wants it kept). Either way, every envelope key of :data:`ENVELOPE_KEYS` in
both spellings is removed from the runtime event's metadata, so the envelope lives in one
place only and a round trip is stable.

Writing (:func:`event_to_proto`, :func:`fill_event`): the typed ``envelope`` is always set,
and (``mirror=True``, for old clients) mirrored into metadata under the unprefixed keys: the
non-empty strings, ``ttl`` and ``hop`` always, and ``trace_id`` / ``span_id`` /
``trace_flags`` from the ``traceparent``. A peer that negotiated section 2 reads the typed
envelope, and the stream leaves the mirror out for it (a third of a small event's bytes, and
a map to build and parse on each side). Envelope keys that the runtime event's own metadata
carries (in either spelling) do not travel: the envelope is the one source of them.

Lenient, by choice:

* A malformed trace context (typed ``traceparent``, or the metadata trio) is dropped together
  with its ``tracestate``, in both directions: that is what the W3C recommendation asks of a
  receiver, and a bad trace id must not make an event undeliverable.
* ``loom.ttl_ms`` (an old client's *time* budget) is not a hop budget and the runtime envelope
  has no time budget; it stays in metadata untouched, so it reaches old clients as sent. So
  does ``ts`` (the original core's timestamp; ``Event.timestamp_ms`` is the real one).
* proto3 floats have no presence: an old client that never sets ``confidence`` sends 0.0,
  which is what the runtime event gets. ``confidence`` travels as a float32, so a value that
  float32 cannot hold comes back as the nearest one that it can.

One caveat of "typed first": an old client built on a protobuf library that keeps unknown
fields, which edits the metadata envelope of an event it received and publishes it again,
sends our stale typed envelope along, and that one wins. Old clients build fresh events to
publish (the original SDK does), so this is accepted rather than guessed around.

Strict: a non-finite ``confidence``, an out-of-range integer, a string protobuf cannot encode,
an unknown enum value and a negative ``timeout_ms`` raise :class:`WireError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

# Absolute, like the generated modules' own imports of each other: one module identity for
# the type checker whichever way this file is reached.
from loom.bridge._generated import bridge_pb2, bus_pb2, event_pb2, tools_pb2
from loom.runtime import (
    DEFAULT_TTL,
    BusStats,
    ConsumerStats,
    Delivery,
    Drops,
    DurableStats,
    Envelope,
    Event,
    QoS,
    SubscriptionStats,
    TopicStats,
)

from ._errors import WireError
from ._wire_types import (
    ProviderKind,
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
    ToolErrorInfo,
    ToolStatus,
)

__all__ = [
    "ENVELOPE_KEYS",
    "bus_stats_from_proto",
    "bus_stats_to_proto",
    "delivery_from_proto",
    "delivery_to_proto",
    "durable_stats_from_proto",
    "durable_stats_to_proto",
    "envelope_from_metadata",
    "envelope_to_metadata",
    "event_from_proto",
    "event_to_proto",
    "fill_event",
    "publish_from_proto",
    "publish_to_proto",
    "qos_from_proto",
    "qos_to_proto",
    "tool_call_from_proto",
    "tool_call_to_proto",
    "tool_descriptor_from_proto",
    "tool_descriptor_to_proto",
    "tool_result_from_proto",
    "tool_result_to_proto",
]

ENVELOPE_KEYS = (
    "thread_id",
    "correlation_id",
    "sender",
    "reply_to",
    "ttl",
    "hop",
    "trace_id",
    "span_id",
    "trace_flags",
)
"""The metadata keys of the envelope, as the original core wrote them (unprefixed)."""

_PREFIX = "loom."
_RESERVED = frozenset(ENVELOPE_KEYS) | frozenset(_PREFIX + k for k in ENVELOPE_KEYS)
_U32_MAX = 2**32 - 1
_F32_MAX = 3.4028234663852886e38

_UINT = re.compile(r"[0-9]{1,10}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_DEC_FLAGS = re.compile(r"[0-9]{1,3}")
# W3C trace context, level 1: version-trace_id-parent_id-flags, lowercase hex. A version newer
# than 00 may append "-..." fields we do not know; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_QOS_TO_PB: dict[QoS, event_pb2.QoSLevel] = {
    QoS.REALTIME: event_pb2.QOS_REALTIME,
    QoS.BATCHED: event_pb2.QOS_BATCHED,
    QoS.BACKGROUND: event_pb2.QOS_BACKGROUND,
}
_QOS_FROM_PB: dict[int, QoS] = {int(v): k for k, v in _QOS_TO_PB.items()}

_PROVIDER_TO_PB: dict[ProviderKind, tools_pb2.ProviderKind] = {
    ProviderKind.NATIVE: tools_pb2.PROVIDER_NATIVE,
    ProviderKind.WASM: tools_pb2.PROVIDER_WASM,
    ProviderKind.GRPC: tools_pb2.PROVIDER_GRPC,
    ProviderKind.MCP: tools_pb2.PROVIDER_MCP,
}
_PROVIDER_FROM_PB: dict[int, ProviderKind] = {int(v): k for k, v in _PROVIDER_TO_PB.items()}

_STATUS_TO_PB: dict[ToolStatus, tools_pb2.ToolStatus] = {
    ToolStatus.OK: tools_pb2.TOOL_OK,
    ToolStatus.ERROR: tools_pb2.TOOL_ERROR,
    ToolStatus.TIMEOUT: tools_pb2.TOOL_TIMEOUT,
    ToolStatus.NOT_FOUND: tools_pb2.TOOL_NOT_FOUND,
    ToolStatus.INVALID_ARGUMENTS: tools_pb2.TOOL_INVALID_ARGUMENTS,
}
_STATUS_FROM_PB: dict[int, ToolStatus] = {int(v): k for k, v in _STATUS_TO_PB.items()}


# ------------------------------------------------------------------ enums


def qos_to_proto(qos: QoS) -> event_pb2.QoSLevel:
    """The wire's ``QoSLevel`` of ``qos``."""
    return _QOS_TO_PB[qos]


def qos_from_proto(value: int, *, field: str = "QoSLevel") -> QoS:
    """The runtime ``QoS`` of a wire ``QoSLevel``.

    Raises:
        WireError: ``value`` names no tier (proto3 enums are open: any int32 can arrive).
    """
    try:
        return _QOS_FROM_PB[value]
    except KeyError:
        raise WireError(field, f"unknown QoSLevel {value}") from None


# ------------------------------------------------------------------ trace context


def _parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """``(trace_id, span_id, flags)`` of a valid W3C ``traceparent``; ``None`` if invalid."""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def _traceparent_from_parts(trace_id: str, span_id: str, flags: str) -> str:
    """A version-00 ``traceparent`` from the original core's trio, or ``""`` if malformed."""
    trace_id = trace_id.lower()
    span_id = span_id.lower()
    if not (_TRACE_ID.fullmatch(trace_id) and _SPAN_ID.fullmatch(span_id)):
        return ""
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return ""
    flags = flags.lower()
    if not flags:
        flags = "01"
    elif _HEX2.fullmatch(flags):
        pass
    elif _DEC_FLAGS.fullmatch(flags) and int(flags) <= 0xFF:
        flags = f"{int(flags):02x}"
    else:
        return ""
    return f"00-{trace_id}-{span_id}-{flags}"


def _checked_trace(traceparent: str, tracestate: str) -> tuple[str, str]:
    """The trace context if ``traceparent`` is valid, else ``("", "")`` (W3C: ignore it)."""
    if traceparent and _parse_traceparent(traceparent) is not None:
        return traceparent, tracestate
    return "", ""


# ------------------------------------------------------------------ envelope


def _lookup(metadata: Mapping[str, str], key: str) -> str:
    return metadata.get(_PREFIX + key) or metadata.get(key) or ""


def _uint(metadata: Mapping[str, str], key: str, default: int) -> int:
    if metadata.get(_PREFIX + key):
        key = _PREFIX + key
    text = metadata.get(key)
    if not text:
        return default
    if not _UINT.fullmatch(text) or int(text) > _U32_MAX:
        raise WireError(f"Event.metadata[{key!r}]", f"{text!r} is not an integer in 0..{_U32_MAX}")
    return int(text)


def envelope_from_metadata(metadata: Mapping[str, str]) -> Envelope:
    """The envelope an old client keeps in ``metadata`` (see the module docs for the rules).

    Raises:
        WireError: ``ttl`` or ``hop`` is not a decimal integer in ``0 .. 2**32-1``.
    """
    traceparent = _traceparent_from_parts(
        _lookup(metadata, "trace_id"),
        _lookup(metadata, "span_id"),
        _lookup(metadata, "trace_flags"),
    )
    return Envelope(
        thread_id=_lookup(metadata, "thread_id"),
        correlation_id=_lookup(metadata, "correlation_id"),
        sender=_lookup(metadata, "sender"),
        reply_to=_lookup(metadata, "reply_to"),
        ttl=_uint(metadata, "ttl", DEFAULT_TTL),
        hop=_uint(metadata, "hop", 0),
        traceparent=traceparent,
    )


def envelope_to_metadata(envelope: Envelope) -> dict[str, str]:
    """The unprefixed metadata keys an old client reads for ``envelope``."""
    out: dict[str, str] = {}
    if envelope.thread_id:
        out["thread_id"] = envelope.thread_id
    if envelope.correlation_id:
        out["correlation_id"] = envelope.correlation_id
    if envelope.sender:
        out["sender"] = envelope.sender
    if envelope.reply_to:
        out["reply_to"] = envelope.reply_to
    out["ttl"] = str(envelope.ttl)
    out["hop"] = str(envelope.hop)
    if envelope.traceparent:
        parts = _parse_traceparent(envelope.traceparent)
        if parts is not None:
            out["trace_id"], out["span_id"], out["trace_flags"] = parts
    return out


def _envelope_from_proto(msg: event_pb2.Envelope) -> Envelope:
    traceparent = msg.traceparent
    tracestate = ""
    if traceparent:
        traceparent, tracestate = _checked_trace(traceparent, msg.tracestate)
    return Envelope(
        thread_id=msg.thread_id,
        correlation_id=msg.correlation_id,
        sender=msg.sender,
        reply_to=msg.reply_to,
        ttl=msg.ttl if msg.HasField("ttl") else DEFAULT_TTL,
        hop=msg.hop,
        traceparent=traceparent,
        tracestate=tracestate,
    )


def _fill_envelope(msg: event_pb2.Envelope, envelope: Envelope) -> None:
    if envelope.thread_id:
        msg.thread_id = envelope.thread_id
    if envelope.correlation_id:
        msg.correlation_id = envelope.correlation_id
    if envelope.sender:
        msg.sender = envelope.sender
    if envelope.reply_to:
        msg.reply_to = envelope.reply_to
    msg.ttl = envelope.ttl  # always: ttl has presence, and an absent one reads as the default
    msg.hop = envelope.hop
    if envelope.traceparent:
        traceparent, tracestate = _checked_trace(envelope.traceparent, envelope.tracestate)
        if traceparent:
            msg.traceparent = traceparent
            if tracestate:
                msg.tracestate = tracestate


# ------------------------------------------------------------------ events


def event_to_proto(event: Event, *, mirror: bool = True) -> event_pb2.Event:
    """``event`` as a ``loom.v1.Event``: typed envelope set and, with ``mirror``, mirrored
    into metadata for old clients.

    Raises:
        WireError: a value the wire cannot carry: a non-finite or float32-overflowing
            ``confidence``, ``priority`` outside int32, ``timestamp_ms`` outside int64,
            ``ttl``/``hop`` outside uint32, or a string with lone surrogates.
    """
    msg = event_pb2.Event()
    fill_event(msg, event, mirror=mirror)
    return msg


def fill_event(msg: event_pb2.Event, event: Event, *, mirror: bool = True) -> None:
    """Write ``event`` into the empty ``msg`` in place, as :func:`event_to_proto` would.

    In place because a message passed to a constructor (or appended to a repeated field) is
    copied: building each event inside the frame that carries it saves that copy, which costs
    more than the event's own fields. ``mirror=False`` leaves the envelope out of
    ``metadata``: for a peer that negotiated section 2 and reads the typed envelope.

    Raises:
        WireError: as :func:`event_to_proto`; ``msg`` is then partly written, and the caller
            discards it.
    """
    confidence = event.confidence
    if not (math.isfinite(confidence) and abs(confidence) <= _F32_MAX):
        raise WireError("Event.confidence", f"{confidence!r} is not a finite float32")
    metadata = event.metadata
    if metadata and not metadata.keys().isdisjoint(_RESERVED):
        metadata = {k: v for k, v in metadata.items() if k not in _RESERVED}
    envelope = event.envelope
    try:
        msg.id = event.id
        msg.type = event.type
        msg.timestamp_ms = event.timestamp_ms
        if event.source:
            msg.source = event.source
        if mirror:
            msg.metadata.update(metadata)
            msg.metadata.update(envelope_to_metadata(envelope))
        elif metadata:
            msg.metadata.update(metadata)
        msg.payload = event.payload
        if confidence:
            msg.confidence = confidence
        if event.tags:
            msg.tags.extend(event.tags)
        if event.priority:
            msg.priority = event.priority
        _fill_envelope(msg.envelope, envelope)
    except (ValueError, TypeError) as exc:
        raise WireError(f"Event {event.id!r}", str(exc)) from exc


def event_from_proto(msg: event_pb2.Event) -> Event:
    """The runtime event of a ``loom.v1.Event`` (see the module docs for the envelope rules).

    Raises:
        WireError: a non-finite ``confidence``, or (metadata envelope only) a ``ttl`` or
            ``hop`` that is not a decimal integer in ``0 .. 2**32-1``.
    """
    confidence = msg.confidence
    if not math.isfinite(confidence):
        raise WireError("Event.confidence", f"{confidence!r} is not finite")
    # Empty containers are common (a section-2 peer mirrors nothing into metadata), and
    # copying an empty protobuf container costs more than asking its length.
    wire_metadata = msg.metadata
    metadata = dict(wire_metadata) if len(wire_metadata) else {}
    if msg.HasField("envelope"):
        envelope = _envelope_from_proto(msg.envelope)
    else:
        envelope = envelope_from_metadata(metadata)
    if metadata and not metadata.keys().isdisjoint(_RESERVED):
        for key in _RESERVED.intersection(metadata):
            del metadata[key]
    tags = msg.tags
    return Event(
        id=msg.id,
        type=msg.type,
        timestamp_ms=msg.timestamp_ms,
        source=msg.source,
        metadata=metadata,
        payload=msg.payload,
        confidence=confidence,
        tags=tuple(tags) if len(tags) else (),
        priority=msg.priority,
        envelope=envelope,
    )


def delivery_to_proto(delivery: Delivery, *, mirror: bool = True) -> bridge_pb2.Delivery:
    """``delivery`` as a ``loom.v1.Delivery``.

    Raises:
        WireError: as :func:`event_to_proto`.
    """
    msg = bridge_pb2.Delivery(topic=delivery.topic)
    fill_event(msg.event, delivery.event, mirror=mirror)
    return msg


def delivery_from_proto(msg: bridge_pb2.Delivery) -> Delivery:
    """The runtime delivery of a ``loom.v1.Delivery``.

    Raises:
        WireError: as :func:`event_from_proto`.
    """
    return Delivery(msg.topic, event_from_proto(msg.event))


def publish_to_proto(topic: str, event: Event, *, mirror: bool = True) -> bridge_pb2.Publish:
    """A ``loom.v1.Publish`` of ``event`` on ``topic``.

    Raises:
        WireError: as :func:`event_to_proto`.
    """
    msg = bridge_pb2.Publish(topic=topic)
    fill_event(msg.event, event, mirror=mirror)
    return msg


def publish_from_proto(msg: bridge_pb2.Publish) -> tuple[str, Event]:
    """``(topic, event)`` of a ``loom.v1.Publish``; the bus, not this, validates the topic.

    Raises:
        WireError: as :func:`event_from_proto`.
    """
    return msg.topic, event_from_proto(msg.event)


# ------------------------------------------------------------------ tools


def tool_descriptor_to_proto(tool: ToolDescriptor) -> tools_pb2.ToolDescriptor:
    """``tool`` as a ``loom.v1.ToolDescriptor``.

    Raises:
        WireError: a string protobuf cannot encode.
    """
    try:
        return tools_pb2.ToolDescriptor(
            name=tool.name,
            description=tool.description,
            parameters_schema=tool.parameters_schema,
            provider=_PROVIDER_TO_PB[tool.provider],
            metadata=tool.metadata,
        )
    except (ValueError, TypeError) as exc:
        raise WireError(f"ToolDescriptor {tool.name!r}", str(exc)) from exc


def tool_descriptor_from_proto(msg: tools_pb2.ToolDescriptor) -> ToolDescriptor:
    """The descriptor of a ``loom.v1.ToolDescriptor``.

    Raises:
        WireError: an unknown ``provider``.
    """
    provider = _PROVIDER_FROM_PB.get(msg.provider)
    if provider is None:
        raise WireError("ToolDescriptor.provider", f"unknown ProviderKind {msg.provider}")
    return ToolDescriptor(
        name=msg.name,
        description=msg.description,
        parameters_schema=msg.parameters_schema,
        provider=provider,
        metadata=dict(msg.metadata),
    )


def tool_call_to_proto(call: ToolCallRequest) -> tools_pb2.ToolCall:
    """``call`` as a ``loom.v1.ToolCall``.

    Raises:
        WireError: a negative ``timeout_ms`` or one outside int64, or a string protobuf
            cannot encode.
    """
    if call.timeout_ms < 0:
        raise WireError("ToolCall.timeout_ms", f"{call.timeout_ms} is negative")
    try:
        return tools_pb2.ToolCall(
            id=call.id,
            name=call.name,
            arguments=call.arguments,
            headers=call.headers,
            timeout_ms=call.timeout_ms,
            correlation_id=call.correlation_id,
            qos=_QOS_TO_PB[call.qos],
        )
    except (ValueError, TypeError) as exc:
        raise WireError(f"ToolCall {call.id!r}", str(exc)) from exc


def tool_call_from_proto(msg: tools_pb2.ToolCall) -> ToolCallRequest:
    """The request of a ``loom.v1.ToolCall``. ``arguments`` stays JSON text, unchecked.

    Raises:
        WireError: a negative ``timeout_ms`` or an unknown ``qos``.
    """
    if msg.timeout_ms < 0:
        raise WireError("ToolCall.timeout_ms", f"{msg.timeout_ms} is negative")
    return ToolCallRequest(
        id=msg.id,
        name=msg.name,
        arguments=msg.arguments,
        headers=dict(msg.headers),
        timeout_ms=msg.timeout_ms,
        correlation_id=msg.correlation_id,
        qos=qos_from_proto(msg.qos, field="ToolCall.qos"),
    )


def tool_result_to_proto(outcome: ToolCallOutcome) -> tools_pb2.ToolResult:
    """``outcome`` as a ``loom.v1.ToolResult`` (``error`` unset when it is ``None``).

    Raises:
        WireError: a string protobuf cannot encode.
    """
    try:
        msg = tools_pb2.ToolResult(
            id=outcome.id, status=_STATUS_TO_PB[outcome.status], output=outcome.output
        )
        if outcome.error is not None:
            err = outcome.error
            msg.error.CopyFrom(
                tools_pb2.ToolError(code=err.code, message=err.message, details=err.details)
            )
        if outcome.scope_calls:
            msg.scope_calls = outcome.scope_calls
    except (ValueError, TypeError) as exc:
        raise WireError(f"ToolResult {outcome.id!r}", str(exc)) from exc
    return msg


def tool_result_from_proto(msg: tools_pb2.ToolResult) -> ToolCallOutcome:
    """The outcome of a ``loom.v1.ToolResult``.

    Raises:
        WireError: an unknown ``status``.
    """
    status = _STATUS_FROM_PB.get(msg.status)
    if status is None:
        raise WireError("ToolResult.status", f"unknown ToolStatus {msg.status}")
    error = None
    if msg.HasField("error"):
        error = ToolErrorInfo(
            code=msg.error.code, message=msg.error.message, details=dict(msg.error.details)
        )
    return ToolCallOutcome(
        id=msg.id, status=status, output=msg.output, error=error, scope_calls=msg.scope_calls
    )


# ------------------------------------------------------------------ bus statistics


def _drops_to_proto(drops: Drops) -> bus_pb2.Drops:
    return bus_pb2.Drops(overflow=drops.overflow, closed=drops.closed, bytes=drops.bytes)


def _drops_from_proto(msg: bus_pb2.Drops) -> Drops:
    return Drops(overflow=msg.overflow, closed=msg.closed, bytes=msg.bytes)


def bus_stats_to_proto(
    stats: BusStats, *, include_subscriptions: bool = True, include_topics: bool = True
) -> bus_pb2.BusStats:
    """``stats`` as a ``loom.v1.BusStats`` (``EventBus.GetStats``), records as asked for."""
    subscriptions = [
        bus_pb2.SubscriptionStats(
            id=s.id,
            pattern=s.pattern,
            qos=_QOS_TO_PB[s.qos],
            matched=s.matched,
            delivered=s.delivered,
            dropped=_drops_to_proto(s.dropped),
            queued=s.queued,
            high_water=s.high_water,
            capacity=s.capacity,
            waiting_publishers=s.waiting_publishers,
            patterns=s.patterns,
            in_flight=s.in_flight,
            queued_bytes=s.queued_bytes,
            max_bytes=s.max_bytes,
        )
        for s in (stats.subscriptions if include_subscriptions else ())
    ]
    topics = [
        bus_pb2.TopicStats(
            topic=t.topic,
            published=t.published,
            unrouted=t.unrouted,
            delivered=t.delivered,
            dropped=_drops_to_proto(t.dropped),
        )
        for t in (stats.topics if include_topics else ())
    ]
    return bus_pb2.BusStats(
        published=stats.published,
        unrouted=stats.unrouted,
        delivered=stats.delivered,
        dropped=_drops_to_proto(stats.dropped),
        subscriptions=subscriptions,
        topics=topics,
        closed=stats.closed,
    )


def bus_stats_from_proto(msg: bus_pb2.BusStats) -> BusStats:
    """The runtime record of a ``loom.v1.BusStats``.

    Raises:
        WireError: a subscription record with an unknown ``qos``.
    """
    return BusStats(
        published=msg.published,
        unrouted=msg.unrouted,
        delivered=msg.delivered,
        dropped=_drops_from_proto(msg.dropped),
        subscriptions=tuple(
            SubscriptionStats(
                id=s.id,
                pattern=s.pattern,
                qos=qos_from_proto(s.qos, field="SubscriptionStats.qos"),
                matched=s.matched,
                delivered=s.delivered,
                dropped=_drops_from_proto(s.dropped),
                queued=s.queued,
                high_water=s.high_water,
                capacity=s.capacity,
                waiting_publishers=s.waiting_publishers,
                patterns=tuple(s.patterns),
                in_flight=s.in_flight,
                queued_bytes=s.queued_bytes,
                max_bytes=s.max_bytes,
            )
            for s in msg.subscriptions
        ),
        topics=tuple(
            TopicStats(
                topic=t.topic,
                published=t.published,
                unrouted=t.unrouted,
                delivered=t.delivered,
                dropped=_drops_from_proto(t.dropped),
            )
            for t in msg.topics
        ),
        closed=msg.closed,
    )


def durable_stats_to_proto(stats: DurableStats) -> bus_pb2.DurableLogStats:
    """The durable log's statistics as a ``loom.v1.DurableLogStats`` (``BusStats.durable``)."""
    return bus_pb2.DurableLogStats(
        stored=stats.stored,
        bytes=stats.bytes,
        first_sequence=stats.first_sequence,
        last_sequence=stats.last_sequence,
        appended=stats.appended,
        duplicates=stats.duplicates,
        consumers=[
            bus_pb2.DurableConsumerStats(
                name=c.name,
                patterns=c.patterns,
                pending=c.pending,
                in_flight=c.in_flight,
                redelivered=c.redelivered,
                overflow=c.overflow,
            )
            for c in stats.consumers
        ],
    )


def durable_stats_from_proto(msg: bus_pb2.DurableLogStats) -> DurableStats:
    """The runtime record of a ``loom.v1.DurableLogStats``."""
    return DurableStats(
        stored=msg.stored,
        bytes=msg.bytes,
        first_sequence=msg.first_sequence,
        last_sequence=msg.last_sequence,
        appended=msg.appended,
        duplicates=msg.duplicates,
        consumers=tuple(
            ConsumerStats(
                name=c.name,
                patterns=tuple(c.patterns),
                pending=c.pending,
                in_flight=c.in_flight,
                redelivered=c.redelivered,
                overflow=c.overflow,
            )
            for c in msg.consumers
        ),
    )
