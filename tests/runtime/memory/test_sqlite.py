"""What only the SQLite store does: a file that survives restarts, WAL, schema versioning."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from loom.runtime.llm import (
    AssistantMessage,
    MalformedToolArguments,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from loom.runtime.memory import (
    DEFAULT_FILENAME,
    SCHEMA_VERSION,
    AgentContext,
    SchemaVersionError,
    SQLiteStore,
    StoreClosed,
    StoreOpenError,
)

from .conftest import make

pytestmark = pytest.mark.anyio


async def test_a_conversation_survives_reopening_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: the store makes it
    async with SQLiteStore.in_data_dir(data_dir) as store:
        ctx = AgentContext(store, agent_id="helper", thread_id="th-1")
        await ctx.record_user("What is in config.yaml?")
        await ctx.record_assistant(
            tool_calls=[ToolCall(id="c1", name="fs.read", arguments={"path": "config.yaml"})]
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
            UserMessage(content="What is in config.yaml?"),
            AssistantMessage(
                tool_calls=(
                    ToolCall(
                        id="c1",
                        name="fs.read",
                        arguments={"path": "config.yaml"},
                        raw_arguments='{"path": "config.yaml"}',
                    ),
                ),
            ),
            ToolMessage(content="port: 8080", tool_call_id="c1", name="fs.read"),
            AssistantMessage(content="It sets the port to 8080."),
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


async def test_a_store_written_before_the_llm_message_model_builds_the_same_prompt(
    tmp_path: Path,
) -> None:
    # data/store_v1.db was written by the release whose prompts were memory's own ChatMessage
    # and ToolCallRequest: record_user, then record_assistant("Reading both.") with the calls
    # c1 fs.read '{"path": "config.yaml"}', c2 fs.read '{"path": ' (malformed) and c3
    # clock.now '' (no arguments), their three results (c2's an error), and a final answer.
    # The stored form of an item did not change; this proves it reads back as it did.
    path = tmp_path / "store_v1.db"
    shutil.copyfile(Path(__file__).parent / "data" / "store_v1.db", path)
    async with SQLiteStore(path) as store:
        ctx = AgentContext(store, agent_id="helper", thread_id="th-1")
        messages = await ctx.build(budget_tokens=4000, system="sys")
    assert len(messages) == 7
    assert messages[:2] == [
        SystemMessage(content="sys"),
        UserMessage(content="What is in config.yaml and notes.txt?"),
    ]
    answer = messages[2]
    assert isinstance(answer, AssistantMessage)
    assert answer.content == "Reading both."
    good, malformed, empty = answer.tool_calls
    assert good == ToolCall(
        id="c1",
        name="fs.read",
        arguments={"path": "config.yaml"},
        raw_arguments='{"path": "config.yaml"}',
    )
    assert (malformed.id, malformed.name, malformed.raw_arguments) == ("c2", "fs.read", '{"path": ')
    assert isinstance(malformed.error, MalformedToolArguments)
    assert malformed.arguments == {}
    assert empty == ToolCall(id="c3", name="clock.now", arguments={}, raw_arguments="")
    assert messages[3:] == [
        ToolMessage(tool_call_id="c1", content="port: 8080", name="fs.read"),
        ToolMessage(
            tool_call_id="c2", content="malformed arguments", name="fs.read", is_error=True
        ),
        ToolMessage(tool_call_id="c3", content="2023-11-14T22:13:20Z", name="clock.now"),
        AssistantMessage(content="It sets the port to 8080."),
    ]
