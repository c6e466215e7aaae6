"""The bus's statistics: per subscription, per topic, totals, eviction, type filters."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import msgspec
import pytest

from loom.runtime import (
    DEFAULT_MAX_BUFFER_BYTES,
    BusStats,
    Drops,
    Event,
    EventBus,
    QoS,
    SubscriptionStats,
    TopicStats,
    WouldBlock,
)
from loom.runtime.lowlevel import event_size

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]


def ev(n: int = 0, type: str = "t") -> Event:
    return Event(type=type, payload=str(n).encode())


async def wait_until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(2):
        while not cond():
            await anyio.lowlevel.checkpoint()


def topic(stats: BusStats, name: str) -> TopicStats:
    (record,) = [t for t in stats.topics if t.topic == name]
    return record


def totals_agree(stats: BusStats) -> None:
    """The totals are the tracked topics plus what eviction folded in; never less."""
    for field in ("published", "unrouted", "delivered"):
        assert getattr(stats, field) >= sum(getattr(t, field) for t in stats.topics)


async def test_subscription_stats_count_every_event() -> None:
    async with EventBus(drain_grace=0) as bus:
        lossless = bus.subscribe("a.*", buffer_size=4)
        realtime = bus.subscribe("a.>", qos=QoS.REALTIME, buffer_size=2)
        for i in range(4):
            await bus.publish("a.b", ev(i))
        for _ in range(3):
            lossless.receive_nowait()
        realtime.receive_nowait()
        assert lossless.statistics() == SubscriptionStats(
            id=lossless.id,
            pattern="a.*",
            qos=QoS.BATCHED,
            matched=4,
            delivered=3,
            dropped=Drops(),
            queued=1,
            high_water=4,
            capacity=4,
            waiting_publishers=0,
            patterns=("a.*",),
            queued_bytes=event_size(ev(3)),
            max_bytes=DEFAULT_MAX_BUFFER_BYTES,
        )
        assert realtime.statistics() == SubscriptionStats(
            id=realtime.id,
            pattern="a.>",
            qos=QoS.REALTIME,
            matched=4,
            delivered=1,
            dropped=Drops(overflow=2),
            queued=1,
            high_water=2,
            capacity=2,
            waiting_publishers=0,
            patterns=("a.>",),
            queued_bytes=event_size(ev(1)),
            max_bytes=DEFAULT_MAX_BUFFER_BYTES,
        )
        for sub in (lossless, realtime):
            s = sub.statistics()
            assert s.matched == s.delivered + s.dropped.total + s.queued
        assert bus.statistics().subscriptions == (lossless.statistics(), realtime.statistics())


async def test_waiting_publishers_are_counted() -> None:
    async with EventBus() as bus, bus.subscribe("a", buffer_size=1) as sub:
        await bus.publish("a", ev())
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(bus.publish, "a", ev())
            await wait_until(lambda: sub.statistics().waiting_publishers == 3)
            for _ in range(4):
                with anyio.fail_after(2):
                    await sub.receive()
        stats = sub.statistics()
        assert (stats.waiting_publishers, stats.matched, stats.delivered) == (0, 4, 4)
        assert stats.high_water == 1


async def test_topic_stats_and_totals() -> None:
    async with EventBus() as bus:
        realtime = bus.subscribe("x.*", qos=QoS.REALTIME, buffer_size=1)
        batched = bus.subscribe("x.a")
        await bus.publish("x.a", ev())
        await bus.publish("x.a", ev())
        await bus.publish("x.b", ev())
        await bus.publish("nobody", ev())
        bus.publish_nowait("nobody", ev())
        stats = bus.statistics()
        assert topic(stats, "x.a") == TopicStats(
            topic="x.a", published=2, unrouted=0, delivered=3, dropped=Drops(overflow=1)
        )
        assert topic(stats, "x.b") == TopicStats(
            topic="x.b", published=1, unrouted=0, delivered=0, dropped=Drops(overflow=1)
        )
        assert topic(stats, "nobody") == TopicStats(
            topic="nobody", published=2, unrouted=2, delivered=0, dropped=Drops()
        )
        assert (stats.published, stats.unrouted, stats.delivered) == (5, 2, 3)
        assert stats.dropped == Drops(overflow=2)
        assert not stats.closed
        realtime.close()
        batched.close()
        stats = bus.statistics()
        assert stats.dropped == Drops(overflow=2, closed=3)
        assert topic(stats, "x.a").dropped == Drops(overflow=1, closed=3)


async def test_stats_records_are_frozen_msgspec_structs() -> None:
    async with EventBus() as bus, bus.subscribe("a") as sub:
        await bus.publish("a", ev())
        stats = bus.statistics()
        for record in (stats, stats.topics[0], stats.subscriptions[0], stats.dropped):
            assert isinstance(record, msgspec.Struct)
            with pytest.raises(AttributeError):
                record.published = 0  # type: ignore[misc,union-attr]
        # A snapshot does not move with the bus.
        await bus.publish("a", ev())
        assert stats.published == 1
        assert sub.statistics().matched == 2
        decoded = msgspec.json.decode(msgspec.json.encode(stats), type=BusStats)
        assert decoded == stats


async def test_event_types_filter_routes_only_those_types() -> None:
    async with EventBus() as bus:
        only_a = bus.subscribe("t", event_types={"a"})
        a_or_b = bus.subscribe("t", event_types=("a", "b"), qos=QoS.REALTIME)
        assert only_a.event_types == frozenset({"a"})
        await bus.publish("t", ev(0, type="a"))
        await bus.publish("t", ev(1, type="b"))
        await bus.publish("t", ev(2, type="c"))  # only filtered subscriptions saw this one
        assert [only_a.receive_nowait().event.type] == ["a"]
        with pytest.raises(WouldBlock):
            only_a.receive_nowait()
        assert [a_or_b.receive_nowait().event.type for _ in range(2)] == ["a", "b"]
        assert only_a.statistics().matched == 1
        assert a_or_b.statistics().matched == 2
        t = topic(bus.statistics(), "t")
        assert (t.published, t.unrouted, t.delivered) == (3, 1, 3)


async def test_a_filtered_out_event_is_routed_when_someone_else_takes_it() -> None:
    async with EventBus(drain_grace=0) as bus:
        bus.subscribe("t", event_types=["a"])
        everything = bus.subscribe("t", qos=QoS.REALTIME, buffer_size=1)
        await bus.publish("t", ev(0, type="z"))
        await bus.publish("t", ev(1, type="z"))  # overflows `everything`: dropped, not unrouted
        t = topic(bus.statistics(), "t")
        assert (t.published, t.unrouted, t.delivered, t.dropped.overflow) == (2, 0, 1, 1)
        assert everything.statistics().matched == 2


async def test_topics_beyond_the_limit_fold_into_the_totals() -> None:
    async with EventBus(max_tracked_topics=2) as bus:
        sub = bus.subscribe("t.*", qos=QoS.REALTIME, buffer_size=2)
        for name in ("t.1", "t.2", "t.1", "t.3", "t.4", "u"):
            await bus.publish(name, ev())
        stats = bus.statistics()
        assert [t.topic for t in stats.topics] == ["t.4", "u"]  # the most recently first-seen
        assert (stats.published, stats.unrouted, stats.delivered) == (6, 1, 2)
        assert stats.dropped == Drops(overflow=3)
        totals_agree(stats)
        # Events still queued from an evicted topic are counted in the totals when dropped.
        sub.close()
        assert bus.statistics().dropped == Drops(overflow=3, closed=2)
        # A topic seen again after its eviction starts a fresh record.
        await bus.publish("t.1", ev())
        assert topic(bus.statistics(), "t.1").published == 1
        assert bus.statistics().published == 7


async def test_a_publish_waiting_while_its_topic_is_evicted_is_still_counted() -> None:
    async with EventBus(max_tracked_topics=1) as bus, bus.subscribe("x.>", buffer_size=1) as sub:
        await bus.publish("x.a", ev(0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.publish, "x.a", ev(1))
            await wait_until(lambda: sub.statistics().waiting_publishers == 1)
            await bus.publish("y", ev())  # evicts x.a's record while its publish waits
            sub.receive_nowait()
        with anyio.fail_after(2):
            await sub.receive()
        stats = bus.statistics()
        assert sub.statistics().delivered == 2
        assert (stats.published, stats.unrouted, stats.delivered) == (3, 1, 2)
