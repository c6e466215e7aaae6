"""Trace context on the publish path, read back from the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id, get_current_span

from loom.runtime import Envelope, Event, EventBus, InvalidTopic, WouldBlock
from loom.runtime.lowlevel import context_from_envelope, envelope_with_context

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
INCOMING = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{format_trace_id(ctx.trace_id)}-{format_span_id(ctx.span_id)}-{ctx.trace_flags:02x}"


async def test_publish_makes_a_producer_span_and_stamps_its_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    event = Event(type="order", payload=b"42", envelope=Envelope(sender="alice"))
    async with EventBus(tracer_provider=provider) as bus, bus.subscribe("orders.>") as sub:
        await bus.publish("orders.eu", event)
        delivery = sub.receive_nowait()
    (span,) = exporter.get_finished_spans()
    assert span.name == "orders.eu publish"
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "messaging.system": "loom",
        "messaging.operation.type": "publish",
        "messaging.destination.name": "orders.eu",
        "messaging.message.id": event.id,
    }
    got = delivery.event
    assert got.envelope.traceparent == traceparent_of(span)
    # Everything else is the published event's.
    assert (got.id, got.type, got.payload, got.envelope.sender) == (
        event.id,
        "order",
        b"42",
        "alice",
    )
    assert event.envelope.traceparent == ""  # the caller's event is not touched


async def test_the_span_continues_an_incoming_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    event = Event(envelope=Envelope(traceparent=INCOMING, tracestate="vendor=1"))
    async with EventBus(tracer_provider=provider) as bus, bus.subscribe("a") as sub:
        bus.publish_nowait("a", event)
        delivery = sub.receive_nowait()
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent.span_id == SPAN_ID
    assert span.parent.is_remote
    env = delivery.event.envelope
    assert env.traceparent == traceparent_of(span)
    assert env.traceparent != INCOMING
    assert env.tracestate == "vendor=1"


async def test_the_span_is_a_child_of_the_current_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    async with EventBus(tracer_provider=provider) as bus, bus.subscribe("a") as sub:
        with tracer.start_as_current_span("handler") as outer:
            await bus.publish("a", Event())
            outer_ctx = get_current_span().get_span_context()
        delivery = sub.receive_nowait()
    publish_span = next(s for s in exporter.get_finished_spans() if s.name == "a publish")
    assert publish_span.parent is not None
    assert publish_span.parent.span_id == outer_ctx.span_id
    assert outer.get_span_context().trace_id == outer_ctx.trace_id
    assert delivery.event.envelope.traceparent == traceparent_of(publish_span)


async def test_every_subscriber_gets_the_same_traced_event(provider: TracerProvider) -> None:
    async with EventBus(tracer_provider=provider) as bus:
        first = bus.subscribe("a")
        second = bus.subscribe("*")
        await bus.publish("a", Event())
        assert first.receive_nowait() is second.receive_nowait()


async def test_a_refused_publish_makes_no_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with EventBus(tracer_provider=provider, drain_grace=0) as bus:
        bus.subscribe("a", buffer_size=1)
        with pytest.raises(InvalidTopic):
            await bus.publish("a.*", Event())
        bus.publish_nowait("a", Event())
        assert len(exporter.get_finished_spans()) == 1
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a", Event())  # delivered to nobody: no publish happened
        assert len(exporter.get_finished_spans()) == 1


async def test_without_a_tracer_provider_the_event_is_delivered_unchanged() -> None:
    event = Event(envelope=Envelope(traceparent=INCOMING))
    async with EventBus() as bus, bus.subscribe("a") as sub:
        await bus.publish("a", event)
        bus.publish_nowait("a", event)
        assert sub.receive_nowait().event is event
        assert sub.receive_nowait().event is event


async def test_envelope_context_round_trip(provider: TracerProvider) -> None:
    assert context_from_envelope(Envelope()) is None
    envelope = Envelope(traceparent=INCOMING, tracestate="vendor=1", sender="bob")
    ctx = context_from_envelope(envelope)
    assert ctx is not None
    remote = get_current_span(ctx).get_span_context()
    assert (remote.trace_id, remote.span_id, remote.is_remote) == (TRACE_ID, SPAN_ID, True)
    again = envelope_with_context(Envelope(sender="bob"), ctx)
    assert again == envelope
    # No span in the context (nothing current either): the envelope is returned as it was.
    plain = Envelope(sender="carol")
    assert envelope_with_context(plain, None) is plain
