"""Issue 17, item 7: a failing remote agent lost Batched events silently (38-100 per failure,
neither handled nor dead-lettered), and its restarts looked like plain disconnects. Here a
real remote agent subprocess whose handler raises on every Nth event, under a flood: every
event that reached it is handled or dead-lettered, and its supervision reaches the server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import msgspec
import pytest

from loom.bridge import BridgeServer
from loom.runtime import (
    DEAD_LETTER_PREFIX,
    LIFECYCLE_PREFIX,
    AgentRuntime,
    AgentStatus,
    Event,
    EventBus,
    LifecycleEvent,
    Subscription,
)

pytestmark = pytest.mark.anyio

AGENT = Path(__file__).with_name("_failing_agent.py")


class Agent:
    """The agent subprocess, and what it printed."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.handled: list[str] = []
        self.ended: str | None = None
        self.changed = anyio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, rest = line.decode().partition(" ")
                if kind == "handled":
                    self.handled.append(rest)
                elif kind == "ended":
                    self.ended = rest
            self.changed.set()
            self.changed = anyio.Event()
        self.changed.set()


@asynccontextmanager
async def agent_process(address: str, every: int, max_restarts: int) -> AsyncIterator[Agent]:
    process = await anyio.open_process(
        [sys.executable, str(AGENT), address, "flaky", str(every), str(max_restarts)],
        stdout=subprocess.PIPE,
        stderr=None,  # the agent's log goes to the test's output
    )
    agent = Agent(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.read)
            yield agent
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


class Seen:
    """Events a subscription received, and a signal for each."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = anyio.Event()

    async def collect(self, sub: Subscription) -> None:
        async for delivery in sub:
            self.events.append(delivery.event)
            self.changed.set()
            self.changed = anyio.Event()


async def until(condition: Callable[[], bool], signal: Callable[[], anyio.Event]) -> None:
    """Wait until ``condition()`` holds, looking again whenever ``signal()`` fires (and now and
    then: the runtime's state is not signalled)."""
    while not condition():
        event = signal()
        with anyio.move_on_after(0.05):
            await event.wait()


async def test_a_failing_remote_agent_loses_nothing(tmp_path: Path) -> None:
    published = 0
    dead_letters = Seen()
    lifecycle = Seen()
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, port=0) as server,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(dead_letters.collect, bus.subscribe(f"{DEAD_LETTER_PREFIX}.>"))
        tg.start_soon(lifecycle.collect, bus.subscribe(f"{LIFECYCLE_PREFIX}.flaky"))
        async with agent_process(server.address, every=50, max_restarts=2) as agent:
            with anyio.fail_after(30):
                await until(
                    lambda: any(e.type == "agent.running" for e in lifecycle.events),
                    lambda: lifecycle.changed,
                )
                # The flood: as fast as the agent's backpressure lets it, until the agent has
                # failed (its third failure, with max_restarts=2) and left the server.
                i = 0
                while runtime.status("flaky") is AgentStatus.RUNNING:
                    with anyio.move_on_after(0.5):
                        if await bus.publish("flood.x", Event(type="n", payload=str(i).encode())):
                            published += 1
                        i += 1
                await agent.process.wait()
                while agent.ended is None:
                    await agent.changed.wait()
        assert agent.ended == AgentStatus.FAILED.value
        with anyio.move_on_after(10):
            await until(
                lambda: len(agent.handled) + len(dead_letters.events) >= published,
                lambda: dead_letters.changed,
            )
        (info,) = [a for a in runtime.agents() if a.id == "flaky"]
        restarts = info.restarts
        tg.cancel_scope.cancel()
    dead = [e.payload.decode() for e in dead_letters.events]
    life = lifecycle.events
    handled = set(agent.handled)
    assert len(handled) == len(agent.handled), "an event was handled twice"
    assert not handled & set(dead), "an event was both handled and dead-lettered"
    assert len(handled) + len(dead) == published, (
        f"published {published}, handled {len(handled)}, dead-lettered {len(dead)}"
    )
    # Its supervision reached the server: each restart (stopping, starting, running again),
    # then the failure, then the disconnect; and the directory counts the restarts.
    kinds = [e.type for e in life]
    assert kinds == [
        "agent.running",
        *(["agent.stopping", "agent.starting", "agent.running"] * 2),
        "agent.stopping",
        "agent.failed",
        "agent.disconnected",
    ], kinds
    failed = msgspec.json.decode(life[-2].payload, type=LifecycleEvent)
    assert failed.restarts == 2
    assert "failing on purpose" in failed.reason
    assert restarts == 2
