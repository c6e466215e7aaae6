"""Thousands of collaboration calls, answered, timed out and cancelled, leave the bus exactly
as they found it: no subscription, no trie node, no task, no waiting publisher."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
import sniffio
from anyio.abc import TaskStatus

from loom.runtime import Event, EventBus
from loom.runtime.collab import (
    BarrierCoordinator,
    FirstK,
    NoResponders,
    RequestTimeout,
    arrive,
    contract_net,
    gather,
    propose,
    reply,
    request,
)
from loom.runtime.collab._replies import router_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]


def task_count() -> int:
    """Tasks alive now, on either backend."""
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def footprint(bus: EventBus) -> tuple[int, int, int, int]:
    stats = bus.statistics()
    waiting = sum(s.waiting_publishers for s in stats.subscriptions)
    return bus.subscription_count(), bus.trie_node_count(), task_count(), waiting


async def cancelled(call: Callable[[], Awaitable[object]], after: float | None) -> None:
    """Run ``call`` and cancel it: at once (``after`` None) or after ``after`` seconds."""
    if after is None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await call()
    else:
        with anyio.move_on_after(after):
            await call()
            pytest.fail("the call was expected to be cancelled")


async def test_thousands_of_calls_leave_nothing_behind() -> None:
    async with EventBus() as bus, anyio.create_task_group() as tg:
        late: list[Event] = []

        async def serve(topic: str, name: str, *, task_status: TaskStatus[None]) -> None:
            sub = bus.subscribe(topic)
            task_status.started()
            async with sub:
                async for d in sub:
                    ev = d.event
                    if name == "late":
                        # Keep it and answer after its requester has gone: unrouted, not leaked.
                        late.append(ev)
                        if len(late) > 50:
                            for old in late[:-1]:
                                await reply(bus, old, b"late", sender=name)
                            del late[:-1]
                    elif ev.type == "contract.cfp":
                        await propose(bus, ev, sender=name, score=len(name), timeout=5)
                    elif name != "mute":
                        await reply(bus, ev, b"ok", sender=name)

        names = ["a", "b", "c", "mute", "late"]
        for name in names:
            await tg.start(serve, f"svc.{name}", name)
        await tg.start(serve, "bid.all", "bidder")
        await tg.start(serve, "bid.all", "bidder2")
        await tg.start(serve, "bid.mute", "mute")
        coord = await tg.start(_coordinator, bus)
        # One warm-up call: the bus's reply router keeps one subscription for all calls.
        await request(bus, "svc.a", b"x", timeout=5, sender="me")
        baseline = footprint(bus)
        stray_before = router_for(bus).stray

        for i in range(2000):
            answer = await request(bus, f"svc.{'abc'[i % 3]}", b"x", timeout=5, sender="me")
            assert answer.payload == b"ok"
        for i in range(300):
            with pytest.raises(RequestTimeout):
                await request(bus, "svc.late" if i % 2 else "svc.mute", b"", timeout=0.001)
            with pytest.raises(NoResponders):
                await request(bus, "svc.nobody", b"", timeout=5)
            await cancelled(lambda: request(bus, "svc.mute", b"", timeout=5), None)
            await cancelled(lambda: request(bus, "svc.mute", b"", timeout=5), 0.0005)
        assert footprint(bus) == baseline

        for i in range(300):
            got = await gather(bus, ["svc.a", "svc.b", "svc.c"], timeout=5)
            assert got.satisfied
            first = await gather(bus, ["svc.mute", "svc.a"], mode=FirstK(1), timeout=5)
            assert first.satisfied
            if i % 3 == 0:
                slow = await gather(bus, ["svc.a", "svc.late"], timeout=0.001)
                assert not slow.satisfied
                await cancelled(lambda: gather(bus, ["svc.mute"], timeout=5), 0.0005)
        assert footprint(bus) == baseline

        for i in range(200):
            async with anyio.create_task_group() as round_tg:
                for p in ("x", "y"):
                    round_tg.start_soon(_arrive, bus, f"r{i}", p, 3)
                done = await arrive(bus, barrier=f"r{i}", participant="z", parties=3, timeout=5)
                assert done.complete
            alone = await arrive(bus, barrier="alone", participant="p", parties=2, timeout=0.001)
            assert alone.timed_out
            await cancelled(
                lambda: arrive(bus, barrier="gone", participant="q", parties=2, timeout=5), 0.0005
            )
        for i in range(200):
            won = await contract_net(bus, "bid.all", b"job", window=5, expected=2)
            assert [p.sender for p in won.awarded] == ["bidder2"]
            if i % 2:
                empty = await contract_net(bus, "bid.mute", b"job", window=0.001)
                assert empty.timed_out
                await cancelled(lambda: contract_net(bus, "bid.mute", window=5), 0.0005)

        # Bidders are still waiting for answers only while their manager's call runs; the
        # coordinator drops withdrawn arrivals as it reads the leaves. The bound is generous:
        # on a loaded machine (the whole suite on two cores) settling once took over 5 s.
        with anyio.fail_after(15):
            while footprint(bus) != baseline or coord.statistics().waiting:
                await anyio.lowlevel.checkpoint()
        assert coord.statistics().open_barriers == 0
        assert router_for(bus).stray > stray_before  # late replies were dropped, not queued
        tg.cancel_scope.cancel()
    assert (bus.subscription_count(), bus.trie_node_count()) == (0, 1)


async def _arrive(bus: EventBus, barrier: str, participant: str, parties: int) -> None:
    res = await arrive(bus, barrier=barrier, participant=participant, parties=parties, timeout=5)
    assert res.complete


async def _coordinator(bus: EventBus, *, task_status: TaskStatus[BarrierCoordinator]) -> None:
    async with BarrierCoordinator(bus) as coord:
        task_status.started(coord)
        await anyio.sleep_forever()


async def test_a_closed_bus_with_a_reply_router_is_freed() -> None:
    # The router refers to its bus; kept in a module-level map keyed weakly by the bus, it
    # held every bus (and whatever the bus held: a transport's gRPC channel) for good.
    async with EventBus() as bus:
        assert not router_for(bus).closed
    ref = weakref.ref(bus)
    del bus
    gc.collect()
    assert ref() is None
