"""The cluster transport takes frames and acks without a task per message (``Inbox``,
``cluster/_inbox.py``): nats-py's ``Subscription.messages`` starts one per message, about
12 µs of CPU each, per frame and per ack on both nodes. A real nats-server throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from loom.cluster._inbox import Inbox
from loom.runtime import Event, QoS

from ._jetstream_support import connect, nats_server
from .test_cluster_transport import knows, node, take, wait_until

pytestmark = pytest.mark.anyio


async def test_an_inbox_hands_messages_over_in_order_and_holds_nats_back_when_full(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server:
            nc = await connect(server)
            inbox = Inbox(size=4)
            try:
                sub = await nc.subscribe("in.x", cb=inbox.put, pending_msgs_limit=100)
                for i in range(10):
                    await nc.publish("in.x", b"%d" % i)
                await nc.flush()
                # Nobody reads: 4 in the inbox, 1 held in put(), the rest queued in nats-py
                # (its pending limit still bounds them): backpressure, nothing lost.
                await wait_until(lambda: sub.pending_msgs == 5)
                got = [(await anext(inbox)).data for _ in range(10)]
                assert got == [b"%d" % i for i in range(10)]
                await sub.unsubscribe()
            finally:
                inbox.close()
                await nc.close()
            with pytest.raises(StopAsyncIteration):
                await anext(inbox)


async def test_frames_and_acks_cost_no_task_each(tmp_path: Path) -> None:
    n = 200
    made = 0
    loop = asyncio.get_running_loop()
    default = loop.get_task_factory()

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        nonlocal made
        made += 1
        if default is not None:
            return default(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            node(server, "a") as a,
            node(server, "b") as b,
            b.bus.subscribe("orders.>", qos=QoS.BATCHED, buffer_size=4096) as far,
        ):
            await wait_until(knows(a, "b", "orders.>"))
            loop.set_task_factory(counting)
            try:
                for i in range(n):
                    await a.bus.publish(f"orders.{i}", Event(type="t"))
                    await take(far, 1)  # one frame (and one ack) per event
                    await checkpoint()
            finally:
                loop.set_task_factory(default)
            stats = a.transport.statistics()
    assert stats.sent_frames >= n
    # nats-py's iterator made two tasks per event here (a frame on b, its ack on a).
    assert made < n // 4, f"{made} tasks for {stats.sent_frames} frames"
