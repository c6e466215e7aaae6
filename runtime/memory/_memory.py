""":class:`InMemoryStore`: a :class:`MemoryStore` held in the process, for tests and agents whose
memory need not outlive them.

Keyword search keeps an inverted index (word -> {seq: term frequency}) updated on every add and
delete and scores with FTS5's BM25 formula (k1 = 1.2, b = 0.75, the same floored IDF, over the
same words), so both stores rank alike. (FTS5 scores its two columns, content and tool name, each
against its own average length; here they are one document, so scores differ slightly.)
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Self

import anyio
import msgspec

from ._errors import DuplicateItem, StoreClosed
from ._items import ContextItem, ItemKind, ScoredItem
from ._store import check_count
from ._words import informative_words, query_words, words

__all__ = ["InMemoryStore"]

_K1 = 1.2
_B = 0.75


def _doc_words(item: ContextItem) -> list[str]:
    return words(item.content) + words(item.tool_name)


class InMemoryStore:
    """A :class:`MemoryStore` in a few dicts. Every operation is a checkpoint; none blocks.

    Usable right away or as an async context manager; after :meth:`aclose` it refuses work
    with :class:`StoreClosed` and has dropped its items.
    """

    def __init__(self) -> None:
        self._closed = False
        self._next_seq = 1
        self._by_seq: dict[int, ContextItem] = {}
        self._seq_of_id: dict[str, int] = {}
        # (agent, thread) -> ascending seqs; a thread's order is looked up far more often than
        # it changes.
        self._threads: dict[tuple[str, str], list[int]] = {}
        self._postings: dict[str, dict[int, int]] = {}
        self._doc_len: dict[int, int] = {}
        self._total_len = 0

    async def __aenter__(self) -> Self:
        self._check()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store and drop its items; idempotent."""
        self._closed = True
        self._by_seq.clear()
        self._seq_of_id.clear()
        self._threads.clear()
        self._postings.clear()
        self._doc_len.clear()
        self._total_len = 0

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed("the in-memory store is closed")

    # ------------------------------------------------------------------ writes

    async def add(self, item: ContextItem) -> ContextItem:
        """See :meth:`MemoryStore.add`."""
        return (await self.add_many([item]))[0]

    async def add_many(self, items: Sequence[ContextItem]) -> list[ContextItem]:
        """See :meth:`MemoryStore.add_many`."""
        await anyio.lowlevel.checkpoint()
        self._check()
        seen: set[str] = set()
        for item in items:
            if item.id in self._seq_of_id or item.id in seen:
                raise DuplicateItem(item.id)
            seen.add(item.id)
        stored = []
        for item in items:
            seq = self._next_seq
            self._next_seq += 1
            item = msgspec.structs.replace(item, seq=seq)
            self._by_seq[seq] = item
            self._seq_of_id[item.id] = seq
            self._threads.setdefault((item.agent_id, item.thread_id), []).append(seq)
            tf = Counter(_doc_words(item))
            for word, n in tf.items():
                self._postings.setdefault(word, {})[seq] = n
            length = sum(tf.values())
            self._doc_len[seq] = length
            self._total_len += length
            stored.append(item)
        return stored

    def _remove(self, seqs: Iterable[int]) -> int:
        removed = 0
        touched: set[tuple[str, str]] = set()
        for seq in list(seqs):
            item = self._by_seq.pop(seq, None)
            if item is None:
                continue
            removed += 1
            del self._seq_of_id[item.id]
            touched.add((item.agent_id, item.thread_id))
            for word in set(_doc_words(item)):
                posting = self._postings[word]
                del posting[seq]
                if not posting:
                    del self._postings[word]
            self._total_len -= self._doc_len.pop(seq)
        for key in touched:
            kept = [s for s in self._threads[key] if s in self._by_seq]
            if kept:
                self._threads[key] = kept
            else:
                del self._threads[key]
        return removed

    async def delete_thread(self, agent_id: str, thread_id: str) -> int:
        """See :meth:`MemoryStore.delete_thread`."""
        await anyio.lowlevel.checkpoint()
        self._check()
        return self._remove(self._threads.get((agent_id, thread_id), ()))

    async def prune(
        self,
        agent_id: str,
        thread_id: str,
        *,
        keep_last: int | None = None,
        older_than_ms: int | None = None,
    ) -> int:
        """See :meth:`MemoryStore.prune`."""
        check_count("keep_last", keep_last)
        await anyio.lowlevel.checkpoint()
        self._check()
        seqs = self._threads.get((agent_id, thread_id), [])
        doomed: list[int] = []
        cut = max(len(seqs) - keep_last, 0) if keep_last is not None else 0
        for i, seq in enumerate(seqs):
            item = self._by_seq[seq]
            if item.importance >= 1.0:
                continue
            if i < cut or (older_than_ms is not None and item.timestamp_ms < older_than_ms):
                doomed.append(seq)
        return self._remove(doomed)

    # ------------------------------------------------------------------ reads

    async def get(self, item_id: str) -> ContextItem | None:
        """See :meth:`MemoryStore.get`."""
        await anyio.lowlevel.checkpoint()
        self._check()
        seq = self._seq_of_id.get(item_id)
        return None if seq is None else self._by_seq[seq]

    async def recent(
        self, agent_id: str, thread_id: str, *, limit: int, before_seq: int | None = None
    ) -> list[ContextItem]:
        """See :meth:`MemoryStore.recent`."""
        check_count("limit", limit)
        await anyio.lowlevel.checkpoint()
        self._check()
        seqs = self._threads.get((agent_id, thread_id), [])
        end = len(seqs) if before_seq is None else bisect.bisect_left(seqs, before_seq)
        start = max(end - limit, 0)
        return [self._by_seq[s] for s in seqs[start:end]]

    def _matches(
        self,
        item: ContextItem,
        agent_id: str,
        thread_id: str | None,
        kinds: Collection[ItemKind] | None,
        before_seq: int | None,
    ) -> bool:
        return (
            item.agent_id == agent_id
            and (thread_id is None or item.thread_id == thread_id)
            and (kinds is None or item.kind in kinds)
            and (before_seq is None or item.seq < before_seq)
        )

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
        """See :meth:`MemoryStore.query`."""
        check_count("limit", limit)
        await anyio.lowlevel.checkpoint()
        self._check()
        found: list[ContextItem] = []
        if limit == 0:
            return found
        for seq in reversed(self._by_seq):
            item = self._by_seq[seq]
            if item.importance >= min_importance and self._matches(
                item, agent_id, thread_id, kinds, before_seq
            ):
                found.append(item)
                if len(found) >= limit:
                    break
        found.reverse()
        return found

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
        """See :meth:`MemoryStore.search`."""
        check_count("limit", limit)
        await anyio.lowlevel.checkpoint()
        self._check()
        n_docs = len(self._by_seq)
        frequency = {w: len(self._postings.get(w, ())) for w in query_words(text)}
        terms = informative_words(list(frequency), frequency, n_docs)
        if not terms or not n_docs or limit == 0:
            return []
        avg_len = self._total_len / n_docs or 1.0
        scores: dict[int, float] = {}
        for term in terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            n = len(posting)
            # FTS5's IDF, floored the same way so very common words still count a little.
            idf = max(math.log((n_docs - n + 0.5) / (n + 0.5)), 1e-6)
            for seq, tf in posting.items():
                norm = _K1 * (1 - _B + _B * self._doc_len[seq] / avg_len)
                scores[seq] = scores.get(seq, 0.0) + idf * tf * (_K1 + 1) / (tf + norm)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))
        hits: list[ScoredItem] = []
        for seq, score in ranked:
            item = self._by_seq[seq]
            if self._matches(item, agent_id, thread_id, kinds, before_seq):
                hits.append(ScoredItem(item=item, score=score))
                if len(hits) >= limit:
                    break
        return hits

    async def count(self, agent_id: str | None = None, thread_id: str | None = None) -> int:
        """See :meth:`MemoryStore.count`."""
        await anyio.lowlevel.checkpoint()
        self._check()
        if agent_id is None:
            return len(self._by_seq)
        if thread_id is not None:
            return len(self._threads.get((agent_id, thread_id), ()))
        return sum(len(v) for (a, _), v in self._threads.items() if a == agent_id)

    async def threads(self, agent_id: str) -> list[str]:
        """See :meth:`MemoryStore.threads`."""
        await anyio.lowlevel.checkpoint()
        self._check()
        mine = [(seqs[-1], t) for (a, t), seqs in self._threads.items() if a == agent_id]
        return [t for _, t in sorted(mine, reverse=True)]
