"""``ctx.collab`` from an agent connected through the bridge: the same calls, the same results
as in process (tests/runtime/test_agents_collab.py), against a real server on 127.0.0.1:0."""

from __future__ import annotations

import functools

import anyio
import pytest

from loom import Agent, Context
from loom._remote import serve_agent
from loom.runtime import Envelope, Event
from loom.runtime.collab import BarrierCoordinator

from ..bridge._client_support import FAST, hosting
from ..runtime._collab_support import Orchestration

pytestmark = pytest.mark.anyio


async def test_a_remote_agent_gathers_and_runs_a_contract_net_with_a_remote_bidder() -> None:
    scenario = Orchestration()
    async with hosting() as host, anyio.create_task_group() as tg:
        for name in ("a", "bb"):  # in the server's runtime
            await host.runtime.start(scenario.worker(name))
        # The highest bidder and the manager are remote: both sides of every primitive cross
        # the bridge.
        remote = functools.partial(serve_agent, address=host.address, options=FAST)
        await tg.start(remote, scenario.worker("ccc"))
        await tg.start(remote, scenario.boss())
        await host.bus.publish("go", Event(envelope=Envelope(thread_id="t-1")))
        await scenario.finished()
        tg.cancel_scope.cancel()
    results = scenario.results
    assert results["all"] == [b"a:job", b"bb:job", b"ccc:job"]
    assert results["threads"] == {"t-1"}  # the handled event's thread carried on
    assert results["first"] is True
    assert results["winner"] == ["ccc"]  # the highest score: the longest name
    assert results["outcome.ccc"] is True
    assert results["outcome.a"] is False


async def test_a_barrier_with_remote_and_local_parties() -> None:
    arrived: list[bool] = []
    all_in = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        result = await ctx.collab.arrive("phase-1", parties=3, timeout=5, thread_id="t")
        arrived.append(result.complete)
        if len(arrived) == 3:
            all_in.set()

    async with hosting() as host, BarrierCoordinator(host.bus), anyio.create_task_group() as tg:
        await host.runtime.start(Agent("p0", topics=["start"], on_event=on_event))
        for i in (1, 2):
            agent = Agent(f"p{i}", topics=["start"], on_event=on_event)
            await tg.start(functools.partial(serve_agent, agent, host.address, options=FAST))
        await host.bus.publish("start", Event())
        with anyio.fail_after(10):
            await all_in.wait()
        tg.cancel_scope.cancel()
    assert arrived == [True, True, True]
