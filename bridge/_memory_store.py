"""The store behind ``loom.v1.MemoryService``: plans, executions and episodes in one SQLite file.

The original Loom kept these in memory, per session, and lost them on restart. This keeps them
in ``<data-dir>/memory.sqlite3`` (:data:`MEMORY_FILENAME`), so an agent that saved a plan finds
it after ``loom serve`` restarts. Plans, executions and the counter of duplicates prevented are
tables of their own; the episode of events (``AppendEvent``) is kept as ``event`` items of the
context store, :class:`~loom.runtime.memory.SQLiteStore`, in the same file, so ``Retrieve``
ranks them with its keyword search (FTS5, BM25) rather than the original's substring match.

It lives in the bridge, not in ``loom.runtime.memory``: it is the storage of one wire service
(a trading agent's plans, kept for the original's clients), not a part of an agent's memory.
Everything here is msgspec structs and plain types; the servicer (``bridge/_memory_service.py``)
converts them to and from protobuf.

``sqlite3`` blocks, so every statement runs in a worker thread (``anyio.to_thread``) behind a
capacity limiter of one, in call order; a call cancelled while its thread runs finishes its
transaction first, so a write is wholly done or not at all. The file is in WAL mode. Every
session is bounded (:class:`MemoryLimits`): the oldest plans, executions and events beyond its
limits are deleted in the transaction that adds one, and a new session beyond ``max_sessions``
is refused (``LimitExceeded``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import anyio
import anyio.to_thread
import msgspec

from loom.runtime import InvalidArgument
from loom.runtime.memory import (
    ContextItem,
    SchemaVersionError,
    SQLiteStore,
    StoreClosed,
    StoreOpenError,
)

from ._errors import LimitExceeded

__all__ = [
    "EPISODE_THREAD",
    "IN_MEMORY",
    "MEMORY_FILENAME",
    "Duplicate",
    "Execution",
    "ExecutionStats",
    "MemoryLimits",
    "Plan",
    "PlanMemory",
]

MEMORY_FILENAME: Final = "memory.sqlite3"
"""The store's file name inside the data directory."""
IN_MEMORY: Final = ":memory:"
"""The path of a store that lives in memory only, gone when closed (what a ``BridgeServer``
given no store uses, as the original did)."""
EPISODE_THREAD: Final = "memory-service"
"""The context store's thread that holds a session's episode (its agent id is the session)."""

_T = TypeVar("_T")

MEMORY_SCHEMA_VERSION: Final = 1
"""The version of the tables this code writes (beside the context store's own, which keeps its
own version). A file with a newer one is refused, never altered."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS memory_service_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS memory_sessions (session TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS plans (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, plan BLOB NOT NULL,
        symbol TEXT NOT NULL, action TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
        plan_hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS plans_symbol ON plans (session, symbol, seq)",
    """CREATE TABLE IF NOT EXISTS executions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, execution BLOB NOT NULL,
        symbol TEXT NOT NULL, plan_hash TEXT NOT NULL, successful INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS executions_hash ON executions (session, plan_hash, seq)",
    "CREATE INDEX IF NOT EXISTS executions_symbol ON executions (session, symbol, seq)",
    """CREATE TABLE IF NOT EXISTS duplicates_prevented (
        session TEXT NOT NULL, symbol TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (session, symbol))""",
)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A plan as the original's ``PlanRecord`` holds it."""

    timestamp_ms: int = 0
    symbol: str = ""
    action: str = ""
    confidence: float = 0.0
    reasoning: str = ""
    plan_hash: str = ""
    method: str = ""
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """An execution as the original's ``ExecutionRecord`` holds it."""

    timestamp_ms: int = 0
    plan_hash: str = ""
    symbol: str = ""
    action: str = ""
    confidence: float = 0.0
    status: str = ""
    executed: bool = False
    order_id: str = ""
    order_size_usdt: float = 0.0
    error_message: str = ""

    @property
    def successful(self) -> bool:
        """Executed, with no error: what ``GetExecutionStats`` counts as a success."""
        return self.executed and not self.error_message


