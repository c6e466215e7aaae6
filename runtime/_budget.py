"""Token and cost budgets: the limits (:class:`Budget`) and the runtime's spend over a window
(:class:`BudgetLedger`).

A cognitive turn asks the ledger before each model call whether the call's *estimate* (prompt
tokens plus ``max_tokens``, priced) still fits every budget that applies: the thread's, the
agent's and the tenant's over the ledger's sliding window (the turn's own budget is kept by
the turn). If it fits, the estimate is *held* (added to the windows at once, so that two turns
running side by side cannot both spend the last of a budget) and replaced by the usage the
model reports once the call is done. If it does not, :class:`BudgetExhausted` names the budget
and the call is never made.

Memory is bounded: each key (a thread, an agent, a tenant) is a ring of
:data:`WINDOW_BUCKETS` buckets, and the ledger keeps at most ``max_keys`` keys, forgetting the
least recently used one beyond that (counted in ``evicted``). A forgotten key's spend is
forgotten with it: that key may spend its whole budget again within the window. Size
``max_keys`` above the threads active within a window to make that impossible.

An agent in its own process (connected through the bridge) keeps no windows of its own: its
ledger's :attr:`BudgetLedger.authority` holds and settles each call in the server's ledger
(``bridge/_budget_remote.py``), so the server's budgets count every process's spend.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

import msgspec

from ._errors import InvalidArgument, LoomError

__all__ = [
    "WINDOW_BUCKETS",
    "Budget",
    "BudgetAuthority",
    "BudgetExhausted",
    "BudgetHold",
    "BudgetLedger",
    "BudgetSpend",
    "BudgetStats",
    "BudgetUnavailable",
    "SpendHold",
    "TenantBudget",
    "tenant_of",
]

WINDOW_BUCKETS = 12
"""Buckets per window: spend leaves the window one bucket (``window_s / 12``) at a time."""

ScopeKind = Literal["thread", "agent", "tenant"]


class Budget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits of an agent's turns (``None``: no limit).

    Attributes:
        turn_tokens: tokens (prompt and generated) one turn may spend.
        turn_cost_usd: USD one turn may spend.
        thread_tokens: tokens one conversation (agent and thread) may spend in the window.
        thread_cost_usd: USD one conversation may spend in the window.
        agent_tokens: tokens the agent may spend in the window, over all its threads.
        agent_cost_usd: USD the agent may spend in the window.
        tenant_tokens: tokens the agent's tenant (the namespace of its id, ``team-a`` for
            ``team-a:planner``; ``""`` for ids without one) may spend in the window, over all
            its agents. A ledger's :class:`TenantBudget` for that tenant replaces the
            ledger's defaults for it; the agent's own limit still applies if stricter.
        tenant_cost_usd: USD the tenant may spend in the window.
        max_tool_calls: tool calls one turn may make, nested calls included (the calls the
            tools it calls make, when they are agents).
        max_parallel_tool_calls: tool calls of one turn running at once, nested included.
        max_call_depth: how deep a chain of agent-to-agent calls may go (A calls B: 1).
    """

    turn_tokens: int | None = None
    turn_cost_usd: float | None = None
    thread_tokens: int | None = None
    thread_cost_usd: float | None = None
    agent_tokens: int | None = None
    agent_cost_usd: float | None = None
    tenant_tokens: int | None = None
    tenant_cost_usd: float | None = None
    max_tool_calls: int | None = None
    max_parallel_tool_calls: int | None = None
    max_call_depth: int | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            least = 1 if name.startswith("max_") else 0
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= least):
                raise InvalidArgument(f"budget {name} must be a number >= {least}, not {value!r}")

    def over(self, defaults: Budget) -> Budget:
        """This budget, with ``defaults``' limits where this one sets none."""
        fields = {
            name: getattr(defaults, name) if getattr(self, name) is None else getattr(self, name)
            for name in self.__struct_fields__
        }
        return Budget(**fields)

    def stricter(self, other: Budget) -> Budget:
        """Each limit the smaller of this budget's and ``other``'s; one set on one side only
        applies as set. The rule that joins an agent's own budget to the operator's
        (:meth:`BudgetLedger.budget_for`, and an agent in its own process with the server's
        turn limits): neither side can loosen what the other sets."""
        fields = {}
        for name in self.__struct_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            fields[name] = (
                mine if theirs is None or (mine is not None and mine <= theirs) else theirs
            )
        return Budget(**fields)


