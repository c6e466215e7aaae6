"""Helpers shared by the actor runtime tests (``test_agents_*.py``); not a test module.

* :class:`FnBehaviour` / :func:`spec`: an agent built from plain async functions, so a test
  shows its whole behaviour in one place.
* :class:`Watch`, :class:`Lifecycle`, :class:`DeadLetters`: read a subscription and wait for
  the delivery a test expects. Tests wait on these signals (lifecycle events, dead letters,
  events handlers emit), never on sleeps.
* :class:`Seen`: a list that handlers append to and tests wait on.
* :func:`hosted`: a bus, a runtime and both watchers in one ``async with``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import msgspec
import sniffio

from loom.runtime import (
    AgentInfo,
    AgentRuntime,
    AgentSpec,
    AgentStatus,
    Context,
    Delivery,
    Event,
    EventBus,
    LifecycleEvent,
    QoS,
    Subscription,
    SubscriptionClosed,
    SupervisionPolicy,
    WouldBlock,
)
from loom.runtime.tools import Tool, ToolRegistry

Handler = Callable[[Context, str, Event], Awaitable[None]]
Hook = Callable[[Context], Awaitable[None]]
T = TypeVar("T")

WAIT = 5.0
"""How long any single wait of a test may take before it fails (a guard, not a pace)."""

FAST = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.05)
"""The default restart policy with short backoffs."""


class FnBehaviour:
    """A :class:`~loom.runtime.Behaviour` made of functions; each restart gets a new one."""

    def __init__(
        self,
        on_event: Handler | None = None,
        on_start: Hook | None = None,
        on_stop: Hook | None = None,
        tools: Sequence[Tool] = (),
    ) -> None:
        self.state: dict[str, Any] = {}
        self._on_event = on_event
        self._on_start = on_start
        self._on_stop = on_stop
        self._tools = tuple(tools)

    async def on_start(self, ctx: Context) -> None:
        if self._on_start is not None:
            await self._on_start(ctx)

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        if self._on_event is not None:
            await self._on_event(ctx, topic, event)

    async def on_stop(self, ctx: Context) -> None:
        if self._on_stop is not None:
            await self._on_stop(ctx)

    def tools(self) -> Sequence[Tool]:
        return self._tools


def spec(
    agent_id: str,
    on_event: Handler | None = None,
    *,
    topics: Sequence[str] = (),
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    tools: Sequence[Tool] = (),
    qos: QoS = QoS.BATCHED,
    mailbox_size: int = 1000,
    max_concurrency: int = 1,
    policy: SupervisionPolicy = FAST,
    metadata: Mapping[str, str] | None = None,
) -> AgentSpec:
    """An :class:`AgentSpec` whose factory builds a :class:`FnBehaviour` of these functions."""

    def factory() -> FnBehaviour:
        return FnBehaviour(on_event, on_start, on_stop, tools)

    return AgentSpec(
        id=agent_id,
        factory=factory,
        topics=tuple(topics),
        qos=qos,
        mailbox_size=mailbox_size,
        max_concurrency=max_concurrency,
        policy=policy,
        metadata=dict(metadata or {}),
    )


class Seen(Generic[T]):
    """Items handlers report, in the order they reported them; tests wait for a count."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = anyio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[T]:
        """Wait until at least ``count`` items were added; return all of them."""
        with anyio.fail_after(timeout):
            while len(self.items) < count:
                await self._changed.wait()
        return self.items

    def __len__(self) -> int:
        return len(self.items)


class Watch:
    """Reads a subscription into ``seen`` and hands out the deliveries a test asks for.

    Each delivery is handed out at most once, in arrival order among those that match, so a
    test may wait for events in another order than they came.
    """

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.seen: list[Delivery] = []
        self._taken: set[int] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sub.close()

    def drain(self) -> list[Delivery]:
        """Read what is queued now, without waiting; return everything seen so far."""
        while True:
            try:
                self.seen.append(self.sub.receive_nowait())
            except (WouldBlock, SubscriptionClosed):
                return self.seen

    async def next(self, match: Callable[[Delivery], bool], timeout: float = WAIT) -> Delivery:
        """The first delivery not handed out yet that ``match`` accepts, waiting for it."""
        with anyio.fail_after(timeout):
            index = 0
            while True:
                while index < len(self.seen):
                    delivery = self.seen[index]
                    if index not in self._taken and match(delivery):
                        self._taken.add(index)
                        return delivery
                    index += 1
                self.seen.append(await self.sub.receive())

    async def take(self, count: int, timeout: float = WAIT) -> list[Delivery]:
        """The next ``count`` deliveries not handed out yet, in arrival order."""
        return [await self.next(lambda d: True, timeout) for _ in range(count)]


