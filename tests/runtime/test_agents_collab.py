"""Collaboration from inside handlers: ``ctx.collab`` continues the event being handled."""

from __future__ import annotations

import anyio
import pytest

from loom import Agent, Context
from loom.runtime import AgentRuntime, Envelope, Event, EventBus
from loom.runtime.collab import BarrierCoordinator, FirstK

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_gather_and_contract_net_between_agents() -> None:
    results: dict[str, object] = {}
    done = anyio.Event()
    decided = anyio.Event()

    def note(key: str, value: object) -> None:
        results[key] = value
        if sum(k.startswith("outcome.") for k in results) == 3:
            decided.set()

    def worker(name: str) -> Agent:
        async def on_event(ctx: Context, topic: str, event: Event) -> None:
            if event.type == "contract.cfp":
                outcome = await ctx.collab.propose(event, score=len(name), timeout=5)
                note(f"outcome.{name}", outcome.awarded)
            else:
                await ctx.reply(event, f"{name}:{event.payload.decode()}".encode())

        return Agent(name, topics=[f"work.{name}", "work.all", "bids"], on_event=on_event)

    async def orchestrate(ctx: Context, topic: str, event: Event) -> None:
        thread = event.envelope.thread_id
        got = await ctx.collab.gather(["work.a", "work.bb", "work.ccc"], b"job", timeout=5)
        results["all"] = sorted(r.event.payload for r in got.replies)
        results["threads"] = {r.event.envelope.thread_id for r in got.replies}
        first = await ctx.collab.gather("work.all", b"q", timeout=5, mode=FirstK(1), expected=3)
        results["first"] = first.satisfied and len(first.replies) == 1
        won = await ctx.collab.contract_net("bids", b"task", window=5, expected=3)
        results["winner"] = [p.sender for p in won.awarded]
        results["thread"] = thread
        done.set()

    async with EventBus() as bus, AgentRuntime(bus) as rt:
        for name in ("a", "bb", "ccc"):
            await rt.start(worker(name))
        await rt.start(Agent("boss", topics=["go"], on_event=orchestrate))
        await bus.publish("go", Event(envelope=Envelope(thread_id="t-1")))
        with anyio.fail_after(10):
            await done.wait()
            await decided.wait()
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
