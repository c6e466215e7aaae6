"""The effect journal: a tool call runs at most once, across crashes and restarts.

:class:`EffectJournal` keeps one row per call key (the model's tool call id, qualified by the
agent, the conversation and the turn) in a SQLite file of the data directory, with one of two
states:

- ``started``: written, and committed to disk, *before* the tool runs;
- ``done``: written after it returned, with its result (or its error).

:meth:`EffectJournal.run` is the only entry point. A key it has never seen runs the call
between those two writes. A key found ``done`` is not run: the recorded result is returned
(the recorded error raised as :class:`~loom.runtime.tools.ToolFailed`), so a resumed or
redelivered turn gets exactly what the first run got. A key found ``started`` is the one
ambiguous case: the process died (``kill -9``, power) after the tool began and before its
result was written, so the effect may or may not have happened. It is **not** run again
(at most once): :class:`EffectInterrupted` is raised, and the model reads that error as the
call's result. Whether the effect happened is for a human (or the tool's own idempotency) to
find out; the journal cannot know.

A call cancelled from outside (its turn cancelled, the server draining) is recorded ``done``
with a ``Cancelled`` error under a shield, as it may have taken effect; a ``ToolTimeout`` is a
result like any other error.

The file is in WAL mode with ``synchronous=FULL``: the ``started`` row is on disk before the
tool runs, even against a power cut. ``sqlite3`` blocks, so each statement runs in a worker
thread behind a limiter of one (the memory store's way, ``runtime/memory/_sqlite.py``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import msgspec

from .._errors import LoomError
from .._sqlite_file import connect_fsynced
from ._errors import ToolError, ToolFailed

__all__ = ["EffectInterrupted", "EffectJournal", "JournalEntry", "JournalStats"]

JOURNAL_FILENAME = "effects.sqlite3"
"""The journal's file name inside the data directory."""

_T = TypeVar("_T")

_SCHEMA = """CREATE TABLE IF NOT EXISTS effects (
        key        TEXT PRIMARY KEY,
        tool       TEXT NOT NULL,
        status     TEXT NOT NULL,             -- 'started' | 'done'
        is_error   INTEGER NOT NULL DEFAULT 0,
        error_type TEXT NOT NULL DEFAULT '',
        value      BLOB NOT NULL DEFAULT X'',  -- JSON of the result, or the error's message
        started_ms INTEGER NOT NULL,
        done_ms    INTEGER NOT NULL DEFAULT 0
    )"""

_encoder = msgspec.json.Encoder(enc_hook=str)


class EffectInterrupted(ToolError):
    """The call was started before a crash and never recorded done: it may or may not have
    taken effect, and is not run again (the journal promises at most once).

    Attributes:
        key: the call's journal key.
    """

    def __init__(self, key: str, *, tool: str | None = None) -> None:
        self.key = key
        super().__init__(
            f"call {key} was interrupted by a crash after it started; it may or may not have "
            "taken effect and is not run again",
            tool=tool,
        )


class JournalEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One journalled call.

    Attributes:
        key: the call's key.
        tool: the tool's name.
        status: ``started`` (running, or interrupted) or ``done``.
        is_error: the call ended with an error.
        error_type: the error's class name ('' on success).
        value: the result as JSON, or the error's message.
        started_ms: when it started (Unix ms).
        done_ms: when it was recorded done (0 while started).
    """

    key: str
    tool: str
    status: Literal["started", "done"]
    is_error: bool = False
    error_type: str = ""
    value: bytes = b""
    started_ms: int = 0
    done_ms: int = 0


class JournalStats(msgspec.Struct, frozen=True, kw_only=True):
    """What a journal did since it was opened.

    Attributes:
        runs: calls run (recorded started, then done).
        replayed: calls found done and answered from the record, not run.
        interrupted: calls found started (a crash mid-call) and refused.
    """

    runs: int = 0
    replayed: int = 0
    interrupted: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EffectJournal:
    """At-most-once tool calls, keyed by call id, in one SQLite file (see the module text).

    Open with :meth:`open` (or ``async with await EffectJournal.open(path)``); close with
    :meth:`aclose`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        self._runs = self._replayed = self._interrupted = 0

    @staticmethod
    def in_data_dir(data_dir: str | os.PathLike[str]) -> Path:
        """The journal's path in a data directory: ``<data_dir>/effects.sqlite3``."""
        return Path(data_dir) / JOURNAL_FILENAME

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> EffectJournal:
        """Open (creating when missing) the journal at ``path``."""
        path = Path(path)
        return cls(await anyio.to_thread.run_sync(connect_fsynced, path, _SCHEMA), path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        if self._closed:
            raise LoomError(f"the effect journal {self.path} is closed")
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    async def get(self, key: str) -> JournalEntry | None:
        """The entry of ``key``, or ``None`` when the journal has never seen it."""

        def read() -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = self._conn.execute(
                "SELECT key, tool, status, is_error, error_type, value, started_ms, done_ms "
                "FROM effects WHERE key = ?",
                (key,),
            ).fetchone()
            return row

        row = await self._in_thread(read)
        if row is None:
            return None
        return JournalEntry(
            key=row[0],
            tool=row[1],
            status=row[2],
            is_error=bool(row[3]),
            error_type=row[4],
            value=row[5].encode() if isinstance(row[5], str) else bytes(row[5]),
            started_ms=row[6],
            done_ms=row[7],
        )

    async def run(self, key: str, tool: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call`` at most once for ``key`` (see the module text).

        Returns:
            What ``call`` returned, now or on the run that recorded it (as decoded JSON then).

        Raises:
            EffectInterrupted: ``key`` was started and never recorded done (a crash).
            ToolFailed: ``key`` was recorded done with an error (its type and message).
            Exception: what ``call`` raises, after recording it.
        """
        entry = await self.get(key)
        if entry is not None:
            if entry.status == "started":
                self._interrupted += 1
                raise EffectInterrupted(key, tool=tool)
            self._replayed += 1
            if entry.is_error:
                raise ToolFailed(entry.error_type, entry.value.decode(), tool=tool)
            return msgspec.json.decode(entry.value)
        await self._in_thread(
            lambda: self._conn.execute(
                "INSERT INTO effects (key, tool, status, started_ms) VALUES (?, ?, 'started', ?)",
                (key, tool, _now_ms()),
            )
        )
        self._runs += 1
        try:
            value = await call()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._done(key, True, "Cancelled", b"the call was cancelled")
            raise
        except Exception as exc:
            await self._done(key, True, type(exc).__name__, str(exc).encode())
            raise
        try:
            encoded = _encoder.encode(value)
        except (TypeError, ValueError, msgspec.EncodeError):
            encoded = _encoder.encode(repr(value))
        await self._done(key, False, "", encoded)
        return value

    async def _done(self, key: str, is_error: bool, error_type: str, value: bytes) -> None:
        await self._in_thread(
            lambda: self._conn.execute(
                "UPDATE effects SET status = 'done', is_error = ?, error_type = ?, value = ?, "
                "done_ms = ? WHERE key = ?",
                (int(is_error), error_type, value, _now_ms(), key),
            )
        )

    def statistics(self) -> JournalStats:
        """Calls run, replayed and refused since the journal was opened."""
        return JournalStats(runs=self._runs, replayed=self._replayed, interrupted=self._interrupted)
