"""Spend across processes: a cognitive agent in its own process (``Agent.run()``) calls its
model itself, and its spend counts in the server's ledger (``loom.v1.Budgets``): the server's
tenant budget refuses its next call before it would exceed, and ``loom status``, the metrics
and the dashboard's ``/api/budgets`` show the spend. A real ``loom serve``, a real agent
subprocess, the scripted model over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom.runtime.testing import Reply, ScriptedLLMServer
from tests.web._support import serve_http

from ._cli_support import PYTHON, clean_env, loom, running_argv

pytestmark = pytest.mark.anyio

AGENT = Path(__file__).with_name("_budget_spend_agent.py")
ANSWER = Reply(text="done", prompt_tokens=10, completion_tokens=100)

TOML = """
[budget]
window_s = 600

[budget.tenants.team-a]
tokens = 500
"""


async def test_a_remote_agents_spend_counts_in_the_servers_tenant_budget(
    tmp_path: Path,
) -> None:
    (tmp_path / "loom.toml").write_text(TOML)
    env = clean_env()
    async with (
        ScriptedLLMServer([ANSWER] * 10) as llm,
        serve_http(tmp_path, "--nats", "off", env=env) as (server, address, url),
        httpx2.AsyncClient(base_url=url, timeout=10) as http,
    ):
        agent_env = clean_env(LOOM_BRIDGE_ADDR=address)
        argv = [*PYTHON, str(AGENT), "team-a:writer", llm.openai_base_url]
        async with running_argv(argv, cwd=tmp_path, env=agent_env):
            await server.wait_for("agent team-a:writer connected")
            answered = 0
            with anyio.fail_after(60):
                while True:
                    asked = await loom("ask", "team-a:writer", "go", "-a", address, cwd=tmp_path)
                    if asked.returncode != 0:
                        break
                    answered += 1
            # Each call holds about 210 tokens (its prompt and max_tokens 200) and spends
            # 110: the tenant's 500 fit two or three calls, never a fourth.
            assert 2 <= answered <= 3, answered
            assert b"budget tenant_tokens exhausted" in asked.stderr, asked.stderr
            assert len(llm.requests) == answered  # the refused call was never made
            spent = 110 * answered
            shown = await loom("status", "--json", "-a", address, cwd=tmp_path)
            text = await loom("status", "-a", address, cwd=tmp_path)
            with anyio.fail_after(20):
                page = (await http.get("/api/budgets")).json()
                metrics = (await http.get("/metrics")).text
    status = json.loads(shown.stdout)
    assert status["budget_remote_tokens"] == spent
    assert status["budget_remote_calls"] == answered
    assert (
        f"budgets:     {spent} tokens, ${answered * 0.21:.4f} spent ({spent} tokens, "
        f"${answered * 0.21:.4f} by agents in their own process), 1 calls refused"
    ) in text.stdout.decode()
    assert page["remote"] == {
        "tokens": spent,
        "cost_usd": pytest.approx(answered * 0.21),
        "calls": answered,
    }
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    [remote] = families["loom_budget_remote_tokens"].samples
    assert remote.value == spent
    assert status["budget_tokens"] == spent
    assert status["budget_cost_usd"] == pytest.approx(answered * (0.01 + 0.2))
    assert status["budget_exhausted"] == 1
    top = {(r["kind"], r["key"]): r["tokens"] for r in status["budget_top"]}
    assert top[("tenant", "team-a")] == spent
    assert top[("agent", "team-a:writer")] == spent
