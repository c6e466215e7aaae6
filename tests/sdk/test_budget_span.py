"""Caps over a turn held in an agent's own process: its tool calls fan out over two other
agent processes, whose calls come back through the server. The server keeps one shared copy
of the turn's call scope (``frame_from_headers(..., shared=True)``), so the calls of every
process count in one count and one set of parallel slots, and the caps hold as in process
(``test_budget_agents.py``). The counts travel back with results (``ToolResult.scope_calls``),
so calls that never cross the server (local tools, in the turn's process or in a turn joined
in another process) count against the cap of the whole tree too. Real subprocesses
(``Agent.run()``), a real bridge server, the scripted model over real HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from loom.runtime import AgentRuntime, Budget
from loom.runtime.cognition import TurnOutcome
from loom.runtime.collab import request
from loom.runtime.testing import Reply, ScriptedLLMServer

from ..bridge._client_support import Hosting, hosting
from ._budget_agents import Calls, leaf
from .test_budget_agents import calling

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
WAIT = 60.0


@asynccontextmanager
async def processes(host: Hosting, *argvs: list[str]) -> AsyncIterator[None]:
    """The agent processes, each connected to ``host``, killed when the block ends."""
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    async with AsyncExitStack() as stack:
        for argv in argvs:
            process = await anyio.open_process([sys.executable, *argv], env=env, stderr=None)

            async def kill(process: anyio.abc.Process = process) -> None:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.aclose()

            stack.push_async_callback(kill)
        yield


async def ready(runtime: AgentRuntime, *tools: str) -> None:
    """Until every tool is offered and ``origin`` takes requests."""
    with anyio.fail_after(WAIT):
        while any(
            runtime.describe_tool(t) is None for t in tools
        ) or not runtime.directory.by_topic("agent.origin.replies"):
            await runtime.directory.wait_changed()


async def origin_turn(runtime: AgentRuntime) -> TurnOutcome:
    async with runtime.bus.subscribe("agent.origin.stream") as stream:
        with anyio.fail_after(WAIT):
            await request(runtime.bus, "agent.origin.replies", b"go", timeout=WAIT)
            async for delivery in stream:
                if delivery.event.type == "turn.end":
                    return msgspec.json.decode(delivery.event.payload, type=TurnOutcome)
    raise AssertionError("no turn.end")


def origin(server: ScriptedLLMServer, budget: Budget, *capabilities: str) -> list[str]:
    return [
        str(HERE / "_budget_origin_agent.py"),
        server.openai_base_url,
        msgspec.json.encode(budget).decode(),
        *(capabilities or ("fan.p1", "fan.p2")),
    ]


def fans(kind: str) -> list[list[str]]:
    return [[str(HERE / "_budget_remote_agent.py"), kind, name] for name in ("p1", "p2")]


def results(outcome: TurnOutcome) -> dict[str, int]:
    seen = {"ok": 0, "refused": 0}
    for result in outcome.tool_results:
        assert not result.is_error, result.content
        for key, value in msgspec.json.decode(result.content).items():
            seen[key] += value
    return seen


async def test_the_tool_call_cap_holds_over_two_agent_processes() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, hosting() as host:
        # One step, two calls: fan.p1 and fan.p2 each call leaf.x three times; then one more.
        step = Reply(
            tool_calls=[
                *calling("fan.p1", {"n": 3}).tool_calls,
                *calling("fan.p2", {"n": 3}).tool_calls,
            ]
        )
        server.push(step, calling("fan.p1", {"n": 1}), Reply(text="done"))
        await host.runtime.start(leaf("leafer", "leaf.x", calls))
        budget = Budget(max_tool_calls=5)
        async with processes(host, origin(server, budget), *fans("fan")):
            await ready(host.runtime, "fan.p1", "fan.p2")
            outcome = await origin_turn(host.runtime)
    # As in process: the turn's two calls and three of the six the two processes made; the
    # turn's next call is refused (the server's copy knows the others used the rest), and the
    # turn ends on the cap.
    assert calls.count == {"leaf.x": 3}
    first, second, third = outcome.tool_results
    assert results(TurnOutcome(kind="answer", tool_results=(first, second))) == {
        "ok": 3,
        "refused": 3,
    }
    assert third.is_error
    assert "refused: max_tool_calls (5) reached" in third.content
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")
    assert len(server.requests) == 2


async def test_local_calls_count_what_the_fanned_out_calls_used() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, hosting() as host:
        # One call that fans out (fan.p1 calls leaf.x three times, through the server), then
        # calls of a tool local to the turn's process, which never cross the server.
        local = calling("local.x", {})
        server.push(calling("fan.p1", {"n": 3}), local, local, local, local, Reply(text="done"))
        await host.runtime.start(leaf("leafer", "leaf.x", calls))
        budget = Budget(max_tool_calls=5)
        async with processes(host, origin(server, budget), *fans("fan")):
            await ready(host.runtime, "fan.p1", "fan.p2")
            outcome = await origin_turn(host.runtime)
    # The server sent back with fan.p1's result the three calls fan.p1 made: the turn's
    # process counts them beside its own two (fan.p1, one local.x), so its second local call
    # is the sixth of the tree and is refused. Without the count it would run four local
    # calls, eight in all.
    assert calls.count == {"leaf.x": 3}
    fanned, first, second = outcome.tool_results
    assert results(TurnOutcome(kind="answer", tool_results=(fanned,))) == {"ok": 3, "refused": 0}
    assert not first.is_error
    assert second.is_error
    assert "refused: max_tool_calls (5) reached" in second.content
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")
    assert len(server.requests) == 3


async def test_a_turn_joined_in_another_process_reports_its_local_calls() -> None:
    async with ScriptedLLMServer() as server, hosting() as host:
        local = calling("local.y", {})
        helper = [str(HERE / "_budget_helper_agent.py"), server.openai_base_url]
        # The turn calls think.helper, whose turn (in the helper's process, joining the
        # scope) calls its local tool twice; then the turn calls its own local tool.
        mine = calling("local.x", {})
        server.push(calling("think.helper", {}), local, local, Reply(text="thought"))
        server.push(mine, mine, mine, mine, mine, Reply(text="done"))
        budget = Budget(max_tool_calls=5)
        async with processes(host, origin(server, budget, "think.helper"), helper):
            await ready(host.runtime, "think.helper")
            outcome = await origin_turn(host.runtime)
    # The helper's two local calls came back to the server with think.helper's result, and
    # from the server to the turn: with its own three (think.helper, two local.x) the cap is
    # reached and its third local.x is refused. Without the count: five local.x calls.
    thought, first, second, third = outcome.tool_results
    assert msgspec.json.decode(thought.content) == {"kind": "answer", "ok": 2, "refused": 0}
    assert not first.is_error
    assert not second.is_error
    assert third.is_error
    assert "refused: max_tool_calls (5) reached" in third.content
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")


async def test_the_parallel_cap_holds_over_two_agent_processes() -> None:
    calls = Calls()
    async with ScriptedLLMServer() as server, hosting() as host:
        step = Reply(
            tool_calls=[
                *calling("fan.p1", {"n": 3}).tool_calls,
                *calling("fan.p2", {"n": 3}).tool_calls,
            ]
        )
        server.push(step, Reply(text="done"))
        # Each leaf call takes long enough that every nested call is made while one runs.
        await host.runtime.start(leaf("leafer", "leaf.x", calls, seconds=3.0))
        budget = Budget(max_parallel_tool_calls=3)
        async with processes(host, origin(server, budget), *fans("pfan")):
            await ready(host.runtime, "fan.p1", "fan.p2")
            outcome = await origin_turn(host.runtime)
    # As in process: the turn's two calls hold two of the three slots; the six nested calls
    # (three from each process, all at once) share the one left. The server counts each of
    # the turn's calls as it arrives: when fan.p2 reaches it after fan.p1's nested calls (the
    # two are sent at once; under load one lags), fan.p1 and two leaves hold the three slots
    # and fan.p2 waits for one (docs/guardrails.md). Never more than three; without the
    # shared copy all six leaves run at once.
    seen = results(outcome)
    if calls.peak == 1:
        assert seen == {"ok": 1, "refused": 5}
    else:
        assert calls.peak == 2
        assert seen["ok"] >= 2
        assert seen["ok"] + seen["refused"] == 6