class Duplicate(msgspec.Struct, frozen=True, kw_only=True):
    """The plan a checked one duplicates, and how far apart their timestamps are."""

    plan: Plan
    distance_ms: int


class ExecutionStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts over a session's executions (of one symbol, or all)."""

    total: int
    successful: int
    failed: int
    win_rate: float
    duplicate_prevented: int
    recent: tuple[Execution, ...]


class MemoryLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How much the store keeps. The oldest beyond a limit are deleted as new ones arrive.

    Attributes:
        plans_per_session: plans kept per session (the original kept 100).
        executions_per_session: executions kept per session (the original kept 1000).
        events_per_session: episode events kept per session.
        max_sessions: sessions the store holds; a new one beyond it is refused.
        max_plans_answer: the most plans ``GetRecentPlans`` answers (``limit`` is clamped).
        max_retrieve: the most results ``Retrieve`` answers (``k`` is clamped).
        recent_executions: executions ``GetExecutionStats`` lists.
    """

    plans_per_session: int = 1000
    executions_per_session: int = 10_000
    events_per_session: int = 10_000
    max_sessions: int = 100_000
    max_plans_answer: int = 100
    max_retrieve: int = 100
    recent_executions: int = 10

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) < 1:
                raise InvalidArgument(f"MemoryLimits.{name} must be >= 1")


_encode = msgspec.msgpack.Encoder().encode
_plan = msgspec.msgpack.Decoder(Plan).decode
_execution = msgspec.msgpack.Decoder(Execution).decode


class PlanMemory:
    """The MemoryService's store, one SQLite file. An async context manager.

    Args:
        path: the database file (created with its directory when missing).
        limits: what each session keeps.
    """

    def __init__(self, path: str | os.PathLike[str], limits: MemoryLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits if limits is not None else MemoryLimits()
        self.episodes = SQLiteStore(self.path)
        self._conn: sqlite3.Connection | None = None
        # One connection, used by one thread at a time.
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    def in_data_dir(
        cls, data_dir: str | os.PathLike[str], limits: MemoryLimits | None = None
    ) -> PlanMemory:
        """A store at ``data_dir/memory.sqlite3`` (not opened yet)."""
        return cls(Path(data_dir) / MEMORY_FILENAME, limits)

    async def __aenter__(self) -> Self:
        # The context store first: it creates the file and its own schema (its version table
        # decides its migrations; ours are CREATE IF NOT EXISTS, beside it).
        await self.episodes.__aenter__()
        try:
            self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)
        except BaseException:
            await self.episodes.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both connections; idempotent. Waits for a call in flight, shielded."""
        conn, self._conn = self._conn, None
        with anyio.CancelScope(shield=True):
            if conn is not None:
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)
            await self.episodes.aclose()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreOpenError(str(self.path), str(exc)) from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                (found,) = conn.execute(
                    "SELECT max(version) FROM memory_service_version"
                ).fetchone()
                if found is None:
                    conn.execute(
                        "INSERT INTO memory_service_version (version) VALUES (?)",
                        (MEMORY_SCHEMA_VERSION,),
                    )
                elif found > MEMORY_SCHEMA_VERSION:
                    raise SchemaVersionError(str(self.path), found, MEMORY_SCHEMA_VERSION)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreOpenError(str(self.path), str(exc)) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T:
        conn = self._conn
        if conn is None:
            raise StoreClosed(f"the memory store {self.path} is not open")

        def call() -> _T:
            if self._conn is not conn:  # closed while this call waited its turn
                raise StoreClosed(f"the memory store {self.path} is closed")
            if not write:
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def _admit(self, conn: sqlite3.Connection, session: str) -> None:
        """Record ``session``, refusing a new one beyond ``max_sessions`` (in the caller's
        transaction)."""
        if conn.execute("SELECT 1 FROM memory_sessions WHERE session = ?", (session,)).fetchone():
            return
        (count,) = conn.execute("SELECT count(*) FROM memory_sessions").fetchone()
        if count >= self.limits.max_sessions:
            raise LimitExceeded(
                "max_sessions", self.limits.max_sessions, f"session {session!r} is not stored"
            )
        conn.execute("INSERT INTO memory_sessions (session) VALUES (?)", (session,))

    @staticmethod
    def _trim(conn: sqlite3.Connection, table: str, session: str, keep: int) -> None:
        row = conn.execute(
            f"SELECT seq FROM {table} WHERE session = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (session, keep),
        ).fetchone()
        if row is not None:
            conn.execute(f"DELETE FROM {table} WHERE session = ? AND seq <= ?", (session, row[0]))

    # ------------------------------------------------------------------ plans

    async def save_plan(self, session: str, plan: Plan) -> None:
        """Store ``plan`` as the session's newest (its oldest beyond the limit go)."""

        def write(conn: sqlite3.Connection) -> None:
            self._admit(conn, session)
            conn.execute(
                "INSERT INTO plans (session, plan, symbol, action, timestamp_ms, plan_hash) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session, _encode(plan), plan.symbol, plan.action, plan.timestamp_ms,
                 plan.plan_hash),
            )  # fmt: skip
            self._trim(conn, "plans", session, self.limits.plans_per_session)

        await self._run(write, write=True)

    async def recent_plans(self, session: str, symbol: str, limit: int) -> list[Plan]:
        """The session's newest ``limit`` plans of ``symbol`` ("" for every symbol), newest
        first."""
        where, params = _symbol_filter(session, symbol)
        sql = f"SELECT plan FROM plans WHERE {where} ORDER BY seq DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(sql, (*params, limit)).fetchall())
        return [_plan(row[0]) for row in rows]

    async def check_duplicate(
        self, session: str, plan: Plan, window_ms: int, now_ms: int
    ) -> Duplicate | None:
        """The session's plan of the same symbol and action whose timestamp is nearest to
        ``plan``'s (``now_ms`` when it has none), if within ``window_ms`` of it (inclusive).

        A duplicate found is counted among the symbol's ``duplicate_prevented``.
        """
        at = plan.timestamp_ms or now_ms
        sql = (
            "SELECT plan, abs(timestamp_ms - ?) AS distance FROM plans "
            "WHERE session = ? AND symbol = ? AND action = ? AND distance <= ? "
            "ORDER BY distance, seq DESC LIMIT 1"
        )

        def check(conn: sqlite3.Connection) -> Duplicate | None:
            row = conn.execute(sql, (at, session, plan.symbol, plan.action, window_ms)).fetchone()
            if row is None:
                return None
            conn.execute(
                "INSERT INTO duplicates_prevented (session, symbol, n) VALUES (?, ?, 1) "
                "ON CONFLICT (session, symbol) DO UPDATE SET n = n + 1",
                (session, plan.symbol),
            )
            return Duplicate(plan=_plan(row[0]), distance_ms=int(row[1]))

        return await self._run(check, write=True)

    # ------------------------------------------------------------------ executions

    async def mark_executed(
        self, session: str, plan_hash: str, execution: Execution | None
    ) -> None:
        """Record an execution of ``plan_hash``: ``execution``, or (``None``) a record with
        status ``executed``; what it leaves out (symbol, action, confidence) is filled from
        the session's plan of that hash when it has one."""

        def write(conn: sqlite3.Connection) -> None:
            self._admit(conn, session)
            record = execution
            plan = Plan()
            if record is None or not record.symbol:
                # What the execution leaves out is the plan's: stats go by its symbol.
                row = conn.execute(
                    "SELECT plan FROM plans WHERE session = ? AND plan_hash = ? "
                    "ORDER BY seq DESC LIMIT 1",
                    (session, plan_hash),
                ).fetchone()
                plan = _plan(row[0]) if row is not None else plan
            if record is None:
                record = Execution(
                    timestamp_ms=_now_ms(),
                    plan_hash=plan_hash,
                    symbol=plan.symbol,
                    action=plan.action,
                    confidence=plan.confidence,
                    status="executed",
                    executed=True,
                )
            elif not record.symbol:
                record = msgspec.structs.replace(
                    record,
                    plan_hash=plan_hash,
                    symbol=plan.symbol,
                    action=record.action or plan.action,
                )
            elif record.plan_hash != plan_hash:
                record = msgspec.structs.replace(record, plan_hash=plan_hash)
            conn.execute(
                "INSERT INTO executions (session, execution, symbol, plan_hash, successful) "
                "VALUES (?, ?, ?, ?, ?)",
                (session, _encode(record), record.symbol, plan_hash, int(record.successful)),
            )
            self._trim(conn, "executions", session, self.limits.executions_per_session)

        await self._run(write, write=True)

    async def check_executed(self, session: str, plan_hash: str) -> Execution | None:
        """The first execution recorded for ``plan_hash`` (and still kept), if any."""
        sql = (
            "SELECT execution FROM executions WHERE session = ? AND plan_hash = ? "
            "ORDER BY seq LIMIT 1"
        )
        row = await self._run(lambda conn: conn.execute(sql, (session, plan_hash)).fetchone())
        return None if row is None else _execution(row[0])

    async def execution_stats(self, session: str, symbol: str) -> ExecutionStats:
        """Counts over the session's executions of ``symbol`` ("" for every symbol)."""
        where, params = _symbol_filter(session, symbol)
        recent = self.limits.recent_executions

        def read(conn: sqlite3.Connection) -> ExecutionStats:
            total, good = conn.execute(
                f"SELECT count(*), coalesce(sum(successful), 0) FROM executions WHERE {where}",
                params,
            ).fetchone()
            rows = conn.execute(
                f"SELECT execution FROM executions WHERE {where} ORDER BY seq DESC LIMIT ?",
                (*params, recent),
            ).fetchall()
            (prevented,) = conn.execute(
                f"SELECT coalesce(sum(n), 0) FROM duplicates_prevented WHERE {where}", params
            ).fetchone()
            return ExecutionStats(
                total=total,
                successful=good,
                failed=total - good,
                win_rate=good / total if total else 0.0,
                duplicate_prevented=prevented,
                recent=tuple(_execution(r[0]) for r in rows),
            )

        return await self._run(read)

    # ------------------------------------------------------------------ the episode

    async def append_event(self, session: str, text: str, metadata: dict[str, str]) -> None:
        """Add ``text`` to the session's episode (its oldest beyond the limit go)."""
        await self._run(lambda conn: self._admit(conn, session), write=True)
        item = ContextItem(
            kind="event", role="user", agent_id=session, thread_id=EPISODE_THREAD,
            content=text, metadata=metadata,
        )  # fmt: skip
        await self.episodes.add(item)
        await self.episodes.prune(session, EPISODE_THREAD, keep_last=self.limits.events_per_session)

    async def retrieve(
        self, session: str, query: str, k: int, filters: dict[str, str]
    ) -> list[str]:
        """The session's ``k`` events most relevant to ``query`` (the context store's keyword
        search, best first; the newest first for a query without words), among those whose
        metadata holds every pair of ``filters``."""
        # Filters apply after the search: fetch more, so k survive them.
        fetch = k if not filters else min(k * 10, self.limits.events_per_session)
        items: list[ContextItem]
        if any(c.isalnum() for c in query):
            found = await self.episodes.search(
                session, query, thread_id=EPISODE_THREAD, limit=fetch
            )
            items = [s.item for s in found]
        else:
            items = await self.episodes.recent(session, EPISODE_THREAD, limit=fetch)
            items.reverse()
        kept = [i for i in items if all(i.metadata.get(f) == v for f, v in filters.items())]
        return [i.content for i in kept[:k]]

    async def summarize(self, session: str, max_events: int) -> tuple[str, int]:
        """The session's last ``max_events`` events, oldest first, one a line; and how many."""
        items = await self.episodes.recent(session, EPISODE_THREAD, limit=max_events)
        return "\n".join(i.content for i in items), len(items)


def _symbol_filter(session: str, symbol: str) -> tuple[str, tuple[Any, ...]]:
    if symbol:
        return "session = ? AND symbol = ?", (session, symbol)
    return "session = ?", (session,)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
