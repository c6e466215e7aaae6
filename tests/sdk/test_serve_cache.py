"""The response cache of a real ``loom serve``: shared by its callers through ``loom.v1.LLM``,
kept apart by tenant, counted in ``loom status``, and still answering after the server is
killed (``kill -9``) and started again on the same data directory, with the model gone."""

from __future__ import annotations

import json
import secrets
import signal
from pathlib import Path

import anyio
import grpc.aio
import pytest

from loom.bridge import ServerLLM
from loom.runtime.llm import CompletionRequest, LLMError, TextDelta, UserMessage
from loom.runtime.testing import Reply, ScriptedLLMServer

from ._cli_support import clean_env, loom, loom_serve

pytestmark = pytest.mark.anyio

ASK = CompletionRequest(messages=(UserMessage(content="what is the capital of France?"),))


def _toml(url: str) -> str:
    return f"""
[tokens.alpha]
token_env = "TEST_TOKEN_ALPHA"
namespace = "team-a"

[tokens.beta]
token_env = "TEST_TOKEN_BETA"
namespace = "team-b"

[llm.scripted]
kind = "openai"
model = "scripted-model"
base_url = "{url}"
timeout_s = 10
max_retries = 0
cache = true
"""


async def _complete(
    address: str, token: str, *, stream: bool = False, ask: CompletionRequest = ASK
) -> str:
    """The text of the server's answer to ``ask``, asked with ``token``."""
    async with grpc.aio.insecure_channel(address) as ch:

        async def channel() -> grpc.aio.Channel:
            return ch

        llm = ServerLLM(channel, lambda: (("authorization", f"Bearer {token}"),), timeout_s=10)
        if not stream:
            return (await llm.complete(ask)).text
        async with llm.stream(ask) as chunks:
            return "".join([c.text async for c in chunks if isinstance(c, TextDelta)])


async def _status(tmp_path: Path, address: str, admin: str) -> dict[str, int]:
    done = await loom(
        "status", "--json", "-a", address, cwd=tmp_path, env=clean_env(LOOM_TOKEN=admin)
    )
    assert done.returncode == 0, done.stderr
    cache: dict[str, int] = json.loads(done.stdout)["llm_cache"]
    return cache


async def test_the_cache_is_shared_kept_by_tenant_and_survives_a_kill(tmp_path: Path) -> None:
    tokens = {ns: secrets.token_urlsafe(24) for ns in ("team-a", "team-b", "admin")}
    env = clean_env(
        TEST_TOKEN_ALPHA=tokens["team-a"],
        TEST_TOKEN_BETA=tokens["team-b"],
        LOOM_ADMIN_TOKEN=tokens["admin"],
    )
    a, b = tokens["team-a"], tokens["team-b"]
    with anyio.fail_after(120):
        async with ScriptedLLMServer(
            [Reply(text="Paris, for team a.", chunk_size=3), Reply(text="Paris, for team b.")]
        ) as model:
            (tmp_path / "loom.toml").write_text(_toml(model.openai_base_url))
            async with loom_serve(tmp_path, "--nats", "off", env=env) as (server, address):
                await server.wait_for(r"response cache for scripted in \S+llm_cache\.sqlite3")
                assert await _complete(address, a) == "Paris, for team a."
                # Another call of team a's (another client: the cache is the server's) hits.
                assert await _complete(address, a, stream=True) == "Paris, for team a."
                assert len(model.requests) == 1
                # Team b asks the same and is not given team a's answer.
                assert await _complete(address, b) == "Paris, for team b."
                assert len(model.requests) == 2
                status = await _status(tmp_path, address, tokens["admin"])
                assert (status["hits"], status["misses"], status["entries"]) == (1, 2, 2)
                assert status["saved_tokens"] > 0
                assert status["bytes"] > 0
                assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
        # The model is gone; a new server on the same data directory still has the answers.
        async with loom_serve(tmp_path, "--nats", "off", env=env) as (server, address):
            assert await _complete(address, a, stream=True) == "Paris, for team a."
            assert await _complete(address, b) == "Paris, for team b."
            # What was not cached needs the model, which is gone: an error, itself not cached.
            other = CompletionRequest(messages=(UserMessage(content="and of Spain?"),))
            for _ in range(2):
                with pytest.raises(LLMError):
                    await _complete(address, a, ask=other)
            status = await _status(tmp_path, address, tokens["admin"])
            assert (status["hits"], status["misses"], status["entries"]) == (2, 2, 2)
            shown = await loom(
                "status", "-a", address, cwd=tmp_path, env=clean_env(LOOM_TOKEN=tokens["admin"])
            )
            assert "llm cache:   2 hits, 2 misses, " in shown.stdout.decode(), shown.stdout
            # A tenant's status shows none of it: the cache does not count by namespace.
            assert (await _status(tmp_path, address, a))["hits"] == 0
