"""Cost budgets bind an agent in its own process on the server's model (``llm="server"``,
``ServerLLM``): each call's estimate is priced at the server's providers' prices before the
call, and its settle carries what the provider that served it charges, so the agent's own
``turn_cost_usd``, the server's ``[budget] agent_cost_usd`` and ``[budget.tenants.<ns>]
cost_usd`` refuse calls, and ``loom status`` shows the cost. A real ``loom serve`` with a
priced ``[llm]``, SDK agent subprocesses, the scripted model over real HTTP."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import msgspec
import pytest

from loom.runtime import Budget
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import Running, clean_env, loom, loom_serve, running_argv

pytestmark = pytest.mark.anyio

AGENT = """\
import sys

import msgspec

from loom import CognitiveAgent
from loom.runtime import Budget
from loom.runtime.tools import FunctionTool


async def local() -> str:
    return "local"


def main(agent_id: str, budget: str) -> None:
    tool = FunctionTool(
        local, name="local.x", description="A local tool.",
        parameters_schema={"type": "object", "properties": {}},
    )
    agent = CognitiveAgent(
        agent_id, llm="server", tools=[tool], budget=msgspec.json.decode(budget, type=Budget)
    )
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""

# A call's estimate: its prompt (some tens of tokens, at 0.1 per 1000) and max_output_tokens
# (100, at 10.0 per 1000): about 1.0 USD. What it costs: 10 prompt tokens and 50 generated,
# 0.001 + 0.5 = 0.501 USD.
COST = 0.501


def _toml(llm: ScriptedLLMServer) -> str:
    return f"""
[llm.scripted]
kind = "openai"
model = "scripted-model"
base_url = "{llm.openai_base_url}"
timeout_s = 10
max_retries = 0
max_output_tokens = 100
cost_per_1k_input = 0.1
cost_per_1k_output = 10.0

[budget]
window_s = 600
agent_cost_usd = 2.2

[budget.tenants.team-x]
cost_usd = 1.2
"""


LOOPING = Reply(
    tool_calls=[ScriptedToolCall(name="local_x")], prompt_tokens=10, completion_tokens=50
)


async def test_cost_budgets_bind_an_agent_on_the_servers_model(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(AGENT)
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm, AsyncExitStack() as stack:
            (tmp_path / "loom.toml").write_text(_toml(llm))
            _server, address = await stack.enter_async_context(
                loom_serve(tmp_path, "--nats", "off", env=clean_env(), timeout=60)
            )
            env = clean_env(LOOM_BRIDGE_ADDR=address)

            async def agent(agent_id: str, budget: Budget) -> Running:
                argv = [sys.executable, str(tmp_path / "agent.py"), agent_id]
                argv.append(msgspec.json.encode(budget).decode())
                proc = await stack.enter_async_context(running_argv(argv, cwd=tmp_path, env=env))
                await proc.wait_for(f"connected to .* as {agent_id}$", timeout=30)
                return proc

            async def ask(agent_id: str, calls: int, budget: str) -> bytes:
                """``loom ask`` it (the model calls a tool forever); the turn must be refused
                by ``budget`` after ``calls`` model calls."""
                before = len(llm.requests)
                asked = await loom("ask", agent_id, "go", "-a", address, cwd=tmp_path, env=env)
                assert asked.returncode == 1, asked.stdout
                assert f"budget {budget} exhausted".encode() in asked.stderr, asked.stderr
                assert len(llm.requests) - before == calls, asked.stderr
                return asked.stderr

            llm.push(*[LOOPING] * 30)
            # Its own turn_cost_usd 1.6: two calls spend 1.002; a third's estimate (about
            # 1.0 more) would pass it. The spend the refusal names is the server's price.
            await agent("turncost", Budget(turn_cost_usd=1.6))
            said = await ask("turncost", 2, "turn_cost_usd")
            assert f"{2 * COST:.6g} spent".encode() in said, said

            # No limit of its own; [budget] agent_cost_usd 2.2 on the server: three calls
            # spend 1.503, a fourth's estimate would pass it (Budgets.Hold refuses it).
            await agent("spender", Budget())
            said = await ask("spender", 3, "agent_cost_usd")
            assert f"{3 * COST:.6g} spent".encode() in said, said

            # Its tenant's [budget.tenants.team-x] cost_usd 1.2: one call, then refused.
            await agent("team-x:worker", Budget())
            said = await ask("team-x:worker", 1, "tenant_cost_usd")
            assert f"{COST:.6g} spent".encode() in said, said

            shown = await loom("status", "--json", "-a", address, cwd=tmp_path, env=env)
            text = await loom("status", "-a", address, cwd=tmp_path, env=env)
    status = json.loads(shown.stdout)
    calls = 2 + 3 + 1
    assert status["budget_remote_calls"] == calls
    assert status["budget_remote_tokens"] == calls * 60
    assert status["budget_remote_cost_usd"] == pytest.approx(calls * COST)
    assert status["budget_cost_usd"] == pytest.approx(calls * COST)
    assert f"${calls * COST:.4f} by agents in their own process" in text.stdout.decode()
