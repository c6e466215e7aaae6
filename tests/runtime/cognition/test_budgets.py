"""Budgets stop a model that calls tools forever, before the call that would go past them.

The scripted model answers every request with another tool call (``looping``), so only a
budget ends the turn; every assertion on ``server.requests`` says no request went out beyond
it. Each call reports 10 prompt and 100 generated tokens; ``max_tokens`` is 200, so the
estimate checked before a call (prompt estimate + 200) is always above what the call uses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from loom.runtime import Budget, BudgetExhausted, BudgetLedger, InvalidArgument, TenantBudget
from loom.runtime.cognition import Loop, LoopConfig, Toolset, TurnOutcome
from loom.runtime.llm import OpenAIProvider
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import FunctionTool

from ._loop_support import echo_tool, provider_config

pytestmark = pytest.mark.anyio

WAIT = 10.0
USED = 110  # tokens each scripted call reports
MAX_TOKENS = 200


def looping(n: int = 200) -> list[Reply]:
    """A model that never answers: each reply asks for one more tool call."""
    call = ScriptedToolCall(name="echo", arguments={"text": "again"})
    return [Reply(tool_calls=[call], prompt_tokens=10, completion_tokens=100)] * n


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def model(**provider: Any) -> AsyncIterator[tuple[ScriptedLLMServer, OpenAIProvider]]:
    async with ScriptedLLMServer(looping()) as server:
        llm = OpenAIProvider("scripted", provider_config(server, **provider))
        try:
            yield server, llm
        finally:
            with anyio.CancelScope(shield=True):
                await llm.aclose()


def loop_of(
    llm: OpenAIProvider,
    budget: Budget,
    *,
    ledger: BudgetLedger | None = None,
    agent_id: str = "tester",
    max_iterations: int = 50,
) -> Loop:
    return Loop(
        llm,
        tools=Toolset(tools=[echo_tool()]),
        config=LoopConfig(max_iterations=max_iterations, max_tokens=MAX_TOKENS),
        agent_id=agent_id,
        budget=budget,
        ledger=ledger,
    )


async def run(loop: Loop, store: InMemoryStore, thread: str = "t1") -> TurnOutcome:
    context = AgentContext(store, agent_id=loop.agent_id, thread_id=thread)
    with anyio.fail_after(WAIT):
        return await loop.run(context, "loop forever")


def assert_stopped_before(outcome: TurnOutcome, budget: str, limit: float, spent: float) -> None:
    """Stopped by ``budget``, having spent ``spent`` within ``limit``, because the next call's
    estimate (at least ``max_tokens``) would not have fit."""
    assert outcome.kind == "budget_exhausted"
    assert outcome.budget == budget
    number = r"([0-9.e-]+)"
    found = re.search(
        rf"budget (\w+) exhausted: {number} spent, the next call needs {number}", outcome.error
    )
    assert found is not None, outcome.error
    assert found[1] == budget
    assert spent <= limit
    assert float(found[2]) == pytest.approx(spent)
    assert float(found[2]) + float(found[3]) > limit


async def test_a_turn_budget_stops_the_loop_before_the_call() -> None:
    async with model() as (server, llm):
        outcome = await run(loop_of(llm, Budget(turn_tokens=1000)), InMemoryStore())
    calls = len(server.requests)
    assert calls == outcome.iterations
    assert 2 <= calls < 10
    assert outcome.usage.total_tokens == calls * USED
    assert_stopped_before(outcome, "turn_tokens", 1000, calls * USED)


async def test_a_first_call_that_cannot_fit_is_never_made() -> None:
    async with model() as (server, llm):
        outcome = await run(loop_of(llm, Budget(turn_tokens=MAX_TOKENS)), InMemoryStore())
    assert server.requests == []
    assert (outcome.kind, outcome.budget, outcome.iterations) == (
        "budget_exhausted",
        "turn_tokens",
        0,
    )


async def test_a_cost_budget_is_priced_from_the_provider_config() -> None:
    # 1 USD per 1000 tokens either way: each call costs 0.11 and is estimated above 0.2.
    async with model(cost_per_1k_input=1.0, cost_per_1k_output=1.0) as (server, llm):
        ledger = BudgetLedger()
        outcome = await run(loop_of(llm, Budget(turn_cost_usd=0.5), ledger=ledger), InMemoryStore())
    calls = len(server.requests)
    assert_stopped_before(outcome, "turn_cost_usd", 0.5, calls * 0.11)
    stats = ledger.statistics()
    assert stats.cost_usd == pytest.approx(calls * 0.11)
    assert stats.exhausted == (("turn_cost_usd", 1),)


async def test_a_thread_budget_holds_across_turns() -> None:
    store = InMemoryStore()
    ledger = BudgetLedger()
    async with model() as (server, llm):
        budget = Budget(thread_tokens=1000)
        loop = loop_of(llm, budget, ledger=ledger, max_iterations=3)
        first = await run(loop, store, "t1")
        assert (first.kind, first.budget, first.iterations) == (
            "budget_exhausted",
            "max_iterations",
            3,
        )
        second = await run(loop_of(llm, budget, ledger=ledger), store, "t1")
        in_t1 = len(server.requests)
        # Another thread of the same agent has a budget of its own.
        other = await run(loop, store, "t2")
    assert_stopped_before(second, "thread_tokens", 1000, in_t1 * USED)
    assert other.budget == "max_iterations"
    assert len(server.requests) == in_t1 + 3
    assert ledger.spend("thread", "tester/t1").tokens == in_t1 * USED


async def test_an_agent_budget_is_over_a_window() -> None:
    clock = Clock()
    ledger = BudgetLedger(window_s=60.0, clock=clock)
    store = InMemoryStore()
    async with model() as (server, llm):
        loop = loop_of(llm, Budget(agent_tokens=700), ledger=ledger)
        first = await run(loop, store, "t1")
        # Another thread of the agent spends from the same budget.
        second = await run(loop, store, "t2")
        made = len(server.requests)
        # Once the spend has left the window, the agent may spend again.
        clock.now += 61.0
        third = await run(loop, store, "t3")
    assert first.budget == second.budget == third.budget == "agent_tokens"
    assert_stopped_before(second, "agent_tokens", 700, made * USED)
    assert first.iterations > second.iterations
    assert third.iterations == first.iterations
    assert len(server.requests) == made + third.iterations
    assert ledger.statistics().exhausted == (("agent_tokens", 3),)


async def test_a_tenant_budget_is_shared_by_its_agents() -> None:
    ledger = BudgetLedger(tenants={"team-a": TenantBudget(tokens=700)})
    store = InMemoryStore()
    async with model() as (server, llm):
        one = loop_of(llm, Budget(), ledger=ledger, agent_id="team-a:one", max_iterations=4)
        two = loop_of(llm, Budget(), ledger=ledger, agent_id="team-a:two", max_iterations=4)
        other = loop_of(llm, Budget(), ledger=ledger, agent_id="team-b:one", max_iterations=2)
        first = await run(one, store)
        after_one = len(server.requests)
        second = await run(two, store)
        after_two = len(server.requests)
        third = await run(other, store)
    spent_a = after_two * USED
    assert (first.budget, first.iterations) == ("max_iterations", 4)
    assert_stopped_before(second, "tenant_tokens", 700, spent_a)
    assert after_one == 4 < after_two
    assert ledger.spend("tenant", "team-a").tokens == spent_a
    # Another tenant is not touched by team-a's budget.
    assert third.budget == "max_iterations"
    assert len(server.requests) == after_two + 2


async def test_two_turns_side_by_side_cannot_both_spend_the_last_of_a_budget() -> None:
    # Each estimate is held the moment it is checked: however the two turns interleave, what
    # they report never goes past the agent's budget.
    ledger = BudgetLedger()
    store = InMemoryStore()
    async with model() as (server, llm):
        loop = loop_of(llm, Budget(agent_tokens=900), ledger=ledger)
        outcomes: list[TurnOutcome] = []

        async def one(thread: str) -> None:
            outcomes.append(await run(loop, store, thread))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a")
            tg.start_soon(one, "b")
    assert {o.budget for o in outcomes} == {"agent_tokens"}
    assert len(server.requests) * USED <= 900


async def test_the_tool_call_cap_ends_the_turn_after_its_step() -> None:
    async with model() as (server, llm):
        loop = loop_of(llm, Budget(max_tool_calls=3))
        outcome = await run(loop, InMemoryStore())
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")
    ran = [r for r in outcome.tool_results if not r.is_error]
    refused = [r for r in outcome.tool_results if r.is_error]
    assert len(ran) == 3
    assert [r.error_type for r in refused] == ["ToolCallRefused"]
    assert len(server.requests) == 4  # the fourth answer's call was refused, nothing after


async def test_a_parallel_cap_runs_at_most_n_calls_at_once() -> None:
    running = peak = 0

    async def slow(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return i

    tool = FunctionTool(
        slow,
        name="slow",
        description="Slow.",
        parameters_schema={"type": "object", "properties": {"i": {"type": "integer"}}},
    )
    calls = [ScriptedToolCall(name="slow", arguments={"i": i}) for i in range(50)]
    async with ScriptedLLMServer([Reply(tool_calls=calls), Reply(text="done")]) as server:
        llm = OpenAIProvider("scripted", provider_config(server))
        async with llm:
            loop = Loop(
                llm,
                tools=Toolset(tools=[tool]),
                # The loop alone would run 50 at once; the budget's cap says 4.
                config=LoopConfig(max_parallel_tools=50),
                agent_id="tester",
                budget=Budget(max_parallel_tool_calls=4),
            )
            outcome = await run(loop, InMemoryStore())
    assert outcome.kind == "answer"
    assert len(outcome.tool_results) == 50
    assert not any(r.is_error for r in outcome.tool_results)
    assert peak == 4


async def test_a_turn_run_by_a_tool_joins_the_calling_turns_scope() -> None:
    # The tool "delegate" runs a whole turn of another loop (an agent used as a tool): that
    # turn's tool calls count against the caps of the turn that called it.
    inner_outcomes: list[TurnOutcome] = []
    # The first reply goes to the outer turn; the helper's turn takes the looping ones until
    # the shared cap refuses its fourth call; the outer turn's next call is then refused too.
    script = [Reply(tool_calls=[ScriptedToolCall(name="delegate")]), *looping()]
    async with ScriptedLLMServer(script) as server:
        llm = OpenAIProvider("scripted", provider_config(server))
        async with llm:
            inner = loop_of(llm, Budget(), agent_id="helper")

            async def delegate() -> str:
                outcome = await run(inner, InMemoryStore())
                inner_outcomes.append(outcome)
                return outcome.kind

            tool = FunctionTool(
                delegate,
                name="delegate",
                description="Ask the helper.",
                parameters_schema={"type": "object", "properties": {}},
            )
            outer = Loop(
                llm,
                tools=Toolset(tools=[tool]),
                config=LoopConfig(max_tokens=MAX_TOKENS),
                agent_id="boss",
                budget=Budget(max_tool_calls=4),
            )
            outcome = await run(outer, InMemoryStore())
    [helped] = inner_outcomes
    assert (helped.kind, helped.budget) == ("budget_exhausted", "max_tool_calls")
    assert len([r for r in helped.tool_results if not r.is_error]) == 3
    assert outcome.tool_results[0].content == "budget_exhausted"


def test_budget_values_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="max_tool_calls"):
        Budget(max_tool_calls=0)
    with pytest.raises(InvalidArgument, match="turn_tokens"):
        Budget(turn_tokens=-1)
    with pytest.raises(InvalidArgument, match="max_keys"):
        BudgetLedger(max_keys=1)


def test_the_ledger_is_bounded_and_says_what_it_forgot() -> None:
    ledger = BudgetLedger(max_keys=10)
    budget = Budget(thread_tokens=1000)
    for i in range(50):
        ledger.hold(ledger.limits(budget, "a", f"t{i}"), 10, 0.0).settle(10, 0.0)
    stats = ledger.statistics()
    # 50 threads, the agent and its tenant (""): the least recently used are forgotten.
    assert stats.keys == 10
    assert stats.evicted == 42
    assert ledger.spend("agent", "a").tokens == 500
    assert stats.tokens == 500
    # The oldest threads were forgotten, the newest kept.
    assert ledger.spend("thread", "a/t0").tokens == 0
    assert ledger.spend("thread", "a/t49").tokens == 10
    with pytest.raises(BudgetExhausted) as caught:
        ledger.hold(ledger.limits(budget, "a", "t49"), 991, 0.0)
    assert (caught.value.budget, caught.value.spent, caught.value.limit) == (
        "thread_tokens",
        10,
        1000,
    )
