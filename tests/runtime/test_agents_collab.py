"""Collaboration from inside handlers: ``ctx.collab`` continues the event being handled."""

from __future__ import annotations

import anyio
import pytest

from loom import Agent, Context
from loom.runtime import AgentRuntime, Envelope, Event, EventBus
from loom.runtime.collab import BarrierCoordinator

from ._collab_support import Orchestration

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_gather_and_contract_net_between_agents() -> None:
    scenario = Orchestration()
    async with EventBus() as bus, AgentRuntime(bus) as rt:
        for name in ("a", "bb", "ccc"):
            await rt.start(scenario.worker(name))
        await rt.start(scenario.boss())
        await bus.publish("go", Event(envelope=Envelope(thread_id="t-1")))
        await scenario.finished()
    results = scenario.results
    assert results["all"] == [b"a:job", b"bb:job", b"ccc:job"]
    assert results["threads"] == {"t-1"}  # the handled event's thread carried on
    assert results["first"] is True
    assert results["winner"] == ["ccc"]  # the highest score: the longest name
    assert results["outcome.ccc"] is True
    assert results["outcome.a"] is False


async def test_barrier_between_agents() -> None:
    arrived: list[bool] = []
    all_in = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        result = await ctx.collab.arrive("phase-1", parties=3, timeout=5, thread_id="t")
        arrived.append(result.complete)
        if len(arrived) == 3:
            all_in.set()

    async with EventBus() as bus, BarrierCoordinator(bus), AgentRuntime(bus) as rt:
        for i in range(3):
            await rt.start(Agent(f"p{i}", topics=["start"], on_event=on_event))
        await bus.publish("start", Event())
        with anyio.fail_after(10):
            await all_in.wait()
    assert arrived == [True, True, True]
