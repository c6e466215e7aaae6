"""Partial output of a running tool (``stream_tool_output``): it reaches the sink its caller
set, through the registry and its timeout, in order, and nowhere without one; the LLM loop
turns it into ``ToolOutput`` updates between a tool's start and finish."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from loom.runtime.cognition import ToolFinished, ToolOutput, ToolStarted
from loom.runtime.testing import Reply, ScriptedToolCall
from loom.runtime.tools import (
    FunctionTool,
    ToolRegistry,
    stream_tool_output,
    tool_output_sink,
)

from ..cognition._loop_support import Updates, scripted_loop

pytestmark = pytest.mark.anyio
# The registry's path is backend-neutral; the loop's model client runs on asyncio (as its tests).
both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def counting_tool() -> FunctionTool:
    async def count(n: int) -> str:
        for i in range(n):
            await stream_tool_output(f"{i} ")
            await anyio.lowlevel.checkpoint()
        await stream_tool_output("")  # nothing: not handed on
        return "counted"

    return FunctionTool(count, name="count", description="Count.", parameters_schema=_SCHEMA)


@both_backends
async def test_pieces_reach_the_callers_sink_through_the_registry() -> None:
    registry = ToolRegistry()
    registry.register(counting_tool(), timeout=5)
    pieces: list[str] = []

    async def sink(text: str) -> None:
        pieces.append(text)

    with tool_output_sink(sink):
        assert await registry.call("count", {"n": 3}) == "counted"
    assert pieces == ["0 ", "1 ", "2 "]
    # Outside the block, and with None inside one, pieces go nowhere.
    assert await registry.call("count", {"n": 2}) == "counted"
    with tool_output_sink(sink), tool_output_sink(None):
        assert await registry.call("count", {"n": 2}) == "counted"
    assert pieces == ["0 ", "1 ", "2 "]


@both_backends
async def test_each_task_streams_to_its_own_sink() -> None:
    registry = ToolRegistry()
    registry.register(counting_tool())
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def run(who: str, n: int) -> None:
        async def sink(text: str) -> None:
            got[who].append(text)

        with tool_output_sink(sink):
            await registry.call("count", {"n": n})

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", 2)
        tg.start_soon(run, "b", 3)
    assert got == {"a": ["0 ", "1 "], "b": ["0 ", "1 ", "2 "]}


async def test_the_loop_reports_pieces_between_start_and_finish() -> None:
    updates = Updates()
    async with scripted_loop(tools=[counting_tool()]) as (server, loop, context):
        server.push(
            Reply(tool_calls=[ScriptedToolCall(name="count", arguments={"n": 2})]),
            Reply(text="done"),
        )
        outcome = await loop.run(context, "count to two", on_update=updates)
    assert outcome.answer == "done"
    [started] = updates.of(ToolStarted)
    outputs = updates.of(ToolOutput)
    [finished] = updates.of(ToolFinished)
    assert [o.text for o in outputs] == ["0 ", "1 "]
    assert {(o.call_id, o.name, o.iteration) for o in outputs} == {(started.call_id, "count", 1)}
    kinds = [type(u).__name__ for u in updates.items]
    assert kinds.index("ToolStarted") < kinds.index("ToolOutput")
    assert kinds.index("ToolFinished") > len(kinds) - 1 - kinds[::-1].index("ToolOutput")
    assert finished.result.content == "counted"
