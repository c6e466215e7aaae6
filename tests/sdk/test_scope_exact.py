"""The caps of a turn whose calls span processes hold exactly: every call of the tree, local
or routed, reserves its count and parallel slot from the one authority (the server,
``loom.v1.Scopes``) before it runs (docs/guardrails.md, "Across the bridge").

Real subprocesses (``Agent.run()``), a real bridge server, the scripted model over real HTTP;
the calls of every process are counted in one directory (``_scope_counter.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from loom.bridge import AgentRegistration, BridgeClient
from loom.runtime import Budget, BudgetLedger
from loom.runtime.cognition import Loop, LoopConfig, Toolset
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.lowlevel import CallScope
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import Reply, ScriptedLLMServer
from loom.runtime.tools import FunctionTool
from loom.runtime.tools._call_scope import _shared_scopes

from ..bridge._client_support import hosting
from ..bridge._server_harness import wait_until
from ._scope_counter import Running
from .test_budget_agents import calling
from .test_budget_span import origin_turn, processes, ready

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
AGENT = str(HERE / "_scope_exact_agent.py")
OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
WAIT = 60.0


def leaf(running: Running, seconds: float) -> Any:
    """Agent ``leafer`` offering ``leaf.x`` (hosted by the server's runtime)."""
    from loom import Agent

    async def run() -> str:
        async with running.call("leaf.x"):
            await anyio.sleep(seconds)
        return "leaf"

    tool = FunctionTool(run, name="leaf.x", description="A leaf.", parameters_schema=OBJECT)
    return Agent("leafer", capabilities=[tool])


def origin(server: ScriptedLLMServer, budget: Budget, root: Path, *caps: str) -> list[str]:
    return [
        AGENT,
        "origin",
        server.openai_base_url,
        msgspec.json.encode(budget).decode(),
        str(root),
        *caps,
    ]


def step(*replies: Reply) -> Reply:
    return Reply(tool_calls=[call for reply in replies for call in reply.tool_calls])


async def test_local_calls_beside_fan_out_share_the_parallel_cap(tmp_path: Path) -> None:
    running = Running(tmp_path)
    async with ScriptedLLMServer() as server, hosting() as host:
        # One step: two calls that fan out over two agent processes (two leaf calls each) and
        # one local call of the turn's own process, all running 1.5 s.
        server.push(
            step(calling("fan.p1", {"n": 2}), calling("fan.p2", {"n": 2}), calling("local.slow")),
            Reply(text="done"),
        )
        await host.runtime.start(leaf(running, 1.5))
        budget = Budget(max_parallel_tool_calls=3)
        fans = [[AGENT, "fan", name, str(tmp_path)] for name in ("p1", "p2")]
        async with processes(host, origin(server, budget, tmp_path, "fan.p1", "fan.p2"), *fans):
            await ready(host.runtime, "fan.p1", "fan.p2")
            outcome = await origin_turn(host.runtime)
    assert outcome.kind == "answer", outcome
    # The three calls of the turn hold the three slots (the local one's on the server too),
    # so the nested leaf calls find none free and are refused at once. Before, the local call
    # held only a slot of its own process: a leaf ran beside the three (4 at once).
    assert running.peak() <= 3, running.lines()
    assert running.calls()["local.slow"] == 1


async def test_a_turn_whose_calls_span_processes_makes_exactly_max_tool_calls(
    tmp_path: Path,
) -> None:
    running = Running(tmp_path)
    async with (
        ScriptedLLMServer() as server,
        ScriptedLLMServer() as thinking,
        hosting() as host,
    ):
        # The turn's one step: think.helper (whose turn, joined in the helper's process, calls
        # its local tool twice, then twice more) beside fan.p1 (three leaf calls at once, made
        # while the helper's turn runs). Nine calls are tried; the cap is six.
        server.push(step(calling("think.helper"), calling("fan.p1", {"n": 3})), Reply(text="done"))
        local = calling("local.y", n=2)
        thinking.push(local, local, Reply(text="thought"))
        await host.runtime.start(leaf(running, 0.3))
        budget = Budget(max_tool_calls=6)
        helper = [AGENT, "helper", thinking.openai_base_url, str(tmp_path)]
        fans = [AGENT, "fan", "p1", str(tmp_path)]
        argv = origin(server, budget, tmp_path, "think.helper", "fan.p1")
        async with processes(host, argv, helper, fans):
            await ready(host.runtime, "think.helper", "fan.p1")
            outcome = await origin_turn(host.runtime)
    assert outcome.kind == "answer", outcome
    # Exactly six calls ran in the whole tree, wherever they ran. Before, the helper's local
    # calls were counted in its own copy and reported after its turn, and the leaves were
    # counted on the server from what the turn had left when it sent its calls: all nine ran.
    assert sum(running.calls().values()) == 6, running.lines()


async def test_kill_9_of_a_process_holding_slots_frees_them(tmp_path: Path) -> None:
    running = Running(tmp_path)
    async with ScriptedLLMServer() as server, hosting() as host:
        server.push(calling("local.hang"), Reply(text="done"))
        budget = Budget(max_tool_calls=10, max_parallel_tool_calls=2)
        env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
        env.pop("LOOM_TOKEN", None)
        argv = [sys.executable, *origin(server, budget, tmp_path)]
        process = await anyio.open_process(argv, env=env, stderr=None)
        try:
            await ready(host.runtime)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_turn_ignoring_its_end, host)
                await wait_until((tmp_path / "hanging").exists, WAIT)
                # The local call holds its reservation on the server: the turn's scope there
                # has it counted and one slot taken.
                scope = _reserving_scope()
                assert scope is not None, "no slot held on the server for the local call"
                assert (scope.tool_calls, scope.in_flight, len(scope.reserved)) == (1, 1, 1)
                process.send_signal(signal.SIGKILL)
                await wait_until(lambda: not (scope.in_flight or scope.reserved), 10)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.aclose()
    assert running.calls() == {"local.hang": 1}


