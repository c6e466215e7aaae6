"""``ToolService.CallStream``: ``ToolService.Call`` with the tool's partial output streamed.

Both halves: :func:`serve_tool_call_stream` on the server, :func:`call_tool_stream` for a
client (``AdminClient.call_tool(on_output=...)``, what ``loom call`` uses).

Serving:
The call goes the one path every call over the wire goes (:func:`serve_tool_call`), inside a
tool output sink that writes each piece to the RPC's stream as a ``ToolCallUpdate.output``;
the result follows as the last message. Each write waits for the stream's flow control, so a
caller reading slowly holds the tool back (as a bridge stream's bounded outbound queue does)
rather than the server queueing pieces for it. Pieces may come from another task than the
call's (a tool that streams from a child task), so writes take turns under a lock: grpc.aio
allows one write at a time.
"""

from __future__ import annotations

from typing import Any

import anyio
import grpc
import grpc.aio

from loom.bridge._generated import tools_pb2, tools_pb2_grpc
from loom.runtime import AgentRuntime
from loom.runtime.lowlevel import new_id
from loom.runtime.tools import ToolOutputSink, tool_output_sink

from ._aio import unary
from ._calls import serve_tool_call
from ._convert import tool_result_from_proto
from ._errors import ConnectionLost
from ._wire_types import ToolCallOutcome

__all__ = ["call_tool_stream", "serve_tool_call_stream"]


async def serve_tool_call_stream(
    runtime: AgentRuntime,
    request: tools_pb2.ToolCall,
    context: grpc.aio.ServicerContext[Any, Any],
) -> None:
    """Serve ``request``, writing its pieces, then its result, to ``context``'s stream."""
    if not request.id:
        # The pieces name the call, so it needs its id before the first one.
        named = tools_pb2.ToolCall()
        named.CopyFrom(request)
        named.id = new_id()
        request = named
    call_id = request.id
    turn = anyio.Lock()

    async def write(text: str) -> None:
        piece = tools_pb2.ToolCallUpdate(output=tools_pb2.ToolOutput(id=call_id, text=text))
        async with turn:
            await context.write(piece)

    with tool_output_sink(write):
        result = await serve_tool_call(runtime, request, context)
    async with turn:
        await context.write(tools_pb2.ToolCallUpdate(result=result))


async def call_tool_stream(
    stub: tools_pb2_grpc.ToolServiceAsyncStub,
    request: tools_pb2.ToolCall,
    on_output: ToolOutputSink,
    deadline: float,
    metadata: tuple[tuple[str, str], ...],
) -> ToolCallOutcome | None:
    """Call ``request`` through ``ToolService.CallStream``, handing each piece to
    ``on_output`` as it comes (awaited: a slow ``on_output`` holds the tool back through the
    stream's flow control), and return the outcome.

    Returns:
        ``None`` when the server predates ``CallStream`` (``UNIMPLEMENTED`` before any
        message): the caller calls ``Call`` instead.

    Raises:
        grpc.aio.AioRpcError: the call failed (the caller maps it).
        ConnectionLost: the stream ended without a result.
    """
    call = stub.CallStream(request, timeout=deadline, metadata=metadata)
    heard = False
    try:
        while True:
            try:
                msg: Any = await unary(call.read())
            except grpc.aio.AioRpcError as exc:
                if not heard and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    return None
                raise
            if msg is grpc.aio.EOF:
                raise ConnectionLost("ToolService.CallStream ended without the call's result")
            heard = True
            match msg.WhichOneof("update"):
                case "output":
                    await on_output(msg.output.text)
                case "result":
                    return tool_result_from_proto(msg.result)
                case _:
                    pass  # a kind added later: not for this client
    finally:
        call.cancel()
