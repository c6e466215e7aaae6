"""AgentContext: recording, retrieval of older items, and building from a large store."""

from __future__ import annotations

from pathlib import Path

import pytest

import loom.runtime.memory as context_pkg
from loom.runtime import Event, InvalidArgument
from loom.runtime.llm import (
    AssistantMessage,
    MalformedToolArguments,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from loom.runtime.memory import (
    MEMORY_HEADER,
    AgentContext,
    InMemoryStore,
    InvalidItem,
    MemoryStore,
    RetrievalPolicy,
    SQLiteStore,
)

from .conftest import make

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000


async def _filler(ctx: AgentContext, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await ctx.record_user(f"filler message number {i} about nothing in particular")
        await ctx.record_assistant(f"acknowledged {i}")


async def test_old_items_come_back_by_keyword(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1", clock=lambda: NOW)
    await ctx.record_user("Remember: the staging database password rotates every Tuesday")
    await _filler(ctx, 60)
    await ctx.record_user("when does the database password rotate?")
    prompt = await ctx.build_prompt(budget_tokens=600, system="be brief")
    assert prompt.truncated
    assert prompt.retrieved_items >= 1
    assert prompt.tokens <= 600
    memory = prompt.messages[1]
    assert isinstance(memory, SystemMessage)
    assert memory.content.startswith(MEMORY_HEADER)
    assert "rotates every Tuesday" in memory.content
    assert prompt.messages[-1].content == "when does the database password rotate?"
    # The retrieved item is older than the window: it is not also in the window.
    window = [m.content for m in prompt.messages[2:]]
    assert not any("every Tuesday" in c for c in window)


async def test_goal_overrides_the_query_and_important_items_are_recalled(
    store: MemoryStore,
) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1", clock=lambda: NOW)
    await ctx.record_observation("user prefers answers in French", importance=0.95)
    await ctx.record_user("the deploy key lives in vault path secret/deploy")
    await _filler(ctx, 60)
    prompt = await ctx.build_prompt(goal="where is the deploy key?", budget_tokens=600)
    memory = prompt.messages[0].content
    assert "secret/deploy" in memory
    assert "answers in French" in memory  # no keyword match, but important
    # Chronological inside the memory message.
    assert memory.index("French") < memory.index("secret/deploy")


async def test_no_retrieval_when_everything_fits(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    await ctx.record_user("alpha")
    await ctx.record_assistant("beta")
    prompt = await ctx.build_prompt(goal="alpha", budget_tokens=1000)
    assert not prompt.truncated
    assert prompt.retrieved_items == 0
    assert [m.content for m in prompt.messages] == ["alpha", "beta"]


async def test_scope_agent_reaches_other_threads(store: MemoryStore) -> None:
    other = AgentContext(store, agent_id="a1", thread_id="older-thread")
    await other.record_user("our office wifi network is called lighthouse")
    stranger = AgentContext(store, agent_id="a2", thread_id="older-thread")
    await stranger.record_user("the wifi of another agent is called secret")
    policy = RetrievalPolicy(scope="agent")
    ctx = AgentContext(store, agent_id="a1", thread_id="t1", policy=policy)
    await ctx.record_user("what is the wifi called?")
    prompt = await ctx.build_prompt(budget_tokens=1000)
    assert "lighthouse" in prompt.messages[0].content
    assert "secret" not in prompt.messages[0].content
    # The default scope stays inside the thread.
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    assert "lighthouse" not in str(await ctx.build(budget_tokens=1000))
    ranked = await AgentContext(store, agent_id="a1", thread_id="x", policy=policy).recall("wifi")
    assert {r.item.content for r in ranked} == {
        "our office wifi network is called lighthouse",
        "what is the wifi called?",
    }
    assert ranked[0].score >= ranked[1].score


async def test_record_event_and_kinds(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    event = Event(type="task.created", source="planner", payload=b"write the report \xff")
    item = await ctx.record_event(event, importance=0.7)
    assert item.kind == "event"
    assert item.role == "user"
    assert item.content == "[event task.created from planner] write the report \ufffd"
    assert item.metadata["event_id"] == event.id
    assert item.timestamp_ms == event.timestamp_ms
    obs = await ctx.record_observation("noted", role="assistant")
    sysmsg = await ctx.record_system("switch to formal tone")
    assert (obs.kind, obs.role, sysmsg.role) == ("observation", "assistant", "system")
    messages = await ctx.build(budget_tokens=1000)
    assert [(type(m), m.content[:6]) for m in messages] == [
        (UserMessage, "[event"),
        (AssistantMessage, "noted"),
        (SystemMessage, "switch"),
    ]


async def test_items_of_another_thread_or_agent_are_refused(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    with pytest.raises(InvalidItem):
        await ctx.record(make("x", thread="t2"))
    with pytest.raises(InvalidItem):
        await ctx.record(make("x", agent="a2"))
    assert await store.count() == 0
    with pytest.raises(InvalidArgument):
        AgentContext(store, agent_id="", thread_id="t")
    with pytest.raises(InvalidArgument):
        await ctx.build(budget_tokens=0)


async def test_forget_applies_retention_to_this_thread(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    await _filler(ctx, 5)
    await AgentContext(store, agent_id="a1", thread_id="t2").record_user("other")
    assert await ctx.forget(keep_last=2) == 8
    assert [i.content for i in await ctx.history()] == [
        "filler message number 4 about nothing in particular",
        "acknowledged 4",
    ]
    assert await store.count("a1", "t2") == 1


def test_bad_policies_are_refused() -> None:
    for bad in (
        {"keyword_weight": -1.0},
        {"half_life_ms": 0},
        {"budget_share": 1.5},
        {"max_candidates": -1},
        {"max_item_chars": 0},
        {"kind_weights": {"message": 2.0}},
    ):
        with pytest.raises(InvalidArgument):
            RetrievalPolicy(**bad)


def test_bad_items_are_refused() -> None:
    for bad in (
        {"kind": "tool_result", "role": "user"},
        {"kind": "tool_result", "role": "tool"},  # no call id
        {"kind": "tool_call", "role": "assistant", "tool_call_id": "c"},  # no name
        {"kind": "message", "role": "tool"},
        {"kind": "message", "role": "user", "importance": 1.5},
        {"kind": "message", "role": "user", "importance": float("nan")},
        {"kind": "message", "role": "user", "thread": ""},
        {"kind": "gossip", "role": "user"},
    ):
        with pytest.raises(InvalidItem):
            make("x", **bad)


def test_public_surface_matches_all() -> None:
    public = {n for n in dir(context_pkg) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(context_pkg, n)).__name__ == "module"}
    assert set(context_pkg.__all__) == public - modules


async def test_build_from_10k_items_fits_the_budget(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "big.db") as store:
        items = []
        for i in range(10_000):
            thread = "t1" if i % 2 else f"t{i % 7 + 2}"
            items.append(
                make(
                    f"message {i} about topic{i % 97} with some ordinary words in it",
                    thread=thread,
                    importance=(i % 10) / 10,
                )
            )
        await store.add_many(items)
        ctx = AgentContext(store, agent_id="a1", thread_id="t1")
        await ctx.record_assistant(tool_calls=[ToolCall(id="c", name="db.query")])
        await ctx.record_tool_result("c", "rows: 3", tool_name="db.query")
        prompt = await ctx.build_prompt(goal="topic42", budget_tokens=4000, system="sys")
        assert prompt.tokens <= 4000
        assert prompt.truncated
        assert prompt.retrieved_items > 0
        assert "topic42" in prompt.messages[1].content
        assert [type(m) for m in prompt.messages[-2:]] == [AssistantMessage, ToolMessage]
        assert prompt.window_items > 20


async def test_in_memory_and_sqlite_build_the_same_prompt(tmp_path: Path) -> None:
    async def build(store: MemoryStore) -> object:
        ctx = AgentContext(store, agent_id="a1", thread_id="t1", clock=lambda: NOW)
        await ctx.record_user("the invoice for ACME is overdue", importance=0.6)
        for i in range(40):
            await ctx.record_user(f"chat {i}")
            await ctx.record_assistant(f"reply {i}", tool_calls=[ToolCall(id=f"c{i}", name="noop")])
            await ctx.record_tool_result(f"c{i}", "ok", tool_name="noop")
        return await ctx.build(goal="invoice overdue", budget_tokens=500, system="s")

    async with InMemoryStore() as a, SQLiteStore(tmp_path / "x.db") as b:
        # Ids and timestamps differ between the two runs; the shapes and texts must not.
        left, right = await build(a), await build(b)
    assert isinstance(left, list)
    assert isinstance(right, list)
    # Stored the same way, the messages are equal (no ids or timestamps are in them).
    assert left == right


async def test_tool_calls_are_stored_as_the_model_wrote_them(store: MemoryStore) -> None:
    ctx = AgentContext(store, agent_id="a1", thread_id="t1")
    bad = MalformedToolArguments("not JSON", call_id="c3", tool_name="t.x", raw_arguments="{")
    stored = await ctx.record_assistant(
        tool_calls=[
            ToolCall(id="c1", name="t.x", arguments={"q": "x"}, raw_arguments='{"q":"x"}'),
            ToolCall(id="c2", name="t.x", arguments={"q": "y"}),  # made in code: no text
            ToolCall(id="c3", name="t.x", raw_arguments="{", error=bad),
        ]
    )
    assert [i.content for i in stored] == ['{"q":"x"}', '{"q": "y"}', "{"]
    for call_id in ("c1", "c2", "c3"):
        await ctx.record_tool_result(call_id, "done", tool_name="t.x")
    answer = (await ctx.build(budget_tokens=1000))[0]
    assert isinstance(answer, AssistantMessage)
    assert [(c.arguments, c.raw_arguments) for c in answer.tool_calls] == [
        ({"q": "x"}, '{"q":"x"}'),
        ({"q": "y"}, '{"q": "y"}'),
        ({}, "{"),
    ]
    assert isinstance(answer.tool_calls[2].error, MalformedToolArguments)
