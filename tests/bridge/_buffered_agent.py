"""A remote agent process for the tests of its buffers: ``Agent`` served by ``serve_agent``.

Usage: python _buffered_agent.py OUT TIER DELAY START_DELAY BLOCK_AFTER MAILBOX MAX_BYTES
(LOOM_BRIDGE_ADDR names the server). It subscribes ``flood.>`` with TIER and a mailbox of
MAILBOX events; ``on_start`` sleeps START_DELAY seconds (deliveries arriving meanwhile are
held by its client); each event is handled in DELAY seconds, and the BLOCK_AFTER-th one
(0: none) is never finished. It keeps two figures in OUT, rewritten in place so that a
SIGKILL leaves them readable: events its handler took, and the largest buffered bytes its
client's statistics showed (inbound and outbound), sampled every 5 ms once it runs.
"""

from __future__ import annotations

import functools
import os
import sys

import anyio

from loom import Agent, Context, Event, QoS, serve_agent
from loom.bridge import ClientOptions

out, tier, delay, start_delay, block_after, mailbox, max_bytes = sys.argv[1:8]
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
handled = 0
peak = 0


def record() -> None:
    os.pwrite(fd, f"{handled:>12}{peak:>12}".encode(), 0)  # no buffer of ours to lose


async def on_start(ctx: Context) -> None:
    await anyio.sleep(float(start_delay))


async def on_event(ctx: Context, topic: str, event: Event) -> None:
    global handled
    handled += 1
    record()
    if handled == int(block_after):
        await anyio.sleep_forever()
    await anyio.sleep(float(delay))


agent = Agent(
    "slow",
    topics=["flood.>"],
    qos=QoS[tier],
    mailbox_size=int(mailbox),
    on_event=on_event,
    on_start=on_start,
)


async def main() -> None:
    global peak
    options = ClientOptions(max_buffer_bytes=int(max_bytes))
    address = os.environ["LOOM_BRIDGE_ADDR"]
    async with anyio.create_task_group() as tg:
        client = await tg.start(functools.partial(serve_agent, agent, address, options=options))
        while True:
            stats = client.statistics()
            peak = max(peak, stats.inbound_queued_bytes + stats.outbound_queued_bytes)
            record()
            await anyio.sleep(0.005)


anyio.run(main)
