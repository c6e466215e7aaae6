"""A publish that need not wait (``wait_accepted=False``, credit and room at once) is queued
by ``BridgeClient.publish`` itself, without ``Session.publish``'s coroutine (issue 13 §5);
one that must wait still goes the waiting way. Either way: every event, in order, and a
publishing loop still lets the stream's writer run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from loom.bridge._client_session import _YIELD_EVERY, Session
from loom.runtime import Event

from ._client_support import FAST, client, hosting

pytestmark = pytest.mark.anyio


def counting_session_publishes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of ``Session.publish`` (the waiting path) from now on."""
    calls = [0]
    original: Callable[..., Awaitable[None]] = Session.publish

    async def publish(self: Session, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Session, "publish", publish)
    return calls


async def test_a_publish_with_credit_and_room_skips_the_waiting_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count = 50  # within the publish window and the outbound queue
    with anyio.fail_after(20):
        async with (
            hosting() as host,
            host.bus.subscribe("fast.>", buffer_size=count) as sub,
            client(host, "pub") as pub,
        ):
            await pub.wait_connected()
            calls = counting_session_publishes(monkeypatch)
            for i in range(count):
                await pub.publish("fast.x", Event(type="n", payload=b"%d" % i))
            got = [int((await sub.receive()).event.payload) for _ in range(count)]
    assert calls[0] == 0
    assert got == list(range(count))
    assert pub.statistics().lost == 0


async def test_a_publish_that_must_wait_still_waits_and_keeps_the_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small window and queue, a slow subscriber: the publisher runs out of credit and
    # room again and again; those publishes wait (the old path), none is lost or reordered.
    count = 400
    options = msgspec.structs.replace(FAST, outbound_buffer=4, publish_window=8)
    with anyio.fail_after(60):
        async with (
            hosting() as host,
            host.bus.subscribe("slow.>", buffer_size=10) as sub,
            client(host, "pub", options=options) as pub,
        ):
            await pub.wait_connected()
            calls = counting_session_publishes(monkeypatch)
            got: list[int] = []

            async def read() -> None:
                while len(got) < count:
                    got.append(int((await sub.receive()).event.payload))
                    await anyio.sleep(0.0002)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for i in range(count):
                    await pub.publish("slow.x", Event(type="n", payload=b"%d" % i))
    assert calls[0] > 0
    assert got == list(range(count))
    assert pub.statistics().lost == 0


async def test_a_publishing_loop_that_never_waits_still_yields() -> None:
    # Room and credit for every publish, so none waits: the loop must still yield now and
    # then (every _YIELD_EVERY publishes), or the writer (and everything else) would starve.
    count = 10 * _YIELD_EVERY
    options = msgspec.structs.replace(FAST, outbound_buffer=count + 10)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(20):
        async with hosting() as host, client(host, "pub", options=options) as pub:
            await pub.wait_connected()
            async with anyio.create_task_group() as tg:
                tg.start_soon(tick)
                await anyio.lowlevel.checkpoint()
                before = ticks
                for _ in range(count):
                    await pub.publish("loop.x", Event(type="n"))
                ran = ticks - before
                tg.cancel_scope.cancel()
    assert ran >= count // _YIELD_EVERY - 1
