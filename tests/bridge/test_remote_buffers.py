"""What a remote agent's deliveries cost, counted exactly: ``delivered`` is what the agent's
process took (not what its client held before the agent started), every buffer is bounded in
bytes with small events charged too, and the agent's own process holds no more than its
client's ``max_buffer_bytes`` however slow its handler (issue 17, items 8 and 10).

A real server on 127.0.0.1:0 and a real agent process (``_buffered_agent.py``), killed with
SIGKILL where the test says so; what the agent handled, and the most bytes its client's
statistics showed buffered, are read from a file it rewrites in place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from loom.runtime import DEFAULT_MAX_BUFFER_BYTES, Event, QoS, Subscription
from loom.runtime.lowlevel import event_size

from ._client_support import Hosting, hosting
from ._server_harness import wait_until

pytestmark = pytest.mark.anyio

KIB = 1024
AGENT = Path(__file__).with_name("_buffered_agent.py")


def _read(out: Path) -> tuple[int, int]:
    """(events the agent's handler took, the most bytes its client showed buffered)."""
    text = out.read_bytes() if out.exists() else b""
    if len(text) < 24:
        return 0, 0
    return int(text[:12]), int(text[12:24])


@asynccontextmanager
async def buffered_agent(
    tmp_path: Path,
    host: Hosting,
    *,
    qos: QoS,
    delay: float = 0.0,
    start_delay: float = 0.0,
    block_after: int = 0,
    mailbox: int = 100,
    max_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
) -> AsyncIterator[tuple[Process, Path, Subscription]]:
    """The agent's process, its figures file, and its mailbox subscription on the server."""
    out = tmp_path / "figures"
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    args = (out, qos.name, delay, start_delay, block_after, mailbox, max_bytes)
    process = await anyio.open_process([sys.executable, str(AGENT), *map(str, args)], env=env)
    try:
        assert host.server is not None
        sessions = host.server.hub.sessions
        await wait_until(lambda: "slow" in sessions and sessions["slow"]._credited, timeout=20)
        yield process, out, sessions["slow"].remote.mailbox
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def test_delivered_is_exactly_what_the_agent_took_when_it_is_killed(tmp_path: Path) -> None:
    took, mailbox_size = 10, 5
    async with (
        hosting() as host,
        # It starts a second late: meanwhile its client holds what the server sends (a
        # window's worth). Its handler then takes `took` events and hangs on the last.
        buffered_agent(
            tmp_path,
            host,
            qos=QoS.BATCHED,
            start_delay=1.0,
            block_after=took,
            mailbox=mailbox_size,
        ) as (process, out, mailbox),
    ):
        assert host.server is not None
        sessions = host.server.hub.sessions

        async def publish() -> None:
            for i in range(5_000):
                await host.bus.publish("flood.x", Event(type="n", payload=b"%d" % i))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                await wait_until(lambda: _read(out)[0] == took, timeout=30)
                # What the agent's process took: its handler's events and a full mailbox.
                # What its client still holds is in flight, not delivered.
                await wait_until(lambda: mailbox.statistics().delivered == took + mailbox_size)
                await anyio.sleep(0.3)  # and it stays so: nothing more is credited
                stats = mailbox.statistics()
                assert stats.delivered == took + mailbox_size
                assert stats.in_flight > 0
                process.kill()  # SIGKILL: no goodbye
                await process.wait()
                await wait_until(lambda: "slow" not in sessions, timeout=20)
                tg.cancel_scope.cancel()
        handled = _read(out)[0]
        stats = mailbox.statistics()
    assert handled == took
    assert stats.delivered == handled + mailbox_size
    # What was in flight (held by its client, sent and not credited) or queued for it when
    # the stream ended is dropped, reason closed: every event matched is accounted for.
    assert (stats.in_flight, stats.queued) == (0, 0)
    assert stats.dropped.closed == stats.matched - stats.delivered > 0


SMALL = b"x" * 200  # a small event: charged 200 + EVENT_OVERHEAD_BYTES


async def test_small_events_fill_a_servers_byte_bound_and_a_realtime_agent_drops_them_as_bytes(
    tmp_path: Path,
) -> None:
    total = 3_000
    async with (
        hosting(max_buffer_bytes=16 * KIB) as host,
        buffered_agent(tmp_path, host, qos=QoS.REALTIME, delay=0.001) as (_, out, mailbox),
    ):
        assert mailbox.statistics().max_bytes == 16 * KIB
        fits = 16 * KIB // event_size(Event(type="n", payload=SMALL))
        assert fits < mailbox.statistics().capacity  # the bytes bind first, not the count
        with anyio.fail_after(10):
            for _ in range(total):
                await host.bus.publish("flood.x", Event(type="n", payload=SMALL))
                assert mailbox.statistics().queued <= fits
        await wait_until(
            lambda: (
                (s := mailbox.statistics()).queued == 0
                and s.in_flight == 0
                and _read(out)[0] == s.delivered
            ),
            timeout=30,
        )
        stats = mailbox.statistics()
        handled = _read(out)[0]
    assert stats.matched == total
    assert stats.dropped.bytes > 0
    assert stats.dropped.overflow == 0
    assert handled == stats.delivered == total - stats.dropped.bytes


async def test_small_events_fill_a_servers_byte_bound_and_hold_a_batched_publisher_back(
    tmp_path: Path,
) -> None:
    total = 2_000
    async with (
        hosting(max_buffer_bytes=16 * KIB) as host,
        buffered_agent(tmp_path, host, qos=QoS.BATCHED, delay=0.0005) as (_, out, mailbox),
    ):
        fits = 16 * KIB // event_size(Event(type="n", payload=SMALL))
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def publish() -> None:
                    for i in range(total):
                        await host.bus.publish("flood.x", Event(type="n", payload=b"%200d" % i))

                tg.start_soon(publish)
                await wait_until(lambda: mailbox.statistics().waiting_publishers > 0, timeout=20)
                stats = mailbox.statistics()
                # Held back by bytes: a few dozen small events, far below the count bound.
                assert stats.queued <= fits < stats.capacity
                assert stats.queued_bytes <= 16 * KIB
            await wait_until(lambda: _read(out)[0] == total, timeout=50)
        stats = mailbox.statistics()
    assert stats.dropped.total == 0
    assert stats.delivered == total


async def test_a_slow_remote_agent_buffers_no_more_bytes_than_its_bound(tmp_path: Path) -> None:
    total, bound = 1_500, 32 * KIB
    payload = b"x" * (2 * KIB)
    size = event_size(Event(type="n", payload=payload))
    async with (
        hosting(max_buffer_bytes=256 * KIB) as host,
        # A mailbox of 1000 events would hold 2.3 MB of these: the byte bound binds first.
        buffered_agent(
            tmp_path, host, qos=QoS.BATCHED, delay=0.002, mailbox=1000, max_bytes=bound
        ) as (_, out, mailbox),
    ):
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def publish() -> None:
                    for _ in range(total):
                        await host.bus.publish("flood.x", Event(type="n", payload=payload))

                tg.start_soon(publish)
                # The rest waits on the server, in the agent's subscription there (bounded by
                # the server's bytes), with the publisher held back.
                await wait_until(lambda: mailbox.statistics().waiting_publishers > 0, timeout=20)
            await wait_until(lambda: _read(out)[0] == total, timeout=50)
        peak = _read(out)[1]
    # The agent's process held the bound's worth (so the bound was what held it), and never
    # more, by its client's statistics.
    assert bound // 2 < peak <= bound + size
