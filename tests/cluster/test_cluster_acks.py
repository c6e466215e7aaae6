"""Lossless frames that arrive together are acknowledged together (issue 13 §5): the receiver
holds a frame's ack while more frames already wait in its inbox (the next ack is cumulative),
so a burst costs a few acks, not one per frame; every event still arrives, in order, and the
sender ends with nothing unacknowledged. A real nats-server throughout."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest
from nats.aio.msg import Msg

from loom.runtime import Event, QoS

from ._jetstream_support import connect, nats_server
from .test_cluster_transport import Node, knows, node, take, wait_until

pytestmark = pytest.mark.anyio


def sent_more_than(sender: Node, n: int) -> bool:
    return sender.transport.statistics().sent_frames > n


async def test_frames_waiting_together_are_acknowledged_together(tmp_path: Path) -> None:
    frames = 24  # within the window (32): the sender never waits for an ack here
    acks = 0

    async def count(_msg: Msg) -> None:
        nonlocal acks
        acks += 1

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            node(server, "a") as a,
            node(server, "b") as b,
            b.bus.subscribe("orders.>", qos=QoS.BATCHED, buffer_size=1) as far,
        ):
            await wait_until(knows(a, "b", "orders.>"))
            watcher = await connect(server)
            try:
                await watcher.subscribe("_loom.node.a.ack", cb=count)
                await watcher.flush()
                # Nobody reads on b: its subscriber fills after one event, so b's reader
                # waits in the first frames and the rest queue in its inbox, one frame each.
                for i in range(frames):
                    await a.bus.publish(f"orders.{i}", Event(type="t", payload=b"%d" % i))
                    await wait_until(partial(sent_more_than, a, i))
                got = await take(far, frames)
                await wait_until(lambda: a.transport.statistics().unacked_frames == 0)
                await watcher.flush()
            finally:
                await watcher.close()
    assert [e.payload for e in got] == [b"%d" % i for i in range(frames)]
    # One ack per frame before; now the frames the reader found waiting share theirs.
    assert acks <= frames // 2, f"{acks} acks for {frames} frames"
    assert a.transport.statistics().retransmitted_frames == 0
