"""Spans of a turn: invoke_agent {agent} > iteration[n] > chat {model} /
execute_tool {tool}, with GenAI attributes."""

from __future__ import annotations

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from loom.runtime import Envelope, Event
from loom.runtime.cognition import LoopConfig
from loom.runtime.lowlevel import envelope_with_context
from loom.runtime.testing import Delay, HTTPError, RecordedRequest, Reply, ScriptedToolCall
from loom.runtime.tools import FunctionTool

from ._loop_support import OBJECT, echo_tool, scripted_loop

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else int(span.parent.span_id)


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_the_span_tree_of_a_turn(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def fail() -> str:
        raise ValueError("nope")

    failing = FunctionTool(fail, name="fail", description="", parameters_schema=OBJECT)
    async with scripted_loop(tools=[echo_tool(), failing], tracer_provider=tracer_provider) as (
        server,
        loop,
        context,
    ):
        server.push(
            Reply(
                tool_calls=[
                    ScriptedToolCall(name="echo", arguments={"text": "a"}),
                    ScriptedToolCall(name="fail"),
                ],
                prompt_tokens=11,
                completion_tokens=7,
            ),
            Reply(text="done", prompt_tokens=20, completion_tokens=3),
        )
        outcome = await loop.run(context, "go")
    assert outcome.kind == "answer"
    spans = exporter.get_finished_spans()
    [turn] = by_name(spans, "invoke_agent tester")
    [it1] = by_name(spans, "iteration[1]")
    [it2] = by_name(spans, "iteration[2]")
    calls = by_name(spans, "chat scripted-model")
    [echo] = by_name(spans, "execute_tool echo")
    [fail_span] = by_name(spans, "execute_tool fail")

    assert turn.parent is None
    assert parent_of(it1) == parent_of(it2) == span_id(turn)
    assert [parent_of(c) for c in calls] == [span_id(it1), span_id(it2)]
    assert parent_of(echo) == parent_of(fail_span) == span_id(it1)
    assert turn.context is not None
    assert {s.context.trace_id for s in spans if s.context} == {turn.context.trace_id}

    turn_attrs = dict(turn.attributes or {})
    assert turn_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert turn_attrs["gen_ai.agent.id"] == "tester"
    assert turn_attrs["gen_ai.conversation.id"] == "t1"
    assert turn_attrs["gen_ai.usage.input_tokens"] == 31
    assert turn_attrs["gen_ai.usage.output_tokens"] == 10
    assert turn_attrs["loom.turn.outcome"] == "answer"
    assert turn_attrs["loom.turn.iterations"] == 2

    it1_attrs = dict(it1.attributes or {})
    assert it1_attrs["gen_ai.response.model"] == "scripted-model"
    assert it1_attrs["gen_ai.usage.input_tokens"] == 11
    assert it1_attrs["gen_ai.usage.output_tokens"] == 7
    assert it1_attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    call_attrs = dict(calls[0].attributes or {})
    assert call_attrs["gen_ai.request.model"] == "scripted-model"
    assert call_attrs["gen_ai.usage.input_tokens"] == 11

    echo_attrs = dict(echo.attributes or {})
    assert echo_attrs["gen_ai.operation.name"] == "execute_tool"
    assert echo_attrs["gen_ai.tool.name"] == "echo"
    assert echo_attrs["gen_ai.tool.call.id"] == outcome.tool_results[0].call_id
    assert echo.status.status_code is not StatusCode.ERROR
    assert fail_span.status.status_code is StatusCode.ERROR
    assert dict(fail_span.attributes or {})["error.type"] == "ToolFailed"


async def test_the_turn_continues_the_trace_of_its_event(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("upstream") as upstream:
        envelope = envelope_with_context(Envelope(thread_id="t1"), None)
    event = Event(type="ask", payload=b"go", envelope=envelope)
    async with scripted_loop(tracer_provider=tracer_provider) as (server, loop, context):
        server.push(Reply(text="ok"))
        await loop.run(context, "go", event=event)
    [turn] = by_name(exporter.get_finished_spans(), "invoke_agent tester")
    assert turn.context is not None
    assert turn.context.trace_id == upstream.get_span_context().trace_id
    assert parent_of(turn) == upstream.get_span_context().span_id


async def test_an_error_outcome_marks_the_turn_span(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with scripted_loop(tracer_provider=tracer_provider) as (server, loop, context):
        server.push(HTTPError(status=401, message="who are you"))
        outcome = await loop.run(context, "go")
    assert outcome.kind == "error"
    [turn] = by_name(exporter.get_finished_spans(), "invoke_agent tester")
    assert turn.status.status_code is StatusCode.ERROR
    attrs = dict(turn.attributes or {})
    assert (attrs["loom.turn.outcome"], attrs["error.type"]) == ("error", "RequestRejected")


async def test_a_budget_exhausted_turn_is_recorded_on_its_span(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    config = LoopConfig(max_iterations=1)
    async with scripted_loop(
        tools=[echo_tool()], config=config, tracer_provider=tracer_provider
    ) as (server, loop, context):
        server.push(Reply(tool_calls=[ScriptedToolCall(name="echo", arguments={"text": "x"})]))
        await loop.run(context, "go")
    [turn] = by_name(exporter.get_finished_spans(), "invoke_agent tester")
    assert dict(turn.attributes or {})["loom.turn.outcome"] == "budget_exhausted"


async def test_a_cancelled_turn_ends_its_spans(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    asked = anyio.Event()

    def slow(request: RecordedRequest) -> Delay:
        asked.set()
        return Delay(seconds=10)

    async with scripted_loop(tracer_provider=tracer_provider) as (server, loop, context):
        server.push(slow)
        turn = loop.turn(context, "go")
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(turn.run)
                await asked.wait()
                turn.cancel()
    spans = exporter.get_finished_spans()
    [span] = by_name(spans, "invoke_agent tester")
    assert dict(span.attributes or {})["loom.turn.outcome"] == "cancelled"
    assert by_name(spans, "iteration[1]")
    assert by_name(spans, "chat scripted-model")