class TenantBudget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits of one tenant over the ledger's window (``[budget.tenants.<namespace>]``)."""

    tokens: int | None = None
    cost_usd: float | None = None


class BudgetExhausted(LoomError):
    """A call would go past a budget; it was not made.

    Attributes:
        budget: which budget: ``turn_tokens``, ``agent_cost_usd``, ``max_tool_calls``, ...
        limit: the budget's limit.
        spent: what was spent (or held) against it already.
        needed: what the refused call needed (its estimate; 1 for a tool call).
    """

    def __init__(self, budget: str, *, limit: float, spent: float, needed: float) -> None:
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.needed = needed
        super().__init__(
            f"budget {budget} exhausted: {_num(spent)} spent, the next call needs "
            f"{_num(needed)}, the limit is {_num(limit)}"
        )


class BudgetUnavailable(BudgetExhausted):
    """The ledger that keeps the spend (the server's, for an agent in its own process) did not
    answer in time: the call was not made. Budgets fail closed, since a call nobody could
    check is the surprise bill they exist to prevent.

    Attributes:
        budget: ``budget_ledger``.
    """

    def __init__(self, why: str) -> None:
        LoomError.__init__(self, f"budget ledger unavailable: {why}; the call was not made")
        self.budget = "budget_ledger"
        self.limit = self.spent = self.needed = 0.0


class SpendHold(Protocol):
    """An estimate held in another process's ledger (:meth:`BudgetAuthority.hold`)."""

    async def settle(self, tokens: int, cost: float) -> None:
        """Count the call's usage instead of its estimate (a lost settle leaves the estimate
        counted)."""
        ...


class BudgetAuthority(Protocol):
    """The ledger of another process that keeps this process's spend (the server's, for an
    agent connected through the bridge)."""

    async def hold(
        self, *, agent_id: str, thread_id: str, budget: Budget, tokens: int, cost: float
    ) -> SpendHold | None:
        """Hold a call's estimate there, against the windows that apply to ``agent_id`` and
        ``thread_id`` (its limits: ``budget``'s over the keeper's own), or refuse it.

        Returns:
            The hold, or ``None`` when there is no such ledger (an old server): the spend is
            then kept in this process's ledger.

        Raises:
            BudgetExhausted: the estimate does not fit one of its budgets.
            BudgetUnavailable: it did not answer in time.
        """
        ...


