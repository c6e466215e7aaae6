"""Calls made from inside an agent process's local tool count against its turn's caps, across
processes: the turn (in agent ``origin``'s own process, reserving from the server) calls its
local tool ``local.fan``, which calls ``leaf.x`` of agent ``leafer`` (another process) through
``ctx.tool``. The local call is one call of the turn and holds one slot; each call its body
makes is one more and takes a slot of its own (docs/guardrails.md, "What counts").

Real subprocesses (``Agent.run()``), a real bridge server, the scripted model over real HTTP;
the calls of every process are counted in one directory (``_scope_counter.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from loom.runtime import Budget
from loom.runtime.cognition import TurnOutcome
from loom.runtime.testing import Reply, ScriptedLLMServer

from ..bridge._client_support import hosting
from ._scope_counter import Running
from .test_budget_agents import calling
from .test_budget_span import origin_turn, processes, ready

pytestmark = pytest.mark.anyio

AGENT = str(Path(__file__).parent / "_scope_nested_agent.py")


async def fan_turn(tmp_path: Path, budget: Budget, n: int, refusals: int) -> TurnOutcome:
    async with ScriptedLLMServer() as server, hosting() as host:
        server.push(calling("local.fan"), Reply(text="done"))
        origin = [
            AGENT,
            "origin",
            server.openai_base_url,
            msgspec.json.encode(budget).decode(),
            str(tmp_path),
            str(n),
            str(refusals),
        ]
        async with processes(host, origin, [AGENT, "leaf", str(tmp_path)]):
            await ready(host.runtime, "leaf.x")
            return await origin_turn(host.runtime)


def fanned(outcome: TurnOutcome) -> dict[str, Any]:
    assert outcome.kind == "answer", outcome
    [result] = outcome.tool_results
    assert not result.is_error, result.content
    found: dict[str, Any] = msgspec.json.decode(result.content)
    return found


async def test_a_local_tools_nested_calls_count_against_max_tool_calls(tmp_path: Path) -> None:
    running = Running(tmp_path)
    outcome = await fan_turn(tmp_path, Budget(max_tool_calls=3), n=3, refusals=1)
    # local.fan is one call, two leaf calls make three: the third leaf call is refused.
    # Before, the body ran under local.fan's reservation and its calls named it: the server
    # took them as counted already, and all four calls ran.
    assert fanned(outcome) == {"ok": 2, "refused": ["max_tool_calls"]}
    assert running.calls() == {"local.fan": 1, "leaf.x": 2}, running.lines()


async def test_a_local_tools_nested_calls_take_parallel_slots(tmp_path: Path) -> None:
    running = Running(tmp_path)
    outcome = await fan_turn(tmp_path, Budget(max_parallel_tool_calls=2), n=3, refusals=2)
    # local.fan holds one of the two slots, one leaf call the other; the two others find
    # none free and are refused at once. Before, the leaf calls held no slot: four at once.
    assert fanned(outcome) == {"ok": 1, "refused": ["max_parallel_tool_calls"] * 2}
    assert running.peak() <= 2, running.lines()
    assert running.calls() == {"local.fan": 1, "leaf.x": 1}, running.lines()