def _reserving_scope() -> CallScope | None:
    for scope in list(_shared_scopes.values()):
        if scope.reserved:
            return scope
    return None


async def _turn_ignoring_its_end(host: Any) -> None:
    with contextlib.suppress(Exception):  # the agent is killed: its turn never ends
        await origin_turn(host.runtime)


class _ScopesOnly:
    """A ledger authority that keeps model-call spend here but reserves calls on the server
    (so a stopped server reaches the tool calls only)."""

    def __init__(self, client: BridgeClient) -> None:
        self.scopes = client.scopes()
        self.scopes.timeout_s = 1.0

    async def hold(self, **_: Any) -> None:
        return None


async def test_an_unreachable_authority_fails_closed(tmp_path: Path) -> None:
    running = Running(tmp_path)
    cut = anyio.Event()

    async def hold_then_cut() -> str:
        async with running.call("local.cut"):
            cut.set()
            await anyio.sleep_forever()
        return "never"

    async def after() -> str:
        async with running.call("local.after"):
            pass
        return "ran"

    tools = Toolset(
        tools=[
            FunctionTool(
                hold_then_cut, name="local.cut", description="-", parameters_schema=OBJECT
            ),
            FunctionTool(after, name="local.after", description="-", parameters_schema=OBJECT),
        ]
    )
    async with ScriptedLLMServer() as server, hosting() as host:
        server.push(calling("local.cut"), calling("local.after"), Reply(text="done"))
        registration = AgentRegistration(agent_id="solo")
        async with BridgeClient(host.address, registration) as client:
            config = ProviderConfig(kind="openai", model="m", base_url=server.openai_base_url)
            ledger = BudgetLedger(authority=_ScopesOnly(client))
            async with OpenAIProvider("scripted", config) as llm:
                loop = Loop(
                    llm,
                    tools=tools,
                    config=LoopConfig(max_tokens=100),
                    agent_id="solo",
                    budget=Budget(max_tool_calls=5),
                    ledger=ledger,
                )
                context = AgentContext(InMemoryStore(), agent_id="solo", thread_id="t")
                with anyio.fail_after(WAIT):
                    async with anyio.create_task_group() as tg:

                        async def stop_when_held() -> None:
                            await cut.wait()
                            await host.stop()  # the authority goes away mid-call

                        tg.start_soon(stop_when_held)
                        outcome = await loop.run(context, "go")
    # The call running under a reservation was cut when its slot was freed with the stream;
    # the next call could not reserve (no server within 1 s) and was refused: the turn
    # ends on it, naming the call scope, and that call never ran.
    first, second = outcome.tool_results
    assert first.is_error
    assert "call was cut" in first.content, first.content
    assert second.is_error
    assert second.error_type == "ScopeUnavailable", second.content
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "call_scope")
    assert running.calls() == {"local.cut": 1}
