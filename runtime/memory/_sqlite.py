""":class:`SQLiteStore`: the default :class:`MemoryStore`, one SQLite file in the data directory.

The file is in WAL mode (readers never wait for the writer; a crash loses at most the last
unsynced transaction, never corrupts), items live in one table, and an FTS5 index over their
content and tool name is kept in sync by triggers inside the same transaction as every write,
so the index can never disagree with the table.

``sqlite3`` blocks, so every call runs in a worker thread (``anyio.to_thread``) behind a
capacity limiter of one: one connection, used by one thread at a time, in call order. A call
cancelled while its thread runs finishes its statement first (the thread cannot be interrupted)
and the cancellation is delivered when it returns, so a write is either wholly done or not.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.to_thread
import msgspec

from ._errors import DuplicateItem, SchemaVersionError, StoreClosed, StoreOpenError
from ._items import ContextItem, ItemKind, ScoredItem
from ._store import check_count
from ._words import fts5_query, informative_words, query_words

__all__ = ["DEFAULT_FILENAME", "SCHEMA_VERSION", "SQLiteStore"]

DEFAULT_FILENAME = "context.db"
"""The store's file name inside the data directory."""

SCHEMA_VERSION = 1
"""The schema this code writes. A file with a newer version is refused, never altered."""

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE items (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
    id           TEXT NOT NULL UNIQUE,
    agent_id     TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    tool_name    TEXT NOT NULL,
    importance   REAL NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    metadata     TEXT NOT NULL            -- JSON object of strings; '' when empty
);
CREATE INDEX items_thread ON items (agent_id, thread_id, seq);
CREATE INDEX items_agent ON items (agent_id, seq);
CREATE VIRTUAL TABLE items_fts USING fts5 (
    content, tool_name,
    content = 'items', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE items_vocab USING fts5vocab (items_fts, row);
CREATE TABLE item_count (n INTEGER NOT NULL);
INSERT INTO item_count (n) VALUES (0);
CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
    INSERT INTO items_fts (rowid, content, tool_name)
    VALUES (new.seq, new.content, new.tool_name);
    UPDATE item_count SET n = n + 1;
END;
CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
    INSERT INTO items_fts (items_fts, rowid, content, tool_name)
    VALUES ('delete', old.seq, old.content, old.tool_name);
    UPDATE item_count SET n = n - 1;
END;
"""

_COLUMNS = (
    "seq, id, agent_id, thread_id, kind, role, content, tool_call_id, tool_name, importance, "
    "timestamp_ms, metadata"
)
_INSERT = (
    "INSERT INTO items (id, agent_id, thread_id, kind, role, content, tool_call_id, tool_name, "
    "importance, timestamp_ms, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode


def _statements(script: str) -> list[str]:
    """Split a script into statements (a trigger body holds ``;`` of its own).

    ``executescript`` would do it, but it commits first, and the schema must be created in the
    same transaction that checks for it.
    """
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _row_to_item(row: tuple[Any, ...]) -> ContextItem:
    return ContextItem(
        seq=row[0],
        id=row[1],
        agent_id=row[2],
        thread_id=row[3],
        kind=row[4],
        role=row[5],
        content=row[6],
        tool_call_id=row[7],
        tool_name=row[8],
        importance=row[9],
        timestamp_ms=row[10],
        metadata=_decode_metadata(row[11]) if row[11] else {},
    )


def _filters(
    agent_id: str,
    thread_id: str | None,
    kinds: Collection[ItemKind] | None,
    before_seq: int | None,
    prefix: str = "",
) -> tuple[str, list[Any]]:
    """A WHERE fragment and its parameters; only placeholders, never interpolated values."""
    sql = [f"{prefix}agent_id = ?"]
    params: list[Any] = [agent_id]
    if thread_id is not None:
        sql.append(f"{prefix}thread_id = ?")
        params.append(thread_id)
    if kinds is not None:
        kinds = list(kinds)
        sql.append(f"{prefix}kind IN ({', '.join('?' * len(kinds))})" if kinds else "0")
        params.extend(kinds)
    if before_seq is not None:
        sql.append(f"{prefix}seq < ?")
        params.append(before_seq)
    return " AND ".join(sql), params


class SQLiteStore:
    """A :class:`MemoryStore` in one SQLite file (WAL, FTS5).

    Open it with ``async with SQLiteStore(path) as store:`` or ``await SQLiteStore.open(path)``
    (then ``await store.aclose()``). The parent directory is created when missing. Reopening the
    same path, in this process or after a restart, sees everything that was added.

    Args:
        path: the database file; see :meth:`in_data_dir` for the default location.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # One at a time: the connection is shared by the worker threads and sqlite3 objects
        # are not safe to use from two threads at once.
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> SQLiteStore:
        """A store at ``data_dir/context.db`` (not opened yet)."""
        return cls(Path(data_dir) / DEFAULT_FILENAME)

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SQLiteStore:
        """Open (creating when missing) the store at ``path``.

        Raises:
            StoreOpenError: the file cannot be opened or is not a SQLite database.
            SchemaVersionError: the file was written by a newer schema.
        """
        store = cls(path)
        await store._open()
        return store

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def __aenter__(self) -> Self:
        if self._conn is None:
            await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the store {self._path} is closed")
        self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        path = str(self._path)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open our own transactions, explicitly, around each write.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreOpenError(path, str(exc)) from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreOpenError(path, str(exc)) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if has_table is None:
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                found = int(row[0] or 0)
                if found > SCHEMA_VERSION:
                    raise SchemaVersionError(str(self._path), found, SCHEMA_VERSION)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def aclose(self) -> None:
        """Close the connection; idempotent. Waits for a call in flight, shielded."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise StoreClosed(f"the store {self._path} is not open")

        def call() -> _T:
            # Checked again in the thread: aclose may have run while this call waited its turn.
            if self._conn is not conn:
                raise StoreClosed(f"the store {self._path} is closed")
            return fn(conn)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    # ------------------------------------------------------------------ writes

    async def add(self, item: ContextItem) -> ContextItem:
        """See :meth:`MemoryStore.add`."""
        return (await self.add_many([item]))[0]

    async def add_many(self, items: Sequence[ContextItem]) -> list[ContextItem]:
        """See :meth:`MemoryStore.add_many`."""
        items = list(items)

        def write(conn: sqlite3.Connection) -> list[ContextItem]:
            stored: list[ContextItem] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    try:
                        cursor = conn.execute(
                            _INSERT,
                            (
                                item.id,
                                item.agent_id,
                                item.thread_id,
                                item.kind,
                                item.role,
                                item.content,
                                item.tool_call_id,
                                item.tool_name,
                                item.importance,
                                item.timestamp_ms,
                                _encode(item.metadata).decode() if item.metadata else "",
                            ),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise DuplicateItem(item.id) from exc
                    seq = cursor.lastrowid
                    assert seq is not None
                    stored.append(msgspec.structs.replace(item, seq=seq))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return stored

        return await self._run(write)

    async def delete_thread(self, agent_id: str, thread_id: str) -> int:
        """See :meth:`MemoryStore.delete_thread`."""

        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM items WHERE agent_id = ? AND thread_id = ?", (agent_id, thread_id)
            )
            return cursor.rowcount

        return await self._run(delete)

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

        def delete(conn: sqlite3.Connection) -> int:
            rules: list[str] = []
            params: list[Any] = [agent_id, thread_id]
            conn.execute("BEGIN IMMEDIATE")
            try:
                if keep_last == 0:
                    rules.append("1")
                elif keep_last is not None:
                    # The oldest item to keep: the keep_last-th newest of the thread.
                    row = conn.execute(
                        "SELECT seq FROM items WHERE agent_id = ? AND thread_id = ? "
                        "ORDER BY seq DESC LIMIT 1 OFFSET ?",
                        (agent_id, thread_id, keep_last - 1),
                    ).fetchone()
                    if row is not None:
                        rules.append("seq < ?")
                        params.append(row[0])
                if older_than_ms is not None:
                    rules.append("timestamp_ms < ?")
                    params.append(older_than_ms)
                deleted = 0
                if rules:
                    deleted = conn.execute(
                        "DELETE FROM items WHERE agent_id = ? AND thread_id = ? "
                        f"AND importance < 1.0 AND ({' OR '.join(rules)})",
                        params,
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return deleted

        return await self._run(delete)

    # ------------------------------------------------------------------ reads

    async def get(self, item_id: str) -> ContextItem | None:
        """See :meth:`MemoryStore.get`."""

        def read(conn: sqlite3.Connection) -> ContextItem | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
            return None if row is None else _row_to_item(row)

        return await self._run(read)

    async def recent(
        self, agent_id: str, thread_id: str, *, limit: int, before_seq: int | None = None
    ) -> list[ContextItem]:
        """See :meth:`MemoryStore.recent`."""
        check_count("limit", limit)
        where, params = _filters(agent_id, thread_id, None, before_seq)
        sql = f"SELECT {_COLUMNS} FROM items WHERE {where} ORDER BY seq DESC LIMIT ?"
        params.append(limit)

        def read(conn: sqlite3.Connection) -> list[ContextItem]:
            return [_row_to_item(r) for r in reversed(conn.execute(sql, params).fetchall())]

        return await self._run(read)

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
        where, params = _filters(agent_id, thread_id, kinds, before_seq)
        sql = (
            f"SELECT {_COLUMNS} FROM items WHERE {where} AND importance >= ? "
            "ORDER BY seq DESC LIMIT ?"
        )
        params += [min_importance, limit]

        def read(conn: sqlite3.Connection) -> list[ContextItem]:
            return [_row_to_item(r) for r in reversed(conn.execute(sql, params).fetchall())]

        return await self._run(read)

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
        words = query_words(text)
        if not words or limit == 0:
            await anyio.lowlevel.checkpoint()
            if self._conn is None:
                raise StoreClosed(f"the store {self._path} is not open")
            return []
        where, params = _filters(agent_id, thread_id, kinds, before_seq, prefix="i.")
        columns = ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        sql = (
            f"SELECT {columns}, bm25(items_fts) AS rank FROM items_fts "
            "JOIN items AS i ON i.seq = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND {where} ORDER BY rank, i.seq DESC LIMIT ?"
        )
        vocab_sql = (
            f"SELECT term, doc FROM items_vocab WHERE term IN ({', '.join('?' * len(words))})"
        )

        def read(conn: sqlite3.Connection) -> list[ScoredItem]:
            total = conn.execute("SELECT n FROM item_count").fetchone()[0]
            frequency = dict(conn.execute(vocab_sql, words).fetchall())
            match = fts5_query(" ".join(informative_words(words, frequency, total)))
            if not match:
                return []
            return [
                ScoredItem(item=_row_to_item(r), score=-float(r[-1]))
                for r in conn.execute(sql, [match, *params, limit]).fetchall()
            ]

        return await self._run(read)

    async def count(self, agent_id: str | None = None, thread_id: str | None = None) -> int:
        """See :meth:`MemoryStore.count`."""
        params: list[Any] = []
        if agent_id is None:
            sql = "SELECT count(*) FROM items"
        else:
            where, params = _filters(agent_id, thread_id, None, None)
            sql = f"SELECT count(*) FROM items WHERE {where}"
        return await self._run(lambda conn: int(conn.execute(sql, params).fetchone()[0]))

    async def threads(self, agent_id: str) -> list[str]:
        """See :meth:`MemoryStore.threads`."""
        sql = (
            "SELECT thread_id FROM items WHERE agent_id = ? GROUP BY thread_id "
            "ORDER BY max(seq) DESC"
        )
        return await self._run(lambda conn: [r[0] for r in conn.execute(sql, (agent_id,))])
