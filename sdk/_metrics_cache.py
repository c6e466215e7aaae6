"""The response cache's instruments (docs/guardrails.md, "Response cache"), for
:class:`~loom._metrics.ServeMetrics`: read from the snapshot it takes on the event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loom.runtime.llm import CachedLLM, CacheStats, ModelRouter

if TYPE_CHECKING:
    from opentelemetry.metrics import Observation

__all__ = ["CacheRows", "cache_instruments", "cache_rows"]

CacheRows = tuple[tuple[str, CacheStats], ...]
"""Each cached provider's name and cache statistics."""

_Register = Callable[[str, Callable[[], Iterable["Observation"]]], None]


def cache_rows(router: ModelRouter | None) -> CacheRows:
    """The cache statistics of ``router``'s cached providers (read on the event loop)."""
    if router is None:
        return ()
    return tuple(
        (name, provider.cache_statistics())
        for name, provider in router.providers.items()
        if isinstance(provider, CachedLLM)
    )


def cache_instruments(counter: _Register, gauge: _Register, rows: Callable[[], CacheRows]) -> None:
    """``loom.llm.cache.*``, by provider: lookups by result, tokens saved by type, answers
    evicted, and the entries and bytes held."""
    from opentelemetry.metrics import Observation

    counter(
        "loom.llm.cache.lookups",
        lambda: [
            Observation(count, {"provider": name, "result": result})
            for name, s in rows()
            for result, count in (("hit", s.hits), ("miss", s.misses))
        ],
    )
    counter(
        "loom.llm.cache.saved_tokens",
        lambda: [
            Observation(count, {"provider": name, "type": kind})
            for name, s in rows()
            for kind, count in (
                ("input", s.saved_prompt_tokens),
                ("output", s.saved_completion_tokens),
            )
        ],
    )
    counter(
        "loom.llm.cache.evictions",
        lambda: [Observation(s.evictions, {"provider": name}) for name, s in rows()],
    )
    gauge(
        "loom.llm.cache.entries",
        lambda: [Observation(s.entries, {"provider": name}) for name, s in rows()],
    )
    gauge(
        "loom.llm.cache.bytes",
        lambda: [Observation(s.bytes, {"provider": name}) for name, s in rows()],
    )
