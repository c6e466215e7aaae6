"""The server's approvals store for an agent in its own process: both sides of the calls a
turn makes to wait for a human (``Request``, ``ForTurn``, ``Unresumed``, ``State``,
``MarkResumed`` of ``loom.v1.Approvals``).

The record lives on the server, in its one store (``<data-dir>/approvals.sqlite3``), so
``loom approvals``, ``loom approve``/``deny`` and the dashboard see and answer it exactly as a
hosted agent's, and ``approval.requested`` is published on the server's bus (durable when its
log stores ``approval.>``). A decision goes into the agent's mailbox on the server's bus,
which the agent's stream delivers: the turn resumes in the agent's process. An agent that was
not connected then asks for its decided, unresumed records when it starts (``Unresumed``).
What stays in the agent's process is its effect journal (``docs/guardrails.md``).

Who may call: a caller that may act as the agent named. A client certificate bound to agent
ids: one of those; a tenant token: an agent inside its namespace; an agent id a tenant
namespace claims: that tenant's clients or the operator; otherwise any caller the server let
in (the shared token is then the credential, as for registering the agent).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import approvals_pb2, approvals_pb2_grpc
from loom.runtime import (
    ApprovalKind,
    ApprovalNotFound,
    ApprovalPolicy,
    ApprovalRecord,
    LoomError,
)

from ._aio import unary
from ._approvals_service import approval_from_proto
from ._llm_client import Channel, Metadata
from ._status import error_from_status

__all__ = ["RemoteApprovals"]

_encoder = msgspec.json.Encoder(enc_hook=str)
_R = TypeVar("_R")


class RemoteApprovals:
    """The server's approvals store (``loom.v1.Approvals``) for the turns of one connected
    agent: ``ctx.approvals`` of an agent in its own process. An
    :class:`~loom.runtime.ApprovalStore`.

    Each call waits for the connection (a turn asking while the client reconnects waits) and
    raises the runtime's errors (``error_from_status``): ``PERMISSION_DENIED`` (not this
    caller's agent: ``WrongAgent``), ``UNAVAILABLE``; ``NOT_FOUND`` is
    :class:`~loom.runtime.ApprovalNotFound`, ``UNIMPLEMENTED`` (a server that keeps no
    approvals) a :class:`~loom.runtime.LoomError` saying so.

    Args:
        channel: gives the channel, once there is a connection.
        metadata: gives each call's metadata (the token).
        timeout_s: each call's deadline.
    """

    def __init__(self, channel: Channel, metadata: Metadata, *, timeout_s: float = 30.0) -> None:
        self._channel = channel
        self._metadata = metadata
        self.timeout_s = timeout_s
        # The server's policies apply to its own tools (NeedsApproval refuses a call no gate
        # ruled on); an agent in its own process states its policies itself.
        self.policies: dict[str, ApprovalPolicy] = {}

    async def _stub(self) -> approvals_pb2_grpc.ApprovalsAsyncStub:
        return approvals_pb2_grpc.ApprovalsStub(await self._channel())

    async def _call(self, rpc: Awaitable[_R], what: str) -> _R:
        try:
            return await unary(rpc)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.NOT_FOUND:
                raise ApprovalNotFound(what) from None
            if code is grpc.StatusCode.UNIMPLEMENTED:  # not DurabilityUnavailable: no store
                raise LoomError(f"Approvals.{what}: {exc.details()}") from None
            raise error_from_status(code, f"Approvals.{what}: {exc.details()}") from None

    async def request(
        self,
        *,
        agent_id: str,
        thread_id: str,
        turn_id: str,
        call_id: str,
        tool: str,
        arguments: dict[str, object],
        state: bytes = b"",
        timeout_s: float | None = None,
        kind: ApprovalKind = "approval",
    ) -> ApprovalRecord:
        """Store a pending approval on the server (see :meth:`loom.runtime.Approvals.request`)."""
        stub = await self._stub()
        message = approvals_pb2.RequestApprovalRequest(
            agent_id=agent_id,
            thread_id=thread_id,
            turn_id=turn_id,
            call_id=call_id,
            tool=tool,
            arguments_json=_encoder.encode(arguments).decode(),
            state=state,
            timeout_ms=0 if timeout_s is None else max(1, int(timeout_s * 1000)),
            kind="" if kind == "approval" else kind,  # "": what an older server understands
        )
        response = await self._call(
            stub.Request(message, timeout=self.timeout_s, metadata=self._metadata()), "Request"
        )
        return approval_from_proto(response.approval)

    async def for_turn(self, agent_id: str, turn_id: str) -> list[ApprovalRecord]:
        """Every record of one turn on the server, oldest first."""
        stub = await self._stub()
        message = approvals_pb2.TurnApprovalsRequest(agent_id=agent_id, turn_id=turn_id)
        response = await self._call(
            stub.ForTurn(message, timeout=self.timeout_s, metadata=self._metadata()), "ForTurn"
        )
        return [approval_from_proto(a) for a in response.approvals]

    async def unresumed(self, agent_id: str) -> list[ApprovalRecord]:
        """The agent's decided records whose turn has not resumed yet."""
        stub = await self._stub()
        message = approvals_pb2.UnresumedApprovalsRequest(agent_id=agent_id)
        response = await self._call(
            stub.Unresumed(message, timeout=self.timeout_s, metadata=self._metadata()),
            "Unresumed",
        )
        return [approval_from_proto(a) for a in response.approvals]

    async def state(self, approval_id: str) -> bytes:
        """The turn state saved with a record."""
        stub = await self._stub()
        message = approvals_pb2.ApprovalStateRequest(id=approval_id)
        response = await self._call(
            stub.State(message, timeout=self.timeout_s, metadata=self._metadata()), approval_id
        )
        return bytes(response.state)

    async def mark_resumed(self, agent_id: str, turn_id: str) -> None:
        """The turn went on with its decisions."""
        stub = await self._stub()
        message = approvals_pb2.TurnApprovalsRequest(agent_id=agent_id, turn_id=turn_id)
        await self._call(
            stub.MarkResumed(message, timeout=self.timeout_s, metadata=self._metadata()),
            "MarkResumed",
        )
