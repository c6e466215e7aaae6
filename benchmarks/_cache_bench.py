"""``cache_hit_ms`` of ``benchmarks/guardrails.py``: a completion answered by the response cache.

A ``CachedLLM`` over the real ``OpenAIProvider`` and a ``ResponseStore`` in a temporary SQLite
file (WAL, as ``loom serve`` keeps it); the answer is cached by one call, then ``complete`` is
timed ``HITS`` times (each a lookup in the file through a worker thread, a decode, the answer).
Same run baseline: the same provider, uncached, calling the ``ScriptedLLMServer`` on 127.0.0.1
``CALLS`` times (the cheapest model there is: a real one is 100-10,000 times slower).

Figures (p50 over the calls, and p99): ``cache_hit_ms`` (target <= 1), ``cache_hit_stream_ms``
(the same answer replayed as a stream, read to its end), ``uncached_call_ms`` (the baseline),
and ``uncached_over_hit`` (how many times faster the hit is).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from loom.runtime.llm import (
    CACHE_FILENAME,
    CachedLLM,
    CompletionRequest,
    OpenAIProvider,
    ProviderConfig,
    ResponseStore,
    SystemMessage,
    UserMessage,
)
from loom.runtime.testing import Reply, ScriptedLLMServer

__all__ = ["measure_cache"]

HITS = 1000
CALLS = 200

REQUEST = CompletionRequest(
    messages=(
        SystemMessage(content="You are a terse assistant. " * 20),
        UserMessage(content="Summarise the plot of Hamlet in two sentences."),
    ),
    max_tokens=256,
)
ANSWER = "A prince avenges his father's murder by his uncle. " * 8


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def measure_cache() -> dict[str, float]:
    """The cache's figures (see the module docs), as a dict for the one JSON line."""
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            ScriptedLLMServer([Reply(text=ANSWER) for _ in range(CALLS + 1)]) as server,
            ResponseStore(Path(tmp) / CACHE_FILENAME) as store,
        ):
            config = ProviderConfig(
                kind="openai",
                model="bench",
                base_url=server.openai_base_url,
                max_retries=0,
                cache=True,
            )
            async with OpenAIProvider("scripted", config) as provider:
                uncached: list[float] = []
                for _ in range(CALLS):
                    start = time.perf_counter()
                    await provider.complete(REQUEST)
                    uncached.append(time.perf_counter() - start)

                llm = CachedLLM(provider, store)
                await llm.complete(REQUEST)  # the one miss: cached from here on
                hits: list[float] = []
                for _ in range(HITS):
                    start = time.perf_counter()
                    answer = await llm.complete(REQUEST)
                    hits.append(time.perf_counter() - start)
                assert answer.cached
                assert answer.text == ANSWER
                streamed: list[float] = []
                for _ in range(HITS):
                    start = time.perf_counter()
                    async with llm.stream(REQUEST) as chunks:
                        async for _chunk in chunks:
                            pass
                    streamed.append(time.perf_counter() - start)
                assert llm.cache_statistics().hits == 2 * HITS
    hit_p50, hit_p99 = _ms(hits)
    stream_p50, stream_p99 = _ms(streamed)
    call_p50, call_p99 = _ms(uncached)
    return {
        "cache_hit_ms": round(hit_p50, 4),
        "cache_hit_p99_ms": round(hit_p99, 4),
        "cache_hit_stream_ms": round(stream_p50, 4),
        "cache_hit_stream_p99_ms": round(stream_p99, 4),
        "uncached_call_ms": round(call_p50, 4),
        "uncached_call_p99_ms": round(call_p99, 4),
        "uncached_over_hit": round(call_p50 / hit_p50, 1),
        "cache_hit_target_ms": 1.0,
    }
