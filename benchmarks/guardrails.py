"""What do the guard rails cost on the fast path?

* ``policy_overhead_us``: a tool call through the registry whose tool has a resilience policy
  that does nothing (``Policy("noop")``: no timeout, retry, breaker, limit or cap; it only
  counts), minus the same call to the same tool registered without one; target <= 5.
  ``tool_call_us`` / ``tool_call_policy_us``: the two calls themselves. Both are timed in the
  same run, interleaved round by round (many short rounds), and the best round of each is
  kept: the figure least disturbed by the neighbours of a shared machine.

Prints one JSON line: a dict of measurements, each function below adding its own figures.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from loom.runtime.resilience import Policy
from loom.runtime.tools import FunctionTool, ToolRegistry

CALLS = int(os.environ.get("LOOM_BENCH_CALLS", "2000"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "60"))
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}
ARGUMENTS = '{"n": 1}'

Figures = dict[str, float | int | str | bool]


class _Echo(FunctionTool):
    # Checks its own arguments (as an @capability does), so the registry skips the JSON
    # Schema pass: the baseline is the registry's own fast path, and the policy's share of a
    # call shows instead of drowning in validation time.
    validates_arguments = True


async def _echo(n: int) -> int:
    return n


async def _per_call_us(registry: ToolRegistry, name: str) -> float:
    call = registry.call
    start = time.perf_counter()
    for _ in range(CALLS):
        await call(name, ARGUMENTS)
    return (time.perf_counter() - start) / CALLS * 1e6


async def policy_overhead() -> Figures:
    registry = ToolRegistry()
    for name, policy in (("bench.bare", None), ("bench.guarded", Policy("noop"))):
        tool = _Echo(_echo, name=name, description="echo", parameters_schema=SCHEMA)
        registry.register(tool, policy=policy)
    await _per_call_us(registry, "bench.bare")  # warm both paths
    await _per_call_us(registry, "bench.guarded")
    bare = guarded = float("inf")
    for _ in range(REPEATS):
        bare = min(bare, await _per_call_us(registry, "bench.bare"))
        guarded = min(guarded, await _per_call_us(registry, "bench.guarded"))
    return {
        "tool_call_us": round(bare, 3),
        "tool_call_policy_us": round(guarded, 3),
        "policy_overhead_us": round(guarded - bare, 3),
    }


MEASUREMENTS: list[Callable[[], Awaitable[Figures]]] = [policy_overhead]


async def main() -> None:
    figures: Figures = {"calls": CALLS}
    for measure in MEASUREMENTS:
        figures |= await measure()
    emit("guardrails", figures)


if __name__ == "__main__":
    anyio.run(main)
