"""The one way the runtime's own records open their SQLite file: the approvals store
(``_approvals.py``) and the effect journal (``tools/_journal.py``), both of which promise that
what they wrote survives a crash of the process or the machine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect_fsynced"]


def connect_fsynced(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating it and its folder) the SQLite file at ``path`` for use from worker
    threads, one statement at a time (autocommit), and run ``schema`` (one statement).

    WAL with ``synchronous=FULL``: every commit is on disk when it returns, which is what an
    approval's decision and a journal's "started" mark must be (NORMAL could lose the last
    ones to a power cut). Blocking: call it in a worker thread.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(schema)
    except BaseException:
        conn.close()
        raise
    return conn
