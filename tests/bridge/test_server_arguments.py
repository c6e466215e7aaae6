"""A tool call's arguments nested too deep, too large or malformed are refused with a typed
result on every entry point (``ToolService.Call``, ``Bridge.ForwardToolCall``, a ``call`` frame of
a stream), and the caller's stream and the server serve on."""

from __future__ import annotations

import json

import anyio
import grpc
import pytest

from loom.bridge import Limits
from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.runtime.tools import MAX_ARGUMENT_BYTES, MAX_ARGUMENT_DEPTH, FunctionTool, ToolRegistry

from ._server_harness import OldAgent, channel, serving

pytestmark = pytest.mark.anyio

CALLS = bridge_pb2.STREAM_FEATURE_TOOL_CALLS


def nested(depth: int, kind: str = "object") -> str:
    """JSON text of an arguments object ``depth`` deep (the object itself is 1)."""
    if kind == "array":
        inner = "[" * (depth - 1) + "]" * (depth - 1)
    else:
        inner = '{"a": ' * (depth - 1) + "1" + "}" * (depth - 1)
    return '{"x": ' + inner + "}" if depth > 1 else "{}"


# What a client sends: far beyond any decoder's recursion limit, and just beyond the bound.
TOO_DEEP = [
    pytest.param("[" * 100_000 + "]" * 100_000, id="brackets-100k"),
    pytest.param(nested(10_000), id="object-10k"),
    pytest.param(nested(MAX_ARGUMENT_DEPTH + 1), id="object-limit+1"),
    pytest.param(nested(MAX_ARGUMENT_DEPTH + 1, "array"), id="array-limit+1"),
]


def registry() -> ToolRegistry:
    # A plain schema'd tool: the registry's own validation is what meets the arguments.
    tools = ToolRegistry()
    tools.register(
        FunctionTool(
            lambda **kwargs: kwargs,
            name="t.echo",
            description="returns its arguments",
            parameters_schema={"type": "object"},
        )
    )
    return tools


def tool_call(arguments: str, call_id: str = "") -> tools_pb2.ToolCall:
    return tools_pb2.ToolCall(id=call_id, name="t.echo", arguments=arguments)


def assert_too_deep(result: tools_pb2.ToolResult) -> None:
    assert result.status == tools_pb2.TOOL_INVALID_ARGUMENTS, result
    assert result.error.code == "INVALID_ARGUMENTS"
    assert f"nested more than {MAX_ARGUMENT_DEPTH} deep" in result.error.message


async def connected(ch: grpc.aio.Channel, agent_id: str) -> OldAgent:
    agent = await OldAgent(ch, agent_id).connect()
    await agent.send(bridge_pb2.ClientEvent(hello=bridge_pb2.StreamHello(features=[CALLS])))
    assert CALLS in (await agent.next("welcome")).welcome.features
    return agent


async def assert_serving(agent: OldAgent) -> None:
    """The server still answers a good call, unary and on the stream."""
    result = await agent.tools.Call(tool_call('{"ok": 1}'))
    assert (result.status, json.loads(result.output)) == (tools_pb2.TOOL_OK, {"ok": 1})
    await agent.send(bridge_pb2.ClientEvent(call=tool_call('{"ok": 2}', "good")))
    result = (await agent.next("call_result")).call_result
    assert (result.id, result.status) == ("good", tools_pb2.TOOL_OK)
    assert json.loads(result.output) == {"ok": 2}


@pytest.mark.parametrize("arguments", TOO_DEEP)
async def test_tool_service_call_refuses_too_deep_arguments(arguments: str) -> None:
    async with serving(tools=registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            assert_too_deep(await agent.tools.Call(tool_call(arguments)))
            await assert_serving(agent)


@pytest.mark.parametrize("arguments", TOO_DEEP)
async def test_forward_tool_call_refuses_too_deep_arguments(arguments: str) -> None:
    async with serving(tools=registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            assert_too_deep(await agent.bridge.ForwardToolCall(tool_call(arguments)))
            await assert_serving(agent)


@pytest.mark.parametrize("arguments", TOO_DEEP)
async def test_a_call_on_the_stream_refuses_too_deep_arguments_and_the_stream_serves_on(
    arguments: str,
) -> None:
    async with serving(tools=registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            await agent.send(bridge_pb2.ClientEvent(call=tool_call(arguments, "deep")))
            result = (await agent.next("call_result")).call_result
            assert result.id == "deep"
            assert_too_deep(result)
            # The same stream: pings and the next call are answered.
            await agent.ping(2)
            await assert_serving(agent)


async def test_arguments_at_the_depth_limit_are_taken() -> None:
    async with serving(tools=registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            for kind in ("object", "array"):
                text = nested(MAX_ARGUMENT_DEPTH, kind)
                result = await agent.tools.Call(tool_call(text))
                assert result.status == tools_pb2.TOOL_OK, result
                assert json.loads(result.output) == json.loads(text)


# Within max_message_bytes (4 MiB), so they reach the registry: each is refused there.
BAD = [
    pytest.param(
        json.dumps({"x": "y" * MAX_ARGUMENT_BYTES}),
        f"more than the {MAX_ARGUMENT_BYTES} allowed",
        id="over-max-argument-bytes",
    ),
    pytest.param('{"x": ', "not valid JSON", id="malformed-json"),
    pytest.param("[1, 2]", "expected a JSON object", id="not-an-object"),
]


@pytest.mark.parametrize(("arguments", "reason"), BAD)
@pytest.mark.parametrize("entry", ["ToolService.Call", "Bridge.ForwardToolCall", "stream"])
async def test_bad_arguments_end_only_their_call_on_every_entry_point(
    entry: str, arguments: str, reason: str
) -> None:
    async with serving(tools=registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            call = tool_call(arguments, "bad")
            if entry == "stream":
                await agent.send(bridge_pb2.ClientEvent(call=call))
                result = (await agent.next("call_result")).call_result
                assert result.id == "bad"
                await agent.ping(2)
            elif entry == "Bridge.ForwardToolCall":
                result = await agent.bridge.ForwardToolCall(call)
            else:
                result = await agent.tools.Call(call)
            assert result.status == tools_pb2.TOOL_INVALID_ARGUMENTS, result
            assert reason in result.error.message
            await assert_serving(agent)


async def test_arguments_larger_than_max_message_bytes_are_refused_by_grpc() -> None:
    # Past Limits.max_message_bytes gRPC refuses a unary request before any of it is decoded
    # (MAX_ARGUMENT_BYTES is the registry's bound below that, the same for every caller).
    limits = Limits(max_message_bytes=4096)
    large = json.dumps({"x": "y" * 8000})
    async with serving(tools=registry(), limits=limits) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        with anyio.fail_after(10):
            for rpc in (agent.tools.Call, agent.bridge.ForwardToolCall):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await rpc(tool_call(large))
                assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            await assert_serving(agent)
