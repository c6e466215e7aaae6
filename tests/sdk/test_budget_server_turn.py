"""A server's [budget] per-turn limits bind the turns of agents in their own process: a real
``loom serve`` and SDK agent subprocesses, whose own budgets are looser (or absent); the
agent takes the server's limits (``Budgets.TurnLimits``) as the stricter of the two."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import msgspec
import pytest

from loom.runtime import Budget, BudgetLedger
from loom.runtime.cognition._budgeting import TurnBudget
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import Running, clean_env, loom, loom_serve, running_argv

pytestmark = pytest.mark.anyio

AGENT = """\
import sys

import msgspec

from loom import CognitiveAgent
from loom.runtime import Budget, BudgetLedger
from loom.runtime.cognition._budgeting import TurnBudget
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.tools import FunctionTool

count = 0


async def local() -> str:
    global count
    count += 1
    print("local.x", count, flush=True)
    return "local"


def main(agent_id: str, base_url: str, budget: str) -> None:
    config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)
    tool = FunctionTool(
        local, name="local.x", description="A local tool.",
        parameters_schema={"type": "object", "properties": {}},
    )
    agent = CognitiveAgent(
        agent_id,
        llm=OpenAIProvider("scripted", config),
        tools=[tool],
        budget=msgspec.json.decode(budget, type=Budget),
    )
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""

TOML = """\
[budget]
max_tool_calls = 2

[budget.agents.tight]
turn_tokens = 50
"""


async def test_the_servers_turn_limits_bind_an_agent_in_its_own_process(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "loom.toml").write_text(TOML)
    local = Reply(tool_calls=[ScriptedToolCall(name="local_x", arguments={})])
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm, AsyncExitStack() as stack:
            llm.push(local, local, local, Reply(text="done"))
            _server, address = await stack.enter_async_context(
                loom_serve(tmp_path, "--nats", "off", env=clean_env(), timeout=60)
            )
            env = clean_env(LOOM_BRIDGE_ADDR=address)

            async def agent(agent_id: str, budget: Budget) -> Running:
                argv = [sys.executable, str(tmp_path / "agent.py"), agent_id]
                argv += [llm.openai_base_url, msgspec.json.encode(budget).decode()]
                proc = await stack.enter_async_context(running_argv(argv, cwd=tmp_path, env=env))
                await proc.wait_for(f"connected to .* as {agent_id}$", timeout=30)
                return proc

            # Its own cap is 10 calls a turn, the server's [budget] 2: the third is refused.
            loose = await agent("loose", Budget(max_tool_calls=10))
            asked = await loom("ask", "loose", "go", "-a", address, cwd=tmp_path, env=env)
            assert asked.returncode == 1, asked.stdout
            assert b"budget max_tool_calls exhausted" in asked.stderr, asked.stderr
            await loose.wait_for(r"^local\.x 2$")
            assert loose.count(r"^local\.x ") == 2, loose.output
            assert len(llm.requests) == 3

            # No turn limit of its own; the server's [budget.agents.tight] 50 tokens: the
            # first model call's estimate does not fit, and it is not made.
            await agent("tight", Budget())
            asked = await loom("ask", "tight", "go", "-a", address, cwd=tmp_path, env=env)
            assert asked.returncode == 1, asked.stdout
            assert b"budget turn_tokens exhausted" in asked.stderr, asked.stderr
            assert len(llm.requests) == 3


class _Server:
    """A budget authority that only answers its turn limits."""

    def __init__(self, limits: Budget | None) -> None:
        self.limits = limits

    async def hold(self, **_: object) -> None:
        return None

    async def turn_limits(self, agent_id: str) -> Budget | None:
        return self.limits


@pytest.mark.parametrize(
    ("own", "server", "applied"),
    [
        # Each limit the smaller of the two; one set on one side only applies as set.
        (Budget(max_tool_calls=1), Budget(max_tool_calls=2), Budget(max_tool_calls=1)),
        (Budget(max_tool_calls=3), Budget(max_tool_calls=2), Budget(max_tool_calls=2)),
        (
            Budget(turn_tokens=100, max_call_depth=3),
            Budget(turn_cost_usd=0.5, max_parallel_tool_calls=2),
            Budget(turn_tokens=100, turn_cost_usd=0.5, max_parallel_tool_calls=2, max_call_depth=3),
        ),
        # Window limits are the server's to hold (Budgets.Hold), not the turn's.
        (Budget(), Budget(agent_tokens=10), Budget()),
        # An old server: the agent's own alone.
        (Budget(max_tool_calls=4), None, Budget(max_tool_calls=4)),
    ],
)
async def test_a_turn_applies_the_stricter_of_the_servers_limits_and_its_own(
    own: Budget, server: Budget | None, applied: Budget
) -> None:
    ledger = BudgetLedger(authority=_Server(server))
    with anyio.fail_after(10):
        async with ScriptedLLMServer() as llm_server:
            config = ProviderConfig(kind="openai", model="m", base_url=llm_server.openai_base_url)
            async with OpenAIProvider("scripted", config) as llm:
                turn = TurnBudget(own, ledger, llm, "agent", "thread")
                await turn.prepare()  # no model call: the limits only
    assert turn.budget == applied
