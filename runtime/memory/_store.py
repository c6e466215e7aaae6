"""The :class:`MemoryStore` seam: where an agent's context items live.

Two implementations ship: :class:`~loom.runtime.memory.InMemoryStore` (tests, ephemeral agents)
and :class:`~loom.runtime.memory.SQLiteStore` (the default: one file in the data directory).
Both pass the same conformance tests, so everything said here holds for both.

Semantics every store keeps:

* ``add`` assigns ``seq``: a positive integer, strictly increasing in recording order across
  the whole store and never reused, even after deletes. Conversation order is ``seq`` order.
* A negative ``limit`` or ``keep_last`` raises :class:`~loom.runtime.InvalidArgument`.
* Reads return items in ascending ``seq`` order unless said otherwise.
* An item is immutable once stored; it can only be deleted (``delete_thread``, ``prune``).
* Keyword search tokenises on Unicode word characters, case- and diacritic-insensitively, and
  treats the query as plain words: quotes, ``AND``, ``*`` or any other query syntax in the text
  are just text and never raise. A query with no word characters finds nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .._errors import InvalidArgument
from ._items import ContextItem, ItemKind, ScoredItem

__all__ = ["MemoryStore", "check_count"]


def check_count(name: str, value: int | None) -> None:
    """Refuse a negative limit or count (None passes: the rule is off).

    Raises:
        InvalidArgument: ``value`` is negative.
    """
    if value is not None and value < 0:
        raise InvalidArgument(f"{name} must be >= 0, got {value}")


@runtime_checkable
class MemoryStore(Protocol):
    """Durable or in-memory storage of :class:`ContextItem`, with keyword search.

    A store is an async context manager; operations on a store that is not open raise
    :class:`~loom.runtime.memory.StoreClosed`.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def aclose(self) -> None:
        """Close the store; idempotent. Everything added before is durable (for a durable store)."""
        ...

    async def add(self, item: ContextItem) -> ContextItem:
        """Store ``item``; return it with its ``seq`` assigned.

        Raises:
            DuplicateItem: an item with the same id is stored; nothing was written.
        """
        ...

    async def add_many(self, items: Sequence[ContextItem]) -> list[ContextItem]:
        """Store ``items`` atomically, in order; return them with ``seq`` assigned.

        Raises:
            DuplicateItem: one of the ids is taken (or repeated); nothing was written.
        """
        ...

    async def get(self, item_id: str) -> ContextItem | None:
        """The item with this id, or None."""
        ...

    async def recent(
        self, agent_id: str, thread_id: str, *, limit: int, before_seq: int | None = None
    ) -> list[ContextItem]:
        """The newest ``limit`` items of a thread with ``seq < before_seq`` (all when None),
        returned oldest first."""
        ...

    async def query(
        self,
        agent_id: str,
        *,
        thread_id: str | None = None,
        kinds: Collection[ItemKind] | None = None,
        min_importance: float = 0.0,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[ContextItem]:
        """The newest ``limit`` items of an agent matching every given filter, oldest first.

        ``thread_id`` None means every thread of the agent; ``kinds`` None means every kind.
        """
        ...

    async def search(
        self,
        agent_id: str,
        text: str,
        *,
        thread_id: str | None = None,
        kinds: Collection[ItemKind] | None = None,
        before_seq: int | None = None,
        limit: int = 20,
    ) -> list[ScoredItem]:
        """Items whose content or tool name shares words with ``text``, best first (BM25).

        Any word of ``text`` may match (the words are OR-ed); items matching more and rarer
        words rank higher. The other filters are as in :meth:`query`.
        """
        ...

    async def count(self, agent_id: str | None = None, thread_id: str | None = None) -> int:
        """How many items are stored (for one agent, or one agent's thread)."""
        ...

    async def threads(self, agent_id: str) -> list[str]:
        """The thread ids an agent has items in, the most recently active first."""
        ...

    async def delete_thread(self, agent_id: str, thread_id: str) -> int:
        """Delete every item of a thread; return how many were deleted."""
        ...

    async def prune(
        self,
        agent_id: str,
        thread_id: str,
        *,
        keep_last: int | None = None,
        older_than_ms: int | None = None,
    ) -> int:
        """Retention: delete a thread's items beyond its newest ``keep_last`` and/or those with
        ``timestamp_ms < older_than_ms``; return how many were deleted.

        An item is deleted when any given rule says so. Items with importance 1.0 are pinned and
        never pruned (``delete_thread`` still removes them).
        """
        ...
