"""Which approvals a forwarded call has already used: the single-use mark of an approved
call, kept in the approvals store's own SQLite file so that it outlives a restart.

A server tool gated by ``NeedsApproval`` that an agent in another process calls with the
approval a human gave it (``bridge/_approved_calls.py``) runs as "ruled on" once per
approval. That "once" was a set in the server's memory: a restart of ``loom serve`` between
the first call and the turn's end forgot it, and the same approval let the gated tool run a
second time. The mark is now a row in ``approval_uses`` beside the records, written (and
fsynced, as every write of the store) before the tool runs.
"""

from __future__ import annotations

import sqlite3

__all__ = ["claim_use"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS approval_uses (
    id      TEXT PRIMARY KEY,
    used_ms INTEGER NOT NULL
)"""


def claim_use(conn: sqlite3.Connection, approval_id: str, now_ms: int) -> bool:
    """Mark ``approval_id`` used; ``True`` for the first mark, ``False`` when it was already.

    Blocking: the store calls it in its worker thread, one statement at a time, so two
    calls never both see "unused".
    """
    conn.execute(_SCHEMA)  # a file from before the table: created on first use
    cur = conn.execute(
        "INSERT OR IGNORE INTO approval_uses (id, used_ms) VALUES (?, ?)", (approval_id, now_ms)
    )
    return cur.rowcount == 1
