"""The response cache in the Prometheus text of ``loom serve``'s metrics: lookups by result,
tokens saved, evictions, and what it holds, by provider."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom.metrics import MetricsConfig, open_metrics
from loom.runtime import EventBus
from loom.runtime.llm import (
    CACHE_FILENAME,
    CachedLLM,
    CompletionRequest,
    ModelRouter,
    ResponseStore,
    UserMessage,
    load_llm_config,
)
from loom.runtime.testing import Reply, ScriptedLLMServer

pytestmark = pytest.mark.anyio


async def test_the_cache_is_counted_in_the_metrics(tmp_path: Path) -> None:
    asks = [CompletionRequest(messages=(UserMessage(content=q),)) for q in ("a", "b", "a", "a")]
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="A"), Reply(text="B"), Reply(text="A")]) as server,
            ResponseStore(tmp_path / CACHE_FILENAME) as store,
            open_metrics(MetricsConfig()) as metrics,
            EventBus() as bus,
        ):
            table = {
                "scripted": {
                    "kind": "openai",
                    "model": "m",
                    "base_url": server.openai_base_url,
                    "cache": True,
                    "cache_max_entries": 1,
                }
            }
            async with ModelRouter.from_config(
                load_llm_config(table, environ={}), cache=store
            ) as router:
                metrics.observe(bus, router=router)
                for ask in asks:
                    await router.complete(ask)
                provider = router.providers["scripted"]
                assert isinstance(provider, CachedLLM)
                stats = provider.cache_statistics()
                text = metrics.prometheus()[0].decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    by = {"provider": "scripted"}

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({**by, **labels}.items()))]

    # a: miss, b: miss (evicts a: one entry at most), a: miss (evicts b), a: hit.
    assert value("loom_llm_cache_lookups_total", result="hit") == 1
    assert value("loom_llm_cache_lookups_total", result="miss") == 3
    assert value("loom_llm_cache_evictions_total") == 2
    assert value("loom_llm_cache_entries") == 1
    assert value("loom_llm_cache_bytes") == stats.bytes > 0
    saved = value("loom_llm_cache_saved_tokens_total", type="input")
    assert saved == stats.saved_prompt_tokens > 0
    assert value("loom_llm_cache_saved_tokens_total", type="output") == (
        stats.saved_completion_tokens
    )
