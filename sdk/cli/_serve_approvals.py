"""The approvals store of ``loom serve``: opened in the data directory, before any agent.

``<data-dir>/approvals.sqlite3`` keeps every approval and the state of the turn that waits for
it, so both outlive a restart; the store becomes ``runtime.approvals``, which the hosted
agents, ``loom.v1.Approvals`` (``loom approvals``, ``loom approve``, ``loom deny``) and the
dashboard use. With a durable log, ``approval.requested`` and ``approval.decided`` are stored
in it too (``loom tail 'approval.>' --since 1d`` shows the history), and so are a question's
``input.requested`` and ``input.answered``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from loom.cluster import JetStreamLog
from loom.runtime import AgentRuntime, Approvals
from loom.runtime.tools import NeedsApproval, Tool

from ._config import ServeConfig, ServiceTables
from ._config_approvals import tool_policies

__all__ = ["attach_approvals", "guard_tools", "open_approvals"]

log = logging.getLogger("loom.serve")

DURABLE_NAME = "loom-approvals"
"""The durable name under which ``approval.>`` events are stored."""


@asynccontextmanager
async def open_approvals(
    config: ServeConfig,
    tables: ServiceTables,
    data_dir: anyio.Path | Path,
    durable_log: JetStreamLog | None,
) -> AsyncIterator[Approvals]:
    """The store, for the life of the server (its bus is given by :func:`attach_approvals`)."""
    http = config.http_address()
    hosts = (config.host, *((http[0],) if http is not None else ()))
    policies = tool_policies(tables.tools, hosts=hosts)
    if durable_log is not None:
        # input.requested/answered: the questions to the user, stored as approvals are.
        durable_log.register(DURABLE_NAME, ["approval.>", "input.requested", "input.answered"])
    async with Approvals(
        Approvals.in_data_dir(Path(data_dir)),
        default_timeout_s=tables.approvals.timeout_s,
        policies=policies,
    ) as approvals:
        asked = ", ".join(f"{k} {v}" for k, v in policies.items() if isinstance(v, str))
        log.info(
            "loom serve: approvals in %s (%d pending; %s)",
            approvals.path,
            approvals.statistics().pending,
            asked or "no tool asks by default",
        )
        yield approvals


@asynccontextmanager
async def attach_approvals(approvals: Approvals, runtime: AgentRuntime) -> AsyncIterator[None]:
    """Make ``approvals`` the runtime's, publishing on its bus, until the runtime stops. A
    decision made after (the deadline timer, while the server drains) stays in the store and
    is resumed at the next start."""
    approvals.bus = runtime.bus
    runtime.approvals = approvals
    try:
        yield
    finally:
        runtime.approvals = None
        approvals.bus = None


def guard_tools(tools: list[Tool], runtime: AgentRuntime) -> list[Tool]:
    """``tools``, those whose policy is ``always`` callable only from a turn's approval gate
    (``NeedsApproval``): ``loom call`` or an agent in another process cannot run them around
    the human who must approve them."""
    approvals = runtime.approvals
    if approvals is None:
        return tools
    always = {name for name, policy in approvals.policies.items() if policy == "always"}
    return [NeedsApproval(t) if t.name in always else t for t in tools]
