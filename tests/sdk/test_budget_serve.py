"""Budgets as an operator meets them: ``[budget]`` of ``loom.toml`` limits the turns of the
agents ``loom serve`` hosts, and the spend shows in ``loom status``, ``/metrics`` and the
dashboard's ``/api/budgets``. A real ``loom serve`` subprocess, the real CLI, the scripted
model (calling tools forever) over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom.cli._config_budget import decode_budget
from loom.runtime import Budget, ConfigError, TenantBudget
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from tests.web._support import serve_http

from ._cli_support import clean_env, loom

pytestmark = pytest.mark.anyio

LOOPING = Reply(
    tool_calls=[ScriptedToolCall(name="clock_now")], prompt_tokens=10, completion_tokens=100
)


def _toml(server: ScriptedLLMServer) -> str:
    return f"""
[llm.scripted]
kind = "openai"
model = "scripted-model"
base_url = "{server.openai_base_url}"
timeout_s = 10
max_output_tokens = 200
cost_per_1k_input = 1.0
cost_per_1k_output = 2.0

[agents.looper]
llm = "scripted"
tools = ["clock.now"]
max_iterations = 50

[budget]
window_s = 600
turn_tokens = 100000
max_tool_calls = 40

[budget.agents.looper]
turn_tokens = 1000
"""


async def test_a_hosted_agents_turn_stops_at_its_budget_and_the_spend_shows(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer([LOOPING] * 100) as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm))
        env = clean_env()
        async with (
            serve_http(tmp_path, "--nats", "off", env=env) as (server, address, url),
            httpx2.AsyncClient(base_url=url, timeout=10) as http,
        ):
            await server.wait_for(r"hosting agent looper")
            asked = await loom("ask", "looper", "go", "-a", address, cwd=tmp_path, env=env)
            # [budget.agents.looper] (1000 tokens) over [budget] (100000): a few calls only.
            assert asked.returncode == 1
            assert b"agent.budget_exhausted: budget turn_tokens exhausted" in asked.stderr
            calls = len(llm.requests)
            assert 1 <= calls < 10
            spent = calls * 110

            shown = await loom("status", "--json", "-a", address, cwd=tmp_path, env=env)
            status = json.loads(shown.stdout)
            assert status["budget_tokens"] == spent
            assert status["budget_cost_usd"] == pytest.approx(calls * (0.01 + 0.2))
            assert status["budget_exhausted"] == 1
            assert status["budget_window_s"] == 600
            assert {"kind": "agent", "key": "looper", "tokens": spent} in [
                {k: row[k] for k in ("kind", "key", "tokens")} for row in status["budget_top"]
            ]
            text = await loom("status", "-a", address, cwd=tmp_path, env=env)
            assert f"budgets:     {spent} tokens" in text.stdout.decode()

            with anyio.fail_after(20):
                page = await http.get("/api/budgets")
                metrics = await http.get("/metrics")
                script = await http.get("/static/budgets.js")
                index = await http.get("/")
    assert page.json()["exhausted"] == {"turn_tokens": 1}
    assert page.json()["tokens"] == spent
    assert script.status_code == 200
    assert '<script src="/static/budgets.js" defer></script>' in index.text
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    [tokens] = families["loom_budget_tokens"].samples
    assert tokens.value == spent
    [refused] = families["loom_budget_exhausted"].samples
    assert (refused.labels, refused.value) == ({"budget": "turn_tokens"}, 1)
    window = {s.labels["key"]: s.value for s in families["loom_budget_window_tokens"].samples}
    assert window["looper"] == spent


def test_the_budget_table_decodes_and_says_what_is_wrong() -> None:
    table = decode_budget(
        {
            "window_s": 60,
            "max_keys": 100,
            "agent_tokens": 5000,
            "max_call_depth": 3,
            "agents": {"planner": {"turn_tokens": 10}},
            "tenants": {"team-a": {"tokens": 7, "cost_usd": 1.5}},
        },
        where="loom.toml",
    )
    assert (table.window_s, table.max_keys) == (60.0, 100)
    assert table.defaults == Budget(agent_tokens=5000, max_call_depth=3)
    assert table.agents == {"planner": Budget(turn_tokens=10)}
    assert table.tenants == {"team-a": TenantBudget(tokens=7, cost_usd=1.5)}
    for bad, says in (
        ({"turn_tokns": 1}, "unknown field `turn_tokns`"),
        ({"max_tool_calls": 0}, "max_tool_calls must be a number >= 1"),
        ({"window_s": 0}, "[budget] window_s: must be positive seconds"),
        ({"tenants": {"agent": {"tokens": 1}}}, "[budget.tenants.agent]: namespace 'agent'"),
        ({"agents": {"x": {"turn_tokens": "many"}}}, "[budget.agents.x]: Expected `int"),
    ):
        with pytest.raises(ConfigError) as caught:
            decode_budget(bad, where="loom.toml")
        assert says in str(caught.value), str(caught.value)
