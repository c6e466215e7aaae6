"""The server's budget ledger for an agent in its own process: the
:class:`~loom.runtime.lowlevel.BudgetAuthority` of its turns (``loom.v1.Budgets``; the server
side is ``bridge/_budget_service.py``).

Each model call of a turn holds its estimate on the server before it is made and settles its
usage after, one round trip each; the agent's ledger keeps no windows of its own.

When the server does not answer: budgets **fail closed**. A ``Hold`` that gets no answer
within ``timeout_s`` (the connection is down and does not come back in time, the server is
overloaded) refuses the call with :class:`~loom.runtime.BudgetUnavailable` (the turn ends
``budget_exhausted``, budget ``budget_ledger``): a call nobody could check against the
tenant's budget is exactly the surprise bill budgets exist to prevent. A lost ``Settle``
leaves the estimate counted on the server (over-counting, never under). A server without the
service (``UNIMPLEMENTED``, an older Loom) keeps nothing: the agent then keeps its spend in
its own ledger, as before, and is asked again only by a new client.
"""

from __future__ import annotations

import logging

import anyio
import grpc
import grpc.aio

from loom.bridge._generated import budget_service_pb2, budget_service_pb2_grpc
from loom.runtime import Budget, BudgetExhausted, BudgetUnavailable, LoomError
from loom.runtime.lowlevel import ScopeAuthority

from ._aio import unary
from ._budget_service import TURN_LIMITS
from ._errors import ConnectionLost
from ._llm_client import Channel, Metadata
from ._status import error_from_status

__all__ = ["DEFAULT_BUDGET_TIMEOUT_S", "RemoteBudgets"]

log = logging.getLogger("loom.bridge.budgets")

DEFAULT_BUDGET_TIMEOUT_S = 10.0
"""How long a model call waits for the server's ledger before it is refused."""

MAX_AGENTS_KEPT = 1024
"""The agents whose server turn limits a client keeps (the oldest asked again)."""


def limits_of(budget: Budget) -> budget_service_pb2.SpendLimits:
    limits = budget_service_pb2.SpendLimits()
    for name in (
        "thread_tokens",
        "thread_cost_usd",
        "agent_tokens",
        "agent_cost_usd",
        "tenant_tokens",
        "tenant_cost_usd",
    ):
        value = getattr(budget, name)
        if value is not None:
            setattr(limits, name, value)
    return limits


