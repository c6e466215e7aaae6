"""``loom.v1.MemoryService``: the original Loom's memory wire, on the bridge's port.

Each RPC validates its request (``INVALID_ARGUMENT`` naming the field), works out whose
session it may touch (below), asks the store (``bridge/_memory_store.py``, msgspec structs
only) and answers as the original did; ``docs/interop.md`` has every answer.

**Whose session.** The original trusted ``session_id`` (its SDK sends the agent id). Here it
is checked against what authenticated the call (``bridge/_identity.py``), as every other
entry point checks a claimed sender: the operator (admin token) may name any session; a tenant
only sessions inside its namespace (``team-a:<name>``), and nobody else those; a client whose
certificate names agents (``bind_agent_ids``) only those agents; and the session of an agent
whose stream opened with its registration secret (so the id is held for that client) only a
call showing that secret (``loom-agent-secret`` metadata). An old client, which never shows a
secret, holds no id and keeps the original's behaviour. An empty ``session_id`` is the
caller's own agent, when it is one. Anything else: ``PERMISSION_DENIED``, nothing read or
written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Never, TypeVar

import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import event_pb2, memory_pb2, memory_pb2_grpc
from loom.runtime import InvalidArgument
from loom.runtime.memory import StoreClosed

from ._errors import LimitExceeded, OutsideNamespace, WrongAgent
from ._memory_store import Execution, Plan, PlanMemory
from ._status import status_of
from ._tenants import agent_inside
from ._wire_types import SECRET_METADATA

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["MemoryServicer"]

log = logging.getLogger("loom.bridge")

_Context = grpc.aio.ServicerContext[Any, Any]
_R = TypeVar("_R")

MIN_DUPLICATE_WINDOW_S: Final = 60
"""``CheckDuplicate`` looks at least this far back (the original's floor)."""
DEFAULT_RETRIEVE: Final = 10
"""``Retrieve``'s ``k`` when the request leaves it 0."""
DEFAULT_SUMMARY_EVENTS: Final = 20
"""``SummarizeEpisode``'s ``max_events`` when the request leaves it 0."""
MAX_SESSION_ID: Final = 256
"""The longest ``session_id``, in characters."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _plan_from_proto(msg: memory_pb2.PlanRecord, field: str) -> Plan:
    if msg.timestamp_ms < 0:
        raise InvalidArgument(f"{field}.timestamp_ms: {msg.timestamp_ms} is negative")
    if not math.isfinite(msg.confidence):
        raise InvalidArgument(f"{field}.confidence: {msg.confidence} is not a number")
    return Plan(
        timestamp_ms=msg.timestamp_ms,
        symbol=msg.symbol,
        action=msg.action,
        confidence=msg.confidence,
        reasoning=msg.reasoning,
        plan_hash=msg.plan_hash,
        method=msg.method,
        metadata=dict(msg.metadata),
    )


def _plan_to_proto(plan: Plan) -> memory_pb2.PlanRecord:
    return memory_pb2.PlanRecord(
        timestamp_ms=plan.timestamp_ms,
        symbol=plan.symbol,
        action=plan.action,
        confidence=plan.confidence,
        reasoning=plan.reasoning,
        plan_hash=plan.plan_hash,
        method=plan.method,
        metadata=plan.metadata,
    )


def _execution_from_proto(msg: memory_pb2.ExecutionRecord, field: str) -> Execution:
    for name in ("confidence", "order_size_usdt"):
        if not math.isfinite(getattr(msg, name)):
            raise InvalidArgument(f"{field}.{name}: {getattr(msg, name)} is not a number")
    return Execution(
        timestamp_ms=msg.timestamp_ms or _now_ms(),
        plan_hash=msg.plan_hash,
        symbol=msg.symbol,
        action=msg.action,
        confidence=msg.confidence,
        status=msg.status,
        executed=msg.executed,
        order_id=msg.order_id,
        order_size_usdt=msg.order_size_usdt,
        error_message=msg.error_message,
    )


def _execution_to_proto(record: Execution) -> memory_pb2.ExecutionRecord:
    return memory_pb2.ExecutionRecord(
        timestamp_ms=record.timestamp_ms,
        plan_hash=record.plan_hash,
        symbol=record.symbol,
        action=record.action,
        confidence=record.confidence,
        status=record.status,
        executed=record.executed,
        order_id=record.order_id,
        order_size_usdt=record.order_size_usdt,
        error_message=record.error_message,
    )


def event_text(event: event_pb2.Event) -> str:
    """What the episode keeps of an event: ``type: payload`` for a UTF-8 payload, else its
    type and size (bytes that are not text cannot be searched)."""
    try:
        body = event.payload.decode("utf-8")
    except UnicodeDecodeError:
        body = f"({len(event.payload)} bytes)"
    return f"{event.type}: {body}" if body else event.type


def _count(value: int, field: str, default: int, most: int) -> int:
    """``value`` clamped to ``1..most`` (``default`` for 0).

    Raises:
        InvalidArgument: it is negative.
    """
    if value < 0:
        raise InvalidArgument(f"{field}: {value} is negative")
    return min(value or default, most)


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    """``loom.v1.MemoryService`` over a :class:`PlanMemory`."""

    def __init__(self, hub: Hub, store: PlanMemory) -> None:
        self.hub = hub
        self.store = store

    def _session(self, context: _Context, session_id: str, field: str) -> str:
        """The session the caller may touch (see the module's docs).

        Raises:
            InvalidArgument: none named and the caller is no agent, or too long a name.
            WrongAgent: the caller may not touch it (``OutsideNamespace``: a namespace's).
        """
        hub = self.hub
        caller = hub.caller(context)
        if not session_id:
            if not caller.name:
                raise InvalidArgument(f"{field}: empty (the agent id whose memory this is)")
            session_id = caller.name
        if len(session_id) > MAX_SESSION_ID:
            raise InvalidArgument(f"{field}: longer than {MAX_SESSION_ID} characters")
        if caller.operator:
            return session_id
        if caller.namespace is not None:
            if not agent_inside(caller.namespace, session_id):
                raise OutsideNamespace(caller.outside(f"use the memory of {session_id!r}"))
        else:
            taken = hub.tenants.claimed(session_id)
            if taken is not None:
                raise OutsideNamespace(
                    f"{caller.describe()} may not use the memory of {session_id!r}: it is in "
                    f"namespace {taken!r}, whose tenant token alone (or the admin token) may"
                )
        if caller.agents and session_id not in caller.agents:
            raise WrongAgent(f"{caller.describe()} may not use the memory of {session_id!r}")
        holder = hub.holders.get(session_id)
        if holder is not None:
            secret = _secret(context)
            if secret is not None and not holder.matches(secret):
                raise WrongAgent(
                    f"the registration secret shown for {session_id!r} is not the one its "
                    "latest RegisterAgent returned"
                )
            if secret is None and holder.held:
                raise WrongAgent(
                    f"the memory of {session_id!r} is its registering client's: show its "
                    f"registration secret ({SECRET_METADATA} metadata)"
                )
        return session_id

    async def _serve(self, context: _Context, rpc: str, work: Callable[[], Awaitable[_R]]) -> _R:
        """Run ``work``, ending the call with the status of a Loom error it raises."""
        try:
            return await work()
        except (InvalidArgument, WrongAgent, LimitExceeded) as exc:
            log.debug("MemoryService.%s refused: %s: %s", rpc, status_of(exc).name, exc)
            await _abort(context, status_of(exc), str(exc))
        except StoreClosed as exc:
            await _abort(
                context, grpc.StatusCode.UNAVAILABLE, f"the server is shutting down: {exc}"
            )

    async def SavePlan(
        self, request: memory_pb2.SavePlanRequest, context: _Context
    ) -> memory_pb2.SavePlanResponse:
        async def work() -> memory_pb2.SavePlanResponse:
            session = self._session(context, request.session_id, "SavePlanRequest.session_id")
            if not request.HasField("plan"):
                raise InvalidArgument("SavePlanRequest.plan: missing")
            plan = _plan_from_proto(request.plan, "SavePlanRequest.plan")
            if not plan.plan_hash:
                raise InvalidArgument("SavePlanRequest.plan.plan_hash: empty (the client's hash)")
            if not plan.timestamp_ms:  # so a later CheckDuplicate measures from when it came
                plan = msgspec.structs.replace(plan, timestamp_ms=_now_ms())
            await self.store.save_plan(session, plan)
            return memory_pb2.SavePlanResponse(success=True, plan_hash=plan.plan_hash)

        return await self._serve(context, "SavePlan", work)

    async def GetRecentPlans(
        self, request: memory_pb2.GetRecentPlansRequest, context: _Context
    ) -> memory_pb2.GetRecentPlansResponse:
        async def work() -> memory_pb2.GetRecentPlansResponse:
            name = "GetRecentPlansRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            most = self.store.limits.max_plans_answer
            limit = _count(request.limit, f"{name}.limit", 1, most)
            plans = await self.store.recent_plans(session, request.symbol, limit)
            return memory_pb2.GetRecentPlansResponse(
                plans=[_plan_to_proto(p) for p in plans], success=True
            )

        return await self._serve(context, "GetRecentPlans", work)

    async def CheckDuplicate(
        self, request: memory_pb2.CheckDuplicateRequest, context: _Context
    ) -> memory_pb2.CheckDuplicateResponse:
        async def work() -> memory_pb2.CheckDuplicateResponse:
            name = "CheckDuplicateRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            if not request.HasField("plan"):
                raise InvalidArgument(f"{name}.plan: missing")
            if request.time_window_sec < 0:
                raise InvalidArgument(f"{name}.time_window_sec: {request.time_window_sec} < 0")
            plan = _plan_from_proto(request.plan, f"{name}.plan")
            window_ms = max(request.time_window_sec, MIN_DUPLICATE_WINDOW_S) * 1000
            found = await self.store.check_duplicate(session, plan, window_ms, _now_ms())
            if found is None:
                return memory_pb2.CheckDuplicateResponse(is_duplicate=False)
            return memory_pb2.CheckDuplicateResponse(
                is_duplicate=True,
                duplicate_plan=_plan_to_proto(found.plan),
                time_since_duplicate_ms=found.distance_ms,
            )

        return await self._serve(context, "CheckDuplicate", work)

    async def MarkExecuted(
        self, request: memory_pb2.MarkExecutedRequest, context: _Context
    ) -> memory_pb2.MarkExecutedResponse:
        async def work() -> memory_pb2.MarkExecutedResponse:
            name = "MarkExecutedRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            if not request.plan_hash:
                raise InvalidArgument(f"{name}.plan_hash: empty")
            record = None
            if request.HasField("execution"):
                record = _execution_from_proto(request.execution, f"{name}.execution")
                if record.plan_hash not in ("", request.plan_hash):
                    raise InvalidArgument(
                        f"{name}.execution.plan_hash: {record.plan_hash!r} is not the "
                        f"request's plan_hash {request.plan_hash!r}"
                    )
            await self.store.mark_executed(session, request.plan_hash, record)
            return memory_pb2.MarkExecutedResponse(success=True)

        return await self._serve(context, "MarkExecuted", work)

    async def CheckExecuted(
        self, request: memory_pb2.CheckExecutedRequest, context: _Context
    ) -> memory_pb2.CheckExecutedResponse:
        async def work() -> memory_pb2.CheckExecutedResponse:
            name = "CheckExecutedRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            if not request.plan_hash:
                raise InvalidArgument(f"{name}.plan_hash: empty")
            record = await self.store.check_executed(session, request.plan_hash)
            if record is None:
                return memory_pb2.CheckExecutedResponse(is_executed=False)
            return memory_pb2.CheckExecutedResponse(
                is_executed=True, execution=_execution_to_proto(record)
            )

        return await self._serve(context, "CheckExecuted", work)

    async def GetExecutionStats(
        self, request: memory_pb2.GetExecutionStatsRequest, context: _Context
    ) -> memory_pb2.GetExecutionStatsResponse:
        async def work() -> memory_pb2.GetExecutionStatsResponse:
            field = "GetExecutionStatsRequest.session_id"
            session = self._session(context, request.session_id, field)
            stats = await self.store.execution_stats(session, request.symbol)
            return memory_pb2.GetExecutionStatsResponse(
                total_executions=stats.total,
                successful_executions=stats.successful,
                failed_executions=stats.failed,
                win_rate=stats.win_rate,
                duplicate_prevented=stats.duplicate_prevented,
                recent_executions=[_execution_to_proto(e) for e in stats.recent],
            )

        return await self._serve(context, "GetExecutionStats", work)

    async def AppendEvent(
        self, request: memory_pb2.MemoryWriteRequest, context: _Context
    ) -> memory_pb2.MemoryWriteResponse:
        async def work() -> memory_pb2.MemoryWriteResponse:
            name = "MemoryWriteRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            if not request.HasField("event"):
                raise InvalidArgument(f"{name}.event: missing")
            event = request.event
            # What Retrieve's filters match: the request's metadata and the event's type.
            metadata = {**request.metadata, "event_type": event.type}
            if event.id:
                metadata["event_id"] = event.id
            await self.store.append_event(session, event_text(event), metadata)
            return memory_pb2.MemoryWriteResponse(success=True)

        return await self._serve(context, "AppendEvent", work)

    async def Retrieve(
        self, request: memory_pb2.MemoryRetrieveRequest, context: _Context
    ) -> memory_pb2.MemoryRetrieveResponse:
        async def work() -> memory_pb2.MemoryRetrieveResponse:
            name = "MemoryRetrieveRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            most = self.store.limits.max_retrieve
            k = _count(request.k, f"{name}.k", DEFAULT_RETRIEVE, most)
            found = await self.store.retrieve(session, request.query, k, dict(request.filters))
            return memory_pb2.MemoryRetrieveResponse(results=found, success=True)

        return await self._serve(context, "Retrieve", work)

    async def SummarizeEpisode(
        self, request: memory_pb2.MemorySummarizeRequest, context: _Context
    ) -> memory_pb2.MemorySummarizeResponse:
        async def work() -> memory_pb2.MemorySummarizeResponse:
            name = "MemorySummarizeRequest"
            session = self._session(context, request.session_id, f"{name}.session_id")
            most = self.store.limits.events_per_session
            n = _count(request.max_events, f"{name}.max_events", DEFAULT_SUMMARY_EVENTS, most)
            summary, count = await self.store.summarize(session, n)
            return memory_pb2.MemorySummarizeResponse(
                summary=summary, event_count=count, success=True
            )

        return await self._serve(context, "SummarizeEpisode", work)


def _secret(context: _Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == SECRET_METADATA:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


async def _abort(context: _Context, code: grpc.StatusCode, details: str) -> Never:
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")
