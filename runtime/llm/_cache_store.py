"""The SQLite file behind the LLM response cache: one row per cached answer, bounded per provider.

``loom serve`` keeps it in ``<data-dir>/llm_cache.sqlite3`` (:data:`CACHE_FILENAME`), so a
restart on the same data directory keeps what was cached. A row holds an opaque entry (the
encoded answer, see :mod:`._cache`) under its key (a SHA-256 digest), with the provider and
namespace it belongs to, its size, when it expires and when it was last served.

* **Threads.** ``sqlite3`` blocks, so every statement runs in a worker thread
  (``anyio.to_thread``) behind a capacity limiter of one, in call order; a call cancelled
  while its thread runs finishes its transaction first (a row is wholly written or not at
  all). The file is in WAL mode with ``synchronous = NORMAL``: a power cut may lose the last
  answers cached, never corrupt the file (losing a cache row only costs a model call).
* **Bounds.** Each provider's rows are bounded by its ``cache_max_entries`` and
  ``cache_max_bytes``. The transaction that adds a row first deletes the provider's expired
  rows, then the least recently served ones until both bounds hold. An entry larger than
  ``cache_max_bytes`` by itself is not stored.
* **Expiry.** A row past ``expires_at`` is never served: the lookup that finds it deletes it.
  Time is the wall clock (``time.time``), since rows outlive the process.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import anyio.to_thread
import msgspec

from .._errors import LoomError

__all__ = ["CACHE_FILENAME", "CacheLimits", "CacheStoreError", "ResponseStore"]

CACHE_FILENAME: Final = "llm_cache.sqlite3"
"""The cache's file name in ``loom serve``'s data directory."""

_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS responses (
    key BLOB PRIMARY KEY,
    provider TEXT NOT NULL,
    namespace TEXT NOT NULL,
    entry BLOB NOT NULL,
    size INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS responses_lru ON responses (provider, used_at);
"""

_T = TypeVar("_T")


class CacheStoreError(LoomError):
    """The cache file cannot be opened or used (unreadable, another schema, closed)."""


class CacheLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The bounds of one provider's rows (from its ``[llm.<name>]``)."""

    ttl_s: float
    max_entries: int
    max_bytes: int


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    """What adding a row did: whether it was stored, and the rows it deleted to make room."""

    stored: bool
    evicted: int = 0
    expired: int = 0


class ResponseStore:
    """The cache file, shared by every cached provider of a server (each keeps to its rows).

    Args:
        path: the SQLite file; its directory must exist.
        clock: the wall clock, in seconds (tests pass their own to expire rows).

    Use as ``async with ResponseStore(path) as store``.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._limiter = anyio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        # Rows and bytes per provider, kept as rows are added and deleted, so that statistics
        # are read without a query.
        self._usage: dict[str, tuple[int, int]] = {}

    async def __aenter__(self) -> Self:
        self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file; later calls raise :class:`CacheStoreError`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CacheStoreError(f"cannot open the LLM cache {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version not in (0, _SCHEMA_VERSION):
                raise CacheStoreError(
                    f"the LLM cache {self.path} has schema {version}, this Loom reads "
                    f"{_SCHEMA_VERSION}: delete the file (it is only a cache)"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            rows = conn.execute(
                "SELECT provider, COUNT(*), SUM(size) FROM responses GROUP BY provider"
            ).fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise CacheStoreError(f"cannot use the LLM cache {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._usage = {provider: (count, size) for provider, count, size in rows}
        return conn

    async def _run(self, call: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise CacheStoreError("the LLM cache is closed")

        def run() -> _T:
            try:
                return call(conn)
            except sqlite3.Error as exc:
                raise CacheStoreError(f"the LLM cache {self.path}: {exc}") from None

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    def usage(self, provider: str) -> tuple[int, int]:
        """The rows and bytes ``provider`` holds now."""
        return self._usage.get(provider, (0, 0))

    def _add_usage(self, provider: str, rows: int, size: int) -> None:
        count, total = self._usage.get(provider, (0, 0))
        self._usage[provider] = (count + rows, total + size)

    async def get(self, key: bytes, namespace: str) -> tuple[bytes | None, bool]:
        """The entry under ``key`` if it is fresh and ``namespace``'s, and whether an expired
        one was found (and deleted) instead.

        Serving marks the row as used now (for the least-recently-served eviction).
        """

        def get(conn: sqlite3.Connection) -> tuple[bytes | None, bool]:
            row = conn.execute(
                "SELECT entry, size, expires_at, provider, namespace FROM responses WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None, False
            entry, size, expires_at, provider, owner = row
            if owner != namespace:  # the namespace is in the key; this is a second lock
                return None, False
            now = self._clock()
            if expires_at <= now:
                conn.execute("DELETE FROM responses WHERE key = ?", (key,))
                self._add_usage(provider, -1, -size)
                return None, True
            conn.execute("UPDATE responses SET used_at = ? WHERE key = ?", (now, key))
            return bytes(entry), False

        return await self._run(get)

    async def put(
        self, key: bytes, *, provider: str, namespace: str, entry: bytes, limits: CacheLimits
    ) -> Stored:
        """Add (or replace) the row under ``key``, then bring ``provider`` within ``limits``."""
        size = len(entry)
        if size > limits.max_bytes:
            return Stored(stored=False)

        def put(conn: sqlite3.Connection) -> Stored:
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO responses "
                    "(key, provider, namespace, entry, size, expires_at, used_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, provider, namespace, entry, size, now + limits.ttl_s, now),
                )
                expired = conn.execute(
                    "DELETE FROM responses WHERE provider = ? AND expires_at <= ?",
                    (provider, now),
                ).rowcount
                count, total = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM responses WHERE provider = ?",
                    (provider,),
                ).fetchone()
                evicted = 0
                if count > limits.max_entries or total > limits.max_bytes:
                    # Oldest served first; the row just added is the newest, so it stays.
                    victims = conn.execute(
                        "SELECT key, size FROM responses WHERE provider = ? AND key != ? "
                        "ORDER BY used_at",
                        (provider, key),
                    )
                    doomed: list[bytes] = []
                    for victim, victim_size in victims:
                        if count <= limits.max_entries and total <= limits.max_bytes:
                            break
                        doomed.append(victim)
                        count -= 1
                        total -= victim_size
                    conn.executemany("DELETE FROM responses WHERE key = ?", [(k,) for k in doomed])
                    evicted = len(doomed)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._usage[provider] = (count, total)
            return Stored(stored=True, evicted=evicted, expired=expired)

        return await self._run(put)

    async def clear(self, provider: str | None = None) -> int:
        """Delete every row (of ``provider``); returns how many."""
        if provider is None:
            deleted = await self._run(lambda c: c.execute("DELETE FROM responses").rowcount)
            self._usage.clear()
        else:
            deleted = await self._run(
                lambda c: (
                    c.execute("DELETE FROM responses WHERE provider = ?", (provider,)).rowcount
                )
            )
            self._usage.pop(provider, None)
        return int(deleted)
