"""``loom.serve_agent``: an agent run from async code, in this process, against a real server
on 127.0.0.1:0. Readiness is ``TaskGroup.start``'s; nothing sleeps."""

from __future__ import annotations

import anyio
import pytest

import loom
from loom import Agent, Context, capability, serve_agent
from loom.bridge import BridgeClient, BridgeServer
from loom.runtime import AgentRuntime, AgentStatus, Event, EventBus

pytestmark = pytest.mark.anyio


@capability("text.upper", description="Upper-case a text")
async def upper(text: str) -> str:
    return text.upper()


async def on_event(ctx: Context, topic: str, event: Event) -> None:
    # The tool call goes through the server, which routes it back to this agent's capability.
    result = await ctx.tool("text.upper", {"text": event.payload.decode()})
    await ctx.emit("output.upper", payload=str(result).encode())


async def test_serve_agent_runs_an_agent_against_a_server_until_cancelled() -> None:
    stopped: list[str] = []

    async def on_stop(ctx: Context) -> None:
        stopped.append(ctx.agent_id)

    agent = Agent(
        "upperer", topics=["input.*"], capabilities=[upper], on_event=on_event, on_stop=on_stop
    )
    with anyio.fail_after(20):
        async with (
            EventBus() as bus,
            AgentRuntime(bus) as runtime,
            BridgeServer(runtime, port=0, token="s3cret", grace_s=0.5) as server,
            bus.subscribe("output.*") as out,
        ):
            ended: list[AgentStatus] = []

            async def run(*, task_status: anyio.abc.TaskStatus[BridgeClient]) -> None:
                ended.append(
                    await serve_agent(
                        agent, server.address, token="s3cret", task_status=task_status
                    )
                )

            async with anyio.create_task_group() as tg:
                client = await tg.start(run)
                assert isinstance(client, BridgeClient)
                # Registered and started: the server knows the agent and its capability.
                assert runtime.directory.get("upperer") is not None
                await bus.publish("input.text", Event(type="text", payload=b"hello"))
                delivery = await out.receive()
                assert (delivery.topic, delivery.event.payload) == ("output.upper", b"HELLO")
                tg.cancel_scope.cancel()  # stops the agent: on_stop runs, then it disconnects
            assert stopped == ["upperer"]
            assert ended == []  # cancelled, it returns nothing: the caller chose to stop it


def test_serve_agent_is_loom_s_own() -> None:
    assert loom.serve_agent is serve_agent
    assert serve_agent.__module__ == "loom"


async def test_a_connected_agent_has_one_context_per_instance() -> None:
    # The runtime of the agent's process builds the context (no second one wrapped around
    # it): the same object in on_start, on_event and on_stop, with no runtime to reach.
    seen: list[Context] = []

    async def on_start(ctx: Context) -> None:
        seen.append(ctx)

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        seen.append(ctx)
        await ctx.emit("output.ctx", payload=b"none" if ctx.runtime is None else b"some")

    async def on_stop(ctx: Context) -> None:
        seen.append(ctx)

    agent = Agent("single", topics=["input.*"], on_start=on_start, on_event=handle, on_stop=on_stop)
    with anyio.fail_after(20):
        async with (
            EventBus() as bus,
            AgentRuntime(bus) as runtime,
            BridgeServer(runtime, port=0, grace_s=0.5) as server,
            bus.subscribe("output.*") as out,
            anyio.create_task_group() as tg,
        ):
            await tg.start(serve_agent, agent, server.address)
            await bus.publish("input.x", Event(type="x"))
            delivery = await out.receive()
            assert delivery.event.payload == b"none"
            tg.cancel_scope.cancel()
    assert len(seen) == 3
    assert seen[0] is seen[1] is seen[2]
