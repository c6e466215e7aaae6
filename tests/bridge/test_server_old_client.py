"""An agent written for the original Loom (section 1 of the wire contract) works unchanged:
raw generated stubs only, no hello, single deliveries, metadata envelope."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import grpc
import pytest

from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.runtime import AgentStatus, Event
from loom.runtime.tools import FunctionTool, ToolRegistry

from ._server_harness import OldAgent, channel, descriptor, event, serving, wait_until

pytestmark = pytest.mark.anyio

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


async def test_register_handshake_publish_and_deliver() -> None:
    async with serving() as s, channel(s.target) as ch:
        listener = await OldAgent(ch, "listener").connect(topics=["orders.>"])
        talker = await OldAgent(ch, "talker").connect()
        info = s.runtime.directory.get("listener")
        assert info is not None
        assert info.remote
        assert info.status is AgentStatus.RUNNING
        assert set(info.patterns) == {"agent.listener.replies", "orders.>"}
        assert [a.id for a in s.runtime.directory.by_topic("orders.eu.created")] == ["listener"]

        await talker.publish("orders.eu.created", event("order.created", b"42"))
        frame = await listener.next("delivery")
        assert frame.delivery.topic == "orders.eu.created"  # the concrete topic
        assert frame.delivery.event.type == "order.created"
        assert frame.delivery.event.payload == b"42"
        # The server stamped the sender, in both envelope forms.
        assert frame.delivery.event.metadata["sender"] == "talker"
        assert frame.delivery.event.envelope.sender == "talker"

        # A local publisher reaches the remote agent the same way.
        await s.bus.publish("orders.us.paid", Event(type="order.paid"))
        frame = await listener.next("delivery")
        assert frame.delivery.topic == "orders.us.paid"


@pytest.mark.parametrize("spelling", ["prefixed", "unprefixed"])
async def test_request_reply_between_two_old_clients(spelling: str) -> None:
    p = "loom." if spelling == "prefixed" else ""
    async with serving() as s, channel(s.target) as ch:
        requester = await OldAgent(ch, "requester").connect(topics=["inbox.requester"])
        responder = await OldAgent(ch, "responder").connect(topics=["svc.echo"])

        async def respond() -> None:
            frame = await responder.next("delivery")
            meta = frame.delivery.event.metadata
            # What an old client does: reply_to, else agent.{sender}.replies; keep the id.
            reply_to = meta.get("loom.reply_to") or meta.get("reply_to")
            sender = meta.get("loom.sender") or meta.get("sender")
            topic = reply_to or f"agent.{sender}.replies"
            correlation = meta.get("loom.correlation_id") or meta.get("correlation_id") or ""
            await responder.publish(
                topic,
                event(
                    "echo.reply",
                    frame.delivery.event.payload,
                    {f"{p}correlation_id": correlation, f"{p}sender": "responder"},
                ),
            )

        for n, reply_to in enumerate(["", "inbox.requester"]):
            async with anyio.create_task_group() as tg:
                tg.start_soon(respond)
                meta = {f"{p}correlation_id": f"corr-{n}", f"{p}sender": "requester"}
                if reply_to:
                    meta[f"{p}reply_to"] = reply_to
                await requester.publish("svc.echo", event("echo.request", b"hi", meta))
                frame = await requester.next("delivery")
            expected = reply_to or "agent.requester.replies"
            assert frame.delivery.topic == expected
            assert frame.delivery.event.metadata["correlation_id"] == f"corr-{n}"
            assert frame.delivery.event.metadata["sender"] == "responder"
            assert frame.delivery.event.payload == b"hi"


async def test_heartbeat_unary_and_in_stream_ping_refreshes_liveness() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "beating")
        reply = await agent.bridge.Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=1234))
        assert (reply.timestamp_ms, reply.status) == (1234, "ok")
        await agent.connect()
        directory = s.runtime.directory
        # Mark it stale as the sweep would, then ping: it is running again, seen just now.
        long_ago = time.time_ns() // 1_000_000 - 60_000
        directory.heartbeat("beating", now_ms=long_ago)
        assert directory.sweep(stale_after_s=1) == ["beating"]
        before = time.time_ns() // 1_000_000
        await agent.ping(99)
        info = directory.get("beating")
        assert info is not None
        assert info.status is AgentStatus.RUNNING
        assert info.last_heartbeat_ms >= before


async def _serve_tool(agent: OldAgent, answer: Any = None, *, calls: int = 1) -> list[Any]:
    """Answer ``calls`` pushed tool calls with ``answer`` (or the arguments' sum)."""
    seen = []
    for _ in range(calls):
        frame = await agent.next("tool_call")
        args = json.loads(frame.tool_call.arguments)
        seen.append((frame.tool_call.name, args, frame.tool_call.timeout_ms))
        await agent.answer(
            frame.tool_call.id, answer if answer is not None else args["a"] + args["b"]
        )
    return seen


async def test_forward_tool_call_to_another_agents_declared_tool() -> None:
    async with serving() as s, channel(s.target) as ch:
        provider = await OldAgent(ch, "calc").connect(tools=[descriptor("calc.add", ADD_SCHEMA)])
        assert s.runtime.directory.by_capability("calc.add")[0].id == "calc"
        caller = OldAgent(ch, "caller")
        seen: list[Any] = []

        async def serve() -> None:
            seen.extend(await _serve_tool(provider))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            result = await caller.bridge.ForwardToolCall(
                tools_pb2.ToolCall(
                    id="call-1", name="calc.add", arguments='{"a": 2, "b": 3}', timeout_ms=5000
                )
            )
        assert result.id == "call-1"
        assert result.status == tools_pb2.TOOL_OK
        assert json.loads(result.output) == 5
        name, args, timeout_ms = seen[0]
        assert (name, args) == ("calc.add", {"a": 2, "b": 3})
        assert 0 < timeout_ms <= 5000  # what is left of the call's timeout
        assert s.runtime.directory.get("calc").in_flight == 0  # type: ignore[union-attr]


async def test_forward_tool_call_to_a_runtime_tool() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    registry = ToolRegistry()
    registry.register(
        FunctionTool(add, name="math.add", description="Add.", parameters_schema=ADD_SCHEMA)
    )
    async with serving(tools=registry) as s, channel(s.target) as ch:
        caller = OldAgent(ch, "caller")
        result = await caller.bridge.ForwardToolCall(
            tools_pb2.ToolCall(name="math.add", arguments='{"a": 40, "b": 2}')
        )
        assert result.status == tools_pb2.TOOL_OK, result
        assert json.loads(result.output) == 42
        assert result.id  # the server made one


@pytest.mark.parametrize(
    ("name", "arguments", "status", "needle"),
    [
        ("no.such.tool", "{}", tools_pb2.TOOL_NOT_FOUND, "no such tool"),
        ("calc.add", "{not json", tools_pb2.TOOL_INVALID_ARGUMENTS, "not valid JSON"),
        ("calc.add", "[1, 2]", tools_pb2.TOOL_INVALID_ARGUMENTS, "JSON object"),
        ("calc.add", '{"a": 1}', tools_pb2.TOOL_INVALID_ARGUMENTS, "'b' is a required"),
        ("calc.add", '{"a": "x", "b": 1}', tools_pb2.TOOL_INVALID_ARGUMENTS, "not of type"),
    ],
)
async def test_forward_tool_call_failures_map_to_their_status(
    name: str, arguments: str, status: int, needle: str
) -> None:
    async with serving() as s, channel(s.target) as ch:
        await OldAgent(ch, "calc").connect(tools=[descriptor("calc.add", ADD_SCHEMA)])
        caller = OldAgent(ch, "caller")
        result = await caller.bridge.ForwardToolCall(
            tools_pb2.ToolCall(id="x", name=name, arguments=arguments)
        )
        assert result.status == status, result
        assert needle in result.error.message
        assert result.error.code
        # Nothing was pushed to the agent: it was refused before.
        assert s.server.statistics().pending_tool_calls == 0


async def test_agent_reported_failure_is_tool_error() -> None:
    async with serving() as s, channel(s.target) as ch:
        provider = await OldAgent(ch, "calc").connect(tools=[descriptor("calc.fail")])

        async def fail() -> None:
            frame = await provider.next("tool_call")
            result = tools_pb2.ToolResult(
                id=frame.tool_call.id,
                status=tools_pb2.TOOL_ERROR,
                error=tools_pb2.ToolError(code="Boom", message="it broke"),
            )
            await provider.send(bridge_pb2.ClientEvent(tool_result=result))

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)
            result = await OldAgent(ch, "c").bridge.ForwardToolCall(
                tools_pb2.ToolCall(name="calc.fail", arguments="{}")
            )
        assert result.status == tools_pb2.TOOL_ERROR
        assert result.error.code == "Boom"
        assert "it broke" in result.error.message


