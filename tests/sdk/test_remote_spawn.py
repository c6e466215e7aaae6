"""``ctx.spawn`` from an agent connected through the bridge: the child connects on its own and
ends with the instance that spawned it, as in process."""

from __future__ import annotations

import functools

import anyio
import msgspec
import pytest

from loom import Agent, Context
from loom._remote import serve_agent
from loom.runtime import AgentStatus, Event

from ..bridge._client_support import FAST, Hosting, hosting, next_of
from ..bridge._server_harness import wait_until

pytestmark = pytest.mark.anyio


def _status(host: Hosting, agent_id: str) -> AgentStatus | None:
    info = host.runtime.directory.get(agent_id)
    return None if info is None else info.status


async def kid(ctx: Context, topic: str, event: Event) -> None:
    await ctx.emit("out.kid", b"kid:" + event.payload, type="kid")


async def parent(ctx: Context, topic: str, event: Event) -> None:
    try:
        child = await ctx.spawn(Agent(event.payload.decode(), topics=["kid.in"], on_event=kid))
    except Exception as exc:  # reported, as a handler would
        await ctx.emit("out.spawn", type(exc).__name__, type="refused")
    else:
        await ctx.emit("out.spawn", child, type="spawned")


async def test_a_spawned_child_connects_and_stops_with_its_parent() -> None:
    async with hosting() as host, host.bus.subscribe("out.>") as out:
        await host.runtime.start(Agent("taken"))  # a local agent holds this id
        async with anyio.create_task_group() as tg:
            agent = Agent("parent", topics=["spawn"], on_event=parent)
            # The child connects with its parent's options: a taken id fails within a second.
            quick = msgspec.structs.replace(FAST, connect_timeout=1.0)
            await tg.start(functools.partial(serve_agent, agent, host.address, options=quick))
            await host.bus.publish("spawn", Event(payload=b"kid"))
            assert (await next_of(out, "spawned")).payload == b"kid"
            info = host.runtime.directory.get("kid")
            assert info is not None
            assert info.remote
            await host.bus.publish("kid.in", Event(payload=b"hi"))
            assert (await next_of(out, "kid")).payload == b"kid:hi"
            # An id the server gives to someone else: the spawn raises in the handler.
            await host.bus.publish("spawn", Event(payload=b"taken"))
            assert (await next_of(out, "refused")).payload == b"AgentStartFailed"
            tg.cancel_scope.cancel()  # the parent stops: its child first
        await wait_until(lambda: _status(host, "kid") is AgentStatus.DISCONNECTED)
        await wait_until(lambda: _status(host, "parent") is AgentStatus.DISCONNECTED)
