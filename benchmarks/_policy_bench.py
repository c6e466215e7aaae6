"""``policy_overhead_us`` of ``benchmarks/guardrails.py``: what a resilience policy costs a
tool call that it lets straight through.

* ``policy_overhead_us``: a tool call through the registry whose tool has a resilience policy
  that does nothing (``Policy("noop")``: no timeout, retry, breaker, limit or cap; it only
  counts), minus the same call to the same tool registered without one; target <= 5.
  ``tool_call_us`` / ``tool_call_policy_us``: the two calls themselves.
* ``policy_<part>_overhead_us``: the same, for a policy with one part that lets every call
  through at once (a timeout that does not expire, a closed breaker, a rate limit with tokens
  to spare, an uncontended concurrency cap, a retry never needed). All are timed in the
  same run, interleaved round by round (many short rounds), and the best round of each is
  kept: the figure least disturbed by the neighbours of a shared machine.
"""

from __future__ import annotations

import os
import time

from loom.runtime.resilience import CircuitBreaker, Policy, RateLimit, Retry
from loom.runtime.tools import FunctionTool, ToolRegistry

__all__ = ["measure_policy"]

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


_POLICIES = {
    "bench.bare": None,
    "bench.noop": Policy("noop"),
    "bench.timeout": Policy.of("timeout", timeout=60),
    "bench.retry": Policy.of("retry", retry=Retry()),
    "bench.circuit_breaker": Policy.of("circuit_breaker", circuit_breaker=CircuitBreaker()),
    "bench.rate_limit": Policy.of("rate_limit", rate_limit=RateLimit(rate=1e9, burst=10**9)),
    "bench.max_concurrency": Policy.of("max_concurrency", max_concurrency=8),
}


async def measure_policy() -> Figures:
    registry = ToolRegistry()
    for name, policy in _POLICIES.items():
        tool = _Echo(_echo, name=name, description="echo", parameters_schema=SCHEMA)
        registry.register(tool, policy=policy, idempotent=True)
    best = dict.fromkeys(_POLICIES, float("inf"))
    for name in _POLICIES:  # warm every path
        await _per_call_us(registry, name)
    for _ in range(REPEATS):
        for name in _POLICIES:
            best[name] = min(best[name], await _per_call_us(registry, name))
    bare = best.pop("bench.bare")
    noop = best.pop("bench.noop")
    figures: Figures = {
        "tool_call_us": round(bare, 3),
        "tool_call_policy_us": round(noop, 3),
        "policy_overhead_us": round(noop - bare, 3),
    }
    for name, us in best.items():
        figures[f"policy_{name.removeprefix('bench.')}_overhead_us"] = round(us - bare, 3)
    return figures
