"""``loom.v1.Scopes``: this server as the one authority over the call scope of a turn whose
calls span processes (the client side is ``bridge/_scope_remote.py``).

A connected process reserves each call of a capped turn here before it runs it: the call is
counted against the turn's ``max_tool_calls`` and holds one of its ``max_parallel_tool_calls``
slots until the process releases it. The scope counted in is the turn's own when the turn
runs on this server (a hosted turn served by remote agents), else this server's shared copy of
it (``frame_from_headers(..., shared=True)``), the same one that counts the calls routed
through here: so local calls in any process and routed calls share one count and one set of
slots.

One stream per process, for all its reservations. Every slot a stream's reservations hold is
freed when the stream ends, however it ends: a process killed (kill -9 closes its connection)
or cut off never keeps a slot. A stream holds at most :data:`MAX_RESERVATIONS` reservations at
once (held or waiting for a slot); past that an Acquire is refused ``RESOURCE_EXHAUSTED`` and
the stream ends.

Who may reserve: a caller that may act as the agent each Acquire names (``agent_refusal``, as
for the budget and approvals services), checked once per agent id and stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio

from loom.bridge._generated import scopes_pb2, scopes_pb2_grpc
from loom.runtime.lowlevel import (
    CallScope,
    acquire_reservation,
    authority_scope,
    release_reservation,
    reserved_call,
    slot_free,
)
from loom.runtime.tools import ToolCallRefused

from ._approvals_service import agent_refusal

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["MAX_RESERVATIONS", "SCOPES_SERVICE", "ScopesServicer"]

log = logging.getLogger("loom.bridge.scopes")

_Context = grpc.aio.ServicerContext[Any, Any]

MAX_RESERVATIONS = 4096
"""Reservations one stream may hold or wait for at once."""

SCOPES_SERVICE = scopes_pb2.DESCRIPTOR.services_by_name["Scopes"].full_name

_Kind = scopes_pb2.ScopeReply.Kind


def _cap(message: scopes_pb2.ScopeAcquire, name: str) -> int | None:
    return int(getattr(message, name)) if message.HasField(name) else None


class _Stream:
    """One process's reservations: what its stream's end gives back."""

    def __init__(self, context: _Context, tg: anyio.abc.TaskGroup) -> None:
        self.context = context
        self.tg = tg
        self.lock = anyio.Lock()  # one write at a time (grants come from waiting tasks too)
        self.held: dict[str, tuple[CallScope, object]] = {}
        self.waiting: dict[str, anyio.CancelScope] = {}
        self.delegated: dict[str, anyio.CancelScope] = {}  # held at another node, by id
        self.allowed: set[str] = set()

    async def reply(self, reservation_id: str, kind: int, budget: str = "", limit: int = 0) -> None:
        message = scopes_pb2.ScopeReply(
            reservation_id=reservation_id,
            kind=kind,  # type: ignore[arg-type]
            budget=budget,
            limit=limit,
        )
        async with self.lock:
            await self.context.write(message)

    def release(self, reservation_id: str) -> None:
        waiting = self.waiting.pop(reservation_id, None)
        if waiting is not None:
            waiting.cancel()  # gave up waiting for a slot: its count stays
        entry = self.held.pop(reservation_id, None)
        if entry is not None:
            release_reservation(entry[0], reservation_id, entry[1])
        delegated = self.delegated.pop(reservation_id, None)
        if delegated is not None:
            delegated.cancel()  # its reservation at the other node is released as it ends

    def release_all(self) -> None:
        for reservation_id in list(self.waiting) + list(self.held):
            self.release(reservation_id)


class ScopesServicer(scopes_pb2_grpc.ScopesServicer):
    """``loom.v1.Scopes`` over the runtime's call scopes (see the module docs).

    Args:
        hub: the server's shared state (who the caller is).
        max_reservations: reservations one stream may hold or wait for at once.
    """

    def __init__(self, hub: Hub, *, max_reservations: int = MAX_RESERVATIONS) -> None:
        self.hub = hub
        self.max_reservations = max_reservations

    async def Reserve(  # type: ignore[override]
        self, request_iterator: Any, context: _Context
    ) -> None:
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            stream = _Stream(context, tg)
            try:
                async for request in request_iterator:
                    which = request.WhichOneof("kind")
                    if which == "acquire":
                        if not await self._acquire(stream, request.acquire):
                            break
                    elif which == "release":
                        stream.release(request.release.reservation_id)
            except Exception as exc:  # a malformed frame, the stream cut: raised below
                failure = exc
            finally:
                # However the stream ends (released and closed, the process dead, the
                # connection cut): every slot it holds is freed now, never leaked.
                stream.release_all()
                tg.cancel_scope.cancel()
        if failure is not None:
            # Outside the task group, as itself (not in an exception group): the guard
            # answers a malformed frame INVALID_ARGUMENT.
            raise failure

    async def _acquire(self, stream: _Stream, message: scopes_pb2.ScopeAcquire) -> bool:
        context = stream.context
        agent_id = message.agent_id
        if agent_id not in stream.allowed:
            why = agent_refusal(self.hub, self.hub.caller(context), agent_id)
            if why:
                context.set_code(
                    grpc.StatusCode.INVALID_ARGUMENT
                    if not agent_id
                    else grpc.StatusCode.PERMISSION_DENIED
                )
                context.set_details(why)
                return False
            stream.allowed.add(agent_id)
        rid = message.reservation_id
        if not rid or not message.scope_id:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("reservation_id and scope_id: must not be empty")
            return False
        if len(stream.held) + len(stream.waiting) >= self.max_reservations:
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(f"more than {self.max_reservations} reservations at once")
            return False
        scope = authority_scope(
            message.scope_id,
            _cap(message, "max_tool_calls"),
            _cap(message, "max_parallel_tool_calls"),
            _cap(message, "max_call_depth"),
        )
        tool = message.tool or None
        if scope.exact:
            # This copy reserves from another node in turn (a turn kept on another node of
            # the cluster, cluster/_scopes.py): the reservation is held there for as long.
            held = anyio.CancelScope()
            stream.waiting[rid] = held
            stream.tg.start_soon(self._delegate, stream, scope, rid, tool, message.wait, held)
            return True
        if message.wait and not slot_free(scope):
            # A turn's own call waits for a slot, as in process; the stream goes on being
            # read meanwhile (the releases that free a slot come on it).
            waiting = anyio.CancelScope()
            stream.waiting[rid] = waiting
            await stream.reply(rid, _Kind.KIND_QUEUED)
            stream.tg.start_soon(self._wait_slot, stream, scope, rid, tool, waiting)
            return True
        # Taken or refused at once: answered in order, before the next request is read.
        try:
            hold = await acquire_reservation(scope, rid, tool, wait=False)
        except ToolCallRefused as exc:
            await stream.reply(rid, _Kind.KIND_REFUSED, exc.budget, exc.limit)
            return True
        stream.held[rid] = (scope, hold)
        await stream.reply(rid, _Kind.KIND_GRANTED)
        return True

    async def _delegate(
        self,
        stream: _Stream,
        scope: CallScope,
        rid: str,
        tool: str | None,
        wait: bool,
        held: anyio.CancelScope,
    ) -> None:
        marker = object()
        with held:
            try:
                async with reserved_call(scope, tool, wait=wait):
                    if stream.waiting.pop(rid, None) is None:
                        return  # released meanwhile
                    # Found by the calls this process sends on naming it (loom-scope-held).
                    scope.reserved[rid] = marker
                    stream.held[rid] = (scope, marker)
                    stream.delegated[rid] = held
                    await stream.reply(rid, _Kind.KIND_GRANTED)
                    await anyio.sleep_forever()  # until released (cancelled)
            except ToolCallRefused as exc:
                stream.waiting.pop(rid, None)
                await stream.reply(rid, _Kind.KIND_REFUSED, exc.budget, exc.limit)
            finally:
                stream.delegated.pop(rid, None)
                if scope.reserved.get(rid) is marker:
                    del scope.reserved[rid]

    async def _wait_slot(
        self,
        stream: _Stream,
        scope: CallScope,
        rid: str,
        tool: str | None,
        waiting: anyio.CancelScope,
    ) -> None:
        with waiting:
            try:
                hold = await acquire_reservation(scope, rid, tool, wait=True)
            except ToolCallRefused as exc:  # max_tool_calls reached meanwhile
                stream.waiting.pop(rid, None)
                await stream.reply(rid, _Kind.KIND_REFUSED, exc.budget, exc.limit)
                return
            if stream.waiting.pop(rid, None) is None:
                release_reservation(scope, rid, hold)  # released meanwhile
                return
            stream.held[rid] = (scope, hold)
            await stream.reply(rid, _Kind.KIND_GRANTED)
