"""Many agents started, stopped, failed and deleted, and thousands of requests answered, timed
out, cancelled and refused, leave the bus and the event loop as they found them."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime import (
    AgentRuntime,
    AgentStartFailed,
    AgentStatus,
    Context,
    Event,
    EventBus,
    SupervisionPolicy,
)
from loom.runtime.collab import NoResponders, RequestTimeout

from ._agents_support import Lifecycle, Seen, event, spec, task_count

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

ANSWERED = 2000
TIMED_OUT = 200
LATE = 100
CANCELLED = 200
REFUSED = 100
AGENTS = 60


def footprint(bus: EventBus) -> tuple[int, int, int, int]:
    """Subscriptions, trie nodes, tasks, and publishers waiting for room."""
    waiting = sum(s.waiting_publishers for s in bus.statistics().subscriptions)
    return bus.subscription_count(), bus.trie_node_count(), task_count(), waiting


async def echo(ctx: Context, topic: str, ev: Event) -> None:
    await ctx.reply(ev, ev.payload)


async def ignore(ctx: Context, topic: str, ev: Event) -> None:
    pass


async def test_thousands_of_requests_and_many_agents_leave_nothing_behind() -> None:
    done = Seen[str]()
    late_replies = Seen[None]()

    async def late(ctx: Context, topic: str, ev: Event) -> None:
        await anyio.sleep(0.03)  # after the requester's timeout: a stray reply
        await ctx.reply(ev, b"too late")
        late_replies.add(None)

    async def client(ctx: Context, topic: str, ev: Event) -> None:
        count = int(ev.payload)

        async def times_out(target: str) -> None:
            with pytest.raises(RequestTimeout):
                await ctx.request(target, timeout=0.01)

        if ev.type == "answered":
            for i in range(count):
                reply = await ctx.request("svc.echo", str(i), timeout=5)
                assert reply.payload == str(i).encode()
        elif ev.type in ("timed_out", "late"):
            target = "svc.silent" if ev.type == "timed_out" else "svc.late"
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(times_out, target)
        elif ev.type == "cancelled":
            for i in range(count):
                if i % 2:  # cancelled before it could publish
                    with anyio.CancelScope() as scope:
                        scope.cancel()
                        await ctx.request("svc.silent", timeout=5)
                else:  # cancelled while waiting for the reply
                    with anyio.move_on_after(0.001):
                        await ctx.request("svc.silent", timeout=5)
        elif ev.type == "refused":
            for _ in range(count):
                with pytest.raises(NoResponders):
                    await ctx.request("svc.nobody", timeout=5)
        done.add(ev.type)

    async with EventBus() as bus, AgentRuntime(bus) as rt:
        # Warm up: the first request makes the bus's one permanent reply-router subscription.
        await rt.start(spec("echo", echo, topics=["svc.echo"]))
        await rt.start(spec("client", client, topics=["go"]))
        await bus.publish("go", Event(type="answered", payload=b"1"))
        await done.wait_for(1)
        await rt.delete("client")
        await rt.delete("echo")
        await anyio.wait_all_tasks_blocked()
        baseline = footprint(bus)

        # Thousands of requests, however they end.
        await rt.start(spec("echo", echo, topics=["svc.echo"]))
        await rt.start(spec("silent", ignore, topics=["svc.silent"], mailbox_size=5000))
        await rt.start(spec("late", late, topics=["svc.late"], max_concurrency=LATE))
        await rt.start(spec("client", client, topics=["go"]))
        for kind, count in (
            ("answered", ANSWERED),
            ("timed_out", TIMED_OUT),
            ("late", LATE),
            ("cancelled", CANCELLED),
            ("refused", REFUSED),
        ):
            await bus.publish("go", Event(type=kind, payload=str(count).encode()))
        await done.wait_for(6, timeout=20)
        await late_replies.wait_for(LATE)
        assert rt.statistics_of("client").failed == 0

        # Many agents: with timers, children and tools; stopped, failed, refused, deleted.
        async def worker_start(ctx: Context) -> None:
            ctx.schedule("tick", every=0.005)
            ctx.schedule("once", delay=60)
            if ctx.agent_id.endswith("0"):
                await ctx.spawn(spec(f"{ctx.agent_id}-child", topics=["work.all"]))

        for i in range(AGENTS):
            await rt.start(
                spec(f"w{i}", ignore, topics=[f"work.{i}", "work.all"], on_start=worker_start)
            )
        for _ in range(10):
            await bus.publish("work.all", event())

        async def crash(ctx: Context, topic: str, ev: Event) -> None:
            raise RuntimeError("crash")

        async def no_start(ctx: Context) -> None:
            raise RuntimeError("no start")

        one_restart = SupervisionPolicy(max_restarts=1, backoff_initial_s=0.001, jitter=0)
        async with Lifecycle(bus) as life:
            await rt.start(spec("crasher", crash, topics=["crash"], policy=one_restart))
            await bus.publish("crash", event())
            await life.wait("crasher", AgentStatus.FAILED)
        with pytest.raises(AgentStartFailed):
            await rt.start(spec("never", on_start=no_start, policy=one_restart))

        for i in range(0, AGENTS, 2):
            await rt.stop(f"w{i}")
        for info in rt.agents():
            await rt.delete(info.id)
        assert rt.agents() == []
        await anyio.wait_all_tasks_blocked()
        assert footprint(bus) == baseline


async def test_leaving_the_runtime_leaves_the_bus_as_it_was() -> None:
    async with EventBus() as bus:
        await anyio.wait_all_tasks_blocked()
        before = footprint(bus)
        async with AgentRuntime(bus) as rt:
            for i in range(AGENTS):
                await rt.start(spec(f"a{i}", ignore, topics=["all", f"one.{i}"]))
            for _ in range(20):
                await bus.publish("all", event())
        await anyio.wait_all_tasks_blocked()
        assert footprint(bus) == before
