"""Serving a tool call that came over the wire: :func:`run_tool_call`, the one path.

Every call that arrives over gRPC is served by :func:`run_tool_call`: on the server, a
``Bridge.ForwardToolCall`` or ``ToolService.Call`` RPC and a ``call`` frame of an agent's stream
(``bridge/_server_session.py``); in a remote agent's process, a call the server pushes to the
agent's capabilities (the SDK hands it to ``BridgeClient`` as its ``tool_handler``). The call
goes through ``AgentRuntime.call_tool``, so a runtime tool, an MCP server's tool, a local
agent's capability and a remote agent's declared tool are called the same way, with the
registry's validation and timeout, and answered with the same outcomes. The outcome is
always a ``ToolResult``; only a malformed ``ToolCall`` (negative ``timeout_ms``, unknown
``qos``) is a gRPC error.

Time: ``timeout_ms`` (0: the tool's default) is the registry's timeout; the caller's gRPC
deadline bounds the whole call too. Whichever comes first ends it with ``TOOL_TIMEOUT`` and
cancels the tool (a remote agent is sent ``cancel_tool_call``). A caller that cancels cancels
the tool the same way.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import grpc
import grpc.aio
import msgspec
from opentelemetry.trace import StatusCode, use_span

from loom.bridge._generated import tools_pb2
from loom.runtime import AgentRuntime
from loom.runtime.lowlevel import (
    CallFrame,
    ScopeAuthority,
    current_frame,
    frame_from_headers,
    in_frame,
    key_from_headers,
    log_user_failure,
    new_id,
)
from loom.runtime.tools import ToolError, ToolFailed, ToolTimeout

from ._approved_calls import approved_scope
from ._convert import tool_call_from_proto, tool_result_to_proto
from ._errors import AgentUnresponsive, WireError
from ._status import outcome_from_error
from ._trace import metadata_trace, tool_call_span
from ._wire_types import ToolCallOutcome, ToolCallRequest, ToolErrorInfo, ToolStatus

__all__ = [
    "count_pushed_calls",
    "decode_output",
    "disconnected_outcome",
    "run_tool_call",
    "serve_tool_call",
    "unresponsive_outcome",
]

_encoder = msgspec.json.Encoder()

log = logging.getLogger("loom.bridge.calls")


def decode_output(text: str) -> Any:
    """A tool's output as a Python value: ``None`` when empty, the decoded JSON, or the text
    itself when it is not JSON (an old agent may answer with plain text)."""
    if not text:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


async def run_tool_call(
    runtime: AgentRuntime,
    request: ToolCallRequest,
    *,
    deadline_s: float | None,
    side: str = "server",
    scopes: ScopeAuthority | None = None,
) -> ToolCallOutcome:
    """Call the tool ``request`` names and report how it ended.

    With tracing on (the runtime's bus has a tracer provider), the call runs in an
    ``execute_tool {tool}`` server span, a child of the caller's span named in its headers
    (``bridge/_trace.py``), and current while the tool runs: a call pushed on to an agent
    carries it in turn.

    Args:
        runtime: where the tool is looked up.
        request: the call; an empty ``id`` gets a fresh one, empty ``arguments`` mean ``{}``.
        deadline_s: seconds the caller still waits (its gRPC deadline), or ``None``.
        side: ``server`` or ``agent`` (a call pushed to an agent's process): the span's
            ``loom.bridge.side``.
        scopes: in an agent's process, the server's call scopes: the calls made here for a
            capped turn reserve their count and slot there (``bridge/_scope_remote.py``).
    """
    # The caps of the turn the call is made for (its call scope), as its headers carry them:
    # its nested calls count against that turn, and go no deeper than it allows.
    # The server routes calls between processes: a turn held elsewhere (an agent's own
    # process) counts in one shared copy here, whichever process its calls come from.
    frame = frame_from_headers(request.headers, pushed=side == "agent", shared=side == "server")
    if frame is not None and scopes is not None and frame.scope.detached:
        scope = frame.scope
        if scope.max_tool_calls is not None or scope.max_parallel is not None:
            # This process's copy of a capped turn's scope counts nothing itself: each call it
            # makes reserves from the server, which keeps the turn's count and slots.
            scope.authority = scopes
    # A call a human approved in this server's store, forwarded by the agent whose turn
    # asked: a NeedsApproval tool may run it (bridge/_approved_calls.py).
    ruled = await approved_scope(runtime, request)
    provider = runtime.bus.tracer_provider
    if provider is None:
        with in_frame(frame), ruled:
            return _with_count(frame, await _logged(runtime, request, deadline_s), side)
    span = tool_call_span(provider, request, side)
    with use_span(span, end_on_exit=True), in_frame(frame), ruled:
        outcome = await _logged(runtime, request, deadline_s)
        if outcome.error is not None:
            span.set_attribute("error.type", outcome.error.code)
            span.set_status(StatusCode.ERROR, outcome.error.message[:300])
        return _with_count(frame, outcome, side)


def _with_count(frame: CallFrame | None, outcome: ToolCallOutcome, side: str) -> ToolCallOutcome:
    """The calls counted for a turn held elsewhere that its process has not seen, sent back
    with the result (``ToolResult.scope_calls``; docs/guardrails.md, "Across the bridge").

    On the server, a call of the process holding its turn's scope (``owned``) gets what the
    other processes' calls used of it (this server's shared copy's count): that process
    counts them beside its local calls, which never cross the server. In an agent's process,
    a call pushed to it gets the calls made under it here that never went to the server (a
    turn run here, joining the scope, calling its own local tools): the server adds them to
    its copy (:func:`count_pushed_calls`)."""
    if frame is None:
        return outcome
    if side == "agent":
        calls = frame.scope.local_calls() if frame.scope.detached else 0
    elif frame.owned:
        calls = frame.scope.tool_calls
    else:
        calls = 0
    if calls <= 0:
        return outcome
    return msgspec.structs.replace(outcome, scope_calls=calls)


def count_pushed_calls(outcome: ToolCallOutcome) -> None:
    """The result of a call the server pushed to an agent's process: the calls that process
    made for the turn without the server (``scope_calls``) count in the scope the call was
    made in (the server's shared copy, or the turn's own scope when the server runs it)."""
    if outcome.scope_calls > 0:
        frame = current_frame()
        if frame is not None:
            frame.scope.add_calls(outcome.scope_calls)


async def _logged(
    runtime: AgentRuntime, request: ToolCallRequest, deadline_s: float | None
) -> ToolCallOutcome:
    if not log.isEnabledFor(logging.DEBUG):
        # Debug off (the usual case): not even the clock is read for the line nobody logs.
        return await _run(runtime, request, deadline_s)
    start = anyio.current_time()
    outcome = await _run(runtime, request, deadline_s)
    took = (anyio.current_time() - start) * 1000
    how = outcome.status.name
    why = ""
    if outcome.error is not None:
        if outcome.error.code != how:
            how = f"{how} {outcome.error.code}"
        # Which limit, which timeout, what failed: the message without what the line says
        # already (the tool's name, the code).
        message = outcome.error.message.removeprefix(f"{request.name}: ")
        message = message.removeprefix("failed: ").removeprefix(f"{outcome.error.code}: ")
        why = f": {message}"
    log.debug("tool call %s (%s): %s in %.1f ms%s", request.name, outcome.id, how, took, why)
    return outcome


async def _run(
    runtime: AgentRuntime, request: ToolCallRequest, deadline_s: float | None
) -> ToolCallOutcome:
    call_id = request.id or new_id()
    timeout = request.timeout_ms / 1000 if request.timeout_ms > 0 else None
    arguments = request.arguments or "{}"
    # The caller's idempotency key: the call may be retried here, and the tool receives it.
    key = key_from_headers(request.headers)
    try:
        if deadline_s is None or (timeout is not None and timeout <= deadline_s):
            # The registry's timeout comes first (or alone): its scope is the only one needed.
            value = await runtime.call_tool(
                request.name, arguments, timeout=timeout, idempotency_key=key
            )
        else:
            limit = max(deadline_s, 0.0)
            with anyio.move_on_after(limit) as scope:
                value = await runtime.call_tool(
                    request.name, arguments, timeout=timeout, idempotency_key=key
                )
            if scope.cancelled_caught:
                raise ToolTimeout(limit, tool=request.name)
    except ToolError as exc:
        if exc.tool is None:
            exc.tool = request.name
        if isinstance(exc, ToolFailed) and exc.__cause__ is not None:
            # User code (a capability of an agent of this process) raised: said here, where
            # its file and line are known; the caller gets the message only.
            log_user_failure(log, f"capability {exc}", exc.__cause__)
        return outcome_from_error(call_id, exc)
    try:
        output = _encoder.encode(value).decode()
    except (msgspec.EncodeError, TypeError, UnicodeDecodeError) as exc:
        failed = ToolFailed("EncodeError", f"the result is not JSON: {exc}", tool=request.name)
        return outcome_from_error(call_id, failed)
    return ToolCallOutcome(id=call_id, status=ToolStatus.OK, output=output)


def disconnected_outcome(call_id: str, agent_id: str, reason: str) -> ToolCallOutcome:
    """The result of a call pushed to an agent whose stream ended before it answered."""
    return ToolCallOutcome(
        id=call_id,
        status=ToolStatus.ERROR,
        error=ToolErrorInfo(
            code="AGENT_DISCONNECTED",
            message=f"agent {agent_id} disconnected before answering: {reason}",
            details={"agent_id": agent_id},
        ),
    )


def unresponsive_outcome(call_id: str, agent_id: str, stale_after_s: float) -> ToolCallOutcome:
    """The result of a call pushed to an agent that turned stale before it answered
    (``AGENT_UNRESPONSIVE``: see :class:`AgentUnresponsive`)."""
    return outcome_from_error(call_id, AgentUnresponsive(agent_id, stale_after_s))


async def serve_tool_call(
    runtime: AgentRuntime,
    request: tools_pb2.ToolCall,
    context: grpc.aio.ServicerContext[Any, Any],
) -> tools_pb2.ToolResult:
    """``Bridge.ForwardToolCall`` and ``ToolService.Call``: one path for both."""
    try:
        call = tool_call_from_proto(request)
    except WireError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if "traceparent" not in call.headers:
        # A caller that put its trace context in the RPC's metadata only (an old client).
        trace = metadata_trace(context.invocation_metadata())
        if trace:
            call = msgspec.structs.replace(call, headers={**call.headers, **trace})
    outcome = await run_tool_call(runtime, call, deadline_s=context.time_remaining())
    return tool_result_to_proto(outcome)
