"""Calls made from inside a local tool of a turn count against the turn's caps.

A turn's local function tool runs its body in this process; the calls that body makes (to
another agent's capability, here through ``runtime.call_tool``) are calls of the turn's tree:
each one is counted against ``max_tool_calls`` and takes a ``max_parallel_tool_calls`` slot
(never waiting for one: its ancestor, the local tool, holds a slot). The local tool's own call
is counted once, by the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.from_thread
import pytest

from loom.runtime import AgentRuntime, AgentSpec, Budget, EventBus
from loom.runtime.cognition import Loop, LoopConfig, PeerCapabilities, Toolset, TurnOutcome
from loom.runtime.llm import OpenAIProvider
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import FunctionTool, ToolCallRefused

from ._loop_support import Offers, provider_config

pytestmark = pytest.mark.anyio

WAIT = 10.0
OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


async def three_calls(runtime: AgentRuntime) -> list[str]:
    """Call ``cap.x`` three times in turn: ``"ok"`` or the refusing budget, for each."""
    seen = []
    for _ in range(3):
        try:
            await runtime.call_tool("cap.x", {})
        except ToolCallRefused as exc:
            seen.append(exc.budget)
        else:
            seen.append("ok")
    return seen


async def turn_with(
    body: Callable[[AgentRuntime], Coroutine[Any, Any, Any]],
    cap: Callable[[], Awaitable[str]],
    budget: Budget,
    *,
    script: list[Reply] | None = None,
    in_thread: bool = False,
) -> TurnOutcome:
    """One turn whose model calls the local tool ``fan`` once (which runs ``body``; or what
    ``script`` says), beside agent ``p`` offering ``cap.x`` (which runs ``cap``). With
    ``in_thread``, ``fan`` is a plain function (run in a worker thread) calling back into the
    event loop for ``body``."""
    capability = FunctionTool(cap, name="cap.x", description="A cap.", parameters_schema=OBJECT)

    async def fan() -> Any:
        return await body(runtime)

    def fan_in_thread() -> Any:
        return anyio.from_thread.run(body, runtime)

    local = FunctionTool(
        fan_in_thread if in_thread else fan,
        name="fan",
        description="Fan out.",
        parameters_schema=OBJECT,
    )
    if script is None:
        script = [Reply(tool_calls=[ScriptedToolCall(name="fan")]), Reply(text="done")]
    async with (
        ScriptedLLMServer(script) as server,
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
    ):
        await runtime.start(AgentSpec(id="p", factory=lambda: Offers(capability)))
        llm = OpenAIProvider("scripted", provider_config(server))
        async with llm:
            loop = Loop(
                llm,
                tools=Toolset(tools=[local], peers=PeerCapabilities(runtime, ["cap.x"])),
                config=LoopConfig(max_tokens=100),
                agent_id="origin",
                budget=budget,
            )
            context = AgentContext(InMemoryStore(), agent_id="origin", thread_id="t")
            with anyio.fail_after(WAIT):
                return await loop.run(context, "go")


@pytest.mark.parametrize("in_thread", [False, True], ids=["async", "sync"])
async def test_a_local_tools_nested_calls_count_against_max_tool_calls(in_thread: bool) -> None:
    ran = 0

    async def cap() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    outcome = await turn_with(three_calls, cap, Budget(max_tool_calls=3), in_thread=in_thread)
    # The local call is one, its nested calls two more: the third nested call is refused.
    # Before, the local call's body ran "already counted": all three ran (four calls).
    [result] = outcome.tool_results
    assert result.content == '["ok","ok","max_tool_calls"]', result.content
    assert ran == 2


async def test_a_local_tools_nested_calls_take_parallel_slots() -> None:
    entered = refused = 0
    budgets: list[str] = []
    settled = anyio.Event()
    gate = anyio.Event()

    def note() -> None:
        if entered + refused == 3:
            settled.set()

    async def cap() -> str:
        nonlocal entered
        entered += 1
        note()
        await gate.wait()
        return "ok"

    async def body(runtime: AgentRuntime) -> dict[str, int]:
        nonlocal refused

        async def one() -> None:
            nonlocal refused
            try:
                await runtime.call_tool("cap.x", {})
            except ToolCallRefused as exc:
                budgets.append(exc.budget)
                refused += 1
                note()

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
            await settled.wait()
            gate.set()
        return {"entered": entered, "refused": refused}

    outcome = await turn_with(body, cap, Budget(max_parallel_tool_calls=2))
    # The local call holds one of the two slots: one nested call takes the other, the rest
    # are refused at once. Before, the nested calls held no slot: all three ran beside it.
    [result] = outcome.tool_results
    assert not result.is_error, result.content
    assert (entered, refused) == (1, 2)
    assert budgets == ["max_parallel_tool_calls"] * 2


async def test_a_capability_called_by_the_turn_is_counted_once() -> None:
    # The loop's own call of another agent's capability is a routing hop: it keeps its
    # counted frame through the runtime, which does not count it again.
    ran = 0

    async def cap() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    async def body(runtime: AgentRuntime) -> str:
        return str(await runtime.call_tool("cap.x", {}))

    both = Reply(tool_calls=[ScriptedToolCall(name="cap_x"), ScriptedToolCall(name="fan")])
    outcome = await turn_with(body, cap, Budget(max_tool_calls=3), script=[both, Reply(text="")])
    assert [r.is_error for r in outcome.tool_results] == [False, False], outcome.tool_results
    assert ran == 2


async def test_a_joined_turns_local_tool_counts_its_nested_calls() -> None:
    # The outer turn's local tool "delegate" runs a whole turn of another loop (an agent used
    # as a tool), which joins the outer turn's scope; that turn's local tool "fan" calls
    # cap.x three times. delegate, fan and two cap.x calls make the cap of four.
    ran = 0

    async def cap() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    capability = FunctionTool(cap, name="cap.x", description="A cap.", parameters_schema=OBJECT)
    script = [
        Reply(tool_calls=[ScriptedToolCall(name="delegate")]),  # the outer turn
        Reply(tool_calls=[ScriptedToolCall(name="fan")]),  # the joined turn
        Reply(text="inner done"),
        Reply(text="done"),
    ]
    async with (
        ScriptedLLMServer(script) as server,
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
    ):
        await runtime.start(AgentSpec(id="p", factory=lambda: Offers(capability)))
        llm = OpenAIProvider("scripted", provider_config(server))

        async def fan() -> list[str]:
            return await three_calls(runtime)

        inner = Loop(
            llm,
            tools=Toolset(
                tools=[FunctionTool(fan, name="fan", description="-", parameters_schema=OBJECT)]
            ),
            config=LoopConfig(max_tokens=100),
            agent_id="helper",
            budget=Budget(),
        )
        inner_outcomes: list[TurnOutcome] = []

        async def delegate() -> str:
            context = AgentContext(InMemoryStore(), agent_id="helper", thread_id="t")
            inner_outcomes.append(await inner.run(context, "help"))
            return "helped"

        async with llm:
            outer = Loop(
                llm,
                tools=Toolset(
                    tools=[
                        FunctionTool(
                            delegate, name="delegate", description="-", parameters_schema=OBJECT
                        )
                    ]
                ),
                config=LoopConfig(max_tokens=100),
                agent_id="origin",
                budget=Budget(max_tool_calls=4),
            )
            context = AgentContext(InMemoryStore(), agent_id="origin", thread_id="t")
            with anyio.fail_after(WAIT):
                outcome = await outer.run(context, "go")
    assert outcome.kind == "answer", outcome
    [helped] = inner_outcomes
    [result] = helped.tool_results
    assert result.content == '["ok","ok","max_tool_calls"]', result.content
    assert ran == 2
