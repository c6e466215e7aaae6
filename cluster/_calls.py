"""Tool calls between the nodes of a cluster, over core NATS.

Each node serves ``_loom.call.<node>`` (run a capability of one of its agents) and
``_loom.cancel.<node>`` (the caller gave up), and takes answers on
``_loom.reply.<node>.<call id>``. A call carries what is left of the caller's deadline, so the
provider stops when the caller would; a caller that is cancelled (its own caller gone, its
timeout) sends a cancel, and the provider cancels the invocation (a bridge agent's call gets
its ``cancel_tool_call``). A provider node declared dead (:meth:`ClusterCalls.fail_node`)
fails every call waiting on it at once with ``ToolFailed`` ``AGENT_DISCONNECTED``.

Partial output (``loom.runtime.tools.stream_tool_output``) crosses too, with the bridge's
semantics: a caller with a sink in force names a subject for it (``CallRequest.output``, the
reply subject's ``.out`` child), the provider runs the tool with a sink that publishes each
piece there as a ``CallOutput``, and the caller's reply subscription (one, so in publish
order: every piece before the answer) puts each in the call's ``ToolOutputPieces``, at most
``MAX_TOOL_OUTPUT_PIECES`` held; the calling task hands them to the sink before it returns
the result. A caller slower than the pieces drops the newest, counted and logged; never the
result. A caller without a sink names no subject and is sent nothing.

Bounded: at most ``max_calls`` calls are served at once (beyond, a call is refused with
``ToolFailed`` ``RESOURCE_EXHAUSTED`` rather than queued) and the waiting calls of this node
are those of its callers, each holding one slot of :attr:`pending`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from loom.runtime import AgentNotFound, AgentRuntime
from loom.runtime.lowlevel import (
    MAX_TOOL_OUTPUT_PIECES,
    CallFrame,
    ToolOutputPieces,
    current_frame,
    drain_pieces_until,
    frame_from_headers,
    in_frame,
    key_from_headers,
    key_headers,
    new_id,
    output_pieces,
    scope_headers,
)
from loom.runtime.tools import JSONObject, ToolError, tool_output_sink

from ._directory_wire import (
    AGENT_DISCONNECTED,
    CallError,
    CallOutput,
    CallReply,
    CallRequest,
    error_from_wire,
    error_to_wire,
    json_text,
)
from ._scopes import NodeScopes, NodeScopeService, scope_subject

__all__ = ["ClusterCalls"]

log = logging.getLogger("loom.cluster")

_encode = msgspec.msgpack.Encoder().encode
_request = msgspec.msgpack.Decoder(CallRequest).decode
_reply = msgspec.msgpack.Decoder(CallReply).decode
_output = msgspec.msgpack.Decoder(CallOutput).decode
_OUTPUT_SUFFIX = ".out"  # the reply subject's child that a call's pieces go to
_json = msgspec.json.Decoder().decode


class _Pending:
    """One call of this node waiting for another node's answer."""

    __slots__ = ("done", "node", "pieces", "reply")

    def __init__(self, node: str, pieces: ToolOutputPieces | None) -> None:
        self.node = node
        self.done = anyio.Event()
        self.reply: CallReply | None = None
        self.pieces = pieces  # None: the caller takes no partial output


