"""What a publisher learns (issue 17, item 11): ``wait_accepted`` tells an unrouted publish
from an accepted one, a fresh server's settle window holds publishes nobody is subscribed to
while agents reattach, and publishes a dropped connection takes are counted ``lost``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest

from loom.bridge import Acceptance, AgentRegistration, BridgeClient, BridgeServer, ConnectionLost
from loom.runtime import AgentRuntime, Event, EventBus

from ._client_support import FAST, client, hosting, next_of

pytestmark = pytest.mark.anyio


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        for _ in itertools.count():
            if condition():
                return
            await anyio.sleep(0.01)


@asynccontextmanager
async def settling(settle_s: float) -> AsyncIterator[tuple[EventBus, BridgeServer]]:
    async with (
        EventBus(drain_grace=0.2) as bus,
        AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
        BridgeServer(runtime, grace_s=0.5, settle_s=settle_s) as server,
    ):
        yield bus, server


async def test_wait_accepted_tells_unrouted_from_accepted() -> None:
    async with hosting() as host, client(host, "p1") as pub:
        with anyio.fail_after(5):
            assert await pub.publish("nobody.here", Event(), wait_accepted=True) is (
                Acceptance.UNROUTED
            )
            async with host.bus.subscribe("somebody.>") as sub:
                outcome = await pub.publish("somebody.here", Event(type="x"), wait_accepted=True)
                assert outcome is Acceptance.ACCEPTED
                await next_of(sub, "x")
            assert await pub.publish("nobody.here", Event()) is Acceptance.QUEUED
            await wait_until(lambda: pub.statistics().unrouted == 2)
        assert pub.statistics().rejected == 0


async def test_a_fresh_server_holds_unrouted_publishes_until_a_subscriber_attaches() -> None:
    async with settling(10.0) as (_bus, server):
        address = f"127.0.0.1:{server.port}"
        reg = AgentRegistration(agent_id="early-pub")
        async with BridgeClient(address, reg, options=FAST) as pub:
            outcomes: list[Acceptance] = []
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:

                    async def publish() -> None:
                        event = Event(type="held")
                        outcomes.append(await pub.publish("late.topic", event, wait_accepted=True))

                    tg.start_soon(publish)
                    await wait_until(lambda: server.statistics().held_publishes == 1)
                    assert server.statistics().settling
                    assert not outcomes  # held: nobody is subscribed yet
                    sub_reg = AgentRegistration(agent_id="late-sub", topics=("late.>",))
                    async with BridgeClient(address, sub_reg, options=FAST) as sub:
                        delivery = await sub.receive()
                        assert delivery.event.type == "held"
            assert outcomes == [Acceptance.ACCEPTED]


async def test_the_settle_window_closes_early_when_nobody_comes() -> None:
    # settle_s / 2 with no agent registering, attaching or subscribing closes the window:
    # the publish goes ahead, reaches nobody, and says so.
    async with settling(6.0) as (_bus, server):
        reg = AgentRegistration(agent_id="lonely")
        address = f"127.0.0.1:{server.port}"
        async with BridgeClient(address, reg, options=FAST) as pub:
            start = anyio.current_time()
            with anyio.fail_after(5):
                outcome = await pub.publish("nobody.here", Event(), wait_accepted=True)
            assert outcome is Acceptance.UNROUTED
            # Closed by the quiet rule (3 s after the last registration or attach), well
            # before the window's own end (6 s after the server started).
            assert anyio.current_time() - start < 4.0
            assert not server.statistics().settling


async def test_publishes_a_dropped_connection_takes_are_counted_lost() -> None:
    async with (
        hosting() as host,
        client(host, "p2") as pub,
        host.bus.subscribe("full.>", buffer_size=1),  # never read: it fills
    ):
        errors: list[BaseException] = []
        with anyio.fail_after(10):
            for _ in range(3):  # one in the buffer, the server's publisher waits on one
                await pub.publish("full.x", Event())

            async def waiting() -> None:
                try:
                    await pub.publish("full.x", Event(), wait_accepted=True)
                except ConnectionLost as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting)
                await wait_until(lambda: pub.statistics().published == 4)
                await host.stop()
        assert len(errors) == 1
        # At least the two the server never acknowledged (perhaps one was published).
        assert pub.statistics().lost >= 2


async def test_a_clean_close_publishes_everything_published_before_it() -> None:
    # The client half-closes after its last publish while the server still holds up to a
    # window of them, waiting for a slow subscriber: they are published and acknowledged
    # before the stream ends, not dropped with it.
    count = 1000  # within the server's 5 s flush bound on a loaded machine
    async with hosting() as host, host.bus.subscribe("slow.>", buffer_size=10) as sub:
        got = 0

        async def read() -> None:
            nonlocal got
            while got < count:
                await sub.receive()
                got += 1
                await anyio.sleep(0.0002)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                # close_grace bounds how long the close waits for the server's last ack.
                options = msgspec.structs.replace(FAST, close_grace=20.0)
                async with client(host, "closer", options=options) as pub:
                    for _ in range(count):
                        await pub.publish("slow.x", Event())
                assert pub.statistics().lost == 0
        assert got == count


async def test_unrouted_publishes_are_named_exactly_when_acks_split_batches() -> None:
    # The client books unacked publishes a written batch at a time; a small window makes the
    # server ack every few publishes, so acks land inside batches. Each unrouted publish is
    # counted once, and nothing is taken for rejected.
    options = msgspec.structs.replace(FAST, publish_window=16)
    async with (
        hosting() as host,
        host.bus.subscribe("somebody.>", buffer_size=1000),
        client(host, "p3", options=options) as pub,
    ):
        with anyio.fail_after(10):
            for i in range(200):
                await pub.publish("nobody.x" if i % 2 else "somebody.x", Event())
            assert await pub.publish("somebody.x", Event(), wait_accepted=True) is (
                Acceptance.ACCEPTED
            )
            await wait_until(lambda: pub.statistics().unrouted == 100)
        assert pub.statistics().rejected == 0
        assert pub.statistics().lost == 0
