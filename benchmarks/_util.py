"""Shared helpers for the benchmarks: best-of timing and the JSON line."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable

__all__ = ["best_rate", "emit"]


async def best_rate(run: Callable[[], Awaitable[float]], repeats: int) -> float:
    """Run ``run`` (which returns items per second) ``repeats`` times; keep the best.

    The machine is shared and noisy; the best of a few runs is the figure least disturbed by
    neighbours, and each baseline is measured the same way in the same process.
    """
    best = 0.0
    for _ in range(repeats):
        best = max(best, await run())
    return best


def emit(name: str, figures: dict[str, float | int | str | bool]) -> None:
    """Print the one JSON line of a benchmark."""
    line = {
        "benchmark": name,
        **figures,
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    json.dump(line, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
