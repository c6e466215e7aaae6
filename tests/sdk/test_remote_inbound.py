"""What the stream delivers before a remote agent's mailbox exists is held, in order, not lost."""

from __future__ import annotations

import anyio
import pytest

from loom._remote import _HeldInbound
from loom.runtime import Event, EventBus

pytestmark = pytest.mark.anyio


async def test_deliveries_before_the_mailbox_are_held_in_order_then_handed_over() -> None:
    async with EventBus() as bus:
        held = _HeldInbound(bus, limit=3)
        for i in range(3):  # nobody subscribes yet: a bus would route these to nobody
            await held.deliver_inbound("in.x", Event(payload=str(i).encode()))
        late: list[bytes] = []

        async def reader_beyond_the_limit() -> None:
            # The stream's reader: the fourth waits for the opening, then follows the three;
            # the fifth goes straight through.
            await held.deliver_inbound("in.x", Event(payload=b"3"))
            late.append(b"3")
            await held.deliver_inbound("in.x", Event(payload=b"4"))

        async with bus.subscribe("in.*") as mailbox, anyio.create_task_group() as tg:
            tg.start_soon(reader_beyond_the_limit)
            await anyio.wait_all_tasks_blocked()
            assert late == []  # waiting: nothing is dropped or reordered past the limit
            await held.open()
            with anyio.fail_after(5):
                got = [(await mailbox.receive()).event.payload for _ in range(5)]
        assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_held_delivery_the_bus_refuses_is_dropped_alone() -> None:
    async with EventBus() as bus, bus.subscribe(">") as mailbox:
        held = _HeldInbound(bus, limit=8)
        await held.deliver_inbound("bad..topic", Event(type="refused"))
        await held.deliver_inbound("fine", Event(type="kept"))
        await held.open()
        with anyio.fail_after(5):
            assert (await mailbox.receive()).event.type == "kept"
