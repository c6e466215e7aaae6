"""Caps over agents calling agents, in process: the calls a tool that is an agent makes count
against the turn that called it (tool calls, parallel calls), and a chain of agent-to-agent
calls deeper than ``max_call_depth`` fails with ``CallDepthExceeded``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from loom import Agent, CognitiveAgent
from loom.runtime import AgentRuntime, Budget, EventBus
from loom.runtime.cognition import LoopConfig, TurnOutcome
from loom.runtime.collab import request
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._budget_agents import Calls, fan, leaf, relay

pytestmark = pytest.mark.anyio

WAIT = 10.0


def provider_for(server: ScriptedLLMServer) -> OpenAIProvider:
    config = ProviderConfig(
        kind="openai", model="m", base_url=server.openai_base_url, timeout_s=5.0
    )
    return OpenAIProvider("scripted", config)


@asynccontextmanager
async def hosting(*agents: Agent) -> AsyncIterator[AgentRuntime]:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        for agent in agents:
            await runtime.start(agent)
        yield runtime


async def turn(runtime: AgentRuntime, agent: CognitiveAgent) -> TurnOutcome:
    """Ask ``agent`` once and read its whole outcome off its stream."""
    async with runtime.bus.subscribe(agent.stream_topic) as stream:
        with anyio.fail_after(WAIT):
            await request(runtime.bus, f"agent.{agent.agent_id}.replies", b"go", timeout=WAIT)
            async for delivery in stream:
                if delivery.event.type == "turn.end":
                    return msgspec.json.decode(delivery.event.payload, type=TurnOutcome)
    raise AssertionError("no turn.end")


def calling(name: str, arguments: dict[str, Any] | None = None, n: int = 1) -> Reply:
    wire = name.replace(".", "_")
    return Reply(
        tool_calls=[ScriptedToolCall(name=wire, arguments=arguments or {}) for _ in range(n)]
    )


async def test_a_chain_deeper_than_the_cap_fails_with_a_typed_error() -> None:
    calls = Calls()
    chain = [
        relay("b", "hop.b", "hop.c", calls),
        relay("c", "hop.c", "hop.d", calls),
        relay("d", "hop.d", "hop.e", calls),
        relay("e", "hop.e", None, calls),
    ]
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(calling("hop.b"), Reply(text="done"))
        origin = CognitiveAgent(
            "origin", llm=llm, use_capabilities=["hop.b"], budget=Budget(max_call_depth=2)
        )
        async with hosting(*chain, origin) as runtime:
            outcome = await turn(runtime, origin)
    # origin -> b is depth 1, b -> c depth 2; c -> d would be 3: refused, d never ran.
    assert calls.count == {"hop.b": 1, "hop.c": 1}
    [result] = outcome.tool_results
    assert result.is_error
    assert result.error_type == "CallDepthExceeded"
    assert "call depth 3 is deeper than max_call_depth (2)" in result.content
    assert outcome.kind == "answer"  # the refusal is a result the model reads


async def test_without_a_depth_cap_the_chain_runs_to_its_end() -> None:
    calls = Calls()
    chain = [
        relay("b", "hop.b", "hop.c", calls),
        relay("c", "hop.c", "hop.d", calls),
        relay("d", "hop.d", None, calls),
    ]
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(calling("hop.b"), Reply(text="done"))
        origin = CognitiveAgent("origin", llm=llm, use_capabilities=["hop.b"])
        async with hosting(*chain, origin) as runtime:
            outcome = await turn(runtime, origin)
    assert calls.count == {"hop.b": 1, "hop.c": 1, "hop.d": 1}
    assert not outcome.tool_results[0].is_error


async def test_nested_calls_count_against_the_turns_tool_call_cap() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(calling("fan.out", {"n": 10}), calling("fan.out", {"n": 1}), Reply(text="x"))
        origin = CognitiveAgent(
            "origin", llm=llm, use_capabilities=["fan.out"], budget=Budget(max_tool_calls=4)
        )
        agents = [fan("fanner", "fan.out", "leaf.x", calls), leaf("leafer", "leaf.x", calls)]
        async with hosting(*agents, origin) as runtime:
            outcome = await turn(runtime, origin)
    # The turn's own call is one of the four; its tool may make three more, not ten.
    assert calls.count["leaf.x"] == 3
    first = outcome.tool_results[0]
    assert msgspec.json.decode(first.content) == {"ok": 3, "refused": 7}
    # The model's second call is refused too, and ends the turn.
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")
    assert outcome.tool_results[1].error_type == "ToolCallRefused"
    assert len(server.requests) == 2
    assert runtime.budgets.statistics().exhausted == (("max_tool_calls", 8),)


async def test_the_parallel_cap_holds_over_nested_calls() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        # One model answer asks for 50 calls of a tool that itself calls three at once.
        server.push(calling("fan.out", {"n": 3}, n=50), Reply(text="done"))
        origin = CognitiveAgent(
            "origin",
            llm=llm,
            use_capabilities=["fan.out"],
            config=LoopConfig(max_parallel_tools=50),
            budget=Budget(max_parallel_tool_calls=5),
        )
        agents = [
            fan("fanner", "fan.out", "leaf.x", calls, parallel=True),
            leaf("leafer", "leaf.x", calls, seconds=0.02),
        ]
        async with hosting(*agents, origin) as runtime:
            outcome = await turn(runtime, origin)
    assert outcome.kind == "answer"
    assert len(outcome.tool_results) == 50
    assert not any(r.is_error for r in outcome.tool_results)
    # Fans and their leaves together: never more than five at once.
    assert calls.peak <= 5
    assert calls.count["fan.out"] == 50
    counts = [msgspec.json.decode(r.content) for r in outcome.tool_results]
    assert sum(c["ok"] for c in counts) == calls.count["leaf.x"]
    assert sum(c["ok"] + c["refused"] for c in counts) == 150
