"""A publisher cancelled while it waits for room, in the same loop step as a consumer frees
room for it: the grant it was given is passed on, not lost, and nothing raises."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from loom.runtime import Event, EventBus, QoS

pytestmark = pytest.mark.anyio


async def test_a_publisher_cancelled_as_room_is_granted_passes_the_room_on() -> None:
    with anyio.fail_after(5):
        async with EventBus() as bus, bus.subscribe("t", qos=QoS.BATCHED, buffer_size=1) as sub:
            await bus.publish("t", Event(payload=b"1"))  # full
            cancelled = anyio.CancelScope()
            second_sent = anyio.Event()

            async def blocked() -> None:
                with cancelled:
                    await bus.publish("t", Event(payload=b"lost"))

            async def next_in_line() -> None:
                await bus.publish("t", Event(payload=b"2"))
                second_sent.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(blocked)
                await wait_all_tasks_blocked()
                tg.start_soon(next_in_line)
                await wait_all_tasks_blocked()
                # In one step: the first waiter's task is cancelled, then room is freed. The
                # grant may go to the cancelled waiter; it must reach the next one in line.
                cancelled.cancel()
                assert sub.receive_nowait().event.payload == b"1"
                await checkpoint()
            await second_sent.wait()
            assert sub.receive_nowait().event.payload == b"2"
            stats = sub.statistics()
            assert stats.waiting_publishers == 0
