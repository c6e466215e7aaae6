"""The window never breaks tool-call pairing, fits the budget, and keeps recording order."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.runtime.llm import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from loom.runtime.memory import (
    MEMORY_HEADER,
    AgentContext,
    BudgetTooSmall,
    HeuristicTokenCounter,
    InMemoryStore,
    Prompt,
    RetrievalPolicy,
    message_tokens,
)

COUNTER = HeuristicTokenCounter()

# One step of a random conversation.
_call_ids = st.sampled_from([f"c{i}" for i in range(8)])
_op = st.one_of(
    st.tuples(st.just("user"), st.integers(0, 60)),
    st.tuples(st.just("assistant"), st.integers(0, 60)),
    st.tuples(st.just("calls"), st.integers(0, 3), st.lists(_call_ids, min_size=1, max_size=3)),
    st.tuples(st.just("result"), _call_ids, st.integers(0, 200)),
    st.tuples(st.just("event"), st.integers(0, 60)),
    st.tuples(st.just("observation"), st.integers(0, 60)),
)


async def _record(ctx: AgentContext, ops: list[tuple[object, ...]]) -> None:
    for n, op in enumerate(ops):
        words = " ".join(["word"] * int(op[-1] if isinstance(op[-1], int) else 1))
        tag = f"i{n:03d}"
        match op[0]:
            case "user":
                await ctx.record_user(f"{tag} {words}")
            case "assistant":
                await ctx.record_assistant(f"{tag} {words}")
            case "calls":
                ids = op[2]
                assert isinstance(ids, list)
                text = f"{tag} thinking" if op[1] else ""
                calls = [ToolCall(id=i, name="t.x", arguments={"a": 1}) for i in ids]
                await ctx.record_assistant(text, tool_calls=calls)
            case "result":
                size = op[2]
                assert isinstance(size, int)
                assert isinstance(op[1], str)
                await ctx.record_tool_result(op[1], f"{tag} " + "r" * size, tool_name="t.x")
            case "event":
                await ctx.record_observation(f"{tag} {words}", role="user")
            case _:
                await ctx.record_observation(f"{tag} {words}", role="assistant")


def _calls(m: Message) -> tuple[ToolCall, ...]:
    return m.tool_calls if isinstance(m, AssistantMessage) else ()


def check_pairing(messages: tuple[Message, ...]) -> None:
    """Every assistant tool call is answered right after it; no tool message stands alone."""
    i = 0
    while i < len(messages):
        m = messages[i]
        assert not isinstance(m, ToolMessage), f"tool message without its call at {i}"
        if calls := _calls(m):
            ids = [c.id for c in calls]
            assert len(set(ids)) == len(ids)
            answers = [a for a in messages[i + 1 : i + 1 + len(ids)] if isinstance(a, ToolMessage)]
            assert [a.tool_call_id for a in answers] == ids
            i += 1 + len(ids)
        else:
            i += 1


def check_prompt(prompt: Prompt, budget: int) -> None:
    assert prompt.tokens <= budget
    assert prompt.tokens == sum(message_tokens(m, COUNTER) for m in prompt.messages)
    check_pairing(prompt.messages)
    # Recording order: the tags of the window's messages increase.
    tags = [
        int(m.content[1:4])
        for m in prompt.messages
        if m.content.startswith("i") and not isinstance(m, ToolMessage) and not _calls(m)
    ]
    assert tags == sorted(tags)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_op, max_size=40),
    budget=st.integers(1, 1500),
    system=st.sampled_from(["", "You are terse."]),
    share=st.sampled_from([0.0, 0.3]),
)
def test_random_conversations_keep_pairing_and_budget(
    ops: list[tuple[object, ...]], budget: int, system: str, share: float
) -> None:
    async def main() -> None:
        async with InMemoryStore() as store:
            policy = RetrievalPolicy(budget_share=share, recall_importance=0.5)
            ctx = AgentContext(store, agent_id="a", thread_id="t", policy=policy)
            await _record(ctx, ops)
            error: BudgetTooSmall | None = None
            try:
                prompt = await ctx.build_prompt(goal="word", budget_tokens=budget, system=system)
            except BudgetTooSmall as exc:
                error = exc
            if error is not None:
                assert error.required_tokens > budget
                return
            check_prompt(prompt, budget)
            if system:
                assert prompt.messages[0] == SystemMessage(content=system)
            # With a budget this roomy, the whole conversation must be there.
            if budget >= 1500 and not prompt.truncated:
                assert prompt.retrieved_items == 0

    anyio.run(main)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=25))
def test_unlimited_budget_keeps_every_renderable_item(ops: list[tuple[object, ...]]) -> None:
    async def main() -> None:
        async with InMemoryStore() as store:
            ctx = AgentContext(store, agent_id="a", thread_id="t")
            await _record(ctx, ops)
            items = await ctx.history(1000)
            prompt = await ctx.build_prompt(budget_tokens=10**7)
            check_prompt(prompt, 10**7)
            assert not prompt.truncated
            assert prompt.retrieved_items == 0
            # Every user/assistant text and observation is present exactly once.
            plain = [i for i in items if i.kind in ("message", "observation", "event")]
            contents = [m.content for m in prompt.messages]
            for item in plain:
                assert contents.count(item.content) == 1

    anyio.run(main)


@pytest.mark.anyio
async def test_unanswered_calls_and_orphans_are_left_out() -> None:
    async with InMemoryStore() as store:
        ctx = AgentContext(store, agent_id="a", thread_id="t")
        await ctx.record_user("go")
        await ctx.record_tool_result("ghost", "orphan result", tool_name="t.x")
        await ctx.record_assistant(
            "let me look",
            tool_calls=[
                ToolCall(id="c1", name="fs.read", arguments={"p": 1}),
                ToolCall(id="c2", name="fs.read", arguments={"p": 2}),
            ],
        )
        await ctx.record_observation("the disk is busy")  # arrives between call and result
        await ctx.record_tool_result("c2", "second", tool_name="fs.read", is_error=True)
        await ctx.record_tool_result("c2", "second again", tool_name="fs.read")
        await ctx.record_assistant(tool_calls=[ToolCall(id="c3", name="x")])
        messages = await ctx.build(budget_tokens=10_000)
    assert messages == [
        UserMessage(content="go"),
        AssistantMessage(
            content="let me look",
            tool_calls=(
                ToolCall(id="c2", name="fs.read", arguments={"p": 2}, raw_arguments='{"p": 2}'),
            ),
        ),
        ToolMessage(content="second", tool_call_id="c2", name="fs.read", is_error=True),
        UserMessage(content="the disk is busy"),
    ]


@pytest.mark.anyio
async def test_a_turn_is_kept_whole_or_not_at_all() -> None:
    async with InMemoryStore() as store:
        ctx = AgentContext(
            store, agent_id="a", thread_id="t", policy=RetrievalPolicy(budget_share=0)
        )
        await ctx.record_user("first question " * 20)
        await ctx.record_assistant(
            tool_calls=[ToolCall(id="c1", name="search", arguments={"q": "x"})]
        )
        await ctx.record_tool_result("c1", "a long result " * 100, tool_name="search")
        await ctx.record_user("follow up")
        full = await ctx.build_prompt(budget_tokens=100_000)
        tool_turn = full.tokens - message_tokens(full.messages[0], COUNTER)
        # Just too small for the tool turn: only the newest message remains.
        prompt = await ctx.build_prompt(budget_tokens=tool_turn - 1)
        assert [m.content for m in prompt.messages] == ["follow up"]
        assert prompt.truncated
        prompt = await ctx.build_prompt(budget_tokens=tool_turn)
        assert [type(m) for m in prompt.messages] == [AssistantMessage, ToolMessage, UserMessage]


@pytest.mark.anyio
async def test_budget_too_small_for_system_or_newest_turn() -> None:
    async with InMemoryStore() as store:
        ctx = AgentContext(store, agent_id="a", thread_id="t")
        with pytest.raises(BudgetTooSmall) as info:
            await ctx.build(budget_tokens=3, system="a long system prompt " * 10)
        assert info.value.budget_tokens == 3
        assert info.value.required_tokens > 3
        await ctx.record_user("hello " * 50)
        with pytest.raises(BudgetTooSmall):
            await ctx.build(budget_tokens=20)
        # An empty thread builds to the system text alone.
    async with InMemoryStore() as store:
        ctx = AgentContext(store, agent_id="a", thread_id="t")
        assert await ctx.build(budget_tokens=100, system="hi") == [SystemMessage(content="hi")]
        assert MEMORY_HEADER  # the header is public for adapters that want to spot it
