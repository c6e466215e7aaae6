"""The OpenAI provider against the scripted server, over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom.runtime import DeadlineExceeded
from loom.runtime.llm import (
    AssistantMessage,
    CompletionRequest,
    MalformedToolArguments,
    OpenAIProvider,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    StreamEnd,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolMessage,
    ToolSpec,
    UnknownTool,
    UserMessage,
)
from loom.runtime.testing import Delay, HTTPError, Reply, ScriptedLLMServer, ScriptedToolCall

from .conftest import API_KEY, config_for

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

READ = ToolSpec(
    name="fs.read",
    description="Read a file.",
    parameters_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)


def ask(text: str = "read /etc/hostname", **fields: Any) -> CompletionRequest:
    base = CompletionRequest(
        messages=(SystemMessage(content="be brief"), UserMessage(content=text)), tools=(READ,)
    )
    return msgspec.structs.replace(base, **fields)


async def test_tool_call_then_answer(server: ScriptedLLMServer) -> None:
    server.push(
        Reply(tool_calls=[ScriptedToolCall(name="fs_read", arguments={"path": "/etc/hostname"})]),
        Reply(text="The host is loom."),
    )
    async with OpenAIProvider("local", config_for(server)) as llm:
        first = await llm.complete(ask())
        assert first.finish_reason == "tool_calls"
        [call] = first.tool_calls
        assert call.name == "fs.read"
        assert call.arguments == {"path": "/etc/hostname"}
        assert call.error is None

        follow_up = ask(
            messages=(
                *ask().messages,
                first.message,
                ToolMessage(tool_call_id=call.id, content="loom"),
            )
        )
        second = await llm.complete(follow_up)
    assert second.text == "The host is loom."
    assert second.finish_reason == "stop"
    assert second.provider == "local"
    assert second.model == "scripted-model"

    # The history went back on the wire with the safe name, the call id and JSON arguments.
    sent = server.requests[1].messages
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "fs_read", "arguments": '{"path": "/etc/hostname"}'},
            }
        ],
    }
    assert sent[3] == {"role": "tool", "tool_call_id": call.id, "content": "loom"}


async def test_tool_schema_on_the_wire_is_the_openai_function_format(
    server: ScriptedLLMServer,
) -> None:
    server.push(Reply(text="ok"))
    async with OpenAIProvider("local", config_for(server)) as llm:
        await llm.complete(ask())
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.tools == [
        {
            "type": "function",
            "function": {
                "name": "fs_read",
                "description": "Read a file.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
            },
        }
    ]
    assert request.body["tool_choice"] == "auto"
    assert request.body["model"] == "scripted-model"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_no_tools_sends_no_tool_fields(server: ScriptedLLMServer) -> None:
    server.push(Reply(text="hi"))
    async with OpenAIProvider("local", config_for(server)) as llm:
        await llm.complete(CompletionRequest(messages=(UserMessage(content="hi"),)))
    assert "tools" not in server.requests[0].body
    assert "tool_choice" not in server.requests[0].body


@pytest.mark.openai_stream
async def test_streaming_text(server: ScriptedLLMServer) -> None:
    server.push(Reply(text="Hello, streaming world!", chunk_size=3))
    async with (
        OpenAIProvider("local", config_for(server)) as llm,
        llm.stream(ask()) as chunks,
    ):
        received = [chunk async for chunk in chunks]
    deltas = [c.text for c in received if isinstance(c, TextDelta)]
    assert len(deltas) == 8  # the text really arrived in pieces
    assert "".join(deltas) == "Hello, streaming world!"
    end = received[-1]
    assert isinstance(end, StreamEnd)
    assert end.completion.text == "Hello, streaming world!"
    assert end.completion.finish_reason == "stop"
    assert end.completion.usage.completion_tokens > 0
    assert server.requests[0].body["stream_options"] == {"include_usage": True}


@pytest.mark.openai_stream
async def test_streamed_tool_calls_are_assembled(server: ScriptedLLMServer) -> None:
    args_a = {"path": "/a/very/long/path/that/spans/many/chunks.txt"}
    server.push(
        Reply(
            text="Reading both.",
            tool_calls=[
                ScriptedToolCall(name="fs_read", arguments=args_a, id="call_a"),
                ScriptedToolCall(name="fs_read", arguments={"path": "/b"}, id="call_b"),
            ],
            chunk_size=5,
        )
    )
    async with (
        OpenAIProvider("local", config_for(server)) as llm,
        llm.stream(ask()) as chunks,
    ):
        received = [chunk async for chunk in chunks]
    ready = [c.call for c in received if isinstance(c, ToolCallReady)]
    assert ready == [
        ToolCall(id="call_a", name="fs.read", arguments=args_a, raw_arguments=json.dumps(args_a)),
        ToolCall(
            id="call_b", name="fs.read", arguments={"path": "/b"}, raw_arguments='{"path": "/b"}'
        ),
    ]
    end = received[-1]
    assert isinstance(end, StreamEnd)
    assert end.completion.tool_calls == tuple(ready)
    assert end.completion.finish_reason == "tool_calls"
    assert end.completion.text == "Reading both."


@pytest.mark.parametrize("streaming", [False, pytest.param(True, marks=pytest.mark.openai_stream)])
async def test_malformed_tool_arguments_are_a_typed_error_on_the_call(
    server: ScriptedLLMServer, streaming: bool
) -> None:
    server.push(
        Reply(
            tool_calls=[
                ScriptedToolCall(name="fs_read", arguments='{"path": "/x"', id="bad"),
                ScriptedToolCall(name="fs_read", arguments="[1, 2]", id="not_object"),
                ScriptedToolCall(name="fs_read", arguments={"path": "/ok"}, id="good"),
            ]
        )
    )
    async with OpenAIProvider("local", config_for(server)) as llm:
        if streaming:
            async with llm.stream(ask()) as chunks:
                calls = [c.call async for c in chunks if isinstance(c, ToolCallReady)]
        else:
            calls = list((await llm.complete(ask())).tool_calls)
    bad, not_object, good = calls
    assert isinstance(bad.error, MalformedToolArguments)
    assert bad.error.call_id == "bad"
    assert bad.error.tool_name == "fs.read"
    assert bad.error.raw_arguments == '{"path": "/x"'
    assert "not valid JSON" in str(bad.error)
    assert bad.arguments == {}
    assert isinstance(not_object.error, MalformedToolArguments)
    assert "not an object" in str(not_object.error)
    assert good.error is None
    assert good.arguments == {"path": "/ok"}


async def test_malformed_call_goes_back_as_empty_arguments(server: ScriptedLLMServer) -> None:
    server.push(
        Reply(tool_calls=[ScriptedToolCall(name="fs_read", arguments="{oops", id="c1")]),
        Reply(text="sorry"),
    )
    async with OpenAIProvider("local", config_for(server)) as llm:
        first = await llm.complete(ask())
        [call] = first.tool_calls
        assert call.error is not None
        await llm.complete(
            ask(
                messages=(
                    *ask().messages,
                    first.message,
                    ToolMessage(tool_call_id="c1", content=str(call.error), is_error=True),
                )
            )
        )
    echoed = server.requests[1].messages[2]["tool_calls"][0]["function"]
    assert echoed == {"name": "fs_read", "arguments": "{}"}


async def test_unknown_tool_name_is_a_typed_error(server: ScriptedLLMServer) -> None:
    server.push(Reply(tool_calls=[ScriptedToolCall(name="rm_rf", arguments={}, id="c9")]))
    async with OpenAIProvider("local", config_for(server)) as llm:
        [call] = (await llm.complete(ask())).tool_calls
    assert isinstance(call.error, UnknownTool)
    assert call.name == "rm_rf"
    assert call.error.call_id == "c9"


async def test_429_then_success_honours_retry_after_capped(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=429, message="slow down", retry_after=30), Reply(text="ok"))
    config = config_for(server, retry_after_max_s=0.2)
    async with OpenAIProvider("local", config) as llm:
        start = anyio.current_time()
        completion = await llm.complete(ask())
        elapsed = anyio.current_time() - start
        stats = llm.statistics()
    assert completion.text == "ok"
    assert len(server.requests) == 2
    # Waited for the cap (not 30s, and not the 10ms backoff).
    assert 0.2 <= elapsed < 2
    assert stats.retries == 1
    assert stats.errors.rate_limited == 1
    assert stats.succeeded == 1


async def test_retry_after_shorter_than_cap_is_used(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=429, retry_after=0.15), Reply(text="ok"))
    async with OpenAIProvider("local", config_for(server, retry_after_max_s=10)) as llm:
        start = anyio.current_time()
        await llm.complete(ask())
        assert 0.15 <= anyio.current_time() - start < 2


async def test_retry_past_the_deadline_is_not_attempted(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=429, retry_after=3), Reply(text="never"))
    config = config_for(server, timeout_s=0.5, retry_after_max_s=10)
    async with OpenAIProvider("local", config) as llm:
        start = anyio.current_time()
        with pytest.raises(RateLimited) as caught:
            await llm.complete(ask())
        assert anyio.current_time() - start < 0.5
    assert caught.value.retry_after == 3
    assert len(server.requests) == 1


async def test_500_retries_exhausted(server: ScriptedLLMServer) -> None:
    server.push(*[HTTPError(status=500, message="boom")] * 3)
    async with OpenAIProvider("local", config_for(server, max_retries=2)) as llm:
        with pytest.raises(ProviderUnavailable) as caught:
            await llm.complete(ask())
        stats = llm.statistics()
    assert caught.value.status == 500
    assert caught.value.provider == "local"
    assert "boom" in str(caught.value)
    assert len(server.requests) == 3
    assert stats.errors.unavailable == 3
    assert stats.retries == 2
    assert stats.failed == 1


async def test_400_is_not_retried(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=400, message="bad schema"), Reply(text="unused"))
    async with OpenAIProvider("local", config_for(server)) as llm:
        with pytest.raises(RequestRejected) as caught:
            await llm.complete(ask())
    assert caught.value.status == 400
    assert len(server.requests) == 1
    assert server.remaining == 1


async def test_timeout(server: ScriptedLLMServer) -> None:
    server.push(Delay(seconds=5))
    async with OpenAIProvider("local", config_for(server, max_retries=0)) as llm:
        start = anyio.current_time()
        with pytest.raises(ProviderTimeout) as caught:
            await llm.complete(ask(timeout_s=0.3))
        assert anyio.current_time() - start < 2
        assert llm.statistics().errors.timeout == 1
    assert isinstance(caught.value, DeadlineExceeded)
    assert isinstance(caught.value, TimeoutError)


@pytest.mark.openai_stream
async def test_stream_open_timeout(server: ScriptedLLMServer) -> None:
    server.push(Delay(seconds=5))
    async with OpenAIProvider("local", config_for(server, max_retries=0)) as llm:
        opening = llm.stream(ask(timeout_s=0.3))
        with pytest.raises(ProviderTimeout):
            await opening.__aenter__()
        assert llm.statistics().failed == 1


@pytest.mark.openai_stream
async def test_stream_open_error_is_raised_by_async_with(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=503), HTTPError(status=503), Reply(text="third time"))
    async with OpenAIProvider("local", config_for(server)) as llm, llm.stream(ask()) as chunks:
        text = "".join([c.text async for c in chunks if isinstance(c, TextDelta)])
    assert text == "third time"
    assert len(server.requests) == 3


@pytest.mark.openai_stream
async def test_usage_recorded_and_span_attributes(
    server: ScriptedLLMServer, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    server.push(
        Reply(text="a", prompt_tokens=11, completion_tokens=7),
        Reply(text="b", prompt_tokens=5, completion_tokens=3),
    )
    async with OpenAIProvider("local", config_for(server), tracer_provider=tracer_provider) as llm:
        first = await llm.complete(ask(temperature=0.2, max_tokens=50))
        async with llm.stream(ask()) as chunks:
            async for _ in chunks:
                pass
        stats = llm.statistics()
    assert first.usage.prompt_tokens == 11
    assert first.usage.completion_tokens == 7
    assert first.usage.total_tokens == 18
    assert first.latency_s > 0
    assert (stats.calls, stats.succeeded, stats.failed) == (2, 2, 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (16, 10)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat scripted-model", "chat scripted-model"]
    attributes = dict(spans[0].attributes or {})
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "scripted-model"
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert dict(spans[1].attributes or {})["gen_ai.usage.output_tokens"] == 3


async def test_failed_call_span_has_error_type(
    server: ScriptedLLMServer, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    server.push(HTTPError(status=401, message="who are you"))
    async with OpenAIProvider("local", config_for(server), tracer_provider=tracer_provider) as llm:
        with pytest.raises(RequestRejected):
            await llm.complete(ask())
    [span] = exporter.get_finished_spans()
    assert (span.attributes or {})["error.type"] == "RequestRejected"
    assert not span.status.is_ok


async def test_history_roles_on_the_wire(server: ScriptedLLMServer) -> None:
    server.push(Reply(text="ok"))
    request = CompletionRequest(
        messages=(
            SystemMessage(content="sys"),
            UserMessage(content="u"),
            AssistantMessage(content="a"),
            UserMessage(content="u2"),
        ),
        temperature=0.5,
        max_tokens=12,
    )
    async with OpenAIProvider("local", config_for(server)) as llm:
        await llm.complete(request)
    body = server.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "u2"},
    ]
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 12


async def test_a_request_without_max_tokens_gets_the_configured_bound(
    server: ScriptedLLMServer,
) -> None:
    server.push(Reply(text="ok"), Reply(text="ok"))
    async with OpenAIProvider("local", config_for(server, max_output_tokens=321)) as llm:
        await llm.complete(ask())
        await llm.complete(ask(max_tokens=7))
    assert [r.body["max_tokens"] for r in server.requests] == [321, 7]


async def test_connection_refused_is_unavailable() -> None:
    # A port that was just free and is closed again: nothing listens there.
    async with ScriptedLLMServer() as closed:
        config = config_for(closed, max_retries=1)
    async with OpenAIProvider("gone", config) as llm:
        with pytest.raises(ProviderUnavailable) as caught:
            await llm.complete(ask())
    assert caught.value.status is None
    assert llm.statistics().errors.unavailable == 2
