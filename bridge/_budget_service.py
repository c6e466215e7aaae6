"""``loom.v1.Budgets``: the server's budget ledger for the model calls of agents in their own
process (``Hold``, ``Settle``; the client side is ``bridge/_budget_remote.py``).

The spend of an agent connected through the bridge counts in the runtime's ledger
(``runtime.budgets``) beside its hosted agents', in the same thread, agent and tenant windows,
with the same limits (the stricter of the agent's own and the server's ``[budget]`` tables,
limit by limit, ``BudgetLedger.budget_for``): a tenant's
budget holds whatever process its agents run in, and ``loom status``, metrics and the
dashboard show every process's spend.

Open holds are kept by id until settled, at most ``max_holds`` of them (the oldest forgotten
first, its estimate left counted, as for a call that failed without usage): an agent that
dies between ``Hold`` and ``Settle`` leaks nothing but its estimate, which leaves the window
with time.

Who may call: a caller that may act as the agent named (``agent_refusal``, as for the
approvals a connected agent's turn waits in).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from loom.bridge._generated import budget_service_pb2, budget_service_pb2_grpc
from loom.runtime import Budget, BudgetExhausted, InvalidArgument
from loom.runtime.lowlevel import new_id

from ._approvals_service import abort_unless_agent

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["MAX_OPEN_HOLDS", "BudgetsServicer", "budget_from_limits"]

_Context = grpc.aio.ServicerContext[Any, Any]

MAX_OPEN_HOLDS = 10_000
"""Holds kept open at most (a model call in flight each)."""

TURN_LIMITS = (
    "turn_tokens",
    "turn_cost_usd",
    "max_tool_calls",
    "max_parallel_tool_calls",
    "max_call_depth",
)
"""The per-turn limits of a :class:`~loom.runtime.Budget` (``TurnLimitsResponse``'s fields)."""


def budget_from_limits(limits: budget_service_pb2.SpendLimits) -> Budget:
    """The agent's own window limits as a :class:`~loom.runtime.Budget`.

    Raises:
        InvalidArgument: a limit is not a number >= 0.
    """
    fields = (
        "thread_tokens",
        "thread_cost_usd",
        "agent_tokens",
        "agent_cost_usd",
        "tenant_tokens",
        "tenant_cost_usd",
    )
    given = {name: getattr(limits, name) for name in fields if limits.HasField(name)}
    return Budget(**given)


class BudgetsServicer(budget_service_pb2_grpc.BudgetsServicer):
    """``loom.v1.Budgets`` over the runtime's ledger.

    Args:
        hub: the server's shared state (the runtime, who the caller is).
        max_holds: holds kept open at most (see the module docs).
    """

    def __init__(self, hub: Hub, *, max_holds: int = MAX_OPEN_HOLDS) -> None:
        self.hub = hub
        self.max_holds = max_holds
        # hold id -> (agent id, the hold's settle)
        self._holds: OrderedDict[str, tuple[str, Callable[[int, float], None]]] = OrderedDict()
        self.forgotten = 0
        """Holds dropped unsettled to stay within ``max_holds``."""

    async def _abort(self, context: _Context, code: grpc.StatusCode, text: str) -> NoReturn:
        await context.abort(code, text)
        raise AssertionError("unreachable")  # context.abort raises

    async def _check(self, context: _Context, agent_id: str) -> None:
        await abort_unless_agent(self.hub, context, agent_id)

    async def Hold(
        self, request: budget_service_pb2.HoldSpendRequest, context: _Context
    ) -> budget_service_pb2.HoldSpendResponse:
        agent_id = request.agent_id
        await self._check(context, agent_id)
        try:
            own = budget_from_limits(request.limits)
        except InvalidArgument as exc:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"limits: {exc}")
        if not request.cost_usd >= 0:  # NaN too
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "cost_usd: must be a number >= 0"
            )
        ledger = self.hub.runtime.budgets
        limits = ledger.limits(ledger.budget_for(agent_id, own), agent_id, request.thread_id)
        try:
            hold = ledger.hold(limits, request.tokens, request.cost_usd, remote=True)
        except BudgetExhausted as exc:
            return budget_service_pb2.HoldSpendResponse(
                refused=exc.budget, limit=exc.limit, spent=exc.spent, needed=exc.needed
            )
        hold_id = new_id()
        self._holds[hold_id] = (agent_id, hold.settle)
        while len(self._holds) > self.max_holds:
            self._holds.popitem(last=False)  # its estimate stays counted
            self.forgotten += 1
        return budget_service_pb2.HoldSpendResponse(hold_id=hold_id)

    async def TurnLimits(
        self, request: budget_service_pb2.TurnLimitsRequest, context: _Context
    ) -> budget_service_pb2.TurnLimitsResponse:
        agent_id = request.agent_id
        await self._check(context, agent_id)
        # The operator's limits: [budget.agents.<id>] over [budget]. The agent takes the
        # stricter of these and its own (Budget.stricter), as a hosted agent does.
        server = self.hub.runtime.budgets.operator_budget(agent_id)
        given = {name: getattr(server, name) for name in TURN_LIMITS}
        return budget_service_pb2.TurnLimitsResponse(
            **{name: value for name, value in given.items() if value is not None}
        )

    async def Settle(
        self, request: budget_service_pb2.SettleSpendRequest, context: _Context
    ) -> budget_service_pb2.SettleSpendResponse:
        entry = self._holds.get(request.hold_id)
        if entry is None:
            await self._abort(
                context, grpc.StatusCode.NOT_FOUND, f"no open hold {request.hold_id!r}"
            )
        agent_id, settle = entry
        await self._check(context, agent_id)
        if not request.cost_usd >= 0:
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "cost_usd: must be a number >= 0"
            )
        del self._holds[request.hold_id]
        settle(request.tokens, request.cost_usd)
        return budget_service_pb2.SettleSpendResponse()
