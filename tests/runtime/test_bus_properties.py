"""Hypothesis: the QoS promises hold under random interleavings of publishers and consumers.

Each example runs a whole bus with ``anyio.run``. Publishers and consumers pause for a random
number of checkpoints between steps, which is what shuffles the interleaving from one example
to the next; buffer sizes are small so that backpressure and overflow actually happen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import cycle

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.runtime import Delivery, Event, EventBus, QoS, Subscription, WouldBlock

Pauses = list[int]
Tag = tuple[int, int]  # (publisher, its sequence number)

pauses = st.lists(st.integers(0, 3), min_size=1, max_size=6)
publisher_specs = st.tuples(st.integers(0, 25), pauses, st.booleans())  # count, pauses, nowait
subscriber_specs = st.tuples(st.integers(1, 4), st.integers(1, 3), pauses)  # buffer, receivers


def tag(delivery: Delivery) -> Tag:
    publisher, n = delivery.event.payload.split(b":")
    return int(publisher), int(n)


async def pause(schedule: cycle[int]) -> None:
    for _ in range(next(schedule)):
        await anyio.lowlevel.checkpoint()


async def wait_until(cond: Callable[[], bool]) -> None:
    while not cond():
        await anyio.lowlevel.checkpoint()


def in_publish_order(received: list[Tag]) -> bool:
    """Each publisher's events appear in the order it published them."""
    last: dict[int, int] = {}
    for publisher, n in received:
        if n <= last.get(publisher, -1):
            return False
        last[publisher] = n
    return True


async def publish_all(
    bus: EventBus, index: int, count: int, schedule: Pauses, nowait: bool
) -> None:
    steps = cycle(schedule)
    for n in range(count):
        event = Event(type="e", payload=b"%d:%d" % (index, n))
        if nowait:
            while True:  # all or nothing: a retry after WouldBlock cannot duplicate
                try:
                    bus.publish_nowait(f"p.{index}", event)
                    break
                except WouldBlock:
                    await anyio.lowlevel.checkpoint()
        else:
            await bus.publish(f"p.{index}", event)
        await pause(steps)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=150, deadline=None)
@given(
    qos=st.sampled_from([QoS.BATCHED, QoS.BACKGROUND]),
    publishers=st.lists(publisher_specs, min_size=1, max_size=3),
    subscribers=st.lists(subscriber_specs, min_size=1, max_size=3),
)
def test_lossless_tiers_deliver_every_event_exactly_once_in_order(
    backend: str,
    qos: QoS,
    publishers: list[tuple[int, Pauses, bool]],
    subscribers: list[tuple[int, int, Pauses]],
) -> None:
    total = sum(count for count, _, _ in publishers)
    expected = Counter((i, n) for i, (count, _, _) in enumerate(publishers) for n in range(count))

    async def main() -> None:
        async with EventBus() as bus:
            subs = [
                bus.subscribe("p.>" if j % 2 else "p.*", qos=qos, buffer_size=size)
                for j, (size, _, _) in enumerate(subscribers)
            ]
            # received[j][r]: what receiver r of subscription j took, in the order it took it
            received: list[list[list[Tag]]] = [[[] for _ in range(n)] for _, n, _ in subscribers]

            async def receive_all(sub: Subscription, out: list[Tag], schedule: Pauses) -> None:
                steps = cycle(schedule)
                async for delivery in sub:
                    out.append(tag(delivery))
                    await pause(steps)

            def taken(j: int) -> int:
                return sum(map(len, received[j]))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for sub, outs, (_, _, schedule) in zip(
                        subs, received, subscribers, strict=True
                    ):
                        for out in outs:
                            tg.start_soon(receive_all, sub, out, schedule)
                    async with anyio.create_task_group() as pubs:
                        for i, (count, schedule, nowait) in enumerate(publishers):
                            pubs.start_soon(publish_all, bus, i, count, schedule, nowait)
                    await wait_until(lambda: all(taken(j) == total for j in range(len(subs))))
                    stats = [sub.statistics() for sub in subs]
                    bus_stats = bus.statistics()
                    for sub in subs:
                        sub.close()  # ends the receivers' iteration

            for j, outs in enumerate(received):
                assert Counter(t for out in outs for t in out) == expected, j
                for out in outs:  # each receiver took its share in publish order
                    assert in_publish_order(out), (j, out)
            for s, (size, _, _) in zip(stats, subscribers, strict=True):
                assert (s.matched, s.delivered, s.queued) == (total, total, 0)
                assert s.dropped.total == 0
                assert s.waiting_publishers == 0
                assert s.capacity == size
                assert s.high_water <= size
            assert bus_stats.published == total
            assert bus_stats.delivered == total * len(subs)
            assert bus_stats.unrouted == 0
            assert bus_stats.dropped.total == 0

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=150, deadline=None)
@given(
    publishers=st.lists(publisher_specs, min_size=1, max_size=3),
    subscribers=st.lists(st.tuples(st.integers(1, 4), pauses), min_size=1, max_size=3),
)
def test_realtime_accounts_for_every_event(
    backend: str,
    publishers: list[tuple[int, Pauses, bool]],
    subscribers: list[tuple[int, Pauses]],
) -> None:
    total = sum(count for count, _, _ in publishers)

    async def main() -> None:
        async with EventBus() as bus:
            subs = [
                bus.subscribe(">", qos=QoS.REALTIME, buffer_size=size) for size, _ in subscribers
            ]
            received: list[list[Tag]] = [[] for _ in subs]
            published = anyio.Event()

            async def receive_all(sub: Subscription, out: list[Tag], schedule: Pauses) -> None:
                steps = cycle(schedule)
                while True:
                    try:
                        out.append(tag(sub.receive_nowait()))
                    except WouldBlock:
                        if published.is_set():
                            return
                        await anyio.lowlevel.checkpoint()
                        continue
                    await pause(steps)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for sub, out, (_, schedule) in zip(subs, received, subscribers, strict=True):
                        tg.start_soon(receive_all, sub, out, schedule)
                    async with anyio.create_task_group() as pubs:
                        for i, (count, schedule, nowait) in enumerate(publishers):
                            pubs.start_soon(publish_all, bus, i, count, schedule, nowait)
                    published.set()

            bus_stats = bus.statistics()
            for sub, out in zip(subs, received, strict=True):
                s = sub.statistics()
                assert s.queued == 0
                assert s.matched == total
                assert s.matched == s.delivered + s.dropped.overflow
                assert s.delivered == len(out)
                assert s.dropped.closed == 0
                assert len(set(out)) == len(out)
                assert in_publish_order(out)
            assert bus_stats.published == total
            assert bus_stats.delivered == sum(len(out) for out in received)
            assert bus_stats.dropped.overflow == sum(
                sub.statistics().dropped.overflow for sub in subs
            )
            by_topic = {t.topic: t for t in bus_stats.topics}
            for i, (count, _, _) in enumerate(publishers):
                if count:
                    t = by_topic[f"p.{i}"]
                    assert t.published == count
                    assert t.delivered + t.dropped.overflow == count * len(subs)
            for sub in subs:
                sub.close()

    anyio.run(main, backend=backend)
