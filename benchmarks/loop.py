"""What does the perceive-think-act loop itself cost per iteration?

A turn runs ``ITERATIONS`` iterations against a ``ScriptedLLMServer`` on 127.0.0.1 through the
real ``OpenAIProvider``; every model answer makes 3 tool calls (trivial async tools), so each
iteration is: build the prompt from the context, one model call, 3 tool calls run in parallel,
record the answer and the 3 results. The turn ends ``budget_exhausted``.

* ``loop_overhead_ms_per_iteration``: (turn time - the model calls' own time) / iterations.
  The model calls' own time is measured in the same run by replaying the very requests the
  loop sent, through the same provider to the same server, with nothing else around them; so
  what remains is what the loop adds (context records and builds, tool dispatch, parallelism,
  bookkeeping). Measured with the durable ``SQLiteStore`` (what ``CognitiveAgent`` uses with a
  data directory) and, for reference, ``InMemoryStore``.
* ``context_build_ms_10k_items``: ``benchmarks/_context.py``'s figure (an 8,000-token prompt
  from a SQLite store of 10,000 items).

Targets (issue): <= 2 ms and <= 50 ms. Prints one JSON line; best of several runs, each loop
run paired with its replay.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._context import measure_context_build_ms
from benchmarks._util import emit
from loom.runtime.cognition import Loop, LoopConfig, Toolset
from loom.runtime.llm import (
    Completion,
    CompletionRequest,
    OpenAIProvider,
    ProviderConfig,
    StreamChunk,
)
from loom.runtime.memory import AgentContext, InMemoryStore, MemoryStore, SQLiteStore
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import FunctionTool, Tool

ITERATIONS = int(os.environ.get("LOOM_BENCH_LOOP_ITERATIONS", "20"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "5"))
TOOLS_PER_ITERATION = 3
SCHEMA = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}


def tools() -> list[Tool]:
    def make(i: int) -> Tool:
        async def lookup(key: str) -> str:
            return f"value {i} of {key}"

        return FunctionTool(lookup, name=f"kv.get{i}", description="Get.", parameters_schema=SCHEMA)

    return [make(i) for i in range(TOOLS_PER_ITERATION)]


def reply() -> Reply:
    return Reply(
        text="Looking these up.",
        tool_calls=[
            ScriptedToolCall(name=f"kv_get{i}", arguments={"key": f"k{i}"})
            for i in range(TOOLS_PER_ITERATION)
        ],
    )


class Recording:
    """The provider, remembering every request the loop makes (for the replay)."""

    def __init__(self, llm: OpenAIProvider) -> None:
        self._llm = llm
        self.requests: list[CompletionRequest] = []

    @property
    def name(self) -> str:
        return self._llm.name

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return await self._llm.complete(request)

    def stream(
        self, request: CompletionRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return self._llm.stream(request)


async def one_run(
    server: ScriptedLLMServer, llm: OpenAIProvider, store: MemoryStore, run: int
) -> tuple[float, float]:
    """Seconds for a turn of ITERATIONS iterations, and for replaying its model calls."""
    recording = Recording(llm)
    loop = Loop(
        recording,
        tools=Toolset(tools=tools()),
        config=LoopConfig(max_iterations=ITERATIONS, context_budget_tokens=32_000),
    )
    context = AgentContext(store, agent_id="bench", thread_id=f"run-{run}")
    server.push(*[reply() for _ in range(ITERATIONS)])
    start = time.perf_counter()
    outcome = await loop.run(context, "Look up k0, k1 and k2, again and again.")
    turn_s = time.perf_counter() - start
    assert outcome.kind == "budget_exhausted", outcome
    assert len(outcome.tool_results) == ITERATIONS * TOOLS_PER_ITERATION
    assert not any(r.is_error for r in outcome.tool_results)

    server.push(*[reply() for _ in range(ITERATIONS)])
    start = time.perf_counter()
    for request in recording.requests:
        await llm.complete(request)
    replay_s = time.perf_counter() - start
    return turn_s, replay_s


async def measure(
    server: ScriptedLLMServer, llm: OpenAIProvider, store: MemoryStore
) -> dict[str, float]:
    await one_run(server, llm, store, -1)  # warm-up: connections, caches, imports
    best_turn = best_replay = float("inf")
    for run in range(REPEATS):
        turn_s, replay_s = await one_run(server, llm, store, run)
        best_turn = min(best_turn, turn_s)
        best_replay = min(best_replay, replay_s)
    per_iteration = (best_turn - best_replay) / ITERATIONS * 1000
    return {
        "overhead_ms": per_iteration,
        "turn_ms_per_iteration": best_turn / ITERATIONS * 1000,
        "model_call_ms": best_replay / ITERATIONS * 1000,
    }


async def main() -> None:
    async with ScriptedLLMServer() as server:
        config = ProviderConfig(
            kind="openai", model="bench", base_url=server.openai_base_url, max_retries=0
        )
        llm = OpenAIProvider("scripted", config)
        async with llm:
            with tempfile.TemporaryDirectory() as tmp:
                async with SQLiteStore(Path(tmp) / "context.db") as store:
                    sqlite = await measure(server, llm, store)
            memory = await measure(server, llm, InMemoryStore())
    build_ms = await measure_context_build_ms(10_000)
    emit(
        "loop",
        {
            "loop_overhead_ms_per_iteration": round(sqlite["overhead_ms"], 3),
            "loop_overhead_ms_per_iteration_in_memory_store": round(memory["overhead_ms"], 3),
            "turn_ms_per_iteration": round(sqlite["turn_ms_per_iteration"], 3),
            "baseline_scripted_model_call_ms": round(sqlite["model_call_ms"], 3),
            "tool_calls_per_iteration": TOOLS_PER_ITERATION,
            "iterations": ITERATIONS,
            "context_build_ms_10k_items": round(build_ms, 2),
            "target_overhead_ms": 2,
            "target_context_build_ms": 50,
            "meets_targets": sqlite["overhead_ms"] <= 2 and build_ms <= 50,
        },
    )


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
