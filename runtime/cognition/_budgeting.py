"""A turn's budgets: its own, the ledger's windows, and the caps of its call scope.

:class:`TurnBudget` is the seam between the loop and the budgets. Before each model call the
loop asks :meth:`TurnBudget.before` with the request: its *estimate* is the prompt's tokens
(the context's token counter, plus the tool schemas at 4 bytes a token) and the call's
``max_tokens`` (the request's, else the provider's ``max_output_tokens``, else 4096), priced
at the provider's ``cost_per_1k_input`` / ``cost_per_1k_output`` (with a router: the dearest
of its providers, since any of them may serve the call; the server's model, ``ServerLLM``, at
the server's, which it asks once). A call whose estimate does not fit is never made:
:class:`~loom.runtime.BudgetExhausted` names the budget. After the call,
:meth:`TurnBudget.after` counts the usage the provider reported, priced at the provider that
served it (the price a ``ServerLLM`` answer carries, worked out on the server). An agent in
its own process holds and settles in the server's ledger instead (``BudgetLedger.authority``):
the same checks, one round trip to the server each, so that its spend counts where its
agent's and tenant's budgets are kept.

Tool calls go through :meth:`TurnBudget.tool_call`: counted against ``max_tool_calls``, run
within ``max_parallel_tool_calls`` slots, with the turn's call frame current so that nested
calls (tools that are agents) count against the same scope
(``runtime/tools/_call_scope.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token

import msgspec

from .._budget import (
    Budget,
    BudgetExhausted,
    BudgetHold,
    BudgetLedger,
    BudgetUnavailable,
    SpendHold,
)
from .._errors import LoomError
from ..llm import (
    LLM,
    Completion,
    CompletionRequest,
    ModelPrices,
    PricedElsewhere,
    completion_cost,
    model_prices,
)
from ..lowlevel import (
    CallFrame,
    CallScope,
    ScopeAuthority,
    current_frame,
    in_frame,
    reserved_call,
    reset_frame,
    set_frame,
)
from ..tools import ToolCallRefused

__all__ = ["DEFAULT_OUTPUT_TOKENS", "TurnBudget", "estimate_prompt_tokens"]

DEFAULT_OUTPUT_TOKENS = 4096
"""``max_tokens`` assumed for a call that sets none, to a model whose own cap is unknown."""

_schema_encoder = msgspec.json.Encoder()


def estimate_prompt_tokens(request: CompletionRequest, prompt_tokens: int) -> int:
    """The prompt's tokens: the built prompt's estimate and the tools' schemas (JSON bytes / 4,
    as the router estimates them)."""
    tools = len(_schema_encoder.encode(request.tools)) // 4 if request.tools else 0
    return prompt_tokens + tools


class _Pending(msgspec.Struct):
    hold: BudgetHold | SpendHold
    tokens: int
    cost: float


class TurnBudget:
    """The budgets of one turn (made by the loop when it starts).

    Args:
        budget: the agent's own limits (the stricter of them and the ledger's for it apply).
        ledger: where thread, agent and tenant spend is kept.
        llm: the model (its config prices the calls; the server's model says its own).
        agent_id: the agent (and so its tenant).
        thread_id: the conversation.
    """

    def __init__(
        self, budget: Budget, ledger: BudgetLedger, llm: LLM, agent_id: str, thread_id: str
    ) -> None:
        self.budget = budget = ledger.budget_for(agent_id, budget)
        self._ledger = ledger
        self._llm = llm
        self._limits = ledger.limits(budget, agent_id, thread_id)
        self._agent_id = agent_id
        self._thread_id = thread_id
        self._tokens = 0
        self._cost = 0.0
        self.exhausted: str = ""
        """The budget that stopped the turn's own tool calls ('' while none did)."""
        self.joined = False
        self._frame: CallFrame | None = None

    async def prepare(self) -> None:
        """Before the turn starts: an agent in its own process takes the server's per-turn
        limits for it (``[budget]``, ``[budget.agents.<id>]``), the stricter of them and its
        own, so the server's budget binds every turn it serves as it binds a hosted agent's.

        Raises:
            BudgetUnavailable: the server did not answer (fail closed, as a model call's hold).
        """
        authority = self._ledger.authority
        ask = getattr(authority, "turn_limits", None)
        if ask is None:
            return
        server: Budget | None = await ask(self._agent_id)
        if server is not None:
            # The same rule as a hosted agent's (BudgetLedger.budget_for). Only the per-turn
            # limits: the server applies its window limits on its side (Budgets.Hold).
            turn = Budget(**{name: getattr(server, name) for name in _TURN_LIMITS})
            self.budget = self.budget.stricter(turn)

    @contextmanager
    def current(self) -> Iterator[None]:
        """The turn's call frame, current while the turn runs (decided as it starts)."""
        budget = self.budget
        parent = current_frame()
        # A turn run by a tool of another turn (an agent called as a tool) joins that turn's
        # scope: its calls count against the caps of the turn that started the chain.
        self.joined = parent is not None
        if parent is not None:
            self._frame = CallFrame(parent.scope, parent.depth)
        elif (
            budget.max_tool_calls is not None
            or budget.max_parallel_tool_calls is not None
            or budget.max_call_depth is not None
        ):
            # A turn of an agent in its own process reserves every call of its tree from the
            # server (the scope's authority) when it caps calls or parallel calls: exact over
            # every process, one round trip per call (docs/guardrails.md, "Across the bridge").
            # A depth cap alone is exact without it: no authority, nothing paid.
            authority: ScopeAuthority | None = None
            if budget.max_tool_calls is not None or budget.max_parallel_tool_calls is not None:
                authority = getattr(self._ledger.authority, "scopes", None)
            scope = CallScope(
                max_tool_calls=budget.max_tool_calls,
                max_parallel=budget.max_parallel_tool_calls,
                max_depth=budget.max_call_depth,
                on_refused=self._ledger.refused,
                authority=authority,
            )
            self._frame = CallFrame(scope, 0)
        else:
            self._frame = None  # no caps: calls are not scoped at all
        with in_frame(self._frame):
            yield

    @property
    def scope(self) -> CallScope | None:
        """The call scope the turn's tool calls count against (``None``: no caps)."""
        return None if self._frame is None else self._frame.scope

    # ------------------------------------------------------------------ model calls

    async def before(self, request: CompletionRequest, prompt_tokens: int) -> _Pending:
        """Hold the estimate of a call against every budget, or refuse it.

        Raises:
            BudgetExhausted: the estimate does not fit one of them; nothing was held
                (:class:`~loom.runtime.BudgetUnavailable`: the server's ledger did not answer).
        """
        budget = self.budget
        prices = await self._prices()
        tokens = estimate_prompt_tokens(request, prompt_tokens)
        out = request.max_tokens
        if out is None:
            out = prices.max_output_tokens or DEFAULT_OUTPUT_TOKENS
        cost = (tokens * prices.cost_per_1k_input + out * prices.cost_per_1k_output) / 1000
        tokens += out
        if budget.turn_tokens is not None and self._tokens + tokens > budget.turn_tokens:
            self._ledger.refused("turn_tokens")
            raise BudgetExhausted(
                "turn_tokens", limit=budget.turn_tokens, spent=self._tokens, needed=tokens
            )
        if budget.turn_cost_usd is not None and self._cost + cost > budget.turn_cost_usd:
            self._ledger.refused("turn_cost_usd")
            raise BudgetExhausted(
                "turn_cost_usd", limit=budget.turn_cost_usd, spent=self._cost, needed=cost
            )
        authority = self._ledger.authority
        if authority is not None:
            remote = await authority.hold(
                agent_id=self._agent_id,
                thread_id=self._thread_id,
                budget=budget,
                tokens=tokens,
                cost=cost,
            )
            if remote is not None:
                return _Pending(hold=remote, tokens=tokens, cost=cost)
        hold = self._ledger.hold(self._limits, tokens, cost)
        return _Pending(hold=hold, tokens=tokens, cost=cost)

    async def _prices(self) -> ModelPrices:
        llm = self._llm
        if not isinstance(llm, PricedElsewhere):
            return model_prices(llm)
        # The server's model (ServerLLM): its prices are the server's providers'.
        try:
            prices = await llm.prices()
        except LoomError as exc:
            # Fail closed, as a hold the server does not answer: a call nobody could price
            # is the surprise bill a cost budget exists to prevent.
            raise BudgetUnavailable(f"the model's prices could not be asked: {exc}") from None
        return ModelPrices() if prices is None else prices  # an old server: tokens only

    async def after(self, pending: _Pending, completion: Completion) -> None:
        """Count what the call used instead of its estimate, priced at the provider that
        served it (the price the answer carries, from the server's model)."""
        usage = completion.usage
        cost = completion_cost(self._llm, completion)
        tokens = usage.prompt_tokens + usage.completion_tokens
        self._tokens += tokens
        self._cost += cost
        hold = pending.hold
        if isinstance(hold, BudgetHold):
            hold.settle(tokens, cost)
        else:
            await hold.settle(tokens, cost)

    def failed(self, pending: _Pending) -> None:
        """The call failed without reporting usage: the turn keeps its estimate counted
        (the provider may have billed it), as the ledger's hold does."""
        self._tokens += pending.tokens
        self._cost += pending.cost

    # ------------------------------------------------------------------ tool calls

    def tool_call(self, name: str) -> _ToolCall:
        """Around one tool call of the turn: count it, hold a parallel slot, and make the
        frame current with the call counted (so its route, the runtime or the bridge, does
        not count it again; the body of a tool that runs here gets an uncounted frame from
        the registry, so the calls it makes count: ``enter_tool_body``).

        Raises:
            ToolCallRefused: a cap is reached (the turn's own ``max_tool_calls`` also sets
                :attr:`exhausted`, so that the loop ends the turn after this step).
        """
        return _ToolCall(self, name)


class _ToolCall:
    __slots__ = ("_budget", "_name", "_slot", "_token")

    def __init__(self, budget: TurnBudget, name: str) -> None:
        self._budget, self._name = budget, name
        self._slot: reserved_call | None = None
        self._token: Token[CallFrame | None] | None = None

    async def __aenter__(self) -> None:
        budget = self._budget
        frame = budget._frame
        if frame is None:
            return
        # Counted, and a parallel slot held while it runs (in the scope's authority, when it
        # has one). The turn's own calls wait for a slot; a joined turn's are nested calls
        # (their ancestors hold slots) and are refused at once instead.
        slot = reserved_call(frame.scope, self._name, wait=not budget.joined)
        try:
            held = await slot.__aenter__()
        except ToolCallRefused as exc:
            if exc.budget != "max_parallel_tool_calls":  # no slot free now: not the turn's end
                budget.exhausted = exc.budget
            raise
        self._slot = slot
        self._token = set_frame(CallFrame(frame.scope, frame.depth, True, held=held))

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            reset_frame(self._token)
        if self._slot is not None:
            await self._slot.__aexit__(*exc)
        refused = exc[1] if len(exc) > 1 else None
        if isinstance(refused, ToolCallRefused) and refused.owners and not self._budget.joined:
            # The server refused this turn's own call: the calls of the other processes its
            # calls reached used the rest of the cap. The turn ends as when it refuses one.
            self._budget.exhausted = refused.budget


_TURN_LIMITS = (
    "turn_tokens",
    "turn_cost_usd",
    "max_tool_calls",
    "max_parallel_tool_calls",
    "max_call_depth",
)
