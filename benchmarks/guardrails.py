"""What do the guard rails cost? (issue 16)

* ``policy_overhead_us``: a tool call through a resilience policy that does nothing, minus the
  same call without one, same run (target <= 5); with ``policy_<part>_overhead_us`` for each
  part of a policy (see ``benchmarks/_policy_bench.py``).
* ``cache_hit_ms``: a completion answered by the LLM response cache, p50 (target <= 1), with
  its same-run baseline ``uncached_call_ms`` (see ``benchmarks/_cache_bench.py``).
* ``scoped_local_call_us``: a local tool call of a capped turn in an agent's own process,
  reserved from the server (exact caps over processes), against ``local_call_us`` (no cap),
  same run (see ``benchmarks/_scope_bench.py``).

Prints one JSON line.
"""

from __future__ import annotations

import os
import sys

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._cache_bench import measure_cache
from benchmarks._policy_bench import measure_policy
from benchmarks._scope_bench import measure_scopes
from benchmarks._util import emit


async def main() -> None:
    figures: dict[str, float | int | str | bool] = {}
    figures.update(await measure_policy())
    figures.update(await measure_cache())
    figures.update(await measure_scopes())
    emit("guardrails", figures)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