async def test_timeout_ms_is_honoured() -> None:
    async with serving() as s, channel(s.target) as ch:
        provider = await OldAgent(ch, "slow").connect(tools=[descriptor("slow.op")])
        caller = OldAgent(ch, "caller")
        start = anyio.current_time()
        result = await caller.bridge.ForwardToolCall(
            tools_pb2.ToolCall(name="slow.op", arguments="{}", timeout_ms=200)
        )
        elapsed = anyio.current_time() - start
        assert result.status == tools_pb2.TOOL_TIMEOUT, result
        assert 0.15 <= elapsed < 1.5
        pushed = await provider.next("tool_call")
        assert 0 < pushed.tool_call.timeout_ms <= 200
        assert s.server.statistics().pending_tool_calls == 0


async def test_the_callers_deadline_is_honoured() -> None:
    async with serving() as s, channel(s.target) as ch:
        provider = await OldAgent(ch, "slow").connect(tools=[descriptor("slow.op")])
        caller = OldAgent(ch, "caller")
        start = anyio.current_time()
        # The server ends the call at the deadline: the caller sees its answer (TOOL_TIMEOUT)
        # or gRPC's DEADLINE_EXCEEDED, whichever reaches it first; never a 60 s wait.
        outcome: object
        try:
            result = await caller.bridge.ForwardToolCall(
                tools_pb2.ToolCall(name="slow.op", arguments="{}", timeout_ms=60_000), timeout=0.3
            )
            outcome = result.status
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code()
        assert outcome in (grpc.StatusCode.DEADLINE_EXCEEDED, tools_pb2.TOOL_TIMEOUT)
        assert anyio.current_time() - start < 1.5
        pushed = await provider.next("tool_call")
        # The agent was told the deadline, not the longer timeout_ms.
        assert 0 < pushed.tool_call.timeout_ms <= 300
        await wait_until(lambda: not s.server.statistics().pending_tool_calls)
        assert s.runtime.directory.get("slow").in_flight == 0  # type: ignore[union-attr]


async def test_a_late_result_is_discarded_and_the_stream_goes_on() -> None:
    async with serving() as s, channel(s.target) as ch:
        provider = await OldAgent(ch, "slow").connect(tools=[descriptor("slow.op")])
        caller = OldAgent(ch, "caller")
        result = await caller.bridge.ForwardToolCall(
            tools_pb2.ToolCall(name="slow.op", arguments="{}", timeout_ms=100)
        )
        assert result.status == tools_pb2.TOOL_TIMEOUT
        pushed = await provider.next("tool_call")
        await provider.answer(pushed.tool_call.id, "too late")
        await provider.ping(7)  # no error frame came before the pong
