"""``ctx.tool(..., idempotency_key=...)``: a keyed call may be retried by the tool's policy and
the tool receives the key at every attempt; a call without a key to a tool not marked
idempotent is made once. In process, and from an agent connected through a real
``BridgeServer`` on 127.0.0.1:0 (the key travels in ``ToolCall.headers``, to the server's
tool and on to another connected agent's capability)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from loom import Agent, Context, capability, serve_agent
from loom.bridge import BridgeClient, BridgeServer
from loom.runtime import AgentRuntime, Event, EventBus
from loom.runtime.resilience import Policy, Retry, current_idempotency_key
from loom.runtime.tools import FunctionTool, ToolFailed, ToolRegistry

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {}}
FAST_RETRY = Retry(policy="constant", duration=0.001, max_retries=3)


class Flaky:
    """Fails the first ``fail_first`` calls; records the key each attempt received."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.keys: list[str | None] = []

    async def __call__(self) -> int:
        self.keys.append(current_idempotency_key())
        if len(self.keys) <= self.fail_first:
            raise ConnectionError(f"scheduled failure {len(self.keys)}")
        return len(self.keys)


def _register(runtime: AgentRuntime, name: str, fn: Flaky) -> None:
    tool = FunctionTool(fn, name=name, description="d", parameters_schema=SCHEMA)
    runtime.tools.register(tool, policy=Policy.of(name, retry=FAST_RETRY))


Call = Callable[[Context], Awaitable[Any]]


def _caller(agent_id: str, calls: dict[str, Call], results: dict[str, Any]) -> Agent:
    """An agent that, for an event of type ``t``, runs ``calls[t]`` and keeps what it gave
    (or the error it raised)."""
    done = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        try:
            results[event.type] = await calls[event.type](ctx)
        except ToolFailed as exc:
            results[event.type] = exc
        if len(results) == len(calls):
            done.set()

    agent = Agent(agent_id, topics=[f"{agent_id}.go"], on_event=on_event)
    agent.done = done  # type: ignore[attr-defined]
    return agent


async def test_a_keyed_ctx_tool_call_is_retried_with_its_key_in_process() -> None:
    keyed, unkeyed = Flaky(fail_first=2), Flaky(fail_first=1)
    results: dict[str, Any] = {}
    calls: dict[str, Call] = {
        "keyed": lambda ctx: ctx.tool("svc.keyed", {}, idempotency_key="order-7"),
        "unkeyed": lambda ctx: ctx.tool("svc.unkeyed", {}),
    }
    agent = _caller("caller", calls, results)
    with anyio.fail_after(10):
        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            _register(runtime, "svc.keyed", keyed)
            _register(runtime, "svc.unkeyed", unkeyed)
            await runtime.start(agent)
            await bus.publish("caller.go", Event(type="keyed"))
            await bus.publish("caller.go", Event(type="unkeyed"))
            await agent.done.wait()  # type: ignore[attr-defined]
    assert results["keyed"] == 3
    assert keyed.keys == ["order-7"] * 3  # every attempt, the same key
    assert isinstance(results["unkeyed"], ToolFailed)
    assert unkeyed.keys == [None]  # not idempotent, no key: made once


@capability("agent.effect", description="Records the key it was called with")
async def effect() -> str:
    return current_idempotency_key() or "no key"


async def test_the_key_travels_over_the_bridge_to_the_tool_and_to_an_agents_capability() -> None:
    keyed, unkeyed = Flaky(fail_first=2), Flaky(fail_first=1)
    results: dict[str, Any] = {}
    calls: dict[str, Call] = {
        "keyed": lambda ctx: ctx.tool("svc.keyed", {}, idempotency_key="mail-42"),
        "unkeyed": lambda ctx: ctx.tool("svc.unkeyed", {}),
        # Through the server, pushed on to the other connected agent's capability.
        "pushed": lambda ctx: ctx.tool("agent.effect", {}, idempotency_key="push-9"),
        "pushed-unkeyed": lambda ctx: ctx.tool("agent.effect", {}),
    }
    agent = _caller("remote-caller", calls, results)
    provider = Agent("provider", capabilities=[effect])
    with anyio.fail_after(30):
        async with (
            EventBus() as bus,
            AgentRuntime(bus) as runtime,
            BridgeServer(runtime, port=0, grace_s=0.5) as server,
        ):
            _register(runtime, "svc.keyed", keyed)
            _register(runtime, "svc.unkeyed", unkeyed)

            async def run(which: Agent, *, task_status: anyio.abc.TaskStatus[BridgeClient]) -> None:
                await serve_agent(which, server.address, task_status=task_status)

            async with anyio.create_task_group() as tg:
                await tg.start(run, provider)
                await tg.start(run, agent)
                for kind in calls:
                    await bus.publish("remote-caller.go", Event(type=kind))
                await agent.done.wait()  # type: ignore[attr-defined]
                # The server's own call to the agent's capability carries its key too.
                direct = await runtime.call_tool("agent.effect", {}, idempotency_key="srv-1")
                tg.cancel_scope.cancel()
    assert results["keyed"] == 3
    assert keyed.keys == ["mail-42"] * 3
    assert isinstance(results["unkeyed"], ToolFailed)
    assert unkeyed.keys == [None]
    assert (results["pushed"], results["pushed-unkeyed"], direct) == ("push-9", "no key", "srv-1")


async def test_a_call_made_without_a_key_inside_a_keyed_one_gets_no_key() -> None:
    """The outer call's key is that call's: a tool it calls without one must not receive it
    (nor send it on to another process as its own)."""
    inner = Flaky(fail_first=0)
    registry = ToolRegistry()
    registry.register(
        FunctionTool(inner, name="svc.inner", description="d", parameters_schema=SCHEMA)
    )

    async def outer() -> list[Any]:
        return [current_idempotency_key(), await registry.call("svc.inner", {})]

    registry.register(
        FunctionTool(outer, name="svc.outer", description="d", parameters_schema=SCHEMA)
    )
    with anyio.fail_after(10):
        assert await registry.call("svc.outer", {}, idempotency_key="outer-1") == ["outer-1", 1]
    assert inner.keys == [None]