def lifecycle_of(delivery: Delivery) -> LifecycleEvent:
    return msgspec.json.decode(delivery.event.payload, type=LifecycleEvent)


class Lifecycle(Watch):
    """Lifecycle events of every agent (``loom.lifecycle.>``)."""

    def __init__(self, bus: EventBus) -> None:
        super().__init__(bus.subscribe("loom.lifecycle.>", qos=QoS.BACKGROUND))

    async def wait(
        self, agent_id: str, status: AgentStatus, timeout: float = WAIT
    ) -> LifecycleEvent:
        """The next ``status`` event of ``agent_id``."""
        delivery = await self.next(
            lambda d: (
                d.topic == f"loom.lifecycle.{agent_id}" and d.event.type == f"agent.{status.value}"
            ),
            timeout,
        )
        return lifecycle_of(delivery)

    def history(self, agent_id: str) -> list[str]:
        """Every status published for ``agent_id`` so far, in order."""
        return [
            lifecycle_of(d).status for d in self.drain() if d.topic == f"loom.lifecycle.{agent_id}"
        ]


class DeadLetters(Watch):
    """Dead letters of every agent (``loom.deadletter.>``)."""

    def __init__(self, bus: EventBus) -> None:
        super().__init__(bus.subscribe("loom.deadletter.>", qos=QoS.BACKGROUND))

    async def wait(self, agent_id: str, reason: str | None = None, timeout: float = WAIT) -> Event:
        """The next dead letter of ``agent_id`` (with that ``reason``, if given)."""
        delivery = await self.next(
            lambda d: (
                d.topic == f"loom.deadletter.{agent_id}"
                and (reason is None or d.event.metadata.get("dead_letter.reason") == reason)
            ),
            timeout,
        )
        return delivery.event

    def of(self, agent_id: str) -> list[Event]:
        """Every dead letter of ``agent_id`` queued or seen so far."""
        return [d.event for d in self.drain() if d.topic == f"loom.deadletter.{agent_id}"]


class Hosted:
    """What :func:`hosted` yields."""

    def __init__(self, bus: EventBus, rt: AgentRuntime, life: Lifecycle, dead: DeadLetters) -> None:
        self.bus = bus
        self.rt = rt
        self.life = life
        self.dead = dead


@asynccontextmanager
async def hosted(
    *,
    tools: ToolRegistry | None = None,
    stop_timeout_s: float = 5.0,
    stale_after_s: float = 15.0,
    sweep_interval_s: float = 5.0,
) -> AsyncIterator[Hosted]:
    """A bus, a runtime on it, and watchers of lifecycle events and dead letters (subscribed
    before any agent starts, so they see everything)."""
    async with (
        EventBus() as bus,
        Lifecycle(bus) as life,
        DeadLetters(bus) as dead,
        AgentRuntime(
            bus,
            tools=tools,
            stop_timeout_s=stop_timeout_s,
            stale_after_s=stale_after_s,
            sweep_interval_s=sweep_interval_s,
        ) as rt,
    ):
        yield Hosted(bus, rt, life, dead)


def info_of(rt: AgentRuntime, agent_id: str) -> AgentInfo:
    """The directory's snapshot of ``agent_id``, which must be known."""
    info = rt.directory.get(agent_id)
    assert info is not None, f"{agent_id} is not in the directory"
    return info


def event(payload: bytes | str = b"", *, type: str = "test", **metadata: str) -> Event:
    """A plain event for a test to publish."""
    if isinstance(payload, str):
        payload = payload.encode()
    return Event(type=type, payload=payload, metadata=metadata)


def task_count() -> int:
    """Tasks alive now, on either backend."""
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)
