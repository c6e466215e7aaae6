"""The mailbox: bounded, fed with backpressure, one ordered stream, handlers one at a time (or
up to ``max_concurrency`` at once)."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime import AgentStatus, Context, Event, QoS, WouldBlock
from loom.runtime.lowlevel import mailbox_topic

from ._agents_support import Seen, event, hosted, info_of, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_the_mailbox_holds_1000_events_by_default() -> None:
    async with hosted() as h:
        await h.rt.start(spec("a"))
        assert h.rt.statistics_of("a").capacity == 1000


async def test_a_full_mailbox_holds_the_publisher_back_and_loses_nothing() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    handled = Seen[int]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        await release.wait()
        handled.add(int(ev.payload))

    async with hosted() as h, anyio.create_task_group() as tg:
        await h.rt.start(spec("a", on_event, topics=["in"], mailbox_size=3))
        await h.bus.publish("in", event("0"))
        with anyio.fail_after(5):
            await entered.wait()  # event 0 is in the handler, the mailbox is empty
        for i in (1, 2, 3):
            h.bus.publish_nowait("in", event(str(i)))
        info = info_of(h.rt, "a")
        assert info.mailbox_depth == 3
        # Full: a non-waiting publish is refused whole, a waiting one waits.
        with pytest.raises(WouldBlock):
            h.bus.publish_nowait("in", event("refused"))
        published = Seen[int]()

        async def publisher() -> None:
            for i in range(4, 20):
                await h.bus.publish("in", event(str(i)))
                published.add(i)

        tg.start_soon(publisher)
        await anyio.wait_all_tasks_blocked()
        assert published.items == []
        assert sum(s.waiting_publishers for s in h.bus.statistics().subscriptions) == 1
        release.set()
        await handled.wait_for(20)
        assert handled.items == list(range(20))
        assert published.items == list(range(4, 20))
        stats = h.rt.statistics_of("a")
        assert stats.high_water == 3
        assert stats.handled == 20
    assert h.dead.of("a") == []


async def test_events_are_handled_one_at_a_time_in_arrival_order() -> None:
    active = 0
    most = 0
    handled = Seen[tuple[str, int]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        assert ctx.event is ev
        for _ in range(3):  # give any other handler every chance to overlap
            await anyio.lowlevel.checkpoint()
        active -= 1
        handled.add((ev.metadata["sender"], int(ev.payload)))

    async def publisher(bus_publish_topic: str, sender: str, count: int) -> None:
        for i in range(count):
            await h.bus.publish(bus_publish_topic, event(str(i), sender=sender))

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in.*"], mailbox_size=8))
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher, "in.x", "x", 150)
            tg.start_soon(publisher, "in.y", "y", 150)
            tg.start_soon(publisher, mailbox_topic("a"), "z", 150)
        await handled.wait_for(450)
    assert most == 1
    # Per-sender FIFO: each publisher's events arrive complete and in publish order.
    for sender in "xyz":
        assert [i for s, i in handled.items if s == sender] == list(range(150))


async def test_up_to_max_concurrency_handlers_run_at_once() -> None:
    n = 3
    active = 0
    most = 0
    all_in = anyio.Event()
    release = anyio.Event()
    started = Seen[int]()
    done = Seen[int]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        started.add(int(ev.payload))
        if active == n:
            all_in.set()
        await release.wait()
        # Every concurrent handler has a context of its own.
        assert ctx.event is ev
        active -= 1
        done.add(int(ev.payload))

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"], max_concurrency=n))
        for i in range(3 * n):
            await h.bus.publish("in", event(str(i)))
        with anyio.fail_after(5):
            await all_in.wait()
        await anyio.wait_all_tasks_blocked()
        assert active == n  # not more, although 2n more events wait
        info = info_of(h.rt, "a")
        assert info.mailbox_depth == 2 * n
        release.set()
        await done.wait_for(3 * n)
    assert most == n
    # Events start in arrival order, even when they may finish out of order.
    assert started.items == list(range(3 * n))
    assert sorted(done.items) == list(range(3 * n))


async def test_every_agent_receives_its_mailbox_topic() -> None:
    seen = Seen[tuple[str, str]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        assert ctx.mailbox == topic
        seen.add((ctx.agent_id, topic))

    async with hosted() as h:
        await h.rt.start(spec("a", on_event))
        await h.rt.start(spec("b", on_event, topics=["other"]))
        for agent in ("a", "b"):
            info = info_of(h.rt, agent)
            assert mailbox_topic(agent) in info.patterns
            assert await h.bus.publish(f"agent.{agent}.replies", event()) == 1
        await seen.wait_for(2)
    assert sorted(seen.items) == [("a", "agent.a.replies"), ("b", "agent.b.replies")]


async def test_an_event_matching_several_patterns_is_handled_once() -> None:
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        seen.add(ev.payload.decode())

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in.*", "in.x", "in.>"]))
        await h.bus.publish("in.x", event("one"))
        await h.bus.publish("in.y", event("two"))
        await seen.wait_for(2)
        await anyio.wait_all_tasks_blocked()
    assert seen.items == ["one", "two"]


async def test_a_realtime_agent_drops_what_its_full_mailbox_cannot_take() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        entered.set()
        await release.wait()
        seen.add(ev.payload.decode())

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"], qos=QoS.REALTIME, mailbox_size=2))
        await h.bus.publish("in", event("0"))
        with anyio.fail_after(5):
            await entered.wait()
        # The publisher never waits: what does not fit is dropped and counted.
        for i in range(1, 6):
            with anyio.fail_after(1):
                await h.bus.publish("in", event(str(i)))
        release.set()
        await seen.wait_for(3)
        await anyio.wait_all_tasks_blocked()
        assert seen.items == ["0", "1", "2"]
        (mailbox,) = [
            s for s in h.bus.statistics().subscriptions if s.pattern == mailbox_topic("a")
        ]
        assert mailbox.dropped.overflow == 3
        assert h.rt.status("a") is AgentStatus.RUNNING
