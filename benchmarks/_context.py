"""How long does building a prompt take when the agent's store holds 10,000 items?

The store is a real ``SQLiteStore`` file (WAL, FTS5) holding ``items`` items of one agent: half
in the thread being built, the rest spread over six other threads, with tool calls and results
among them. A build reads the recent window page by page, runs the FTS5 keyword search and the
importance query for retrieval, ranks, and fits an 8,000-token budget. Each build uses a fresh
``AgentContext`` (so no token counts are cached from a previous build) and a different goal.

The figure is the median of several builds, in milliseconds. The baseline, measured in the same
run, is the naive thing: read the whole thread from the same store and keep the newest messages
that fit, with the same token counter and no retrieval.

Target (issue): ``context_build_ms_10k_items`` <= 50 ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from loom.runtime.llm import AssistantMessage, Message, SystemMessage, UserMessage
from loom.runtime.memory import (
    AgentContext,
    ContextItem,
    HeuristicTokenCounter,
    Role,
    SQLiteStore,
    message_tokens,
)

BUDGET = 8000
BUILDS = int(os.environ.get("LOOM_BENCH_BUILDS", "15"))
WORDS = [
    *("deploy", "database", "invoice", "report", "schedule", "review", "latency", "cache"),
    *("queue", "worker", "config", "token", "budget", "retry", "timeout", "agent", "tool"),
    *("result", "error", "memory", "thread", "event"),
]


def _items(n: int) -> list[ContextItem]:
    out: list[ContextItem] = []
    for i in range(n):
        thread = "main" if i % 2 == 0 else f"side-{i % 6}"
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12))
        common = {"agent_id": "bench", "thread_id": thread, "importance": (i % 10) / 10}
        if i % 10 == 4:
            call_id = f"call-{i}"
            out.append(
                ContextItem(
                    kind="tool_call",
                    role="assistant",
                    content=f'{{"query": "{words}"}}',
                    tool_call_id=call_id,
                    tool_name="db.query",
                    **common,  # type: ignore[arg-type]
                )
            )
            out.append(
                ContextItem(
                    kind="tool_result",
                    role="tool",
                    content=f"{i} rows: {words} " * 3,
                    tool_call_id=call_id,
                    tool_name="db.query",
                    **common,  # type: ignore[arg-type]
                )
            )
        else:
            role: Role = "user" if i % 4 == 0 else "assistant"
            out.append(
                ContextItem(
                    kind="message",
                    role=role,
                    content=f"message {i}: {words} item{i % 113}",
                    **common,  # type: ignore[arg-type]
                )
            )
    return out[:n]


_MESSAGE_OF_ROLE: dict[str, type[SystemMessage | UserMessage | AssistantMessage]] = {
    "system": SystemMessage,
    "user": UserMessage,
    "assistant": AssistantMessage,
}


async def _naive_build(store: SQLiteStore) -> list[Message]:
    counter = HeuristicTokenCounter()
    items = await store.recent("bench", "main", limit=1_000_000)
    kept: list[Message] = []
    used = 0
    for item in reversed(items):
        if item.kind not in ("message", "event", "observation"):
            continue
        message = _MESSAGE_OF_ROLE[item.role](content=item.content)
        cost = message_tokens(message, counter)
        if used + cost > BUDGET:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return kept


async def measure_context_build_ms(items: int = 10_000) -> float:
    """Median milliseconds to build an 8,000-token prompt from a SQLiteStore of ``items``."""
    return (await _measure(items))[0]


async def _measure(items: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "context.db") as store:
            await store.add_many(_items(items))
            times: list[float] = []
            naive: list[float] = []
            messages = 0
            for b in range(BUILDS):
                ctx = AgentContext(store, agent_id="bench", thread_id="main")
                goal = f"what happened with the {WORDS[b % len(WORDS)]} item{b * 7 % 113}?"
                start = time.perf_counter()
                prompt = await ctx.build_prompt(goal=goal, budget_tokens=BUDGET, system="sys")
                times.append((time.perf_counter() - start) * 1000)
                assert prompt.tokens <= BUDGET
                assert prompt.retrieved_items > 0
                messages = len(prompt.messages)
                start = time.perf_counter()
                await _naive_build(store)
                naive.append((time.perf_counter() - start) * 1000)
            return statistics.median(times), statistics.median(naive), messages


async def _main() -> None:
    items = int(os.environ.get("LOOM_BENCH_CONTEXT_ITEMS", "10000"))
    build_ms, naive_ms, messages = await _measure(items)
    emit(
        "context_build",
        {
            "context_build_ms_10k_items" if items == 10_000 else "context_build_ms": round(
                build_ms, 2
            ),
            "items": items,
            "budget_tokens": BUDGET,
            "prompt_messages": messages,
            "builds": BUILDS,
            "baseline_naive_whole_thread_ms": round(naive_ms, 2),
            "target_ms": 50,
            "meets_target": build_ms <= 50,
        },
    )


if __name__ == "__main__":
    anyio.run(_main)
