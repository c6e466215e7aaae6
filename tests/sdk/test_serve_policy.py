"""``loom serve`` with resilience policies from ``loom.toml``: a provider's named policy retries
the scripted model's scheduled 500s, a tool rule's breaker is made, and both show in
``/api/policies`` and ``/metrics`` of the real server process."""

from __future__ import annotations

from pathlib import Path

import anyio
import grpc.aio
import httpx2
import pytest

from loom.bridge import ServerLLM
from loom.cli._config import load_tables
from loom.runtime import ConfigError
from loom.runtime.llm import CompletionRequest, UserMessage
from loom.runtime.testing import FailSchedule, HTTPError, ScriptedLLMServer

from ._cli_support import clean_env, running

pytestmark = pytest.mark.anyio

TOKEN = "policy-test-token-0123456789abcdef"
ASK = CompletionRequest(messages=(UserMessage(content="hi"),))

POLICIES = """\
[policy.patient]
retry = { policy = "constant", duration = "10ms", max_retries = 3 }

[policy.guarded]
timeout = "2s"
circuit_breaker = { trip = "consecutiveFailures >= 3", timeout = "1m" }

[tools.policy]
"clock.*" = "guarded"

[requests.policy]
"billing.*" = "guarded"
"""


def _toml(llm: ScriptedLLMServer) -> str:
    return POLICIES + (
        "\n[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 10\n"
        'policy = "patient"\n'
    )


async def test_policies_of_loom_toml_guard_a_real_server(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.fail_on_schedule(FailSchedule(error=HTTPError(status=500), first=2))
        (tmp_path / "loom.toml").write_text(_toml(llm))
        env = clean_env(LOOM_TOKEN=TOKEN)
        data = str(tmp_path / "data")
        async with running(
            "serve",
            "--port",
            "0",
            "--http-port",
            "0",
            "--nats",
            "off",
            "--data-dir",
            data,
            cwd=tmp_path,
            env=env,
        ) as server:
            with anyio.fail_after(60):
                address = (await server.wait_for(r"listening on (\S+:\d+)")).group(1)
                dashboard = (await server.wait_for(r"dashboard on (\S+) ")).group(1)
                async with grpc.aio.insecure_channel(address) as channel:

                    async def give() -> grpc.aio.Channel:
                        return channel

                    model = ServerLLM(give, lambda: (("authorization", f"Bearer {TOKEN}"),))
                    assert (await model.complete(ASK)).text == "ok"
                assert llm.failed_on_schedule == 2
                bearer = {"authorization": f"Bearer {TOKEN}"}
                async with httpx2.AsyncClient(base_url=dashboard, timeout=10) as client:
                    rows = {
                        row["name"]: row
                        for row in (await client.get("/api/policies", headers=bearer)).json()
                    }
                    metrics = (await client.get("/metrics", headers=bearer)).text
    assert set(rows) == {
        "patient@llm.scripted",
        "guarded@tools:clock.*",
        "guarded@requests:billing.*",
    }
    assert rows["patient@llm.scripted"]["retries"] == 2
    assert rows["guarded@tools:clock.*"]["breaker"]["state"] == "closed"
    assert 'loom_policy_retries_total{policy="patient@llm.scripted"} 2.0' in metrics


def test_a_reference_to_an_unknown_policy_is_refused_by_name(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text('[tools.policy]\n"fs.*" = "missing"\n')
    with pytest.raises(ConfigError, match=r"\[tools.policy\]: 'fs.\*' names 'missing'"):
        load_tables(toml_path=toml, environ={})
    toml.write_text('[llm.a]\nkind = "openai"\nmodel = "m"\npolicy = "missing"\n')
    with pytest.raises(ConfigError, match=r"\[llm.a\]: policy = 'missing' names no"):
        load_tables(toml_path=toml, environ={})
    toml.write_text("[policy.p]\nretry = { policy = 'linear' }\n")
    with pytest.raises(ConfigError, match=r"\[policy.p\]"):
        load_tables(toml_path=toml, environ={})


def test_the_tables_decode(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(POLICIES + "\n[tools]\nclock = true\n")
    tables = load_tables(toml_path=toml, environ={})
    assert set(tables.policy.configs) == {"patient", "guarded"}
    assert tables.policy.tools == {"clock.*": "guarded"}
    assert tables.policy.requests == {"billing.*": "guarded"}
