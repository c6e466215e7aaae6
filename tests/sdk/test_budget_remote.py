"""Caps across the bridge: a turn on the server calls a remote SDK agent process (a real
subprocess, ``Agent.run()``), whose own calls come back through the server. The turn's call
scope travels in ``ToolCall.headers`` both ways, so the remote agent's calls count against the
turn (tool calls) and go no deeper than it allows (depth)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from loom import CognitiveAgent
from loom.runtime import AgentRuntime, Budget
from loom.runtime.testing import Reply, ScriptedLLMServer

from ..bridge._client_support import Hosting, hosting
from ._budget_agents import Calls, leaf, relay
from .test_budget_agents import calling, provider_for, turn

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).with_name("_budget_remote_agent.py")


@asynccontextmanager
async def remote_agent(host: Hosting, kind: str, tool: str) -> AsyncIterator[None]:
    """The remote agent process, running and offering ``tool`` when the block starts."""
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    process = await anyio.open_process([sys.executable, str(SCRIPT), kind], env=env, stderr=None)
    try:
        await offered(host.runtime, tool)
        yield
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def offered(runtime: AgentRuntime, tool: str) -> None:
    with anyio.fail_after(30):
        while runtime.describe_tool(tool) is None:
            await runtime.directory.wait_changed()


async def test_the_depth_cap_holds_through_a_remote_agent() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, provider_for(server) as llm, hosting() as host:
        server.push(calling("hop.remote"), Reply(text="done"))
        # origin -> remote (1) -> c (2) -> d (3: refused) -> e
        for agent in (
            relay("c", "hop.c", "hop.d", calls),
            relay("d", "hop.d", "hop.e", calls),
            leaf("e", "hop.e", calls),
        ):
            await host.runtime.start(agent)
        origin = CognitiveAgent(
            "origin", llm=llm, use_capabilities=["hop.remote"], budget=Budget(max_call_depth=2)
        )
        await host.runtime.start(origin)
        async with remote_agent(host, "relay", "hop.remote"):
            outcome = await turn(host.runtime, origin)
    # The remote agent's call came back with its depth: c ran, d was refused.
    assert calls.count == {"hop.c": 1}
    [result] = outcome.tool_results
    assert result.is_error
    assert "call depth 3 is deeper than max_call_depth (2)" in result.content
    assert host.runtime.budgets.statistics().exhausted == (("max_call_depth", 1),)


async def test_a_remote_agents_calls_count_against_the_turn() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, provider_for(server) as llm, hosting() as host:
        server.push(calling("fan.remote", {"n": 6}), Reply(text="done"))
        await host.runtime.start(leaf("leafer", "leaf.x", calls))
        origin = CognitiveAgent(
            "origin", llm=llm, use_capabilities=["fan.remote"], budget=Budget(max_tool_calls=3)
        )
        await host.runtime.start(origin)
        async with remote_agent(host, "fan", "fan.remote"):
            outcome = await turn(host.runtime, origin)
    # The turn's call to the remote agent is one of three; of its six, two may run.
    assert calls.count == {"leaf.x": 2}
    [result] = outcome.tool_results
    assert msgspec.json.decode(result.content) == {"ok": 2, "refused": 4}
    assert outcome.kind == "answer"
