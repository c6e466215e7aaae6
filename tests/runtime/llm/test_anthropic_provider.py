"""The Anthropic provider against the scripted server's messages wire, over real HTTP."""

from __future__ import annotations

import pytest

from loom.runtime.llm import (
    AnthropicProvider,
    CompletionRequest,
    MalformedToolArguments,
    ProviderUnavailable,
    RateLimited,
    StreamEnd,
    SystemMessage,
    TextDelta,
    ToolCallReady,
    ToolMessage,
    ToolSpec,
    UnknownTool,
    UserMessage,
)
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer, ScriptedToolCall

from .conftest import API_KEY, config_for

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

READ = ToolSpec(
    name="fs.read",
    description="Read a file.",
    parameters_schema={"type": "object", "properties": {"path": {"type": "string"}}},
)
HISTORY = (SystemMessage(content="rule one"), SystemMessage(content="rule two"))


def ask(*extra: ToolMessage | UserMessage) -> CompletionRequest:
    return CompletionRequest(
        messages=(*HISTORY, UserMessage(content="read two files"), *extra), tools=(READ,)
    )


async def test_tool_calls_then_answer(server: ScriptedLLMServer) -> None:
    server.push(
        Reply(
            text="Reading.",
            tool_calls=[
                ScriptedToolCall(name="fs_read", arguments={"path": "/a"}, id="t1"),
                ScriptedToolCall(name="fs_read", arguments={"path": "/b"}, id="t2"),
            ],
        ),
        Reply(text="Both read."),
    )
    async with AnthropicProvider("claude", config_for(server, "anthropic")) as llm:
        first = await llm.complete(ask())
        assert first.finish_reason == "tool_calls"
        assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
            ("t1", "fs.read", {"path": "/a"}),
            ("t2", "fs.read", {"path": "/b"}),
        ]
        request = ask()
        request = CompletionRequest(
            messages=(
                *request.messages,
                first.message,
                ToolMessage(tool_call_id="t1", content="A"),
                ToolMessage(tool_call_id="t2", content="no such file", is_error=True),
            ),
            tools=request.tools,
        )
        second = await llm.complete(request)
    assert second.text == "Both read."
    assert second.finish_reason == "stop"

    first_request, second_request = server.requests
    assert first_request.path == "/v1/messages"
    # This SDK version sends the key as a bearer token; older ones used x-api-key.
    headers = first_request.headers
    sent_key = headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")
    assert sent_key == API_KEY
    assert first_request.body["system"] == "rule one\n\nrule two"
    assert first_request.body["max_tokens"] == 4096
    assert first_request.tools == [
        {
            "name": "fs_read",
            "description": "Read a file.",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ]
    assert first_request.body["tool_choice"] == {"type": "auto"}
    assert second_request.messages[1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "t1", "name": "fs_read", "input": {"path": "/a"}},
                {"type": "tool_use", "id": "t2", "name": "fs_read", "input": {"path": "/b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "A", "is_error": False},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": "no such file",
                    "is_error": True,
                },
            ],
        },
    ]


async def test_streaming_text_and_tool_calls(server: ScriptedLLMServer) -> None:
    server.push(
        Reply(
            text="Let me look.",
            tool_calls=[
                ScriptedToolCall(name="fs_read", arguments={"path": "/long/path/x"}, id="t1"),
                ScriptedToolCall(name="fs_read", arguments='{"path": ', id="t2"),
                ScriptedToolCall(name="shell_run", arguments={}, id="t3"),
            ],
            chunk_size=3,
            prompt_tokens=21,
            completion_tokens=9,
        )
    )
    async with (
        AnthropicProvider("claude", config_for(server, "anthropic")) as llm,
        llm.stream(ask()) as chunks,
    ):
        received = [chunk async for chunk in chunks]
    text = [c.text for c in received if isinstance(c, TextDelta)]
    assert len(text) > 1
    assert "".join(text) == "Let me look."
    good, bad, unknown = [c.call for c in received if isinstance(c, ToolCallReady)]
    assert (good.id, good.name, good.arguments) == ("t1", "fs.read", {"path": "/long/path/x"})
    assert isinstance(bad.error, MalformedToolArguments)
    assert isinstance(unknown.error, UnknownTool)
    end = received[-1]
    assert isinstance(end, StreamEnd)
    assert end.completion.finish_reason == "tool_calls"
    assert (end.completion.usage.prompt_tokens, end.completion.usage.completion_tokens) == (21, 9)
    assert end.completion.model == "scripted-model"


async def test_non_object_input_is_malformed(server: ScriptedLLMServer) -> None:
    server.push(Reply(tool_calls=[ScriptedToolCall(name="fs_read", arguments="{nope", id="t")]))
    async with AnthropicProvider("claude", config_for(server, "anthropic")) as llm:
        [call] = (await llm.complete(ask())).tool_calls
    assert isinstance(call.error, MalformedToolArguments)


async def test_rate_limit_then_success_and_exhausted_5xx(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=429, retry_after=0.05), Reply(text="ok"))
    server.push(*[HTTPError(status=529, message="overloaded")] * 2)
    async with AnthropicProvider("claude", config_for(server, "anthropic", max_retries=1)) as llm:
        assert (await llm.complete(ask())).text == "ok"
        with pytest.raises(ProviderUnavailable) as caught:
            await llm.complete(ask())
        stats = llm.statistics()
    assert caught.value.status == 529
    assert stats.errors.rate_limited == 1
    assert stats.errors.unavailable == 2


async def test_rate_limited_after_retries(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=429), HTTPError(status=429))
    async with AnthropicProvider("claude", config_for(server, "anthropic", max_retries=1)) as llm:
        with pytest.raises(RateLimited):
            await llm.complete(ask())
