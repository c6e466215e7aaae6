"""EventBus routing, QoS tiers, backpressure, ordering, ``publish_nowait`` and bad input."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from loom.runtime import (
    BusClosed,
    Delivery,
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    LoomError,
    QoS,
    Subscription,
    WouldBlock,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

LOSSLESS = [QoS.BATCHED, QoS.BACKGROUND]


def ev(n: int = 0, type: str = "t") -> Event:
    return Event(type=type, payload=str(n).encode())


def seq(delivery: Delivery) -> int:
    return int(delivery.event.payload)


def drain(sub: Subscription) -> list[int]:
    """Everything queued on ``sub`` now, in order, without waiting."""
    out: list[int] = []
    while True:
        try:
            out.append(seq(sub.receive_nowait()))
        except WouldBlock:
            return out


async def wait_until(cond: Callable[[], bool]) -> None:
    """Let other tasks run until ``cond`` holds (a readiness signal, not a sleep)."""
    with anyio.fail_after(2):
        while not cond():
            await anyio.lowlevel.checkpoint()


def waiting(sub: Subscription) -> int:
    return sub.statistics().waiting_publishers


# ---------------------------------------------------------------- routing


async def test_subscriber_gets_the_event_and_the_concrete_topic() -> None:
    async with EventBus() as bus, bus.subscribe("orders.*.created") as sub:
        event = Event(type="order", payload=b"42")
        await bus.publish("orders.eu.created", event)
        with anyio.fail_after(1):
            delivery = await sub.receive()
        assert delivery.topic == "orders.eu.created"
        assert delivery.event is event


async def test_wildcards_route_as_nats_subjects() -> None:
    patterns = ["a", "a.b", "a.*", "a.>", "*.b", "*.*.c", ">", "a.b.>", "b.>"]
    topics = ["a", "a.b", "a.c", "a.b.c", "x.b", "b", "b.x.y"]
    expected = {
        "a": ["a"],
        "a.b": ["a.b"],
        "a.*": ["a.b", "a.c"],
        "a.>": ["a.b", "a.c", "a.b.c"],
        "*.b": ["a.b", "x.b"],
        "*.*.c": ["a.b.c"],
        ">": topics,
        "a.b.>": ["a.b.c"],
        "b.>": ["b.x.y"],
    }
    async with EventBus() as bus:
        subs = {p: bus.subscribe(p, qos=QoS.REALTIME) for p in patterns}
        for i, topic in enumerate(topics):
            await bus.publish(topic, ev(i))
        for pattern, sub in subs.items():
            got = [topics[i] for i in drain(sub)]
            assert got == expected[pattern], pattern


async def test_a_topic_without_subscribers_is_fine() -> None:
    async with EventBus() as bus:
        await bus.publish("nobody.listens", ev())
        bus.publish_nowait("nobody.listens", ev())
        assert bus.statistics().unrouted == 2


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("a.*", "wildcards are for subscriptions"),
        ("a.>", "wildcards are for subscriptions"),
        ("a..b", "segment 2 is empty"),
        ("", "is empty"),
        ("a b", "whitespace"),
    ],
)
async def test_publish_refuses_a_bad_topic(topic: str, reason: str) -> None:
    async with EventBus() as bus, bus.subscribe(">") as sub:
        with pytest.raises(InvalidTopic, match=reason) as info:
            await bus.publish(topic, ev())
        assert info.value.topic == topic
        with pytest.raises(InvalidTopic, match=reason):
            bus.publish_nowait(topic, ev())
        assert sub.statistics().matched == 0
        assert bus.statistics().topics == ()


async def test_subscribe_refuses_a_bad_pattern_and_leaves_nothing_behind() -> None:
    async with EventBus() as bus:
        for pattern in ["a.>.b", "a*", "a.b*c", "a..b", " a", ""]:
            with pytest.raises(InvalidTopic):
                bus.subscribe(pattern)
        assert bus.subscription_count() == 0
        assert bus.trie_node_count() == 1


# ---------------------------------------------------------------- QoS tiers


@pytest.mark.parametrize(
    ("qos", "capacity"), [(QoS.REALTIME, 512), (QoS.BATCHED, 2048), (QoS.BACKGROUND, 16384)]
)
async def test_default_buffer_of_each_tier(qos: QoS, capacity: int) -> None:
    async with EventBus() as bus, bus.subscribe("a", qos=qos) as sub:
        assert sub.statistics().capacity == capacity
        assert qos.lossless is (qos is not QoS.REALTIME)


async def test_default_tier_is_batched() -> None:
    async with EventBus() as bus, bus.subscribe("a") as sub:
        assert sub.qos is QoS.BATCHED


async def test_realtime_never_blocks_and_drops_for_that_subscriber_only() -> None:
    async with EventBus() as bus:
        small = bus.subscribe("a", qos=QoS.REALTIME, buffer_size=4)
        roomy = bus.subscribe("a", qos=QoS.REALTIME, buffer_size=100)
        with anyio.fail_after(2):  # nobody consumes: a publish that waited would hang here
            for i in range(10):
                await bus.publish("a", ev(i))
            for i in range(10, 20):
                bus.publish_nowait("a", ev(i))  # never WouldBlock on a Realtime subscriber
        stats = small.statistics()
        assert (stats.matched, stats.queued, stats.dropped.overflow) == (20, 4, 16)
        assert drain(small) == [0, 1, 2, 3]  # the buffer keeps what it had; newcomers drop
        assert drain(roomy) == list(range(20))
        assert roomy.statistics().dropped.total == 0
        assert bus.statistics().dropped.overflow == 16


@pytest.mark.parametrize("qos", LOSSLESS)
async def test_lossless_publisher_waits_for_room(qos: QoS) -> None:
    async with EventBus() as bus, bus.subscribe("a", qos=qos, buffer_size=2) as sub:
        await bus.publish("a", ev(0))
        await bus.publish("a", ev(1))
        done = anyio.Event()

        async def publisher() -> None:
            await bus.publish("a", ev(2))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher)
            await wait_until(lambda: waiting(sub) == 1)
            assert not done.is_set()
            assert sub.statistics().queued == 2
            assert seq(sub.receive_nowait()) == 0
            with anyio.fail_after(1):
                await done.wait()
        assert drain(sub) == [1, 2]
        stats = sub.statistics()
        assert (stats.matched, stats.delivered, stats.dropped.total) == (3, 3, 0)
        assert stats.high_water == 2


async def test_no_head_of_line_blocking() -> None:
    """A full lossless subscriber holds the publisher back, not the other subscribers."""
    async with EventBus() as bus:
        full = bus.subscribe("a", qos=QoS.BATCHED, buffer_size=1)
        other = bus.subscribe("a", qos=QoS.BATCHED, buffer_size=1)
        await bus.publish("a", ev(0))
        assert other.receive_nowait().event.payload == b"0"  # `full` keeps its event
        published = anyio.Event()
        seen_while_blocked: list[bool] = []

        async def publisher() -> None:
            await bus.publish("a", ev(1))
            published.set()

        async def consumer() -> None:
            delivery = await other.receive()
            assert seq(delivery) == 1
            seen_while_blocked.append(not published.is_set() and waiting(full) == 1)

        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer)
                tg.start_soon(publisher)
                await wait_until(lambda: bool(seen_while_blocked))
                assert seen_while_blocked == [True]
                assert not published.is_set()
                assert seq(full.receive_nowait()) == 0
        assert published.is_set()
        assert drain(full) == [1]


@pytest.mark.parametrize("qos", LOSSLESS)
async def test_publisher_blocked_on_two_subscribers_when_the_second_drains_meanwhile(
    qos: QoS,
) -> None:
    """The second full subscriber empties while the publisher waits on the first: the publish
    must then go through as soon as the first has room, without waiting for a grant that no
    consumer would ever give (the second consumer has nothing left to take)."""
    async with EventBus() as bus:
        first = bus.subscribe("a", qos=qos, buffer_size=1)
        second = bus.subscribe("a", qos=qos, buffer_size=1)
        await bus.publish("a", ev(0))
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus.publish, "a", ev(1))
                await wait_until(lambda: waiting(first) == 1)
                assert drain(second) == [0]
                assert drain(first) == [0]
        assert drain(first) == [1]
        assert drain(second) == [1]


async def test_publisher_blocked_on_two_subscribers_when_the_second_closes_meanwhile() -> None:
    async with EventBus() as bus:
        first = bus.subscribe("a", buffer_size=1)
        second = bus.subscribe("a", buffer_size=1)
        await bus.publish("a", ev(0))
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus.publish, "a", ev(1))
                await wait_until(lambda: waiting(first) == 1)
                second.close()
                assert drain(first) == [0]
        assert drain(first) == [1]
        assert bus.statistics().subscriptions == (first.statistics(),)


async def test_waiting_publishers_are_served_oldest_first() -> None:
    async with EventBus() as bus, bus.subscribe("a", buffer_size=1) as sub:
        await bus.publish("a", ev(0))
        async with anyio.create_task_group() as tg:
            for i in (1, 2, 3):
                tg.start_soon(bus.publish, "a", ev(i))
                await wait_until(lambda i=i: waiting(sub) == i)  # type: ignore[misc]
            got: list[int] = []
            with anyio.fail_after(2):
                while len(got) < 4:
                    got.append(seq(await sub.receive()))
        assert got == [0, 1, 2, 3]


async def test_a_late_publisher_cannot_take_room_handed_to_a_waiting_one() -> None:
    async with EventBus() as bus, bus.subscribe("a", buffer_size=1) as sub:
        await bus.publish("a", ev(0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.publish, "a", ev(1))
            await wait_until(lambda: waiting(sub) == 1)
            assert seq(sub.receive_nowait()) == 0  # room goes to the waiting publisher...
            with pytest.raises(WouldBlock):
                bus.publish_nowait("a", ev(99))  # ...so a newcomer finds none
        assert drain(sub) == [1]


# ---------------------------------------------------------------- ordering


@pytest.mark.parametrize("qos", LOSSLESS)
async def test_events_of_one_publisher_arrive_in_order(qos: QoS) -> None:
    n = 2000
    async with EventBus() as bus:
        subs = [bus.subscribe("o.>", qos=qos, buffer_size=size) for size in (1, 7, 4096)]
        realtime = bus.subscribe("o.*", qos=QoS.REALTIME, buffer_size=3)
        got: list[list[int]] = [[] for _ in subs]
        rt_got: list[int] = []

        async def consume(sub: Subscription, out: list[int]) -> None:
            async for delivery in sub:
                out.append(seq(delivery))
                if len(out) == n:
                    return

        async def consume_realtime() -> None:
            async for delivery in realtime:
                rt_got.append(seq(delivery))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for sub, out in zip(subs, got, strict=True):
                    tg.start_soon(consume, sub, out)
                tg.start_soon(consume_realtime)
                for i in range(n):
                    await bus.publish(f"o.{i % 3}", ev(i))
                await wait_until(lambda: all(len(out) == n for out in got))
                await wait_until(lambda: realtime.statistics().queued == 0)
                realtime.close()
        for out in got:
            assert out == list(range(n))
        assert rt_got == sorted(set(rt_got))  # what Realtime kept, it kept in order
        assert len(rt_got) + realtime.statistics().dropped.overflow == n


# ---------------------------------------------------------------- publish_nowait


async def test_publish_nowait_is_all_or_nothing() -> None:
    async with EventBus() as bus:
        realtime = bus.subscribe("a", qos=QoS.REALTIME)
        roomy = bus.subscribe("a", qos=QoS.BATCHED)
        full = bus.subscribe("a", qos=QoS.BACKGROUND, buffer_size=1)
        bus.publish_nowait("a", ev(0))
        before = bus.statistics()
        with pytest.raises(WouldBlock) as info:
            bus.publish_nowait("a", ev(1))
        assert isinstance(info.value, anyio.WouldBlock)
        assert isinstance(info.value, LoomError)
        assert bus.statistics() == before  # delivered to nobody, counted nowhere
        assert drain(realtime) == [0]
        assert drain(roomy) == [0]
        assert drain(full) == [0]
        bus.publish_nowait("a", ev(2))  # room again: a retry goes through once
        assert (drain(realtime), drain(roomy), drain(full)) == ([2], [2], [2])


async def test_publish_nowait_ignores_full_subscribers_that_filter_the_type_out() -> None:
    async with EventBus() as bus:
        full = bus.subscribe("a", buffer_size=1, event_types=["x"])
        bus.publish_nowait("a", ev(0, type="x"))
        bus.publish_nowait("a", ev(1, type="y"))  # `full` would not take it: no WouldBlock
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a", ev(2, type="x"))
        assert drain(full) == [0]


async def test_realtime_subscribers_never_make_publish_nowait_block() -> None:
    async with EventBus() as bus, bus.subscribe(">", qos=QoS.REALTIME, buffer_size=1) as sub:
        for i in range(5):
            bus.publish_nowait("a.b", ev(i))
        assert sub.statistics().dropped.overflow == 4


# ---------------------------------------------------------------- several receivers


async def test_each_event_goes_to_exactly_one_of_several_receivers() -> None:
    n = 600
    async with EventBus() as bus, bus.subscribe("a", buffer_size=5) as sub:
        got: list[list[int]] = [[], [], []]

        async def receiver(out: list[int]) -> None:
            async for delivery in sub:
                out.append(seq(delivery))
                if delivery.event.type == "slow":
                    await anyio.lowlevel.checkpoint()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for out in got:
                    tg.start_soon(receiver, out)
                for i in range(n):
                    await bus.publish("a", ev(i, type="slow" if i % 7 == 0 else "t"))
                await wait_until(lambda: sum(map(len, got)) == n)
                sub.close()  # ends every receiver's iteration
        assert sorted(x for out in got for x in out) == list(range(n))
        for out in got:
            assert out == sorted(out)
        assert sum(1 for out in got if out) >= 2  # the work was actually shared


# ---------------------------------------------------------------- trie pruning


async def test_subscribe_close_cycles_prune_the_trie() -> None:
    rng = random.Random(7)
    segments = ["a", "b", "c", "*"]

    def pattern() -> str:
        parts = [rng.choice(segments) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            parts.append(">")
        return ".".join(parts)

    async with EventBus() as bus:
        for _ in range(20):
            subs = [
                bus.subscribe(pattern(), qos=rng.choice(list(QoS)), buffer_size=16)
                for _ in range(rng.randint(1, 40))
            ]
            for _ in range(10):
                bus.publish_nowait(".".join(rng.choice("abc") for _ in range(3)), ev())
            assert bus.trie_node_count() > 1
            rng.shuffle(subs)
            for sub in subs:
                sub.close()
            assert bus.trie_node_count() == 1
            assert bus.statistics().subscriptions == ()
            assert bus.subscription_count() == 0
        await bus.publish("a.b.c", ev())
        assert bus.statistics().topics[-1].unrouted == 1


# ---------------------------------------------------------------- bad input


async def test_publish_takes_only_events() -> None:
    async with EventBus() as bus, bus.subscribe(">") as sub:
        with pytest.raises(InvalidArgument, match="takes an Event"):
            await bus.publish("a", b"payload")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="takes an Event"):
            bus.publish_nowait("a", {"type": "t"})  # type: ignore[arg-type]
        assert sub.statistics().matched == 0


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "3"])
async def test_subscribe_refuses_a_bad_buffer_size(size: object) -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="buffer_size"):
            bus.subscribe("a", buffer_size=size)  # type: ignore[call-overload]
        assert bus.subscription_count() == 0
        assert bus.trie_node_count() == 1


@pytest.mark.parametrize(("types", "reason"), [([], "empty"), ("task.created", "not one str")])
async def test_subscribe_refuses_bad_event_types(types: object, reason: str) -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match=reason):
            bus.subscribe("a", event_types=types)  # type: ignore[call-overload]
        assert bus.subscription_count() == 0


async def test_subscribe_refuses_an_unknown_qos() -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="qos"):
            bus.subscribe("a", qos=7)  # type: ignore[call-overload]
        assert bus.subscription_count() == 0
        assert bus.trie_node_count() == 1


async def test_qos_may_be_given_as_its_wire_number() -> None:
    async with EventBus() as bus, bus.subscribe("a", qos=0) as sub:  # type: ignore[call-overload]
        assert sub.qos is QoS.REALTIME


@pytest.mark.parametrize(
    "kwargs", [{"drain_grace": -1.0}, {"max_tracked_topics": 0}, {"max_tracked_topics": -5}]
)
async def test_bus_refuses_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        EventBus(**kwargs)  # type: ignore[arg-type]


async def test_a_bus_never_entered_refuses_everything() -> None:
    bus = EventBus()
    assert bus.closed
    with pytest.raises(BusClosed, match="not open"):
        bus.subscribe("a")
    with pytest.raises(BusClosed, match="not open"):
        await bus.publish("a", ev())
    with pytest.raises(BusClosed, match="not open"):
        bus.publish_nowait("a", ev())


async def test_a_bus_is_entered_once() -> None:
    bus = EventBus()
    async with bus:
        with pytest.raises(BusClosed, match="once"):
            await bus.__aenter__()
    with pytest.raises(BusClosed):
        await bus.__aenter__()


async def test_a_tiers_counters_keep_what_its_closed_subscriptions_counted() -> None:
    async with EventBus() as bus:
        first = bus.subscribe("t.a", qos=QoS.BATCHED)
        second = bus.subscribe("t.a", qos=QoS.REALTIME, buffer_size=1)
        for _ in range(3):
            await bus.publish("t.a", Event(payload=b"x"))
        for _ in range(3):
            await first.receive()
        first.close()
        second.close()  # one queued (closed), two lost to overflow
        kept = bus.subscribe("t.a", qos=QoS.BATCHED)
        await bus.publish("t.a", Event(payload=b"y"))
        await kept.receive()
        tiers = {tier.qos: tier for tier in bus.statistics().tiers}
        assert tiers[QoS.BATCHED].delivered == 4
        assert tiers[QoS.REALTIME].delivered == 0
        assert tiers[QoS.REALTIME].dropped.overflow == 2
        assert tiers[QoS.REALTIME].dropped.closed == 1
