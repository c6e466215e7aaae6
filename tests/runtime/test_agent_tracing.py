"""The spans of agents on a traced bus: ``{topic} process`` around each handled event and
``call_tool {tool}`` around each ``ctx.tool``, nested under the publish that brought the
event; none at all on a bus without a tracer provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loom.runtime import AgentRuntime, Context, Event, EventBus
from loom.runtime.tools import FunctionTool

from ._agents_support import Seen, spec

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def _add_tool() -> FunctionTool:
    async def add(a: int, b: int) -> int:
        return a + b

    return FunctionTool(
        add,
        name="calc.add",
        description="Add two numbers.",
        parameters_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        },
    )


def _named(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_a_handled_event_and_its_tool_call_nest_under_the_publish(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    results: Seen[Any] = Seen()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        results.add(await ctx.tool("calc.add", {"a": 2, "b": 3}))
        await ctx.emit("jobs.done", payload=b"5")

    with anyio.fail_after(10):
        async with (
            EventBus(tracer_provider=provider) as bus,
            AgentRuntime(bus) as runtime,
            bus.subscribe("jobs.done") as done,
        ):
            await runtime.start(spec("calc", tools=[_add_tool()]))
            await runtime.start(spec("worker", handle, topics=["jobs.new"]))
            await bus.publish("jobs.new", Event())
            assert await results.wait_for(1) == [5]
            await done.receive()
    spans = exporter.get_finished_spans()
    sent = _named(spans, "jobs.new publish")
    process = _named(spans, "jobs.new process")
    call = _named(spans, "call_tool calc.add")
    reply = _named(spans, "jobs.done publish")
    assert process.kind is SpanKind.CONSUMER
    assert call.kind is SpanKind.CLIENT
    assert process.parent is not None
    assert sent.context is not None
    assert process.parent.span_id == sent.context.span_id
    assert process.context is not None
    # What the handler calls and emits is a child of its process span.
    assert call.parent is not None
    assert call.parent.span_id == process.context.span_id
    assert reply.parent is not None
    assert reply.parent.span_id == process.context.span_id
    assert {s.context.trace_id for s in (sent, process, call, reply) if s.context} == {
        sent.context.trace_id
    }
    attributes = dict(process.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "jobs.new"
    assert attributes["loom.agent.id"] == "worker"
    assert dict(call.attributes or {})["gen_ai.tool.name"] == "calc.add"


async def test_a_failing_handler_marks_its_span_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: Seen[str] = Seen()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        seen.add(topic)
        raise ValueError("bad event")

    with anyio.fail_after(10):
        async with EventBus(tracer_provider=provider) as bus, AgentRuntime(bus) as runtime:
            await runtime.start(spec("worker", handle, topics=["jobs.new"]))
            await bus.publish("jobs.new", Event())
            await seen.wait_for(1)
            await runtime.stop("worker")
    process = _named(exporter.get_finished_spans(), "jobs.new process")
    assert process.status.status_code is StatusCode.ERROR
    assert [e.name for e in process.events] == ["exception"]


async def test_an_untraced_bus_makes_agents_make_no_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    results: Seen[Any] = Seen()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        assert ctx.tracer_provider is None
        results.add(await ctx.tool("calc.add", {"a": 1, "b": 1}))

    with anyio.fail_after(10):
        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            assert bus.tracer_provider is None
            await runtime.start(spec("calc", tools=[_add_tool()]))
            await runtime.start(spec("worker", handle, topics=["jobs.new"]))
            # A span current in the publisher changes nothing on an untraced bus.
            with provider.get_tracer("test").start_as_current_span("outside"):
                await bus.publish("jobs.new", Event())
            assert await results.wait_for(1) == [2]
    assert [s.name for s in exporter.get_finished_spans()] == ["outside"]
