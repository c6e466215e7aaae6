"""The EventStream's life: handshake violations, identity, registration errors, the end of a
stream (closed, or its process killed) with tool calls pending."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import grpc
import msgspec
import pytest

from loom.bridge import Limits, ServerStatistics
from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.runtime import AgentStatus, Event

from ..runtime._agents_support import spec
from ._server_harness import OldAgent, channel, descriptor, event, serving, status_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "first",
    [
        bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)),
        bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic="a.b")),
        bridge_pb2.ClientEvent(),
    ],
    ids=["ping", "publish", "empty"],
)
async def test_a_first_frame_other_than_ack_is_invalid_argument(
    first: bridge_pb2.ClientEvent,
) -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "a1")
        await agent.register()
        call = await agent.open(handshake=False)
        await call.write(first)
        code, details = await status_of(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "first ClientEvent must be an ack" in details
        assert s.runtime.directory.get("a1") is None  # never attached


async def test_handshake_errors() -> None:
    async with serving(limits=Limits(handshake_timeout_s=0.2)) as s, channel(s.target) as ch:
        # Never registered.
        call = await OldAgent(ch, "ghost").open(handshake=False)
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="ghost")))
        code, details = await status_of(call)
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert "not registered" in details
        # An ack without the id.
        call = await OldAgent(ch, "x").open(handshake=False)
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack()))
        assert (await status_of(call))[0] is grpc.StatusCode.INVALID_ARGUMENT
        # The client ends its side before any frame.
        call = await OldAgent(ch, "x").open(handshake=False)
        await call.done_writing()
        code, details = await status_of(call)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "before the handshake" in details
        # Nothing at all within the handshake timeout.
        call = await OldAgent(ch, "x").open(handshake=False)
        code, details = await status_of(call)
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no handshake" in details
        # The server kept serving all along.
        await OldAgent(ch, "fine").connect()


async def test_one_stream_per_agent_and_no_reregistration_while_connected() -> None:
    async with serving() as s, channel(s.target) as ch:
        first = await OldAgent(ch, "solo").connect()
        second = OldAgent(ch, "solo")
        call = await second.open(handshake=False)
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="solo")))
        code, details = await status_of(call)
        assert code is grpc.StatusCode.ALREADY_EXISTS
        assert "another stream" in details
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await second.register()
        assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
        await first.ping(5)  # the first stream is untouched


async def test_registration_errors_are_typed() -> None:
    async with serving() as s, channel(s.target) as ch:
        await s.runtime.start(spec("local1"))
        cases = [
            (OldAgent(ch, "bad.id"), {}, grpc.StatusCode.INVALID_ARGUMENT, "invalid agent id"),
            (OldAgent(ch, "ok"), {"topics": ["a..b"]}, grpc.StatusCode.INVALID_ARGUMENT, "a..b"),
            (
                OldAgent(ch, "ok"),
                {"tools": [descriptor("t", "{nope")]},
                grpc.StatusCode.INVALID_ARGUMENT,
                "not JSON",
            ),
            (
                OldAgent(ch, "ok"),
                {"tools": [descriptor("t", {"type": "array"})]},
                grpc.StatusCode.INVALID_ARGUMENT,
                "must be an object",
            ),
            (
                OldAgent(ch, "ok"),
                {"tools": [descriptor("bad name!")]},
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid tool name",
            ),
            (
                OldAgent(ch, "ok"),
                {"tools": [descriptor("t"), descriptor("t")]},
                grpc.StatusCode.INVALID_ARGUMENT,
                "twice",
            ),
            (OldAgent(ch, "local1"), {}, grpc.StatusCode.ALREADY_EXISTS, "local agent"),
        ]
        for agent, kwargs, code, needle in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent.register(**kwargs)  # type: ignore[arg-type]
            assert info.value.code() is code, (agent.id, kwargs)
            assert needle in (info.value.details() or ""), info.value.details()
        unknown_provider = tools_pb2.ToolDescriptor(name="t", provider=42)  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await OldAgent(ch, "ok").register(tools=[unknown_provider])
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_may_only_act_as_its_own_agent() -> None:
    async with serving() as s, channel(s.target) as ch:
        mallory = await OldAgent(ch, "mallory").connect(topics=["watch.>"])
        alice = await OldAgent(ch, "alice").connect(tools=[descriptor("alice.work")])
        # Publishing as another agent: refused, not delivered, the stream goes on.
        for meta in ({"loom.sender": "alice"}, {"sender": "alice"}):
            await mallory.publish("watch.x", event("forged", metadata=meta))
            frame = await mallory.next("err")
            assert frame.err.code == "PERMISSION_DENIED"
            assert "cannot publish as 'alice'" in frame.err.message
        await mallory.publish("watch.x", event("honest", metadata={"sender": "mallory"}))
        assert (await mallory.next("delivery")).delivery.event.type == "honest"

        # Answering a tool call pushed to another agent: refused; the real answer still counts.
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                result = await mallory.bridge.ForwardToolCall(
                    tools_pb2.ToolCall(name="alice.work", arguments="{}")
                )
                assert result.status == tools_pb2.TOOL_OK
                assert json.loads(result.output) == "from alice"

            tg.start_soon(call)
            pushed = await alice.next("tool_call")
            forged = tools_pb2.ToolResult(id=pushed.tool_call.id, output='"from mallory"')
            await mallory.send(bridge_pb2.ClientEvent(tool_result=forged))
            frame = await mallory.next("err")
            assert frame.err.code == "PERMISSION_DENIED"
            await alice.answer(pushed.tool_call.id, "from alice")


async def test_unknown_and_repeated_frames_get_errors_and_the_stream_goes_on() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "a").connect()
        await agent.send(bridge_pb2.ClientEvent())
        frame = await agent.next("err")
        assert frame.err.code == "INVALID_ARGUMENT"
        assert "no known 'msg' variant" in frame.err.message
        # Later acks (old clients ack deliveries) are accepted silently.
        await agent.send(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="whatever")))
        # A publish with a malformed topic or envelope: an Error frame, nothing published.
        await agent.publish("bad..topic", event())
        frame = await agent.next("err")
        assert frame.err.code == "INVALID_ARGUMENT"
        assert "bad..topic" in frame.err.message
        await agent.publish("a.b", event(metadata={"ttl": "many"}))
        frame = await agent.next("err")
        assert frame.err.code == "INVALID_ARGUMENT"
        assert "ttl" in frame.err.message
        await agent.ping(3)


async def test_end_of_stream_fails_pending_calls_at_once_and_disconnects() -> None:
    async with serving() as s, channel(s.target) as ch:
        worker = await OldAgent(ch, "worker").connect(
            topics=["jobs.>"], tools=[descriptor("worker.run")]
        )
        subs_with_worker = s.bus.subscription_count()
        caller = OldAgent(ch, "caller")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                results: list[tools_pb2.ToolResult] = []

                async def call() -> None:
                    results.append(
                        await caller.bridge.ForwardToolCall(
                            tools_pb2.ToolCall(name="worker.run", arguments="{}", timeout_ms=30_000)
                        )
                    )

                tg.start_soon(call)
                await worker.next("tool_call")
                ended = anyio.current_time()
                await worker.close()
        assert anyio.current_time() - ended < 1.0
        (result,) = results
        assert result.status == tools_pb2.TOOL_ERROR
        assert result.error.code == "AGENT_DISCONNECTED"
        assert "worker" in result.error.message
        info = s.runtime.directory.get("worker")
        assert info is not None
        assert info.status is AgentStatus.DISCONNECTED
        assert info.patterns == ()
        assert info.capabilities == ()
        assert s.bus.subscription_count() == subs_with_worker - 1  # its mailbox is gone
        assert s.runtime.directory.by_topic("jobs.x") == []
        stats = s.server.statistics()
        assert stats.streams_opened == 1  # the worker's; its frames and bytes counted as well
        wire = {"frames_received": 0, "bytes_received": 0, "frames_sent": 0, "bytes_sent": 0}
        assert msgspec.structs.replace(stats, streams_opened=0, **wire) == ServerStatistics(
            registered=1, connected=0, pending_tool_calls=0
        )
        # Its tool is gone with it; it is expected back, so a call waits for it, within its
        # timeout (issue 11), rather than fail at once with TOOL_NOT_FOUND.
        gone = await caller.bridge.ForwardToolCall(
            tools_pb2.ToolCall(name="worker.run", timeout_ms=200)
        )
        assert gone.status == tools_pb2.TOOL_TIMEOUT
        # It may come back: the registration holds, a new stream attaches it again.
        again = OldAgent(ch, "worker")
        await again.open()
        info = s.runtime.directory.get("worker")
        assert info is not None
        assert info.status is AgentStatus.RUNNING
        await s.bus.publish("jobs.y", Event(type="job"))
        assert (await again.next("delivery")).delivery.topic == "jobs.y"


async def test_a_killed_agent_process_fails_its_call_within_a_second() -> None:
    script = Path(__file__).with_name("_killable_agent.py")
    async with serving() as s, channel(s.target) as ch:
        proc = await anyio.open_process(
            [sys.executable, str(script), s.target, "victim"], stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            lines = proc.stdout

            async def line() -> str:
                data = b""
                while not data.endswith(b"\n"):
                    data += await lines.receive(1)
                return data.decode().strip()

            with anyio.fail_after(10):
                assert await line() == "ready"
            caller = OldAgent(ch, "caller")
            results: list[tools_pb2.ToolResult] = []
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(
                            await caller.bridge.ForwardToolCall(
                                tools_pb2.ToolCall(name="victim.work", timeout_ms=30_000)
                            )
                        )

                    tg.start_soon(call)
                    assert (await line()).startswith("call ")
                    proc.kill()  # SIGKILL: no goodbye from the agent
                    killed = anyio.current_time()
            assert anyio.current_time() - killed < 1.0
            (result,) = results
            assert result.status == tools_pb2.TOOL_ERROR
            info = s.runtime.directory.get("victim")
            assert info is not None
            assert info.status is AgentStatus.DISCONNECTED
        finally:
            if proc.returncode is None:
                proc.kill()
            with anyio.CancelScope(shield=True):
                await proc.wait()
