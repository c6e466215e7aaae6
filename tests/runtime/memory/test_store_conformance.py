"""The MemoryStore contract, run against every store."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime import InvalidArgument
from loom.runtime.memory import DuplicateItem, MemoryStore, StoreClosed

from .conftest import make

# The stores are backend-neutral: the contract is checked on asyncio and trio.
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_is_a_memory_store(store: MemoryStore) -> None:
    assert isinstance(store, MemoryStore)


async def test_add_assigns_increasing_seq_and_get_round_trips(store: MemoryStore) -> None:
    a = await store.add(make("one", metadata={"k": "v"}, importance=0.9))
    b = await store.add(make("two"))
    assert 0 < a.seq < b.seq
    got = await store.get(a.id)
    assert got == a
    assert got is not None
    assert got.metadata == {"k": "v"}
    assert got.importance == 0.9
    assert await store.get("no-such-id") is None


async def test_add_many_is_ordered_and_atomic(store: MemoryStore) -> None:
    first = make("x")
    await store.add(first)
    batch = [make("a"), make("b"), make("c", id=first.id)]
    with pytest.raises(DuplicateItem) as info:
        await store.add_many(batch)
    assert info.value.item_id == first.id
    assert await store.count() == 1  # nothing of the failed batch was written
    stored = await store.add_many(batch[:2])
    assert [i.content for i in stored] == ["a", "b"]
    assert stored[0].seq < stored[1].seq


async def test_repeated_id_inside_one_batch_is_refused(store: MemoryStore) -> None:
    item = make("a")
    with pytest.raises(DuplicateItem):
        await store.add_many([item, item])
    assert await store.count() == 0


async def test_recent_returns_newest_oldest_first(store: MemoryStore) -> None:
    items = await store.add_many([make(str(i)) for i in range(10)])
    await store.add(make("other thread", thread="t2"))
    await store.add(make("other agent", agent="a2"))
    recent = await store.recent("a1", "t1", limit=3)
    assert [i.content for i in recent] == ["7", "8", "9"]
    older = await store.recent("a1", "t1", limit=3, before_seq=recent[0].seq)
    assert [i.content for i in older] == ["4", "5", "6"]
    assert await store.recent("a1", "t1", limit=0) == []
    everything = await store.recent("a1", "t1", limit=100)
    assert everything == items
    assert await store.recent("a1", "nope", limit=5) == []


async def test_negative_limits_are_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidArgument):
        await store.recent("a1", "t1", limit=-1)
    with pytest.raises(InvalidArgument):
        await store.query("a1", limit=-1)
    with pytest.raises(InvalidArgument):
        await store.search("a1", "x", limit=-1)
    with pytest.raises(InvalidArgument):
        await store.prune("a1", "t1", keep_last=-1)


async def test_query_filters(store: MemoryStore) -> None:
    await store.add_many(
        [
            make("u", importance=0.2),
            make("{}", kind="tool_call", role="assistant", tool_call_id="c", tool_name="fs.read"),
            make("r", kind="tool_result", role="tool", tool_call_id="c", importance=0.9),
            make("o", kind="observation", importance=0.95, thread="t2"),
            make("other agent", agent="a2", importance=1.0),
        ]
    )
    assert [i.content for i in await store.query("a1", thread_id="t1")] == ["u", "{}", "r"]
    assert [i.content for i in await store.query("a1", min_importance=0.9)] == ["r", "o"]
    got = await store.query("a1", kinds=["tool_call", "observation"])
    assert [i.kind for i in got] == ["tool_call", "observation"]
    assert await store.query("a1", kinds=[]) == []
    assert [i.content for i in await store.query("a1", limit=2)] == ["r", "o"]
    first = (await store.query("a1", limit=1, thread_id="t1", kinds=["message"]))[0]
    assert await store.query("a1", before_seq=first.seq) == []


async def test_search_ranks_by_keyword(store: MemoryStore) -> None:
    await store.add_many(
        [
            make("the database migration failed on postgres"),
            make("lunch plans for friday"),
            make("postgres postgres postgres tuning notes"),
            make("unrelated", thread="t2"),
            make("postgres in another agent", agent="a2"),
        ]
    )
    hits = await store.search("a1", "postgres")
    assert [h.item.content for h in hits] == [
        "postgres postgres postgres tuning notes",
        "the database migration failed on postgres",
    ]
    assert hits[0].score > hits[1].score > 0
    assert await store.search("a1", "postgres", thread_id="t2") == []
    assert len(await store.search("a1", "postgres", limit=1)) == 1
    assert await store.search("a1", "postgres", limit=0) == []


async def test_search_any_word_matches_and_tool_names_are_searchable(store: MemoryStore) -> None:
    await store.add_many(
        [
            make("alpha"),
            make("beta"),
            make(
                '{"path": "x"}',
                kind="tool_call",
                role="assistant",
                tool_call_id="c",
                tool_name="github.create_issue",
            ),
        ]
    )
    found = {h.item.content for h in await store.search("a1", "alpha gamma beta")}
    assert found == {"alpha", "beta"}
    calls = await store.search("a1", "create issue", kinds=["tool_call"])
    assert [h.item.tool_name for h in calls] == ["github.create_issue"]


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "AND",
        "OR NOT AND",
        "data*",
        "*",
        "NEAR(a b)",
        "col:value",
        "^start",
        "(((",
        "a - b + c",
        "'; DROP TABLE items; --",
        "",
        "   ",
        "\x00",
        "🙂🙂",
        "x" * 10_000,
        " ".join(f"w{i}" for i in range(500)),
    ],
)
async def test_search_never_raises_on_awkward_input(store: MemoryStore, query: str) -> None:
    await store.add(make('data AND more data, with a "quoted" word and AND/OR/NOT'))
    hits = await store.search("a1", query)
    assert isinstance(hits, list)
    assert await store.count() == 1


async def test_search_reads_operators_as_words(store: MemoryStore) -> None:
    await store.add_many([make("this AND that"), make("nothing here"), make("database dump")])
    assert [h.item.content for h in await store.search("a1", "AND")] == ["this AND that"]
    # "*" is not a prefix operator: "data*" looks for the word "data" only.
    assert await store.search("a1", "data*") == []
    assert [h.item.content for h in await store.search("a1", '"database')] == ["database dump"]


async def test_search_folds_case_and_diacritics(store: MemoryStore) -> None:
    await store.add_many(
        [make("Café Crème at the RÉSUMÉ desk"), make("naïve approach"), make("東京 天気")]
    )
    assert len(await store.search("a1", "cafe")) == 1
    assert len(await store.search("a1", "résumé")) == 1
    assert len(await store.search("a1", "RESUME")) == 1
    assert len(await store.search("a1", "NAIVE")) == 1
    assert len(await store.search("a1", "東京")) == 1


async def test_count_and_threads(store: MemoryStore) -> None:
    await store.add(make("a", thread="t1"))
    await store.add(make("b", thread="t2"))
    await store.add(make("c", thread="t1"))
    await store.add(make("d", agent="a2", thread="t9"))
    assert await store.count() == 4
    assert await store.count("a1") == 3
    assert await store.count("a1", "t1") == 2
    assert await store.threads("a1") == ["t1", "t2"]  # t1 was active last
    assert await store.threads("nobody") == []


async def test_delete_thread(store: MemoryStore) -> None:
    await store.add_many([make("keep me", thread="t2"), make("gone"), make("gone too")])
    assert await store.delete_thread("a1", "t1") == 2
    assert await store.count("a1", "t1") == 0
    assert await store.search("a1", "gone") == []
    assert [h.item.content for h in await store.search("a1", "keep")] == ["keep me"]
    # seqs are never reused
    after = await store.add(make("new"))
    assert after.seq == 4


async def test_prune_keep_last_and_age_spare_pinned(store: MemoryStore) -> None:
    items = await store.add_many(
        [make(str(i), timestamp_ms=1000 + i, importance=1.0 if i == 1 else 0.5) for i in range(6)]
    )
    assert await store.prune("a1", "t1") == 0
    assert await store.prune("a1", "t1", keep_last=3) == 2  # 0 and 2; 1 is pinned
    left = [i.content for i in await store.recent("a1", "t1", limit=10)]
    assert left == ["1", "3", "4", "5"]
    assert await store.prune("a1", "t1", older_than_ms=items[4].timestamp_ms) == 1  # "3"
    assert await store.prune("a1", "t1", keep_last=0) == 2
    assert [i.content for i in await store.recent("a1", "t1", limit=10)] == ["1"]
    assert await store.search("a1", "4") == []


async def test_closed_store_refuses(store: MemoryStore) -> None:
    await store.add(make("x"))
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosed):
        await store.add(make("y"))
    with pytest.raises(StoreClosed):
        await store.recent("a1", "t1", limit=1)
    with pytest.raises(StoreClosed):
        await store.search("a1", "x")
    with pytest.raises(StoreClosed):
        await store.search("a1", "")


async def test_concurrent_writers_keep_every_item(store: MemoryStore) -> None:
    async def writer(n: int) -> None:
        for i in range(20):
            await store.add(make(f"w{n} item {i}", thread=f"t{n}"))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(writer, n)
    assert await store.count() == 100
    for n in range(5):
        got = await store.recent("a1", f"t{n}", limit=100)
        assert [i.content for i in got] == [f"w{n} item {i}" for i in range(20)]
