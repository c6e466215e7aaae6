"""Every limit refuses with a clear, typed error, and the server keeps serving."""

from __future__ import annotations

import anyio
import grpc
import pytest

from loom.bridge import Limits
from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.runtime import Event, InvalidArgument

from ._server_harness import (
    OldAgent,
    channel,
    descriptor,
    event,
    serving,
    status_of,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_max_message_bytes() -> None:
    async with serving(limits=Limits(max_message_bytes=4096)) as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "small").connect(topics=["big.>"])
        # Too large to send to the agent: skipped with an Error frame, the stream goes on.
        await s.bus.publish("big.out", Event(type="big", payload=b"x" * 8000))
        frame = await agent.next("err")
        assert frame.err.code == "RESOURCE_EXHAUSTED"
        assert "max_message_bytes" in frame.err.message
        await agent.ping(1)
        # A unary call too large: refused by gRPC itself.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent.tools.Call(tools_pb2.ToolCall(name="x", arguments="x" * 8000))
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # A frame too large on the stream ends that stream, with the same code.
        await agent.publish("big.in", event(payload=b"y" * 8000))
        code, _ = await status_of(agent.call)  # type: ignore[arg-type]
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The server is fine, and so is the agent, once it reconnects.
        await OldAgent(ch, "small").open()


async def test_max_topics_per_agent() -> None:
    async with serving(limits=Limits(max_topics_per_agent=2)) as s, channel(s.target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await OldAgent(ch, "greedy").register(topics=["a", "b", "c"])
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_topics_per_agent = 2" in (info.value.details() or "")
        agent = await OldAgent(ch, "modest").connect(topics=["a", "b"])
        request = bridge_pb2.SubscribeRequest(request_id="r", pattern="c")
        await agent.send(bridge_pb2.ClientEvent(subscribe=request))
        result = (await agent.next("subscription")).subscription
        assert (result.ok, result.code) == (False, "RESOURCE_EXHAUSTED")
        assert "max_topics_per_agent" in result.reason


async def test_max_pending_tool_calls() -> None:
    async with serving(limits=Limits(max_pending_tool_calls=1)) as s, channel(s.target) as ch:
        worker = await OldAgent(ch, "busy").connect(tools=[descriptor("busy.op")])
        caller = OldAgent(ch, "caller")
        async with anyio.create_task_group() as tg:
            first: list[tools_pb2.ToolResult] = []

            async def call_first() -> None:
                first.append(
                    await caller.bridge.ForwardToolCall(tools_pb2.ToolCall(name="busy.op"))
                )

            tg.start_soon(call_first)
            pushed = await worker.next("tool_call")
            second = await caller.bridge.ForwardToolCall(tools_pb2.ToolCall(name="busy.op"))
            assert second.status == tools_pb2.TOOL_ERROR
            assert second.error.code == "RESOURCE_EXHAUSTED"
            assert "max_pending_tool_calls = 1" in second.error.message
            await worker.answer(pushed.tool_call.id, "done")
        assert first[0].status == tools_pb2.TOOL_OK


async def test_max_agents_forgets_disconnected_agents_first() -> None:
    async with serving(limits=Limits(max_agents=2)) as s, channel(s.target) as ch:
        a = await OldAgent(ch, "a").connect()
        await OldAgent(ch, "b").connect()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await OldAgent(ch, "c").register()
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_agents = 2" in (info.value.details() or "")
        await a.close()
        await wait_until(lambda: s.server.statistics().connected == 1)
        await OldAgent(ch, "c").connect()  # "a" is forgotten to make room
        assert s.runtime.directory.get("a") is None
        call = await OldAgent(ch, "a").open(handshake=False)
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="a")))
        assert (await status_of(call))[0] is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "field",
    [
        {"max_message_bytes": 10},
        {"max_agents": 0},
        {"publish_window": 0},
        {"tool_timeout_s": 0},
        {"handshake_timeout_s": float("nan")},
    ],
)
def test_limits_are_checked(field: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument, match=next(iter(field))):
        Limits(**field)  # type: ignore[arg-type]
