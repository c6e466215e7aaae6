"""The response cache of ``loom serve``: one SQLite file in the data directory, shared by every
provider with ``cache = true`` and so by every agent of the server, here or remote (they call
the same router). See docs/guardrails.md, "Response cache"."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from loom.runtime.llm import CACHE_FILENAME, LLMConfig, ResponseStore

__all__ = ["open_response_cache"]

log = logging.getLogger("loom.cli")


@asynccontextmanager
async def open_response_cache(
    llm: LLMConfig | None, data_dir: Path
) -> AsyncIterator[ResponseStore | None]:
    """``<data_dir>/llm_cache.sqlite3`` while the block runs, when a provider of ``llm`` has
    ``cache = true`` (``None`` otherwise: no file is made)."""
    cached = [name for name, p in (llm.providers.items() if llm else ()) if p.cache]
    if not cached:
        yield None
        return
    async with ResponseStore(data_dir / CACHE_FILENAME) as store:
        log.info("loom serve: response cache for %s in %s", ", ".join(cached), store.path)
        yield store
