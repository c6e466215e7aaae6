"""Every buffer is bounded in bytes too (``max_buffer_bytes``), counted like the event bound."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from loom.runtime import (
    DEFAULT_MAX_BUFFER_BYTES,
    AgentRuntime,
    Context,
    Drops,
    Event,
    EventBus,
    InvalidArgument,
    QoS,
    WouldBlock,
)
from loom.runtime.lowlevel import EVENT_OVERHEAD_BYTES, event_size

from ._agents_support import spec

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

KIB = 1024


def big(n: int = 0, size: int = 10 * KIB) -> Event:
    return Event(type="t", payload=bytes([n % 256]) * size)


async def test_event_size_is_payload_metadata_and_a_fixed_part() -> None:
    event = Event(type="t", source="src", payload=b"x" * 1000, metadata={"k": "vv"})
    assert event_size(event) == 1000 + 3 + EVENT_OVERHEAD_BYTES
    # Every event is charged, however small.
    assert event_size(Event(payload=b"x" * 100)) == 100 + EVENT_OVERHEAD_BYTES
    assert event_size(Event()) == EVENT_OVERHEAD_BYTES


SMALL = 200  # payload bytes: 456 charged


async def test_small_events_fill_a_byte_bound_and_realtime_drops_them_as_bytes() -> None:
    async with EventBus(drain_grace=0) as bus:
        sub = bus.subscribe("a", qos=QoS.REALTIME, buffer_size=1000, max_buffer_bytes=16 * KIB)
        for _ in range(1000):
            await bus.publish("a", Event(payload=b"x" * SMALL))
        stats = sub.statistics()
        fits = 16 * KIB // (SMALL + EVENT_OVERHEAD_BYTES)
        assert stats.queued == fits  # far below the count bound
        assert stats.queued_bytes == fits * (SMALL + EVENT_OVERHEAD_BYTES) <= 16 * KIB
        assert stats.dropped == Drops(bytes=1000 - fits)
        assert stats.matched == 1000
        assert bus.statistics().dropped == Drops(bytes=1000 - fits)


async def test_small_events_filling_a_byte_bound_hold_a_lossless_publisher_back() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a", qos=QoS.BATCHED, buffer_size=1000, max_buffer_bytes=16 * KIB)
        fits = 16 * KIB // (SMALL + EVENT_OVERHEAD_BYTES)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def publish() -> None:
                    for i in range(1000):
                        await bus.publish("a", Event(payload=b"%200d" % i))

                tg.start_soon(publish)
                await anyio.wait_all_tasks_blocked()
                stats = sub.statistics()
                assert (stats.queued, stats.waiting_publishers) == (fits, 1)
                assert stats.queued_bytes <= 16 * KIB
                for i in range(1000):
                    assert int((await sub.receive()).event.payload) == i
                    assert sub.statistics().queued_bytes <= 16 * KIB
        assert sub.statistics().dropped == Drops()


async def test_realtime_drops_by_bytes_and_counts_them() -> None:
    async with EventBus(drain_grace=0) as bus:
        sub = bus.subscribe("a", qos=QoS.REALTIME, buffer_size=100, max_buffer_bytes=25 * KIB)
        for i in range(10):
            await bus.publish("a", big(i))
        stats = sub.statistics()
        assert stats.queued == 2  # 2 x (10 KiB + overhead) fit in 25 KiB, a third does not
        assert stats.dropped == Drops(bytes=8)
        assert stats.queued_bytes == 2 * event_size(big())
        assert stats.max_bytes == 25 * KIB
        assert stats.matched == stats.delivered + stats.dropped.total + stats.queued
        totals = bus.statistics()
        assert totals.dropped == Drops(bytes=8)
        (record,) = [t for t in totals.topics if t.topic == "a"]
        assert record.dropped == Drops(bytes=8)
        # Room comes back as events are taken.
        sub.receive_nowait()
        await bus.publish("a", big())
        assert sub.statistics().queued == 2


async def test_lossless_waits_for_bytes_and_loses_nothing() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a", qos=QoS.BATCHED, buffer_size=1000, max_buffer_bytes=25 * KIB)
        got: list[int] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def publish() -> None:
                    for i in range(50):
                        await bus.publish("a", big(i))

                tg.start_soon(publish)
                while len(got) < 50:
                    stats = sub.statistics()
                    assert stats.queued_bytes <= 25 * KIB
                    if stats.queued == 2:
                        assert stats.waiting_publishers == 1
                    delivery = await sub.receive()
                    got.append(delivery.event.payload[0])
        assert got == list(range(50))
        assert sub.statistics().dropped == Drops()


async def test_publish_nowait_refuses_when_bytes_do_not_fit() -> None:
    async with EventBus(drain_grace=0) as bus:
        sub = bus.subscribe("a", buffer_size=100, max_buffer_bytes=25 * KIB)
        bus.publish_nowait("a", big())
        bus.publish_nowait("a", big())
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a", big())
        assert sub.statistics().queued == 2
        sub.receive_nowait()
        bus.publish_nowait("a", big())


async def test_an_event_larger_than_the_bound_goes_into_an_empty_buffer() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a", buffer_size=10, max_buffer_bytes=KIB)
        with anyio.fail_after(5):
            await bus.publish("a", big(size=4 * KIB))  # empty: it goes in
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus.publish, "a", big(1, size=4 * KIB))
                await anyio.wait_all_tasks_blocked()
                assert sub.statistics().waiting_publishers == 1
                assert (await sub.receive()).event.payload[0] == 0
            assert (await sub.receive()).event.payload[0] == 1


async def test_a_cancelled_publisher_gives_its_reserved_bytes_back() -> None:
    async with EventBus() as bus:
        sub = bus.subscribe("a", buffer_size=10, max_buffer_bytes=25 * KIB)
        with anyio.fail_after(5):
            await bus.publish("a", big())
            await bus.publish("a", big())
            with anyio.move_on_after(0.05):
                await bus.publish("a", big())
            assert sub.statistics().waiting_publishers == 0
            sub.receive_nowait()
            sub.receive_nowait()
            bus.publish_nowait("a", big())
            bus.publish_nowait("a", big())
            assert sub.statistics().queued_bytes == 2 * event_size(big())


async def test_the_bus_default_and_none() -> None:
    async with EventBus(max_buffer_bytes=None) as bus:
        assert bus.subscribe("a").statistics().max_bytes == 0
        assert bus.subscribe("b", max_buffer_bytes=KIB).statistics().max_bytes == KIB
    async with EventBus() as bus:
        assert bus.subscribe("a").statistics().max_bytes == DEFAULT_MAX_BUFFER_BYTES
    with pytest.raises(InvalidArgument, match="max_buffer_bytes"):
        EventBus(max_buffer_bytes=0)
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="max_buffer_bytes"):
            bus.subscribe("a", max_buffer_bytes=-1)


async def test_an_agent_mailbox_gives_room_back_as_it_handles() -> None:
    # Were the room not given back as the agent loop takes each event, the publisher would
    # wait for ever once two events are queued.
    handled = 0
    done = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled == 200:
            done.set()

    async with EventBus(max_buffer_bytes=25 * KIB) as bus, AgentRuntime(bus) as runtime:
        await runtime.start(spec("eater", on_event, topics=("a",)))
        with anyio.fail_after(10):
            for i in range(200):
                await bus.publish("a", big(i))
            await done.wait()
        assert runtime.statistics_of("eater").queued == 0
