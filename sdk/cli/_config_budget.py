"""``[budget]`` of ``loom.toml``: the limits of the turns of every agent a server runs.

::

    [budget]
    window_s = 3600              # the window of thread, agent and tenant spend
    max_keys = 10000             # threads, agents and tenants tracked at most (LRU beyond)
    turn_tokens = 50000          # any field of loom.runtime.Budget: the default of every turn
    agent_cost_usd = 5.0
    max_tool_calls = 50
    max_parallel_tool_calls = 8
    max_call_depth = 4

    [budget.agents.planner]      # one agent's limits, over the defaults above (may be more)
    turn_tokens = 200000

    [budget.tenants.team-a]      # one tenant's (namespace's) limits over the window
    tokens = 2000000
    cost_usd = 20.0

An agent's ``[budget.agents.<id>]`` table overrides the defaults field by field (an operator
may give one agent more), its tenant's ``[budget.tenants.<ns>]`` overrides their ``tenant_*``;
each turn then applies the stricter of that and the agent's own ``CognitiveAgent(budget=...)``,
limit by limit (``BudgetLedger.budget_for``, ``docs/guardrails.md``): agent code cannot loosen
the operator's limits. The same rule holds for agents connected through the bridge: they hold
their spend in the server's windows (``Budgets.Hold``) and take its per-turn limits
(``Budgets.TurnLimits``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from loom.bridge import validate_namespace
from loom.runtime import AgentRuntime, Budget, ConfigError, InvalidArgument, TenantBudget

__all__ = ["BudgetTable", "budgets_applied", "decode_budget"]


class BudgetTable(msgspec.Struct, frozen=True, kw_only=True):
    """The decoded ``[budget]`` table.

    Attributes:
        window_s: the window's length in seconds.
        max_keys: keys the ledger keeps at most.
        defaults: the limits of every turn.
        agents: limits by agent id, over ``defaults``.
        tenants: limits by namespace.
    """

    window_s: float = 3600.0
    max_keys: int = 10_000
    defaults: Budget = Budget()
    agents: Mapping[str, Budget] = msgspec.field(default_factory=dict)
    tenants: Mapping[str, TenantBudget] = msgspec.field(default_factory=dict)


def _convert(fields: Any, type_: type[Any], at: str) -> Any:
    try:
        return msgspec.convert(fields, type_)
    except (msgspec.ValidationError, InvalidArgument) as exc:
        raise ConfigError(f"{at}: {exc}") from None


def decode_budget(table: Any, *, where: str) -> BudgetTable:
    """``[budget]`` of ``loom.toml`` (``{}``: no limits).

    Raises:
        ConfigError: an unknown key, a wrong type or a value out of range, naming the table;
            a tenant table whose name is not a valid namespace.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [budget]: must be a table")
    fields = dict(table)
    agents = fields.pop("agents", {})
    tenants = fields.pop("tenants", {})
    window_s = fields.pop("window_s", 3600.0)
    max_keys = fields.pop("max_keys", 10_000)
    if not isinstance(window_s, int | float) or isinstance(window_s, bool) or window_s <= 0:
        raise ConfigError(f"{where} [budget] window_s: must be positive seconds, not {window_s!r}")
    if not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 3:
        raise ConfigError(f"{where} [budget] max_keys: must be an integer >= 3, not {max_keys!r}")
    if not isinstance(agents, dict) or not isinstance(tenants, dict):
        raise ConfigError(f"{where} [budget]: agents and tenants must be tables of tables")
    defaults = _convert(fields, Budget, f"{where} [budget]")
    by_agent = {
        agent_id: _convert(value, Budget, f"{where} [budget.agents.{agent_id}]")
        for agent_id, value in agents.items()
    }
    by_tenant: dict[str, TenantBudget] = {}
    for namespace, value in tenants.items():
        at = f"{where} [budget.tenants.{namespace}]"
        try:
            validate_namespace(namespace)
        except InvalidArgument as exc:
            raise ConfigError(f"{at}: {exc}") from None
        by_tenant[namespace] = _convert(value, TenantBudget, at)
    return BudgetTable(
        window_s=float(window_s),
        max_keys=max_keys,
        defaults=defaults,
        agents=by_agent,
        tenants=by_tenant,
    )


@asynccontextmanager
async def budgets_applied(table: BudgetTable, runtime: AgentRuntime) -> AsyncIterator[None]:
    """Give ``runtime``'s ledger the table's limits, before any agent starts."""
    runtime.budgets.configure(
        window_s=table.window_s,
        max_keys=table.max_keys,
        defaults=table.defaults,
        agents=table.agents,
        tenants=table.tenants,
    )
    yield