class RemoteBudgets:
    """The server's ledger (``loom.v1.Budgets``) for the turns of agents connected through
    one client. See the module docs for what happens when the server does not answer.

    Args:
        channel: gives the channel, once there is a connection.
        metadata: gives each call's metadata (the token).
        timeout_s: how long a ``Hold`` (and a ``Settle``) waits, connection included.
    """

    def __init__(
        self, channel: Channel, metadata: Metadata, *, timeout_s: float = DEFAULT_BUDGET_TIMEOUT_S
    ) -> None:
        self._channel = channel
        self._metadata = metadata
        self.timeout_s = timeout_s
        self.absent = False
        """The server answered UNIMPLEMENTED: holds are kept in this process."""
        self._turn_limits: dict[str, Budget] = {}  # by agent id, at most MAX_AGENTS_KEPT
        self.scopes: ScopeAuthority | None = None
        """The server's call scopes, reserved from by the capped turns of this ledger's
        agents (``bridge/_scope_remote.py``; set by the client)."""
        self._no_turn_limits = False

    async def hold(
        self, *, agent_id: str, thread_id: str, budget: Budget, tokens: int, cost: float
    ) -> _RemoteHold | None:
        """Hold a call's estimate in the server's ledger (a ``BudgetAuthority``).

        Raises:
            BudgetExhausted: a budget of the server's refused it (named as the server names it).
            BudgetUnavailable: no answer within ``timeout_s``, or the call failed.
            WrongAgent, ...: the server refused the caller (``error_from_status``).
        """
        if self.absent:
            return None
        message = budget_service_pb2.HoldSpendRequest(
            agent_id=agent_id,
            thread_id=thread_id,
            tokens=tokens,
            cost_usd=cost,
            limits=limits_of(budget),
        )
        reply = await self._call("Hold", message)
        if reply is None:
            return None
        assert isinstance(reply, budget_service_pb2.HoldSpendResponse)
        if reply.refused:
            raise BudgetExhausted(
                reply.refused, limit=reply.limit, spent=reply.spent, needed=reply.needed
            )
        return _RemoteHold(self, reply.hold_id)

    async def turn_limits(self, agent_id: str) -> Budget | None:
        """The server's per-turn limits for ``agent_id`` (``TurnLimits``), asked once per agent
        and kept: ``None`` from a server without them (an older Loom).

        Raises:
            BudgetUnavailable: no answer within ``timeout_s``, or the call failed (fail
                closed, as a ``Hold``: a turn the server's caps could not reach is not run).
        """
        if self._no_turn_limits:
            return None
        known = self._turn_limits.get(agent_id)
        if known is not None:
            return known
        reply = await self._call(
            "TurnLimits", budget_service_pb2.TurnLimitsRequest(agent_id=agent_id)
        )
        if reply is None:
            return None
        assert isinstance(reply, budget_service_pb2.TurnLimitsResponse)
        given = {name: getattr(reply, name) for name in TURN_LIMITS if reply.HasField(name)}
        limits = Budget(**given)
        if len(self._turn_limits) >= MAX_AGENTS_KEPT:
            self._turn_limits.pop(next(iter(self._turn_limits)))
        self._turn_limits[agent_id] = limits
        return limits

    async def _call(
        self,
        what: str,
        message: budget_service_pb2.HoldSpendRequest
        | budget_service_pb2.SettleSpendRequest
        | budget_service_pb2.TurnLimitsRequest,
    ) -> (
        budget_service_pb2.HoldSpendResponse
        | budget_service_pb2.SettleSpendResponse
        | budget_service_pb2.TurnLimitsResponse
        | None
    ):
        limit = self.timeout_s
        try:
            with anyio.fail_after(limit):
                stub = budget_service_pb2_grpc.BudgetsStub(await self._channel())
                if isinstance(message, budget_service_pb2.HoldSpendRequest):
                    rpc = stub.Hold(message, timeout=limit, metadata=self._metadata())
                    return await unary(rpc)
                if isinstance(message, budget_service_pb2.TurnLimitsRequest):
                    asked = stub.TurnLimits(message, timeout=limit, metadata=self._metadata())
                    return await unary(asked)
                return await unary(stub.Settle(message, timeout=limit, metadata=self._metadata()))
        except TimeoutError:
            why = f"the server did not answer {what} within {limit:g} s"
            raise BudgetUnavailable(why) from None
        except ConnectionLost as exc:
            raise BudgetUnavailable(f"Budgets.{what}: {exc}") from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is grpc.StatusCode.UNIMPLEMENTED and what == "TurnLimits":
                # A server that keeps budgets but predates its turn limits reaching agents.
                log.info("the server sends no turn limits: the agent's own apply")
                self._no_turn_limits = True
                return None
            if code is grpc.StatusCode.UNIMPLEMENTED:
                log.info("the server keeps no budgets for remote agents: spend is kept here")
                self.absent = True
                return None
            if code in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise error_from_status(code, f"Budgets.{what}: {exc.details()}") from None
            raise BudgetUnavailable(f"Budgets.{what} failed: {exc.details()}") from None


class _RemoteHold:
    """A hold open in the server's ledger (a ``SpendHold``)."""

    __slots__ = ("_budgets", "id")

    def __init__(self, budgets: RemoteBudgets, hold_id: str) -> None:
        self._budgets = budgets
        self.id = hold_id

    async def settle(self, tokens: int, cost: float) -> None:
        """Count the usage on the server. A failure is logged, not raised: the model answered,
        and the server keeps the estimate counted (more than was spent, never less)."""
        message = budget_service_pb2.SettleSpendRequest(
            hold_id=self.id, tokens=tokens, cost_usd=cost
        )
        try:
            await self._budgets._call("Settle", message)
        except LoomError as exc:  # unanswered, or refused (NOT_FOUND: forgotten)
            log.warning("hold %s not settled (its estimate stays counted): %s", self.id, exc)
