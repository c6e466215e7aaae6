"""One budget rule for hosted agents, as for agents in their own process: the operator's
``[budget]`` (with ``[budget.agents.<id>]`` over it, field by field) is a guard rail the
agent's own ``budget=`` cannot loosen; each turn applies the stricter of the two, limit by
limit. A real ``loom serve`` subprocess with a loom.toml, the scripted model over real HTTP
(calling a tool forever), and ``loom ask``.

``loom serve`` hosts the agents of ``[agents.<id>]`` (which have no budget of their own) and
any ``CognitiveAgent`` started on its runtime; the second kind needs code, so the server here
is ``loom serve`` run by a script that starts such agents on its runtime beside the
``[agents]`` ones (the real CLI, composition and config; only the hosted agents' list is
extended)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from loom.runtime import Budget, BudgetLedger, TenantBudget
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import clean_env, loom, running_argv

pytestmark = pytest.mark.anyio

SERVE = """\
import sys
from contextlib import asynccontextmanager

import msgspec

import loom.cli._serve as serve_module
from loom import CognitiveAgent
from loom.cli import main
from loom.runtime import Budget
from loom.runtime.tools import FunctionTool

CODE_AGENTS = msgspec.json.decode(sys.argv.pop(1), type=dict[str, Budget])
hosted_by_config = serve_module._hosted


async def local() -> str:
    return "local"


@asynccontextmanager
async def hosted(tables, runtime, router, data_dir):
    async with hosted_by_config(tables, runtime, router, data_dir) as agents:
        for agent_id, budget in CODE_AGENTS.items():
            tool = FunctionTool(
                local, name="local.x", description="A local tool.",
                parameters_schema={"type": "object", "properties": {}},
            )
            await runtime.start(CognitiveAgent(agent_id, llm=router, tools=[tool], budget=budget))
            print("hosting code agent", agent_id, flush=True)
        yield agents


serve_module._hosted = hosted
main()
"""


def _toml(server: ScriptedLLMServer) -> str:
    return f"""
[llm.scripted]
kind = "openai"
model = "scripted-model"
base_url = "{server.openai_base_url}"
timeout_s = 10
max_output_tokens = 200

[agents.big]
llm = "scripted"
tools = ["clock.now"]
max_iterations = 50

[budget]
window_s = 600
max_tool_calls = 3

[budget.agents.big]
max_tool_calls = 6

[budget.agents.windowed]
max_tool_calls = 50
agent_tokens = 700
"""


def _calling(tool: str) -> Reply:
    return Reply(tool_calls=[ScriptedToolCall(name=tool)], prompt_tokens=10, completion_tokens=100)


CODE_AGENTS = {
    # Its own cap (10) is looser than [budget]'s (3): [budget] stops it.
    "loose": Budget(max_tool_calls=10),
    # Its own (1) is stricter: its own stops it.
    "strict": Budget(max_tool_calls=1),
    # Its own agent window (a million tokens) is looser than [budget.agents.windowed]'s 700.
    "windowed": Budget(agent_tokens=1_000_000),
}


async def test_a_hosted_agents_turn_applies_the_stricter_of_its_budget_and_the_servers(
    tmp_path: Path,
) -> None:
    (tmp_path / "serve.py").write_text(SERVE)
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            (tmp_path / "loom.toml").write_text(_toml(llm))
            env = clean_env()
            argv = [sys.executable, "-u", str(tmp_path / "serve.py")]
            argv += [msgspec.json.encode(CODE_AGENTS).decode(), "serve", "--port", "0"]
            argv += ["--data-dir", str(tmp_path / "data"), "--nats", "off"]
            async with running_argv(argv, cwd=tmp_path, env=env) as server:
                address = (await server.wait_for(r"listening on (\S+:\d+)", timeout=60)).group(1)
                await server.wait_for(r"hosting code agent windowed", timeout=30)

                async def ask(agent: str, tool: str, calls: int) -> bytes:
                    """Ask ``agent`` with enough replies for ``calls`` tool calls and the
                    model call after; returns what ``loom ask`` said on stderr."""
                    before = len(llm.requests)
                    llm.push(*[_calling(tool)] * (calls + 1))
                    asked = await loom("ask", agent, "go", "-a", address, cwd=tmp_path, env=env)
                    assert asked.returncode == 1, asked.stdout
                    # The refused tool call ends the turn after the model call that asked it:
                    # ``calls`` tool calls ran, the cap's.
                    assert len(llm.requests) - before == calls + 1, asked.stderr
                    return asked.stderr

                said = await ask("loose", "local_x", 3)
                assert b"budget max_tool_calls exhausted" in said, said

                said = await ask("strict", "local_x", 1)
                assert b"budget max_tool_calls exhausted" in said, said

                # [budget.agents.big] raises one agent above [budget]: 6 calls, not 3.
                said = await ask("big", "clock_now", 6)
                assert b"budget max_tool_calls exhausted" in said, said

                llm.push(*[_calling("local_x")] * 20)
                asked = await loom("ask", "windowed", "go", "-a", address, cwd=tmp_path, env=env)
                assert asked.returncode == 1, asked.stdout
                assert b"budget agent_tokens exhausted" in asked.stderr, asked.stderr
                assert b"the limit is 700" in asked.stderr, asked.stderr
                assert llm.remaining > 10  # stopped within a few calls, not at the script's end


# [budget.agents.team-a:planner] over [budget], and [budget.tenants.team-a]'s tokens.
OPERATOR = Budget(
    turn_tokens=500, turn_cost_usd=1.0, max_tool_calls=4, max_call_depth=3, tenant_tokens=800
)


@pytest.mark.parametrize(
    ("own", "applied"),
    [
        # Looser than the operator's: the operator's.
        (Budget(turn_tokens=10_000, max_tool_calls=50), OPERATOR),
        # Stricter: its own.
        (
            Budget(turn_tokens=100, max_call_depth=1),
            msgspec.structs.replace(OPERATOR, turn_tokens=100, max_call_depth=1),
        ),
        # Cost limits too; the tenant's table is the operator's tenant limit; a limit the
        # operator leaves unset applies as the agent sets it.
        (
            Budget(turn_cost_usd=9.0, tenant_tokens=10**9, tenant_cost_usd=0.5),
            msgspec.structs.replace(OPERATOR, tenant_cost_usd=0.5),
        ),
    ],
)
def test_the_ledger_gives_the_stricter_of_the_agents_and_the_operators(
    own: Budget, applied: Budget
) -> None:
    ledger = BudgetLedger(
        defaults=Budget(turn_tokens=500, turn_cost_usd=1.0, max_tool_calls=2, max_call_depth=3),
        agents={"team-a:planner": Budget(max_tool_calls=4)},
        tenants={"team-a": TenantBudget(tokens=800)},
    )
    assert ledger.budget_for("team-a:planner", own) == applied


def test_an_agents_table_overrides_the_defaults_field_by_field() -> None:
    ledger = BudgetLedger(
        defaults=Budget(turn_tokens=500, agent_tokens=1000),
        agents={"planner": Budget(turn_tokens=5000)},
    )
    assert ledger.operator_budget("planner") == Budget(turn_tokens=5000, agent_tokens=1000)
    assert ledger.budget_for("other", Budget()) == Budget(turn_tokens=500, agent_tokens=1000)
