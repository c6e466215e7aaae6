"""What only the SQLite store does: a file that survives restarts, WAL, schema versioning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loom.runtime.memory import (
    DEFAULT_FILENAME,
    SCHEMA_VERSION,
    AgentContext,
    ChatMessage,
    SchemaVersionError,
    SQLiteStore,
    StoreClosed,
    StoreOpenError,
    ToolCallRequest,
)

from .conftest import make

pytestmark = pytest.mark.anyio


async def test_a_conversation_survives_reopening_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: the store makes it
    async with SQLiteStore.in_data_dir(data_dir) as store:
        ctx = AgentContext(store, agent_id="helper", thread_id="th-1")
        await ctx.record_user("What is in config.yaml?")
        await ctx.record_assistant(
            tool_calls=[
                ToolCallRequest(id="c1", name="fs.read", arguments='{"path": "config.yaml"}')
            ]
        )
        await ctx.record_tool_result("c1", "port: 8080", tool_name="fs.read")
        await ctx.record_assistant("It sets the port to 8080.")
        before = await ctx.build(budget_tokens=4000, system="sys")
    assert (data_dir / DEFAULT_FILENAME).is_file()

    # A restart: a new store object over the same path, a new context object.
    async with SQLiteStore.in_data_dir(data_dir) as store:
        ctx = AgentContext(store, agent_id="helper", thread_id="th-1")
        after = await ctx.build(budget_tokens=4000, system="sys")
        assert after == before
        assert after[1:] == [
            ChatMessage(role="user", content="What is in config.yaml?"),
            ChatMessage(
                role="assistant",
                tool_calls=(
                    ToolCallRequest(id="c1", name="fs.read", arguments='{"path": "config.yaml"}'),
                ),
            ),
            ChatMessage(role="tool", content="port: 8080", tool_call_id="c1", name="fs.read"),
            ChatMessage(role="assistant", content="It sets the port to 8080."),
        ]
        # Keyword search sees what was written before the restart, and new seqs go on.
        hits = await store.search("helper", "port")
        assert {h.item.content for h in hits} == {"port: 8080", "It sets the port to 8080."}
        new = await ctx.record_user("thanks")
        assert new.seq == 5


async def test_open_classmethod_and_wal_mode(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "x.db")
    try:
        await store.add(make("hello"))
        assert store.path == tmp_path / "x.db"
    finally:
        await store.aclose()
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        # The FTS index answers the same as the store did.
        assert conn.execute(
            "SELECT count(*) FROM items_fts WHERE items_fts MATCH 'hello'"
        ).fetchone() == (1,)


async def test_a_closed_store_cannot_be_reopened_by_entering(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "x.db")
    with pytest.raises(StoreClosed):
        await store.add(make("not open yet"))
    async with store:
        pass
    with pytest.raises(StoreClosed):
        async with store:
            pass


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    async with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError) as info:
        await SQLiteStore.open(path)
    assert info.value.found == SCHEMA_VERSION + 1
    assert info.value.supported == SCHEMA_VERSION


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not sqlite, just some bytes " * 100)
    with pytest.raises(StoreOpenError) as info:
        await SQLiteStore.open(path)
    assert info.value.path == str(path)
    assert isinstance(info.value, OSError)


async def test_a_directory_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "x.db").mkdir()
    with pytest.raises(StoreOpenError):
        await SQLiteStore.open(tmp_path / "x.db")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreOpenError):
        await SQLiteStore.open(tmp_path / "file" / "x.db")  # parent is a file


async def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "x.db") as a, SQLiteStore(tmp_path / "x.db") as b:
        await a.add(make("from a"))
        await b.add(make("from b"))
        assert [i.content for i in await a.recent("a1", "t1", limit=5)] == ["from a", "from b"]
