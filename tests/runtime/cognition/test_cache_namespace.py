"""A loop's model calls are its agent's namespace's: the response cache never gives the turn of
``team-b:planner`` an answer cached for ``team-a:planner``, and shares within a namespace."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from loom.runtime.cognition import Loop
from loom.runtime.llm import CACHE_FILENAME, CachedLLM, OpenAIProvider, ResponseStore
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import Reply, ScriptedLLMServer

from ._loop_support import provider_config

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_agents_of_two_namespaces_do_not_share_cached_answers(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="for a"), Reply(text="for b")]) as server,
            ResponseStore(tmp_path / CACHE_FILENAME) as store,
        ):
            config = msgspec.structs.replace(provider_config(server), cache=True)
            async with CachedLLM(OpenAIProvider("p", config), store) as llm:
                answers = {}
                for agent in ("team-a:planner", "team-b:planner", "team-a:writer"):
                    context = AgentContext(InMemoryStore(), agent_id="x", thread_id="t")
                    outcome = await Loop(llm, agent_id=agent).run(context, "same question")
                    answers[agent] = outcome.answer
                stats = llm.cache_statistics()
    assert answers == {
        "team-a:planner": "for a",
        "team-b:planner": "for b",
        "team-a:writer": "for a",
    }
    assert (stats.hits, stats.misses) == (1, 2)