class ClusterCalls:
    """This node's side of calls between nodes: it calls others' agents and serves its own.

    Use :meth:`invoker` to make the ``ToolInvoker`` of an agent of another node (a
    ``RemoteTool`` of its proxy calls it), and :meth:`serve` in a task group to answer calls.
    """

    def __init__(
        self, runtime: AgentRuntime, client: Client, node: str, *, max_calls: int = 1024
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.node = node
        self.max_calls = max_calls
        self.pending: dict[str, _Pending] = {}
        self._serving: dict[tuple[str, str], anyio.CancelScope] = {}
        self._reply_prefix = f"_loom.reply.{node}."
        self._tg: TaskGroup | None = None
        self.scopes = NodeScopeService(node)
        """This node as the authority over the scopes it keeps, for other nodes' calls."""

    # ------------------------------------------------------------------ calling

    def invoker(self, node: str, agent_id: str) -> Callable[[str, JSONObject], Awaitable[Any]]:
        """The invoker of agent ``agent_id``'s capabilities on ``node`` (what its proxy's
        ``RemoteTool``s call)."""

        async def invoke(name: str, arguments: JSONObject) -> Any:
            return await self.call(node, agent_id, name, arguments)

        return invoke

    async def call(self, node: str, agent_id: str, name: str, arguments: JSONObject) -> Any:
        """Run capability ``name`` of agent ``agent_id`` on ``node`` and return its output.

        Bounded by the enclosing deadline (the registry's timeout scope), whose remainder
        travels with the call. Cancelled, it tells the provider to cancel too.

        Raises:
            ToolError: the provider's error, rebuilt; ``ToolFailed`` ``AGENT_DISCONNECTED``
                when ``node`` is declared dead before it answers.
        """
        call_id = new_id()
        pieces = output_pieces()
        deadline = anyio.current_effective_deadline()
        left = deadline - anyio.current_time()
        timeout_ms = 0 if math.isinf(left) else max(1, math.ceil(left * 1000))
        request = CallRequest(
            id=call_id,
            caller=self.node,
            agent=agent_id,
            tool=name,
            arguments=json_text(arguments),
            output="" if pieces is None else self._reply_prefix + call_id + _OUTPUT_SUFFIX,
            timeout_ms=timeout_ms,
            reply=self._reply_prefix + call_id,
            # The turn's caps go along, as a call pushed to an agent's process carries them:
            # this node counted the hop into the remote agent already (pushed). And the
            # call's idempotency key, which the tool there receives.
            headers={**scope_headers(pushed=True), **self._scope_node(), **key_headers()},
        )
        pending = _Pending(node, pieces)
        self.pending[call_id] = pending
        try:
            await self.client.publish(f"_loom.call.{node}", _encode(request))
            if pieces is None:
                await pending.done.wait()
            else:
                await drain_pieces_until(pieces, pending.done)
        except BaseException:
            if pending.reply is None:
                # Cancelled (or the publish failed): the provider need not go on. Shielded:
                # the cancel is what this cancellation must still do.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.client.publish(
                        f"_loom.cancel.{node}", f"{self.node} {call_id}".encode()
                    )
            raise
        finally:
            self.pending.pop(call_id, None)
            if pieces is not None and pieces.dropped:
                log.warning(
                    "cluster: tool call %s (%s) on node %s: %d pieces of its partial output "
                    "dropped: its caller took them more slowly than they came (at most %d wait)",
                    name,
                    call_id,
                    node,
                    pieces.dropped,
                    MAX_TOOL_OUTPUT_PIECES,
                )
        reply = pending.reply
        assert reply is not None
        if reply.scope_calls > 0:
            # The calls the other node made for this turn count here too, even when the call
            # failed (they were made): the turn's next call sees the whole tree's count.
            frame = current_frame()
            if frame is not None:
                frame.scope.add_calls(reply.scope_calls)
        if reply.error is not None:
            raise error_from_wire(reply.error)
        return _json(reply.output) if reply.output else None

    def _scope_node(self) -> dict[str, str]:
        """``loom-scope-node``: the node whose copy of the current capped turn's scope is its
        authority (this one, unless this copy reserves from another), so that the node
        serving the call reserves each call it makes for the turn there
        (``cluster/_scopes.py``). None when the authority predates reservations."""
        frame = current_frame()
        if frame is None:
            return {}
        scope = frame.scope
        if scope.max_tool_calls is None and scope.max_parallel is None:
            return {}  # no cap but the depth, which travels with the call: nothing to reserve
        authority = scope.authority
        if authority is None:
            return {"loom-scope-node": self.node}
        owner = getattr(authority, "owner", "")
        return {"loom-scope-node": owner} if owner and not authority.absent else {}

    def fail_node(self, node: str, reason: str) -> int:
        """``node`` is gone: every call waiting on it fails now with ``AGENT_DISCONNECTED``.
        Returns how many."""
        count = 0
        for call_id, pending in list(self.pending.items()):
            if pending.node == node and pending.reply is None:
                pending.reply = CallReply(
                    id=call_id,
                    error=CallError(
                        kind="failed",
                        message=f"node {node} is gone before answering: {reason}",
                        detail=AGENT_DISCONNECTED,
                    ),
                )
                pending.done.set()
                count += 1
        # The slots its reservations held for turns this node keeps are free again.
        self.scopes.release_node(node)
        return count

    async def _on_reply(self, msg: Msg) -> None:
        if msg.subject.endswith(_OUTPUT_SUFFIX):
            self._on_output(msg)
            return
        try:
            reply = _reply(msg.data)
        except msgspec.DecodeError:
            log.warning("cluster: undecodable call reply on %s", msg.subject)
            return
        pending = self.pending.get(reply.id)
        if pending is not None and pending.reply is None:
            pending.reply = reply
            pending.done.set()
        # else: the caller gave up (timed out, cancelled) before it came: dropped.

    def _on_output(self, msg: Msg) -> None:
        # The reply subscription's reader: never waits (the pieces buffer is bounded).
        try:
            piece = _output(msg.data)
        except msgspec.DecodeError:
            log.warning("cluster: undecodable tool output on %s", msg.subject)
            return
        pending = self.pending.get(piece.id)
        if pending is not None and pending.pieces is not None and pending.reply is None:
            pending.pieces.put(piece.text)

    # ------------------------------------------------------------------ serving

    def serving(self) -> int:
        """Calls of other nodes running here now."""
        return len(self._serving)

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer calls from other nodes until cancelled (subscriptions made before
        ``task_status.started``)."""
        subs: list[Subscription] = []
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                subs.append(
                    await self.client.subscribe(f"_loom.call.{self.node}", cb=self._on_call)
                )
                subs.append(
                    await self.client.subscribe(f"_loom.cancel.{self.node}", cb=self._on_cancel)
                )
                subs.append(
                    await self.client.subscribe(scope_subject(self.node), cb=self.scopes.on_message)
                )
                subs.append(
                    # ">": the answers and the pieces (``.out``) of each call, in one
                    # subscription so that no piece is taken after its call's answer.
                    await self.client.subscribe(self._reply_prefix + ">", cb=self._on_reply)
                )
                await self.client.flush()
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None
                with anyio.CancelScope(shield=True):
                    for sub in subs:
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                tg.cancel_scope.cancel()

    async def _on_call(self, msg: Msg) -> None:
        try:
            request = _request(msg.data)
        except msgspec.DecodeError:
            log.warning("cluster: undecodable call request on %s", msg.subject)
            return
        tg = self._tg
        if tg is None:
            return
        if len(self._serving) >= self.max_calls:
            error = CallError(
                kind="failed",
                message=f"node {self.node} serves {self.max_calls} calls already",
                detail="RESOURCE_EXHAUSTED",
                tool=request.tool,
            )
            await self._answer(request, CallReply(id=request.id, error=error))
            return
        scope = anyio.CancelScope()
        self._serving[(request.caller, request.id)] = scope
        tg.start_soon(self._run, request, scope)

    async def _on_cancel(self, msg: Msg) -> None:
        caller, _, call_id = msg.data.decode(errors="replace").partition(" ")
        scope = self._serving.get((caller, call_id))
        if scope is not None:
            scope.cancel()

    async def _run(self, request: CallRequest, scope: anyio.CancelScope) -> None:
        reply: CallReply | None = None
        try:
            # The caller's turn's caps: nested calls count against that turn, no deeper than
            # it allows (``docs/guardrails.md``, Budgets).
            # The caller's sink, here a publish of each piece to the subject it named (none
            # named: no sink, so a streaming tool streams nowhere, as in process). Only its
            # reply subject's child: a request cannot make this node publish elsewhere.
            wanted = request.output == request.reply + _OUTPUT_SUFFIX
            sink = functools.partial(self._send_output, request) if wanted else None
            frame = _node_frame(request.headers, self.client, self.node)
            before = 0 if frame is None else frame.scope.tool_calls
            with scope, in_frame(frame), tool_output_sink(sink):
                timeout = request.timeout_ms / 1000 if request.timeout_ms else None
                try:
                    value = await self.runtime.call_tool(
                        request.tool,
                        request.arguments,
                        timeout=timeout,
                        provider=request.agent,
                        idempotency_key=key_from_headers(request.headers),
                    )
                    reply = CallReply(id=request.id, output=json_text(value))
                except (ToolError, AgentNotFound) as exc:
                    if isinstance(exc, ToolError) and exc.tool is None:
                        exc.tool = request.tool
                    reply = CallReply(id=request.id, error=error_to_wire(exc))
                if frame is not None and frame.scope.detached and reply is not None:
                    # This node's copy of the caller's scope counted the calls made for the
                    # turn here while the call ran (and those its calls to further nodes and
                    # its bridge agents reported): the caller never saw them, so they go back
                    # with the answer. A scope this process holds itself (nodes sharing one
                    # process) counted them already.
                    calls = frame.scope.tool_calls - before
                    if calls > 0:
                        reply = msgspec.structs.replace(reply, scope_calls=calls)
        finally:
            self._serving.pop((request.caller, request.id), None)
        if reply is not None:  # None: cancelled by the caller, who waits for nothing
            await self._answer(request, reply)

    async def _send_output(self, request: CallRequest, text: str) -> None:
        # nats-py buffers the publish (bounded: past its pending size it waits for a flush),
        # so a tool streaming faster than the connection writes is held back. A lost piece
        # costs the caller that piece only: the call goes on.
        try:
            await self.client.publish(request.output, _encode(CallOutput(id=request.id, text=text)))
        except Exception as exc:
            log.debug(
                "cluster: a piece of %s's output to %s is lost: %s", request.id, request.caller, exc
            )

    async def _answer(self, request: CallRequest, reply: CallReply) -> None:
        try:
            await self.client.publish(request.reply, _encode(reply))
        except Exception as exc:  # the connection is away: the caller's deadline ends it
            log.warning(
                "cluster: the answer to %s of node %s is lost: %s", request.id, request.caller, exc
            )


def _node_frame(headers: dict[str, str], client: Client, node: str) -> CallFrame | None:
    """The frame a call from another node runs in: this node's shared copy of the caller's
    scope (the one its bridge server counts its agents' calls for the turn in, so those count
    too), with the caller's count on its calls left.

    The copy is kept by scope id over the calls of the turn that reach this node. Its cap is
    lowered to its count plus the calls the caller says are left: the caller counted what this
    node reported before, and its own calls since (a later call carries fewer calls left).
    Calls of the turn running here at once each report what the copy counted while they ran,
    so the caller may count some twice: it stops early, never late."""
    frame = frame_from_headers(headers, pushed=True, shared=True)
    if frame is None or not frame.scope.detached:
        return frame
    owner = headers.get("loom-scope-node", "")
    if owner and owner != node and frame.scope.authority is None:
        # The calling node keeps the turn's scope: every call made here for the turn
        # reserves from it (exact over nodes); this copy counts nothing itself.
        frame.scope.authority = NodeScopes(client, node, owner)
    left = headers.get("loom-scope-caps", "-").split(",")[0]
    if left.isdigit():
        scope = frame.scope
        cap = scope.tool_calls + int(left)
        if scope.max_tool_calls is None or cap < scope.max_tool_calls:
            scope.max_tool_calls = cap
    return frame
