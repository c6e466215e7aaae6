"""``ctx.spawn`` for an agent connected through the bridge: the child connects too.

In process, ``ctx.spawn(child)`` starts the child in the parent's runtime, as the child of the
parent's instance. Remotely the child runs in the parent's process as a remote agent of its
own: its own connection, registration and local runtime, exactly what ``Agent.run`` gives it,
so the server, the directory and every other agent see it as they see its parent.

Its lifetime is tied to the parent's instance through a *link*: a small agent of the parent's
local runtime, started as the instance's child, whose start connects the child and whose stop
disconnects it. So the runtime's own rule holds unchanged: the child stops first whenever the
instance that spawned it ends (stop, restart, failure), and a restarted parent can spawn it
again. The child has its own supervision policy, applied by its own local runtime. A child
that cannot connect or start makes ``ctx.spawn`` raise, as in process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from loom.runtime import AgentSpec, Context, Event, Strategy, SupervisionPolicy
from loom.runtime.lowlevel import ContextHost, HasAgentSpec
from loom.runtime.tools import Tool

__all__ = ["Connect", "spawn_linked"]

_LINK_POLICY = SupervisionPolicy(strategy=Strategy.STOP)

Connect = Callable[..., Awaitable[Any]]
"""``serve_agent`` with the parent's address and credentials bound: ``connect(spec,
task_status=...)`` runs the child connected until cancelled."""


class _Link:
    """The behaviour of a link agent (see the module docs)."""

    def __init__(self, child: AgentSpec, tg: TaskGroup, connect: Connect) -> None:
        self._child = child
        self._tg = tg
        self._connect = connect
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()

    async def on_start(self, ctx: Context) -> None:
        await self._tg.start(self._run)  # returns once the child is connected and started

    async def _run(self, *, task_status: TaskStatus[Any]) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                await self._connect(self._child, task_status=task_status)
        finally:
            self._done.set()

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        return None  # a link's mailbox carries nothing the child needs

    async def on_stop(self, ctx: Context) -> None:
        if self._scope is not None:
            self._scope.cancel()  # the child stops (its on_stop runs), then disconnects
            await self._done.wait()

    def tools(self) -> Sequence[Tool]:
        return ()


async def spawn_linked(
    local: ContextHost, agent: AgentSpec | HasAgentSpec, tg: TaskGroup, connect: Connect
) -> str:
    """Start ``agent`` connected on its own, linked to the instance whose context ``local``
    (the local runtime's own host of it) serves; return its id.

    Raises:
        AgentStartFailed: the child could not connect (its id is taken, say) or start.
        AgentExists: the parent runs a child of that id already.
    """
    spec = agent if isinstance(agent, AgentSpec) else agent.agent_spec()
    link = AgentSpec(
        id=spec.id,
        factory=lambda: _Link(spec, tg, connect),
        # A child that cannot connect has been retried already (connect_timeout): the
        # spawn fails at once, not once per restart of the link.
        policy=_LINK_POLICY,
        metadata={"loom.link": "a remote child, connected on its own"},
    )
    return await local.spawn(link)
