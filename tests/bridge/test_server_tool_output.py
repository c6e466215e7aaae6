"""Partial tool output across the stream (``STREAM_FEATURE_TOOL_OUTPUT``), frame by frame
through the raw stubs: a ``call``'s pieces come before its ``call_result`` and only when asked
for; a pushed call's pieces reach the caller's sink, and only those of the agent it was pushed
to."""

from __future__ import annotations

import json

import anyio
import pytest

from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.bridge._tool_output import MAX_PIECES, WANTS_OUTPUT
from loom.runtime.tools import FunctionTool, ToolRegistry, stream_tool_output, tool_output_sink

from ._server_harness import OldAgent, channel, descriptor, serving, wait_until

pytestmark = pytest.mark.anyio

CALLS = bridge_pb2.STREAM_FEATURE_TOOL_CALLS
OUTPUT = bridge_pb2.STREAM_FEATURE_TOOL_OUTPUT
PIECES = 20


def counting() -> ToolRegistry:
    """``t.count``: streams ``PIECES`` pieces, then answers ``"counted"``."""

    async def count() -> str:
        for i in range(PIECES):
            await stream_tool_output(f"piece {i};")
        return "counted"

    tools = ToolRegistry()
    tools.register(
        FunctionTool(
            count,
            name="t.count",
            description="Count, piece by piece.",
            parameters_schema={"type": "object", "properties": {}},
        )
    )
    return tools


async def connected(
    ch: object, agent_id: str, *features: bridge_pb2.StreamFeature, tools: object = ()
) -> OldAgent:
    agent = await OldAgent(ch, agent_id).connect(tools=tools)  # type: ignore[arg-type]
    await agent.send(bridge_pb2.ClientEvent(hello=bridge_pb2.StreamHello(features=features)))
    welcome = (await agent.next("welcome")).welcome
    assert set(features) <= set(welcome.features)
    return agent


def call(call_id: str, name: str, *, wants: bool = True) -> bridge_pb2.ClientEvent:
    headers = {WANTS_OUTPUT: "1"} if wants else {}
    msg = tools_pb2.ToolCall(id=call_id, name=name, arguments="{}", headers=headers)
    return bridge_pb2.ClientEvent(call=msg)


async def test_the_pieces_of_a_call_come_in_order_before_its_result() -> None:
    async with serving(tools=counting()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller", CALLS, OUTPUT)
        await agent.send(call("c1", "t.count"))
        pieces = []
        for _ in range(PIECES):
            piece = (await agent.next("tool_output")).tool_output
            assert piece.id == "c1"
            pieces.append(piece.text)
        assert pieces == [f"piece {i};" for i in range(PIECES)]
        result = (await agent.next("call_result")).call_result
        assert (result.id, json.loads(result.output)) == ("c1", "counted")


async def test_a_call_that_takes_no_output_gets_the_result_only() -> None:
    async with serving(tools=counting()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller", CALLS, OUTPUT)
        # The caller has no sink (no loom-tool-output header): nothing is streamed to it.
        await agent.send(call("c1", "t.count", wants=False))
        result = (await agent.next("call_result")).call_result
        assert (result.id, json.loads(result.output)) == ("c1", "counted")


async def test_a_stream_without_the_feature_gets_the_result_only() -> None:
    async with serving(tools=counting()) as s, channel(s.target) as ch:
        agent = await connected(ch, "old", CALLS)
        await agent.send(call("c1", "t.count"))
        # next() fails on any other frame first: no tool_output reaches this stream.
        result = (await agent.next("call_result")).call_result
        assert (result.id, json.loads(result.output)) == ("c1", "counted")
        # An original client's ForwardToolCall: the final result, nothing else.
        forwarded = await agent.bridge.ForwardToolCall(
            tools_pb2.ToolCall(id="f1", name="t.count", arguments="{}"), timeout=5
        )
        assert json.loads(forwarded.output) == "counted"


async def test_a_pushed_calls_pieces_reach_the_callers_sink_and_no_one_elses() -> None:
    async with serving() as s, channel(s.target) as ch:
        served = await connected(ch, "server-of-x", OUTPUT, tools=[descriptor("x.stream")])
        other = await connected(ch, "intruder", OUTPUT)
        await wait_until(lambda: s.runtime.describe_tool("x.stream") is not None)
        got: list[str] = []

        async def sink(text: str) -> None:
            got.append(text)

        outcome: list[object] = []

        async def caller() -> None:
            with tool_output_sink(sink):
                outcome.append(await s.runtime.call_tool("x.stream", {}, timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            pushed = (await served.next("tool_call")).tool_call
            assert pushed.headers[WANTS_OUTPUT] == "1"  # the caller has a sink
            # Another agent (of any tenant) cannot feed pieces into a call it was not given.
            forged = tools_pb2.ToolOutput(id=pushed.id, text="forged")
            await other.send(bridge_pb2.ClientEvent(tool_output=forged))
            await other.ping(1)  # answered: the forged piece was read (and ignored) by now
            for text in ("a", "b", "c"):
                piece = tools_pb2.ToolOutput(id=pushed.id, text=text)
                await served.send(bridge_pb2.ClientEvent(tool_output=piece))
            await served.answer(pushed.id, "done")
        assert outcome == ["done"]
        assert got == ["a", "b", "c"]


async def test_pieces_from_an_agent_without_the_feature_are_ignored() -> None:
    async with serving() as s, channel(s.target) as ch:
        served = await connected(ch, "plain", CALLS, tools=[descriptor("x.plain")])
        await wait_until(lambda: s.runtime.describe_tool("x.plain") is not None)
        got: list[str] = []

        async def sink(text: str) -> None:
            got.append(text)

        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                with tool_output_sink(sink):
                    await s.runtime.call_tool("x.plain", {}, timeout=10)

            tg.start_soon(caller)
            pushed = (await served.next("tool_call")).tool_call
            assert WANTS_OUTPUT not in pushed.headers
            piece = tools_pb2.ToolOutput(id=pushed.id, text="unasked")
            await served.send(bridge_pb2.ClientEvent(tool_output=piece))
            await served.answer(pushed.id, "done")
        assert got == []


async def test_a_slow_caller_drops_pieces_counted_but_never_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = 200
    async with serving() as s, channel(s.target) as ch:
        served = await connected(ch, "fast", OUTPUT, tools=[descriptor("x.fast")])
        await wait_until(lambda: s.runtime.describe_tool("x.fast") is not None)
        got: list[str] = []
        release = anyio.Event()

        async def slow_sink(text: str) -> None:
            got.append(text)
            await release.wait()  # the caller takes its first piece, then stalls

        outcome: list[object] = []

        async def caller() -> None:
            with tool_output_sink(slow_sink):
                outcome.append(await s.runtime.call_tool("x.fast", {}, timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            pushed = (await served.next("tool_call")).tool_call
            for i in range(sent):
                piece = tools_pb2.ToolOutput(id=pushed.id, text=f"{i}")
                await served.send(bridge_pb2.ClientEvent(tool_output=piece))
            await served.answer(pushed.id, "done")
            # The server's reader went on (the pong proves it read everything before it);
            # the stalled caller held it back for nothing.
            await served.ping(7)
            release.set()
    # One piece in the sink, MAX_PIECES waiting, the rest dropped and counted.
    assert got == [str(i) for i in range(1 + MAX_PIECES)]
    assert outcome == ["done"]
    dropped = sent - 1 - MAX_PIECES
    assert f"{dropped} pieces of its partial output dropped" in caplog.text
