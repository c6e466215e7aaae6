"""The response cache's line of ``loom.v1.Server.GetStatus`` (ServerStatus fields 100-104)."""

from __future__ import annotations

import msgspec

from loom.bridge._generated import server_pb2
from loom.runtime.llm import LLM, CachedLLM, ModelRouter

__all__ = ["LLMCacheTotals", "cache_totals_from_proto", "cache_totals_to_proto"]


class LLMCacheTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The response cache of a server, summed over its cached providers.

    Attributes:
        hits: model calls answered from the cache.
        misses: model calls of cached providers that went to the model.
        saved_tokens: prompt plus generated tokens the hits did not spend.
        entries: answers held now.
        bytes: their encoded size.
    """

    hits: int = 0
    misses: int = 0
    saved_tokens: int = 0
    entries: int = 0
    bytes: int = 0


def cache_totals_to_proto(llm: LLM | None) -> dict[str, int]:
    """The ``llm_cache_*`` fields of a ``ServerStatus`` for the runtime's model."""
    hits = misses = saved = entries = size = 0
    if isinstance(llm, ModelRouter):
        for provider in llm.providers.values():
            if isinstance(provider, CachedLLM):
                s = provider.cache_statistics()
                hits += s.hits
                misses += s.misses
                saved += s.saved_prompt_tokens + s.saved_completion_tokens
                entries += s.entries
                size += s.bytes
    return {
        "llm_cache_hits": hits,
        "llm_cache_misses": misses,
        "llm_cache_saved_tokens": saved,
        "llm_cache_entries": entries,
        "llm_cache_bytes": size,
    }


def cache_totals_from_proto(msg: server_pb2.ServerStatus) -> LLMCacheTotals:
    return LLMCacheTotals(
        hits=msg.llm_cache_hits,
        misses=msg.llm_cache_misses,
        saved_tokens=msg.llm_cache_saved_tokens,
        entries=msg.llm_cache_entries,
        bytes=msg.llm_cache_bytes,
    )