def _num(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def tenant_of(agent_id: str) -> str:
    """The tenant of an agent: its namespace, the text before the first ``:`` of its id (the
    bridge's rule, ``bridge/_tenants.py``), or ``""``."""
    namespace, sep, _ = agent_id.partition(":")
    return namespace if sep else ""


class BudgetSpend(msgspec.Struct, frozen=True, kw_only=True):
    """One key's spend in the window now.

    Attributes:
        kind: ``thread``, ``agent`` or ``tenant``.
        key: the agent id, ``agent/thread``, or the namespace.
        tokens: tokens spent (and held) within the window.
        cost_usd: USD spent (and held) within the window.
    """

    kind: str
    key: str
    tokens: int
    cost_usd: float


class BudgetStats(msgspec.Struct, frozen=True, kw_only=True):
    """A ledger's counters (:meth:`BudgetLedger.statistics`).

    Attributes:
        tokens: tokens counted since the ledger was made (reported usage).
        cost_usd: USD counted since the ledger was made.
        calls: model calls counted.
        exhausted: calls refused, as ``(budget name, count)`` pairs sorted by name
            (``turn_tokens``, ``max_tool_calls``, ...).
        window_s: the window's length.
        keys: keys held now; at most ``max_keys``.
        evicted: keys forgotten to stay within ``max_keys``.
        top: the keys spending most within the window now (at most 20, by tokens).
        remote_tokens: of ``tokens``, those counted for agents in their own process (held
            through ``loom.v1.Budgets``).
        remote_cost_usd: of ``cost_usd``, theirs.
        remote_calls: of ``calls``, theirs.
    """

    tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    exhausted: tuple[tuple[str, int], ...] = ()
    window_s: float = 0.0
    keys: int = 0
    evicted: int = 0
    top: tuple[BudgetSpend, ...] = ()
    remote_tokens: int = 0
    remote_cost_usd: float = 0.0
    remote_calls: int = 0


class _Window:
    """A sliding window as a ring of buckets: the spend of the last ``WINDOW_BUCKETS`` bucket
    widths, to within one bucket."""

    __slots__ = ("cost", "starts", "tokens")

    def __init__(self) -> None:
        self.starts = [-1] * WINDOW_BUCKETS
        self.tokens = [0] * WINDOW_BUCKETS
        self.cost = [0.0] * WINDOW_BUCKETS

    def add(self, slot: int, tokens: int, cost: float) -> None:
        i = slot % WINDOW_BUCKETS
        if self.starts[i] != slot:
            if self.starts[i] > slot:
                return  # the bucket has been reused since: that spend left the window
            self.starts[i], self.tokens[i], self.cost[i] = slot, 0, 0.0
        self.tokens[i] += tokens
        self.cost[i] += cost

    def total(self, slot: int) -> tuple[int, float]:
        tokens, cost = 0, 0.0
        for i in range(WINDOW_BUCKETS):
            if slot - WINDOW_BUCKETS < self.starts[i] <= slot:
                tokens += self.tokens[i]
                cost += self.cost[i]
        return max(tokens, 0), max(cost, 0.0)


class BudgetHold:
    """An estimate held against a ledger's windows until :meth:`settle` replaces it with the
    usage. A hold never settled (the call failed without usage) keeps the estimate counted:
    the call may have cost it."""

    __slots__ = ("_cost", "_keys", "_ledger", "_remote", "_slot", "_tokens")

    def __init__(
        self,
        ledger: BudgetLedger,
        keys: list[tuple[str, str]],
        slot: int,
        tokens: int,
        cost: float,
        remote: bool = False,
    ) -> None:
        self._ledger, self._keys, self._slot = ledger, keys, slot
        self._tokens, self._cost = tokens, cost
        self._remote = remote

    def settle(self, tokens: int, cost: float) -> None:
        """Count the call's real usage instead of its estimate."""
        ledger = self._ledger
        for key in self._keys:
            window = ledger._windows.get(key)
            if window is not None:
                window.add(self._slot, tokens - self._tokens, cost - self._cost)
        ledger._tokens += tokens
        ledger._cost += cost
        ledger._calls += 1
        if self._remote:
            ledger._remote_tokens += tokens
            ledger._remote_cost += cost
            ledger._remote_calls += 1
        self._tokens, self._cost = tokens, cost


class BudgetLedger:
    """The spend of a runtime's agents, by thread, agent and tenant, over a sliding window.

    One per :class:`~loom.runtime.AgentRuntime` (``runtime.budgets``); an agent without one (a
    bare ``Loop``) gets its own. Not thread-safe: used from the event loop only.

    An agent's turns apply the stricter of the operator's limits (``defaults``, ``agents``,
    ``tenants``) and the agent's own budget, limit by limit (:meth:`budget_for`): they are a
    guard rail agent code cannot loosen.

    Args:
        window_s: the window's length in seconds.
        max_keys: keys (threads, agents, tenants) kept at most; see the module docs.
        defaults: the operator's limits for every turn (``[budget]``).
        agents: the operator's limits by agent id, over ``defaults`` field by field
            (``[budget.agents.<id>]``: may give one agent more than the defaults).
        tenants: the operator's limits per tenant, over the ``tenant_*`` of ``agents`` and
            ``defaults`` (``[budget.tenants.<namespace>]``).
        clock: seconds, monotonic (tests pass their own).
        authority: keeps the windows in another process instead (see the module docs).
    """

    def __init__(
        self,
        *,
        window_s: float = 3600.0,
        max_keys: int = 10_000,
        defaults: Budget | None = None,
        agents: Mapping[str, Budget] | None = None,
        tenants: Mapping[str, TenantBudget] | None = None,
        clock: Callable[[], float] = time.monotonic,
        authority: BudgetAuthority | None = None,
    ) -> None:
        self.authority = authority
        self.window_s = 3600.0
        self._width = self.window_s / WINDOW_BUCKETS
        self.max_keys = 10_000
        self.defaults = Budget()
        self.agents: dict[str, Budget] = {}
        self.tenants: dict[str, TenantBudget] = {}
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self.configure(
            window_s=window_s, max_keys=max_keys, defaults=defaults, agents=agents, tenants=tenants
        )
        self._tokens = 0
        self._cost = 0.0
        self._calls = 0
        self._remote_tokens = 0
        self._remote_cost = 0.0
        self._remote_calls = 0
        self._exhausted: dict[str, int] = {}
        self._evicted = 0

    def configure(
        self,
        *,
        window_s: float | None = None,
        max_keys: int | None = None,
        defaults: Budget | None = None,
        agents: Mapping[str, Budget] | None = None,
        tenants: Mapping[str, TenantBudget] | None = None,
    ) -> None:
        """Replace what is given (``loom serve`` applies ``[budget]`` before agents start).

        A new ``window_s`` forgets the spend counted so far (its buckets were of the old
        width).

        Raises:
            InvalidArgument: ``window_s`` is not positive, or ``max_keys`` below 3.
        """
        if window_s is not None:
            if not (math.isfinite(window_s) and window_s > 0):
                raise InvalidArgument(f"window_s must be positive seconds, not {window_s!r}")
            if window_s != self.window_s:
                self._windows.clear()
            self.window_s = window_s
            self._width = window_s / WINDOW_BUCKETS
        if max_keys is not None:
            if max_keys < 3:
                raise InvalidArgument(f"max_keys must be >= 3, not {max_keys}")
            self.max_keys = max_keys
        if defaults is not None:
            self.defaults = defaults
        if agents is not None:
            self.agents = dict(agents)
        if tenants is not None:
            self.tenants = dict(tenants)

    def operator_budget(self, agent_id: str) -> Budget:
        """The operator's limits for ``agent_id``: its entry in :attr:`agents` over
        :attr:`defaults` field by field, with its tenant's :attr:`tenants` entry over their
        ``tenant_*``."""
        entry = self.agents.get(agent_id)
        merged = self.defaults if entry is None else entry.over(self.defaults)
        tenant = self.tenants.get(tenant_of(agent_id))
        if tenant is None:
            return merged
        return Budget(tenant_tokens=tenant.tokens, tenant_cost_usd=tenant.cost_usd).over(merged)

    def budget_for(self, agent_id: str, own: Budget) -> Budget:
        """The limits of ``agent_id``'s turns: the stricter of its ``own`` and
        :meth:`operator_budget`, limit by limit (:meth:`Budget.stricter`). The one rule for
        every agent: hosted ones here, and those in their own process (the server applies it
        to their holds and sends its turn limits for them, ``Budgets.TurnLimits``)."""
        return own.stricter(self.operator_budget(agent_id))

    def _slot(self) -> int:
        return int(self._clock() // self._width)

    def _window(self, key: tuple[str, str]) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
                self._evicted += 1
        else:
            self._windows.move_to_end(key)
        return window

    def limits(self, budget: Budget, agent_id: str, thread_id: str) -> list[_Limit]:
        """The windows a call of ``agent_id`` in ``thread_id`` counts in, with their limits.

        The agent's and its tenant's are always kept (their spend is what status, metrics
        and the dashboard show); a thread's only when a thread limit applies (threads are
        many, and each would hold a key). ``budget`` is what :meth:`budget_for` decided (the
        tenant's own limits are in it)."""
        rows: list[_Limit] = []
        for kind, key, tokens, cost in (
            ("thread", f"{agent_id}/{thread_id}", budget.thread_tokens, budget.thread_cost_usd),
            ("agent", agent_id, budget.agent_tokens, budget.agent_cost_usd),
            ("tenant", tenant_of(agent_id), budget.tenant_tokens, budget.tenant_cost_usd),
        ):
            if kind != "thread" or tokens is not None or cost is not None:
                rows.append(_Limit(kind, key, tokens, cost))
        return rows

    def hold(
        self, limits: list[_Limit], tokens: int, cost: float, *, remote: bool = False
    ) -> BudgetHold:
        """Hold an estimate against every limit, or refuse it (``remote``: for an agent in its
        own process; its usage is counted in ``remote_*`` of the statistics too).

        Raises:
            BudgetExhausted: the estimate does not fit one of them (nothing is held).
        """
        slot = self._slot()
        for limit in limits:
            spent_tokens, spent_cost = self._window((limit.kind, limit.key)).total(slot)
            if limit.tokens is not None and spent_tokens + tokens > limit.tokens:
                self.refused(f"{limit.kind}_tokens")
                raise BudgetExhausted(
                    f"{limit.kind}_tokens", limit=limit.tokens, spent=spent_tokens, needed=tokens
                )
            if limit.cost_usd is not None and spent_cost + cost > limit.cost_usd:
                self.refused(f"{limit.kind}_cost_usd")
                raise BudgetExhausted(
                    f"{limit.kind}_cost_usd", limit=limit.cost_usd, spent=spent_cost, needed=cost
                )
        keys = [(limit.kind, limit.key) for limit in limits]
        for key in keys:
            self._window(key).add(slot, tokens, cost)
        return BudgetHold(self, keys, slot, tokens, cost, remote)

    def refused(self, budget: str) -> None:
        """Count a call refused by ``budget`` (a turn's own limits and caps report here too)."""
        self._exhausted[budget] = self._exhausted.get(budget, 0) + 1

    def spend(self, kind: str, key: str) -> BudgetSpend:
        """What ``key`` of ``kind`` has spent within the window now (0 for an unknown key)."""
        window = self._windows.get((kind, key))
        tokens, cost = (0, 0.0) if window is None else window.total(self._slot())
        return BudgetSpend(kind=kind, key=key, tokens=tokens, cost_usd=cost)

    def statistics(self, *, namespace: str | None = None, top: int = 20) -> BudgetStats:
        """The counters, and the ``top`` keys spending most in the window (of ``namespace``'s
        agents and threads only, when given; the totals are then the ledger's all the same)."""
        slot = self._slot()
        rows = []
        for (kind, key), window in self._windows.items():
            if namespace is not None:
                agent = key if kind != "tenant" else f"{key}:"
                if tenant_of(agent) != namespace:
                    continue
            tokens, cost = window.total(slot)
            if tokens or cost:
                rows.append(BudgetSpend(kind=kind, key=key, tokens=tokens, cost_usd=cost))
        rows.sort(key=lambda r: (-r.tokens, -r.cost_usd, r.kind, r.key))
        return BudgetStats(
            tokens=self._tokens,
            cost_usd=self._cost,
            calls=self._calls,
            exhausted=tuple(sorted(self._exhausted.items())),
            window_s=self.window_s,
            keys=len(self._windows),
            evicted=self._evicted,
            top=tuple(rows[:top]),
            remote_tokens=self._remote_tokens,
            remote_cost_usd=self._remote_cost,
            remote_calls=self._remote_calls,
        )


class _Limit(msgspec.Struct, frozen=True):
    kind: ScopeKind | str
    key: str
    tokens: int | None
    cost_usd: float | None
