"""``Server``: the server's own state over the wire (what ``loom status`` prints).

One snapshot per call, from the runtime's counters; nothing is kept for it. The wire form is
read back into :class:`ServerStatus` by :func:`server_status_from_proto` on the client side.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import grpc.aio
import msgspec

from loom.bridge._generated import budget_pb2, server_pb2, server_pb2_grpc
from loom.runtime import Approvals, BudgetSpend

from ._cache_status import LLMCacheTotals, cache_totals_from_proto, cache_totals_to_proto
from ._cluster_status import (
    ClusterInfo,
    ClusterStatus,
    cluster_status_from_proto,
    cluster_status_to_proto,
)
from ._tenants import agent_inside, namespace_stats, tool_inside

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = [
    "NatsInfo",
    "ServerService",
    "ServerStatus",
    "loom_version",
    "server_status_from_proto",
]

_Context = grpc.aio.ServicerContext[Any, Any]


def loom_version() -> str:
    """The installed loom-runtime's version (``"unknown"`` when run from a bare tree)."""
    try:
        return importlib.metadata.version("loom-runtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A server's state at one moment (:meth:`AdminClient.status`).

    Attributes:
        version: the loom-runtime version the server runs.
        started_ms: when it started serving, in Unix milliseconds.
        uptime_s: how long it has served, in seconds.
        agents: agents its directory knows, local and remote.
        connected: remote agents whose stream is open.
        topics: concrete topics its bus keeps counters for.
        subscriptions: open subscriptions on its bus.
        published: events published on its bus.
        dropped: deliveries its bus dropped, every reason.
        unrouted: events that reached no subscriber.
        tool_calls: tool calls its runtime's registry finished, every outcome.
        tool_calls_running: tool calls running or waiting for a slot now.
        pending_tool_calls: tool calls pushed to remote agents and not yet answered.
        stale_after_s: a remote agent without a heartbeat for this long is marked stale (its
            liveness window).
        nats: where its NATS is: ``embedded``, ``external`` or ``off`` (``""``: a server
            that predates it).
        nats_url: the NATS server's URL, without credentials (empty when off).
        nats_store_dir: the embedded server's JetStream storage (empty otherwise).
        nats_connected: whether its NATS connection is up.
        nats_restarts: times the embedded nats-server was restarted after it died.
        namespace: the namespace the caller's tenant token confines it to (``""``: none);
            the counts above are then of that namespace only.
        in_flight: deliveries sent on remote agents' streams and not yet credited back.
        in_flight_bytes: their encoded bytes (each stream's within its byte window).
        llm_cache: the response cache's counters summed over the cached providers (zero for
            a tenant's token, and without a cached provider).
        approvals_pending: tool calls waiting for a human's approval now.
        approvals_approved: approvals approved since the server started (0 for a tenant).
        approvals_denied: denied since then (0 for a tenant).
        approvals_expired: denied by their deadline since then (0 for a tenant).
        approvals_answered: questions to the user answered since then (0 for a tenant).
        budget_tokens: tokens the turns of its agents spent (for a tenant: its namespace's,
            within the window).
        budget_cost_usd: USD they spent, priced from the providers' configuration.
        budget_exhausted: calls refused by a budget or a cap.
        budget_top: the keys spending most within the window.
        budget_window_s: the window's length.
        budget_remote_tokens: of ``budget_tokens``, those of agents in their own process
            (counted in this server's ledger through ``loom.v1.Budgets``; 0 for a tenant).
        budget_remote_cost_usd: of ``budget_cost_usd``, theirs.
        budget_remote_calls: model calls of theirs counted.
        cluster: its event transport to the other nodes of its cluster (``None``: no
            cluster node, a caller confined to a namespace, or a server that predates it).
    """

    version: str
    started_ms: int
    uptime_s: float
    agents: int
    connected: int
    topics: int
    subscriptions: int
    published: int
    dropped: int
    unrouted: int
    tool_calls: int
    tool_calls_running: int
    pending_tool_calls: int
    stale_after_s: float
    nats: str = ""
    nats_url: str = ""
    nats_store_dir: str = ""
    nats_connected: bool = False
    nats_restarts: int = 0
    namespace: str = ""
    in_flight: int = 0
    in_flight_bytes: int = 0
    llm_cache: LLMCacheTotals = LLMCacheTotals()
    approvals_pending: int = 0
    approvals_approved: int = 0
    approvals_denied: int = 0
    approvals_expired: int = 0
    approvals_answered: int = 0
    budget_tokens: int = 0
    budget_cost_usd: float = 0.0
    budget_exhausted: int = 0
    budget_top: tuple[BudgetSpend, ...] = ()
    budget_window_s: float = 0.0
    budget_remote_tokens: int = 0
    budget_remote_cost_usd: float = 0.0
    budget_remote_calls: int = 0
    cluster: ClusterStatus | None = None


class NatsInfo(Protocol):
    """Where a server's NATS is, as ``GetStatus`` reports it (``loom.cluster.NatsStatus``
    has this shape; the bridge does not import the cluster)."""

    @property
    def mode(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def store_dir(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def restarts(self) -> int: ...


class ServerService(server_pb2_grpc.ServerServicer):
    """``loom.v1.Server``: the server's version, uptime and headline counts."""

    def __init__(
        self,
        hub: Hub,
        *,
        nats: Callable[[], NatsInfo] | None = None,
        cluster: Callable[[], ClusterInfo] | None = None,
    ) -> None:
        self.hub = hub
        self.nats = nats
        self.cluster = cluster
        self.version = loom_version()
        self.started_ms = time.time_ns() // 1_000_000
        self.started = anyio.current_time()

    async def GetStatus(
        self, request: server_pb2.GetStatusRequest, context: _Context
    ) -> server_pb2.ServerStatus:
        runtime = self.hub.runtime
        bus = runtime.bus.statistics()
        agents = runtime.directory.all()
        connected = len(self.hub.sessions)
        namespace = self.hub.caller(context).namespace
        if namespace is not None:
            # A tenant's counts are of its namespace only: its agents, topics, tools.
            bus = namespace_stats(bus, namespace)
            agents = [a for a in agents if agent_inside(namespace, a.id)]
            connected = sum(agent_inside(namespace, a) for a in self.hub.sessions)
        finished = running = 0
        for name, tool in runtime.tools.statistics().tools.items():
            if namespace is not None and not tool_inside(namespace, name):
                continue
            now = tool.waiting + tool.in_flight
            running += now
            finished += tool.calls - now
        nats = self.nats() if self.nats is not None else None
        in_flight = in_flight_bytes = 0
        for session in self.hub.sessions.values():
            stream = session.statistics()
            in_flight += stream.in_flight
            in_flight_bytes += stream.in_flight_bytes
        approvals = await _approval_counts(runtime.approvals, namespace)
        ledger = runtime.budgets
        spend = ledger.statistics(namespace=namespace)
        tokens, cost = spend.tokens, spend.cost_usd
        if namespace is not None:
            # A tenant sees its own spend only: its namespace's, within the window.
            own = ledger.spend("tenant", namespace)
            tokens, cost = own.tokens, own.cost_usd
        # Node-wide (other nodes' names, every tenant's traffic): not for a tenant.
        cluster = (
            cluster_status_to_proto(self.cluster())
            if self.cluster is not None and namespace is None
            else None
        )
        return server_pb2.ServerStatus(
            version=self.version,
            started_ms=self.started_ms,
            uptime_ms=max(0, round((anyio.current_time() - self.started) * 1000)),
            agents=len(agents),
            connected=connected,
            topics=len(bus.topics),
            subscriptions=len(bus.subscriptions),
            published=bus.published,
            dropped=bus.dropped.total,
            unrouted=bus.unrouted,
            tool_calls=finished,
            tool_calls_running=running,
            pending_tool_calls=sum(
                namespace is None or agent_inside(namespace, session.agent_id)
                for session in self.hub.calls.values()
            ),
            stale_after_ms=round(runtime.stale_after_s * 1000),
            nats_mode=nats.mode if nats is not None else "off",
            nats_url=nats.url if nats is not None else "",
            nats_store_dir=nats.store_dir if nats is not None else "",
            nats_connected=nats is not None and nats.connected,
            nats_restarts=nats.restarts if nats is not None else 0,
            namespace=namespace or "",
            in_flight=in_flight,
            in_flight_bytes=in_flight_bytes,
            # The cache does not count by namespace: a tenant sees none of it.
            **(cache_totals_to_proto(runtime.llm) if namespace is None else {}),
            approvals_pending=approvals[0],
            approvals_approved=approvals[1],
            approvals_denied=approvals[2],
            approvals_expired=approvals[3],
            approvals_answered=approvals[4],
            budget_tokens=tokens,
            budget_cost_usd=cost,
            budget_exhausted=sum(n for _, n in spend.exhausted) if namespace is None else 0,
            budget_top=[
                budget_pb2.BudgetSpend(
                    kind=row.kind, key=row.key, tokens=row.tokens, cost_usd=row.cost_usd
                )
                for row in spend.top
            ],
            budget_window_ms=round(spend.window_s * 1000),
            # Server-wide counts: not for a tenant (its own spend is in budget_tokens).
            budget_remote_tokens=spend.remote_tokens if namespace is None else 0,
            budget_remote_cost_usd=spend.remote_cost_usd if namespace is None else 0.0,
            budget_remote_calls=spend.remote_calls if namespace is None else 0,
            cluster=cluster,
        )


async def _approval_counts(
    store: Approvals | None, namespace: str | None
) -> tuple[int, int, int, int, int]:
    """Pending, approved, denied, expired, answered (a tenant: its agents' pending ones
    only)."""
    if store is None:
        return (0, 0, 0, 0, 0)
    if namespace is not None:
        pending = await store.list()
        return (sum(agent_inside(namespace, r.agent_id) for r in pending), 0, 0, 0, 0)
    s = store.statistics()
    return (s.pending, s.approved, s.denied, s.expired, s.answered)


def server_status_from_proto(msg: server_pb2.ServerStatus) -> ServerStatus:
    """A server's status read off the wire."""
    return ServerStatus(
        version=msg.version,
        started_ms=msg.started_ms,
        uptime_s=msg.uptime_ms / 1000,
        agents=msg.agents,
        connected=msg.connected,
        topics=msg.topics,
        subscriptions=msg.subscriptions,
        published=msg.published,
        dropped=msg.dropped,
        unrouted=msg.unrouted,
        tool_calls=msg.tool_calls,
        tool_calls_running=msg.tool_calls_running,
        pending_tool_calls=msg.pending_tool_calls,
        stale_after_s=msg.stale_after_ms / 1000,
        nats=msg.nats_mode,
        nats_url=msg.nats_url,
        nats_store_dir=msg.nats_store_dir,
        nats_connected=msg.nats_connected,
        nats_restarts=msg.nats_restarts,
        namespace=msg.namespace,
        in_flight=msg.in_flight,
        in_flight_bytes=msg.in_flight_bytes,
        llm_cache=cache_totals_from_proto(msg),
        approvals_pending=msg.approvals_pending,
        approvals_approved=msg.approvals_approved,
        approvals_denied=msg.approvals_denied,
        approvals_expired=msg.approvals_expired,
        approvals_answered=msg.approvals_answered,
        budget_tokens=msg.budget_tokens,
        budget_cost_usd=msg.budget_cost_usd,
        budget_exhausted=msg.budget_exhausted,
        budget_top=tuple(
            BudgetSpend(kind=row.kind, key=row.key, tokens=row.tokens, cost_usd=row.cost_usd)
            for row in msg.budget_top
        ),
        budget_window_s=msg.budget_window_ms / 1000,
        budget_remote_tokens=msg.budget_remote_tokens,
        budget_remote_cost_usd=msg.budget_remote_cost_usd,
        budget_remote_calls=msg.budget_remote_calls,
        cluster=cluster_status_from_proto(msg.cluster) if msg.HasField("cluster") else None,
    )
