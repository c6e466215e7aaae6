"""``loom.v1.Approvals``: list, approve and deny the tool calls waiting in ``runtime.approvals``
(and answer the questions to the user waiting there: ``Answer``, ``loom answer``).

The server side (:class:`ApprovalsServicer`) answers from the runtime's store
(``loom.runtime.Approvals``); the client side (:class:`ApprovalsClient`, over an open
:class:`~loom.bridge.AdminClient`) is what ``loom approvals``, ``loom approve`` and ``loom deny``
use, and gives back the runtime's :class:`~loom.runtime.ApprovalRecord`.

Who may do what: the operator (admin token) everything; when the server has no admin token,
any caller its token let in (an approval is the operator's business, and the shared token is
then the only credential there is). A tenant token sees and decides only the approvals of
agents in its namespace. A caller that is an agent (a client certificate bound to agent ids)
may not decide: an agent approving its own calls would defeat the purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import approvals_pb2, approvals_pb2_grpc
from loom.runtime import (
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    ApprovalRecord,
    Approvals,
    ApprovalStatus,
    InvalidArgument,
    LoomError,
    NotAQuestion,
    QuestionAlreadyAnswered,
)

from ._aio import unary
from ._identity import Principal
from ._tenants import agent_inside

if TYPE_CHECKING:
    from ._admin import AdminClient
    from ._hub import Hub

__all__ = ["ApprovalsClient", "ApprovalsServicer"]

_Context = grpc.aio.ServicerContext[Any, Any]
_STATUSES = ("pending", "approved", "denied", "expired", "answered")
_encoder = msgspec.json.Encoder(enc_hook=str)


def approval_to_proto(rec: ApprovalRecord) -> approvals_pb2.Approval:
    return approvals_pb2.Approval(
        id=rec.id,
        agent_id=rec.agent_id,
        thread_id=rec.thread_id,
        turn_id=rec.turn_id,
        call_id=rec.call_id,
        tool=rec.tool,
        arguments_json=_encoder.encode(rec.arguments).decode(),
        status=rec.status,
        note=rec.note,
        decided_by=rec.decided_by,
        created_ms=rec.created_ms,
        deadline_ms=rec.deadline_ms,
        decided_ms=rec.decided_ms,
        resumed=rec.resumed,
        kind=rec.kind,
    )


def approval_from_proto(msg: approvals_pb2.Approval) -> ApprovalRecord:
    return ApprovalRecord(
        id=msg.id,
        agent_id=msg.agent_id,
        thread_id=msg.thread_id,
        turn_id=msg.turn_id,
        call_id=msg.call_id,
        tool=msg.tool,
        arguments=msgspec.json.decode(msg.arguments_json) if msg.arguments_json else {},
        status=msg.status if msg.status in _STATUSES else "pending",  # type: ignore[arg-type]
        note=msg.note,
        decided_by=msg.decided_by,
        created_ms=msg.created_ms,
        deadline_ms=msg.deadline_ms,
        decided_ms=msg.decided_ms,
        resumed=msg.resumed,
        kind="question" if msg.kind == "question" else "approval",
    )


def agent_refusal(hub: Hub, principal: Principal, agent_id: str) -> str:
    """Why ``principal`` may not wait in the store as agent ``agent_id`` (``""``: it may)."""
    if not agent_id:
        return "agent_id: must not be empty"
    if principal.operator:
        return ""
    if principal.agents and agent_id not in principal.agents:
        return f"{principal.describe()} may not act as agent {agent_id!r}"
    if principal.namespace is not None:
        if not agent_inside(principal.namespace, agent_id):
            return principal.outside(f"act as agent {agent_id!r}")
        return ""
    claimed = hub.tenants.claimed(agent_id)
    if claimed is not None:
        return f"agent {agent_id!r} belongs to namespace {claimed!r}: use its tenant token"
    return ""


async def abort_unless_agent(hub: Hub, context: _Context, agent_id: str) -> None:
    """Abort the call unless its caller may act as agent ``agent_id``: INVALID_ARGUMENT for
    no id, PERMISSION_DENIED otherwise (the approvals and budget services' one rule)."""
    why = agent_refusal(hub, hub.caller(context), agent_id)
    if why:
        status = grpc.StatusCode
        code = status.INVALID_ARGUMENT if not agent_id else status.PERMISSION_DENIED
        await context.abort(code, why)
        raise AssertionError("unreachable")  # context.abort raises


class ApprovalsServicer(approvals_pb2_grpc.ApprovalsServicer):
    """``loom.v1.Approvals`` over the runtime's store."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def _store(self) -> Approvals | None:
        return self.hub.runtime.approvals

    async def _abort(self, context: _Context, code: grpc.StatusCode, text: str) -> NoReturn:
        await context.abort(code, text)
        raise AssertionError("unreachable")  # context.abort raises

    async def List(
        self, request: approvals_pb2.ListApprovalsRequest, context: _Context
    ) -> approvals_pb2.ListApprovalsResponse:
        store = self._store()
        if store is None:
            return approvals_pb2.ListApprovalsResponse()
        wanted = request.status or "pending"
        if wanted != "all" and wanted not in _STATUSES:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"status: {wanted!r} is not pending, approved, denied, expired, answered or all",
            )
        status: ApprovalStatus | None = None if wanted == "all" else wanted  # type: ignore[assignment]
        records = await store.list(status=status, agent_id=request.agent_id or None)
        principal = self.hub.caller(context)
        if principal.namespace is not None:
            records = [r for r in records if agent_inside(principal.namespace, r.agent_id)]
        return approvals_pb2.ListApprovalsResponse(
            approvals=[approval_to_proto(r) for r in records]
        )

    async def Approve(
        self, request: approvals_pb2.DecideApprovalRequest, context: _Context
    ) -> approvals_pb2.DecideApprovalResponse:
        return await self._decide(request, context, approve=True)

    async def Deny(
        self, request: approvals_pb2.DecideApprovalRequest, context: _Context
    ) -> approvals_pb2.DecideApprovalResponse:
        return await self._decide(request, context, approve=False)

    async def Answer(
        self, request: approvals_pb2.AnswerQuestionRequest, context: _Context
    ) -> approvals_pb2.DecideApprovalResponse:
        return await self._decide(request, context, approve=False, answer=True)

    async def _decide(
        self,
        request: approvals_pb2.DecideApprovalRequest | approvals_pb2.AnswerQuestionRequest,
        context: _Context,
        *,
        approve: bool,
        answer: bool = False,
    ) -> approvals_pb2.DecideApprovalResponse:
        store = self._store()
        if store is None:
            await self._abort(
                context, grpc.StatusCode.UNIMPLEMENTED, "this server keeps no approvals"
            )
        principal = self.hub.caller(context)
        why = self._refusal(principal)
        if why:
            await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, why)
        if not request.id:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "id: must not be empty")
        try:
            record = await store.get(request.id)
            if principal.namespace is not None and not agent_inside(
                principal.namespace, record.agent_id
            ):
                raise ApprovalNotFound(request.id)  # another tenant's: as if absent
            if isinstance(request, approvals_pb2.AnswerQuestionRequest):
                decided = await store.answer(record.id, request.text, by="cli")
            else:
                decide = store.approve if approve else store.deny
                decided = await decide(record.id, note=request.note, by="cli")
        except ApprovalNotFound as exc:
            await self._abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except (ApprovalAlreadyDecided, QuestionAlreadyAnswered) as exc:
            await self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (InvalidArgument, NotAQuestion) as exc:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return approvals_pb2.DecideApprovalResponse(approval=approval_to_proto(decided))

    # -------------------------------------------- a connected agent's turns (_approvals_remote)

    async def _agent_store(self, context: _Context, agent_id: str) -> Approvals:
        """The store, once the caller may act as ``agent_id`` (else the call is aborted)."""
        store = self._store()
        if store is None:
            await self._abort(
                context, grpc.StatusCode.UNIMPLEMENTED, "this server keeps no approvals"
            )
        await abort_unless_agent(self.hub, context, agent_id)
        return store

    async def Request(
        self, request: approvals_pb2.RequestApprovalRequest, context: _Context
    ) -> approvals_pb2.RequestApprovalResponse:
        store = await self._agent_store(context, request.agent_id)
        if not (request.turn_id and request.call_id and request.tool):
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "turn_id, call_id and tool: must not be empty",
            )
        try:
            arguments = msgspec.json.decode(request.arguments_json or "{}")
            if not isinstance(arguments, dict):
                raise InvalidArgument("arguments_json: must be a JSON object")
            record = await store.request(
                agent_id=request.agent_id,
                thread_id=request.thread_id,
                turn_id=request.turn_id,
                call_id=request.call_id,
                tool=request.tool,
                arguments=arguments,
                state=request.state,
                timeout_s=request.timeout_ms / 1000 if request.timeout_ms > 0 else None,
                kind="question" if request.kind == "question" else "approval",
            )
        except (InvalidArgument, msgspec.DecodeError) as exc:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return approvals_pb2.RequestApprovalResponse(approval=approval_to_proto(record))

    async def ForTurn(
        self, request: approvals_pb2.TurnApprovalsRequest, context: _Context
    ) -> approvals_pb2.ListApprovalsResponse:
        store = await self._agent_store(context, request.agent_id)
        records = await store.for_turn(request.agent_id, request.turn_id)
        return approvals_pb2.ListApprovalsResponse(
            approvals=[approval_to_proto(r) for r in records]
        )

    async def Unresumed(
        self, request: approvals_pb2.UnresumedApprovalsRequest, context: _Context
    ) -> approvals_pb2.ListApprovalsResponse:
        store = await self._agent_store(context, request.agent_id)
        records = await store.unresumed(request.agent_id)
        return approvals_pb2.ListApprovalsResponse(
            approvals=[approval_to_proto(r) for r in records]
        )

    async def State(
        self, request: approvals_pb2.ApprovalStateRequest, context: _Context
    ) -> approvals_pb2.ApprovalStateResponse:
        store = self._store()
        if store is None:
            await self._abort(
                context, grpc.StatusCode.UNIMPLEMENTED, "this server keeps no approvals"
            )
        try:
            record = await store.get(request.id)
            if agent_refusal(self.hub, self.hub.caller(context), record.agent_id):
                raise ApprovalNotFound(request.id)  # another agent's: as if absent
            state = await store.state(record.id)
        except ApprovalNotFound as exc:
            await self._abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except InvalidArgument as exc:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return approvals_pb2.ApprovalStateResponse(state=state)

    async def MarkResumed(
        self, request: approvals_pb2.TurnApprovalsRequest, context: _Context
    ) -> approvals_pb2.MarkResumedResponse:
        store = await self._agent_store(context, request.agent_id)
        await store.mark_resumed(request.agent_id, request.turn_id)
        return approvals_pb2.MarkResumedResponse()

    def _refusal(self, principal: Principal) -> str:
        if principal.operator:
            return ""
        if principal.agents:
            return f"{principal.describe()} may not decide approvals (an agent's own calls)"
        if self.hub.admin_token is not None and principal.namespace is None:
            return "deciding an approval needs the admin token on this server"
        return ""


class ApprovalsClient:
    """``loom.v1.Approvals`` through an open :class:`~loom.bridge.AdminClient`.

    Raises (each method): what the admin client's methods raise, and
    :class:`~loom.runtime.ApprovalNotFound` (no such id) or
    :class:`~loom.runtime.ApprovalAlreadyDecided` (decided before) for a decision.
    """

    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin

    async def list(self, *, status: str = "pending", agent_id: str = "") -> list[ApprovalRecord]:
        """The approvals of ``status`` (``pending``, ``approved``, ``denied``, ``expired``,
        ``all``), oldest first."""
        admin = self._admin
        stub = approvals_pb2_grpc.ApprovalsStub(admin._open())
        try:
            response = await unary(
                stub.List(
                    approvals_pb2.ListApprovalsRequest(status=status, agent_id=agent_id),
                    timeout=admin.timeout,
                    metadata=admin._metadata,
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise admin._error(exc, "approvals", admin.timeout) from None
        return [approval_from_proto(a) for a in response.approvals]

    async def approve(self, approval_id: str, *, note: str = "") -> ApprovalRecord:
        """Approve ``approval_id``; its turn resumes and runs the call."""
        return await self._decide(approval_id, note, approve=True)

    async def deny(self, approval_id: str, *, note: str = "") -> ApprovalRecord:
        """Deny ``approval_id``; its turn resumes without the call."""
        return await self._decide(approval_id, note, approve=False)

    async def answer(self, question_id: str, text: str) -> ApprovalRecord:
        """Answer the question ``question_id``; its turn resumes with ``text``.

        Raises:
            ApprovalNotFound: no such id.
            QuestionAlreadyAnswered: answered, withdrawn or expired before.
            NotAQuestion: it is a tool call's approval.
        """
        return await self._decide(question_id, text, approve=False, answer=True)

    async def _decide(
        self, approval_id: str, note: str, *, approve: bool, answer: bool = False
    ) -> ApprovalRecord:
        admin = self._admin
        stub = approvals_pb2_grpc.ApprovalsStub(admin._open())
        what = "answer" if answer else "approve" if approve else "deny"
        try:
            if answer:
                response = await unary(
                    stub.Answer(
                        approvals_pb2.AnswerQuestionRequest(id=approval_id, text=note),
                        timeout=admin.timeout,
                        metadata=admin._metadata,
                    )
                )
            else:
                rpc = stub.Approve if approve else stub.Deny
                response = await unary(
                    rpc(
                        approvals_pb2.DecideApprovalRequest(id=approval_id, note=note),
                        timeout=admin.timeout,
                        metadata=admin._metadata,
                    )
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.NOT_FOUND:
                raise ApprovalNotFound(approval_id) from None
            details = exc.details() or ""
            if code is grpc.StatusCode.FAILED_PRECONDITION:
                error: LoomError = (
                    QuestionAlreadyAnswered(approval_id, "")
                    if details.startswith("question ")
                    else ApprovalAlreadyDecided(approval_id, "")
                )
                error.args = (details,)  # the server's words: how and by whom
                raise error from None
            if code is grpc.StatusCode.INVALID_ARGUMENT and " question" in details:
                error = NotAQuestion(approval_id, "question" if approve else "approval")
                error.args = (details,)
                raise error from None
            raise admin._error(exc, what, admin.timeout) from None
        return approval_from_proto(response.approval)
