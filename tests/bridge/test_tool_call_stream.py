"""``ToolService.CallStream``: a call's partial output streamed before its result, through the
raw stubs and ``AdminClient.call_tool(on_output=...)``, against a real server; and the
fallback to ``Call`` for a server that predates it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest

from loom.bridge import AdminClient
from loom.bridge._generated import tools_pb2, tools_pb2_grpc
from loom.bridge._wire_types import ToolStatus
from loom.runtime.tools import FunctionTool, ToolRegistry, stream_tool_output

from ._server_harness import auth, channel, serving

pytestmark = pytest.mark.anyio


def counting() -> ToolRegistry:
    """``t.count``: streams ``n`` pieces, then answers ``"counted n"``."""

    async def count(n: int) -> str:
        for i in range(n):
            await stream_tool_output(f"piece {i};")
        return f"counted {n}"

    tools = ToolRegistry()
    tools.register(
        FunctionTool(
            count,
            name="t.count",
            description="Count, piece by piece.",
            parameters_schema={
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
            },
        )
    )
    return tools


async def updates(call: Any) -> list[tools_pb2.ToolCallUpdate]:
    return [update async for update in call]


async def test_the_pieces_come_in_order_then_the_result_last() -> None:
    with anyio.fail_after(20):
        async with serving(tools=counting()) as s, channel(s.target) as ch:
            stub = tools_pb2_grpc.ToolServiceStub(ch)
            request = tools_pb2.ToolCall(id="c1", name="t.count", arguments='{"n": 30}')
            got = await updates(stub.CallStream(request, timeout=10))
    kinds = [u.WhichOneof("update") for u in got]
    assert kinds == ["output"] * 30 + ["result"]
    assert [u.output.text for u in got[:-1]] == [f"piece {i};" for i in range(30)]
    assert {u.output.id for u in got[:-1]} == {"c1"}
    result = got[-1].result
    assert (result.id, result.status, json.loads(result.output)) == ("c1", 0, "counted 30")


async def test_a_call_without_an_id_gets_one_its_pieces_and_result_share() -> None:
    with anyio.fail_after(20):
        async with serving(tools=counting()) as s, channel(s.target) as ch:
            stub = tools_pb2_grpc.ToolServiceStub(ch)
            request = tools_pb2.ToolCall(name="t.count", arguments='{"n": 2}')
            got = await updates(stub.CallStream(request, timeout=10))
    ids = {u.output.id for u in got[:-1]} | {got[-1].result.id}
    assert len(ids) == 1
    assert ids != {""}


async def test_a_failed_call_is_its_result_only() -> None:
    with anyio.fail_after(20):
        async with serving(tools=counting()) as s, channel(s.target) as ch:
            stub = tools_pb2_grpc.ToolServiceStub(ch)
            got = await updates(
                stub.CallStream(tools_pb2.ToolCall(id="x", name="t.nope"), timeout=10)
            )
            bad = await updates(
                stub.CallStream(
                    tools_pb2.ToolCall(id="y", name="t.count", arguments='{"n": "two"}'), timeout=10
                )
            )
    assert [u.WhichOneof("update") for u in got] == ["result"]
    assert got[0].result.status == tools_pb2.TOOL_NOT_FOUND
    assert [u.result.status for u in bad] == [tools_pb2.TOOL_INVALID_ARGUMENTS]


async def test_a_slow_reader_holds_the_tool_back_and_loses_nothing() -> None:
    # Flow control, not a buffer that drops: every piece arrives, in order.
    seen: list[str] = []

    async def slow(text: str) -> None:
        seen.append(text)
        if len(seen) % 50 == 0:
            await anyio.sleep(0.01)

    with anyio.fail_after(30):
        async with serving(tools=counting()) as s, AdminClient(s.target) as admin:
            outcome = await admin.call_tool("t.count", '{"n": 500}', on_output=slow)
    assert outcome.status is ToolStatus.OK
    assert json.loads(outcome.output) == "counted 500"
    assert seen == [f"piece {i};" for i in range(500)]


async def test_a_caller_needs_the_token_as_for_call() -> None:
    with anyio.fail_after(20):
        async with serving(tools=counting(), token="sesame") as s, channel(s.target) as ch:
            stub = tools_pb2_grpc.ToolServiceStub(ch)
            request = tools_pb2.ToolCall(id="c1", name="t.count", arguments='{"n": 1}')
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await updates(stub.CallStream(request, timeout=10))
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            got = await updates(stub.CallStream(request, timeout=10, metadata=auth("sesame")))
    assert [u.WhichOneof("update") for u in got] == ["output", "result"]


async def test_a_caller_that_goes_away_cancels_the_tool() -> None:
    cancelled = anyio.Event()

    async def hang() -> str:
        await stream_tool_output("started")
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "never"

    tools = ToolRegistry()
    tools.register(
        FunctionTool(
            hang,
            name="t.hang",
            description="Stream one piece, then wait.",
            parameters_schema={"type": "object", "properties": {}},
        )
    )
    with anyio.fail_after(20):
        async with serving(tools=tools) as s, channel(s.target) as ch:
            stub = tools_pb2_grpc.ToolServiceStub(ch)
            call = stub.CallStream(tools_pb2.ToolCall(id="h", name="t.hang", arguments="{}"))
            first: Any = await call.read()
            assert first.output.text == "started"
            call.cancel()
            await cancelled.wait()


class OldToolService(tools_pb2_grpc.ToolServiceServicer):
    """A server from before CallStream: Call only (the base class answers UNIMPLEMENTED)."""

    async def Call(self, request: tools_pb2.ToolCall, context: Any) -> tools_pb2.ToolResult:
        return tools_pb2.ToolResult(id=request.id, status=tools_pb2.TOOL_OK, output='"old"')


async def test_an_old_server_is_called_with_call_and_sends_no_pieces() -> None:
    server = grpc.aio.server()
    tools_pb2_grpc.add_ToolServiceServicer_to_server(OldToolService(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    seen: list[str] = []

    async def sink(text: str) -> None:
        seen.append(text)

    try:
        with anyio.fail_after(20):
            async with AdminClient(f"127.0.0.1:{port}") as admin:
                outcome = await admin.call_tool("t.any", "{}", on_output=sink)
    finally:
        await server.stop(None)
    assert (outcome.status, outcome.output) == (ToolStatus.OK, '"old"')
    assert seen == []
