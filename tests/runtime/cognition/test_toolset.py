"""``Toolset``: which tools a turn gets, from registries, loose tools and other agents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from loom.runtime import AgentRuntime, AgentSpec, EventBus, InvalidArgument
from loom.runtime.cognition import PeerCapabilities, Toolset
from loom.runtime.tools import FunctionTool, InvalidToolArguments, Tool, ToolNotFound, ToolRegistry

from ._loop_support import Offers

pytestmark = pytest.mark.anyio

SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {"x": {"type": "integer"}}}


def tool(name: str, result: str) -> Tool:
    async def run(x: int = 0) -> str:
        return f"{result}:{x}"

    return FunctionTool(run, name=name, description=f"{name} tool", parameters_schema=SCHEMA)


async def test_registries_come_first_then_loose_tools() -> None:
    registry = ToolRegistry()
    registry.register(tool("a", "registry"))
    toolset = Toolset([registry], tools=[tool("a", "loose"), tool("b", "loose")])
    turn = toolset.snapshot()
    assert turn.names == ("a", "b")
    assert await turn.call("a", {"x": 1}) == "registry:1"
    assert await turn.call("b", {}) == "loose:0"
    assert turn.specs[0].description == "a tool"
    assert dict(turn.specs[0].parameters_schema) == SCHEMA


async def test_calls_are_validated_by_the_registry() -> None:
    turn = Toolset(tools=[tool("a", "r")]).snapshot()
    with pytest.raises(InvalidToolArguments):
        await turn.call("a", {"x": "not a number"})
    with pytest.raises(ToolNotFound):
        await turn.call("zzz", {})


async def test_a_snapshot_does_not_change_with_the_registry() -> None:
    registry = ToolRegistry()
    toolset = Toolset([registry])
    before = toolset.snapshot()
    registry.register(tool("late", "r"))
    toolset.add(tool("later", "r"))
    assert len(before) == 0
    assert "late" not in before
    assert toolset.snapshot().names == ("late", "later")


def test_adding_a_name_twice_is_refused() -> None:
    toolset = Toolset(tools=[tool("a", "r")])
    with pytest.raises(InvalidArgument, match="already registered"):
        toolset.add(tool("a", "r"))


async def test_capabilities_of_running_agents() -> None:
    runtime_tools = ToolRegistry()
    runtime_tools.register(tool("native.x", "native"))
    async with EventBus() as bus, AgentRuntime(bus, tools=runtime_tools) as runtime:
        await runtime.start(AgentSpec(id="p1", factory=lambda: Offers(tool("cap.one", "p1"))))
        await runtime.start(AgentSpec(id="p2", factory=lambda: Offers(tool("cap.two", "p2"))))

        everything = Toolset(peers=PeerCapabilities(runtime)).snapshot()
        assert everything.names == ("cap.one", "cap.two")
        assert await everything.call("cap.two", {"x": 2}) == "p2:2"
        assert everything.specs[0].description == "cap.one tool"

        named = Toolset(peers=PeerCapabilities(runtime, ["cap.two", "missing"])).snapshot()
        assert named.names == ("cap.two",)

        mine = PeerCapabilities(runtime, exclude_agent="p1", include_runtime_tools=True)
        assert Toolset(peers=mine).snapshot().names == ("cap.two", "native.x")

        # A stopped agent's capabilities are no longer offered.
        await runtime.stop("p2")
        assert Toolset(peers=PeerCapabilities(runtime)).snapshot().names == ("cap.one",)


async def test_peer_calls_go_through_the_given_caller() -> None:
    calls: list[tuple[str, Mapping[str, Any], float | None]] = []

    async def caller(name: str, arguments: Mapping[str, Any], *, timeout: float | None) -> Any:
        calls.append((name, arguments, timeout))
        return "via caller"

    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        await runtime.start(AgentSpec(id="p1", factory=lambda: Offers(tool("cap.one", "p1"))))
        turn = Toolset(peers=PeerCapabilities(runtime, caller=caller)).snapshot()
        assert await turn.call("cap.one", {"x": 1}, timeout=2.0) == "via caller"
    assert calls == [("cap.one", {"x": 1}, 2.0)]
