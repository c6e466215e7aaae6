"""One subscription, several patterns: one delivery per event, each pattern with its own tier."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from loom.runtime import (
    Delivery,
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    QoS,
    Subscription,
    SubscriptionClosed,
    WouldBlock,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]


def ev(n: int) -> Event:
    return Event(type="t", payload=str(n).encode())


def seq(delivery: Delivery) -> int:
    return int(delivery.event.payload)


def drain(sub: Subscription) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    while True:
        try:
            d = sub.receive_nowait()
        except WouldBlock:
            return out
        out.append((d.topic, seq(d)))


async def wait_until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(2):
        while not cond():
            await anyio.lowlevel.checkpoint()


async def test_an_event_matched_by_several_patterns_is_queued_once() -> None:
    async with EventBus() as bus, bus.subscribe("a.*") as sub:
        assert sub.add_pattern("a.>")
        assert sub.add_pattern("*.b")
        assert sub.patterns == ("a.*", "a.>", "*.b")
        await bus.publish("a.b", ev(0))  # all three match
        await bus.publish("a.b.c", ev(1))  # only a.>
        await bus.publish("x.b", ev(2))  # only *.b
        await bus.publish("x.y", ev(3))  # none
        assert drain(sub) == [("a.b", 0), ("a.b.c", 1), ("x.b", 2)]
        stats = sub.statistics()
        assert (stats.matched, stats.delivered) == (3, 3)
        assert bus.statistics().unrouted == 1


async def test_adding_a_held_pattern_or_removing_an_unknown_one_changes_nothing() -> None:
    async with EventBus() as bus, bus.subscribe("a") as sub:
        assert not sub.add_pattern("a")
        assert not sub.remove_pattern("b")
        assert sub.patterns == ("a",)
        with pytest.raises(InvalidArgument, match="last pattern"):
            sub.remove_pattern("a")
        with pytest.raises(InvalidTopic):
            sub.add_pattern("a.>.b")
        assert sub.patterns == ("a",)


async def test_removing_a_pattern_stops_its_topics_and_prunes_the_trie() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a")
        sub.add_pattern("b.*.c")
        sub.add_pattern("b.>")
        await bus.publish("b.x.c", ev(0))
        assert sub.remove_pattern("b.*.c")
        await bus.publish("b.x.c", ev(1))  # still reaches through b.>
        assert sub.remove_pattern("b.>")
        await bus.publish("b.x.c", ev(2))  # no longer
        await bus.publish("a", ev(3))
        assert drain(sub) == [("b.x.c", 0), ("b.x.c", 1), ("a", 3)]
        sub.close()
        assert bus.trie_node_count() == 1
        assert bus.subscription_count() == 0


async def test_a_closed_subscription_takes_no_patterns() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a")
        sub.add_pattern("b")
        sub.close()
        assert bus.trie_node_count() == 1
        with pytest.raises(SubscriptionClosed):
            sub.add_pattern("c")
        assert not sub.remove_pattern("b")


async def test_each_pattern_keeps_its_own_tier_when_the_buffer_is_full() -> None:
    async with EventBus() as bus, bus.subscribe("lossless", buffer_size=1) as sub:
        sub.add_pattern("lossy", qos=QoS.REALTIME)
        await bus.publish("lossy", ev(0))
        await bus.publish("lossy", ev(1))  # full, and only a Realtime pattern matched: dropped
        assert sub.statistics().dropped.overflow == 1
        bus.publish_nowait("lossy", ev(2))  # never WouldBlock through a Realtime pattern
        with pytest.raises(WouldBlock):
            bus.publish_nowait("lossless", ev(3))
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.publish, "lossless", ev(4))  # a lossless pattern: waits
            await wait_until(lambda: sub.statistics().waiting_publishers == 1)
            assert drain(sub) == [("lossy", 0)]
        assert drain(sub) == [("lossless", 4)]
        stats = sub.statistics()
        assert stats.matched == stats.delivered + stats.dropped.total + stats.queued
        assert (stats.delivered, stats.dropped.overflow) == (2, 2)


async def test_a_lossless_pattern_wins_when_both_tiers_match() -> None:
    async with EventBus() as bus, bus.subscribe("a.*", qos=QoS.REALTIME, buffer_size=1) as sub:
        sub.add_pattern("a.b", qos=QoS.BATCHED)
        await bus.publish("a.x", ev(0))
        await bus.publish("a.x", ev(1))  # Realtime only: dropped
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a.b", ev(2))  # the Batched pattern matches too: it must wait
        assert sub.remove_pattern("a.b")
        bus.publish_nowait("a.b", ev(3))  # Realtime only again: dropped, no WouldBlock
        assert drain(sub) == [("a.x", 0)]
        assert sub.statistics().dropped.overflow == 2
