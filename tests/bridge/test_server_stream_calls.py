"""Tool calls made on the stream (``ClientEvent.call`` -> ``ServerEvent.call_result``), frame by
frame through the raw stubs: results, bad calls, withdrawal, and the end of the stream."""

from __future__ import annotations

import json

import anyio
import pytest

from loom import capability
from loom.bridge import Limits
from loom.bridge._generated import bridge_pb2, tools_pb2
from loom.bridge._wire_types import VALIDATES_KEY
from loom.runtime.tools import ToolRegistry

from ._server_harness import OldAgent, channel, descriptor, serving, wait_until

pytestmark = pytest.mark.anyio

CALLS = bridge_pb2.STREAM_FEATURE_TOOL_CALLS


class Slow:
    """A tool that runs until released, and says whether it was cancelled."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()

    def registry(self) -> ToolRegistry:
        @capability("t.slow")
        async def slow() -> str:
            self.started.set()
            try:
                await self.release.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
            return "released"

        @capability("t.add")
        async def add(a: int, b: int) -> int:
            return a + b

        tools = ToolRegistry()
        tools.register(slow)
        tools.register(add)
        return tools


def call(
    call_id: str, name: str, arguments: object = None, timeout_ms: int = 0
) -> bridge_pb2.ClientEvent:
    text = "" if arguments is None else json.dumps(arguments)
    msg = tools_pb2.ToolCall(id=call_id, name=name, arguments=text, timeout_ms=timeout_ms)
    return bridge_pb2.ClientEvent(call=msg)


async def connected(ch: object, agent_id: str) -> OldAgent:
    agent = await OldAgent(ch, agent_id).connect()  # type: ignore[arg-type]
    await agent.send(bridge_pb2.ClientEvent(hello=bridge_pb2.StreamHello(features=[CALLS])))
    welcome = (await agent.next("welcome")).welcome
    assert CALLS in welcome.features
    return agent


async def test_a_call_on_the_stream_is_answered_with_its_id() -> None:
    async with serving(tools=Slow().registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("c1", "t.add", {"a": 2, "b": 3}))
        result = (await agent.next("call_result")).call_result
        assert (result.id, result.status, json.loads(result.output)) == ("c1", tools_pb2.TOOL_OK, 5)


async def test_calls_run_side_by_side_and_answer_out_of_order() -> None:
    slow = Slow()
    async with serving(tools=slow.registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("slow", "t.slow"))
        with anyio.fail_after(5):
            await slow.started.wait()
        # The slow call does not hold up the reader: the next call is answered first.
        await agent.send(call("fast", "t.add", {"a": 1, "b": 1}))
        assert (await agent.next("call_result")).call_result.id == "fast"
        slow.release.set()
        result = (await agent.next("call_result")).call_result
        assert (result.id, json.loads(result.output)) == ("slow", "released")


@pytest.mark.parametrize(
    ("frame", "status", "text"),
    [
        (call("", "t.add", {"a": 1, "b": 2}), tools_pb2.TOOL_INVALID_ARGUMENTS, "needs an id"),
        (call("x", "t.add", {"a": "one", "b": 2}), tools_pb2.TOOL_INVALID_ARGUMENTS, "int"),
        (call("x", "t.add", None), tools_pb2.TOOL_INVALID_ARGUMENTS, "missing"),
        (call("x", "t.nope"), tools_pb2.TOOL_NOT_FOUND, "t.nope"),
        (call("x", "t.add", {"a": 1}, timeout_ms=-5), tools_pb2.TOOL_INVALID_ARGUMENTS, "timeout"),
    ],
)
async def test_bad_calls_get_a_typed_result_and_the_stream_serves_on(
    frame: bridge_pb2.ClientEvent, status: int, text: str
) -> None:
    async with serving(tools=Slow().registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(frame)
        result = (await agent.next("call_result")).call_result
        assert result.status == status
        assert text in result.error.message
        await agent.send(call("ok", "t.add", {"a": 1, "b": 1}))
        assert (await agent.next("call_result")).call_result.status == tools_pb2.TOOL_OK


async def test_an_id_already_in_flight_is_refused() -> None:
    slow = Slow()
    async with serving(tools=slow.registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("same", "t.slow"))
        with anyio.fail_after(5):
            await slow.started.wait()
        await agent.send(call("same", "t.add", {"a": 1, "b": 1}))
        refused = (await agent.next("call_result")).call_result
        assert refused.id == "same"
        assert "in flight" in refused.error.message
        slow.release.set()
        assert (await agent.next("call_result")).call_result.output == '"released"'


async def test_calls_in_flight_are_limited_per_stream() -> None:
    slow = Slow()
    limits = Limits(max_pending_tool_calls=2)
    async with serving(tools=slow.registry(), limits=limits) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("a", "t.slow"))
        await agent.send(call("b", "t.slow"))
        await agent.send(call("c", "t.slow"))
        refused = (await agent.next("call_result")).call_result
        assert refused.id == "c"
        assert refused.error.code == "RESOURCE_EXHAUSTED"
        assert "max_pending_tool_calls" in refused.error.message
        slow.release.set()
        ids = {(await agent.next("call_result")).call_result.id for _ in range(2)}
        assert ids == {"a", "b"}


async def test_a_withdrawn_call_is_cancelled_and_not_answered() -> None:
    slow = Slow()
    async with serving(tools=slow.registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("w", "t.slow"))
        with anyio.fail_after(5):
            await slow.started.wait()
        cancel = bridge_pb2.CancelToolCall(id="w", reason="caller gave up")
        await agent.send(bridge_pb2.ClientEvent(cancel_call=cancel))
        with anyio.fail_after(5):
            await slow.cancelled.wait()
        # No call_result for it: the next frame is the answer to this ping.
        await agent.ping(9)


async def test_the_calls_timeout_ms_ends_it_with_tool_timeout() -> None:
    slow = Slow()
    async with serving(tools=slow.registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("t", "t.slow", timeout_ms=50))
        result = (await agent.next("call_result")).call_result
        assert (result.id, result.status) == ("t", tools_pb2.TOOL_TIMEOUT)
        assert slow.cancelled.is_set()


async def test_the_end_of_the_stream_cancels_its_calls() -> None:
    slow = Slow()
    async with serving(tools=slow.registry()) as s, channel(s.target) as ch:
        agent = await connected(ch, "caller")
        await agent.send(call("x", "t.slow"))
        with anyio.fail_after(5):
            await slow.started.wait()
        await agent.close()
        with anyio.fail_after(5):
            await slow.cancelled.wait()
        await wait_until(lambda: "caller" not in s.server.hub.sessions)


async def test_a_call_of_another_agents_declared_tool_goes_through_the_stream_too() -> None:
    async with serving() as s, channel(s.target) as ch:
        worker = await OldAgent(ch, "worker").connect(tools=[descriptor("w.echo")])
        caller = await connected(ch, "caller")
        await caller.send(call("c", "w.echo", {"text": "hi"}))
        pushed = (await worker.next("tool_call")).tool_call
        assert json.loads(pushed.arguments) == {"text": "hi"}
        await worker.answer(pushed.id, {"echo": "hi"})
        result = (await caller.next("call_result")).call_result
        assert (result.id, json.loads(result.output)) == ("c", {"echo": "hi"})


SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}


async def test_the_server_checks_declared_schemas_unless_the_agent_checks_them_itself() -> None:
    async with serving() as s, channel(s.target) as ch:
        checked = descriptor("w.checked", SCHEMA)
        trusted = descriptor("w.trusted", SCHEMA)
        trusted.metadata[VALIDATES_KEY] = "true"
        worker = await OldAgent(ch, "worker").connect(tools=[checked, trusted])
        caller = await connected(ch, "caller")
        # Not declared as self-checking: refused by the server, the agent never asked.
        await caller.send(call("c1", "w.checked", {"n": "one"}))
        result = (await caller.next("call_result")).call_result
        assert result.status == tools_pb2.TOOL_INVALID_ARGUMENTS
        # Declared: handed to the agent, whose own verdict is the answer.
        await caller.send(call("c2", "w.trusted", {"n": "one"}))
        pushed = (await worker.next("tool_call")).tool_call
        assert json.loads(pushed.arguments) == {"n": "one"}
        refusal = tools_pb2.ToolResult(
            id=pushed.id,
            status=tools_pb2.TOOL_INVALID_ARGUMENTS,
            error=tools_pb2.ToolError(code="INVALID_ARGUMENTS", message="n: not an int"),
        )
        await worker.send(bridge_pb2.ClientEvent(tool_result=refusal))
        result = (await caller.next("call_result")).call_result
        assert (result.id, result.status) == ("c2", tools_pb2.TOOL_INVALID_ARGUMENTS)
        assert "not an int" in result.error.message
