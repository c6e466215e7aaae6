"""Fixtures: every store test runs against both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loom.runtime.memory import ContextItem, InMemoryStore, MemoryStore, SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    """An open, empty store of each kind."""
    s: MemoryStore = (
        InMemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "c.db")
    )
    async with s:
        yield s


def make(
    content: str = "",
    *,
    kind: str = "message",
    role: str = "user",
    agent: str = "a1",
    thread: str = "t1",
    **fields: object,
) -> ContextItem:
    """A context item with test defaults."""
    return ContextItem(
        kind=kind,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        agent_id=agent,
        thread_id=thread,
        content=content,
        **fields,  # type: ignore[arg-type]
    )
