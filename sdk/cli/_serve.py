"""``loom serve``: host the runtime and its gRPC bridge until a signal asks it to stop.

The composition root of a server process: it starts (or reaches) NATS, builds the bus, the
actor runtime and the bridge server, reports readiness (the bound port) through
``task_status``, and on SIGINT or SIGTERM drains within the configured grace: the bridge first
(health ``NOT_SERVING``, streams end with ``UNAVAILABLE``, calls in flight get the grace), then
the agents, then the bus, and last NATS (the connection drains, the embedded server stops).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from loom import CognitiveAgent
from loom.bridge import BridgeServer
from loom.cluster import (
    ClusterDirectory,
    ClusterTransport,
    JetStreamLog,
    NatsEngine,
    NatsMode,
    open_nats,
)
from loom.runtime import AgentRuntime, ConfigError, EventBus
from loom.runtime.collab import BarrierCoordinator
from loom.runtime.llm import ModelRouter
from loom.runtime.resilience import Policies
from loom.web import A2AServer, HttpServer, Metrics

from .._metrics import ServeMetrics
from .._telemetry import open_tracing, trace_config
from ._config import ServeConfig, ServiceTables
from ._config_a2a_remote import open_a2a_remote
from ._config_budget import budgets_applied
from ._config_policy import build_policies
from ._hosted import agent_data_dir, agent_tools, build_tools
from ._llm_cache import open_response_cache
from ._serve_a2a import a2a_server
from ._serve_approvals import attach_approvals, guard_tools, open_approvals
from ._serve_metrics import meter_provider, metrics_body, observe_metrics, open_serve_metrics

__all__ = ["serve"]

log = logging.getLogger("loom.serve")


@asynccontextmanager
async def _mcp_hub(
    tables: ServiceTables, runtime: AgentRuntime, environ: Mapping[str, str]
) -> AsyncIterator[None]:
    """The configured MCP servers, their tools in the runtime's registry (none: nothing)."""
    if not tables.mcp:
        yield
        return
    from loom.runtime.tools import McpHub  # the mcp SDK loads only when it is used

    async with McpHub(tables.mcp, runtime.tools, environ=environ) as hub:
        log.info("loom serve: MCP servers: %s", ", ".join(hub.servers))
        yield


@asynccontextmanager
async def _durable_log(nats: NatsEngine) -> AsyncIterator[JetStreamLog | None]:
    """The bus's durable log on the server's NATS connection (``None`` with ``--nats off``:
    the bus then refuses durable subscriptions with ``DurabilityUnavailable``)."""
    if nats.connection is None:
        yield None
        return
    async with JetStreamLog(nats.connection.client) as log:
        yield log


def _cluster(nats: NatsEngine, config: ServeConfig) -> ClusterTransport | None:
    """The bus's transport to the other nodes on the same NATS (``docs/cluster.md``): with
    ``--nats URL`` this server is node ``config.node_name()`` of the Loom formed by every
    ``loom serve`` on that NATS. Embedded NATS is this process's own server, which no other
    node reaches, so there is no cluster (and no transport); nor with ``--nats off``. Alone
    on its NATS, a node pays one attribute test per publish: nothing goes on the wire until
    another node holds a matching subscription."""
    if not _clustered(nats) or nats.connection is None:
        return None
    # One heartbeat for the whole node: the transport's announcements of interest and the
    # directory's keys go out at the same interval (`--cluster-heartbeat`).
    return ClusterTransport(
        nats.connection.client,
        config.node_name(),
        heartbeat_s=config.cluster_heartbeat_s,
        hold_silent_s=config.cluster_hold_s,
        hold_silent_bytes=config.cluster_hold_bytes,
    )


def _clustered(nats: NatsEngine) -> bool:
    """Whether this server is a node of a cluster: NATS URLs, which other nodes share (an
    embedded server is this node's alone), and connected."""
    return nats.mode is NatsMode.EXTERNAL and nats.connection is not None


@asynccontextmanager
async def _cluster_directory(
    config: ServeConfig, nats: NatsEngine, runtime: AgentRuntime
) -> AsyncIterator[ClusterDirectory | None]:
    """The cluster's directory and calls between nodes (``docs/cluster.md``), with NATS URLs;
    else nothing."""
    if not _clustered(nats) or nats.connection is None:
        yield None
        return
    async with ClusterDirectory(
        runtime,
        nats.connection.client,
        config.node_name(),
        heartbeat_s=config.cluster_heartbeat_s,
    ) as directory:
        yield directory  # the startup line says this node's name, once everything is up


@asynccontextmanager
async def _barriers(bus: EventBus) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The bus's barrier coordinator, so agents anywhere can ``ctx.collab.arrive``; yields
    what stops it (also called on the way out; the second call does nothing).

    In a cluster every node runs one: an arrival crosses to every node (each coordinator
    holds interest in ``loom.barrier.>``), so each counts every participant and answers at
    release; a participant takes the first answer, the others are strays its reply router
    counts (``docs/cluster.md``)."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(BarrierCoordinator(bus, sender="loom-serve"))
        yield stack.aclose


@asynccontextmanager
async def _models(
    tables: ServiceTables,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    data_dir: Path,
    policies: Policies,
) -> AsyncIterator[ModelRouter | None]:
    """The server's model router over ``[llm]`` (``None`` without one); closed at the end.
    Providers with ``cache = true`` share ``<data_dir>/llm_cache.sqlite3``."""
    if tables.llm is None:
        yield None
        return
    async with (
        open_response_cache(tables.llm, data_dir) as cache,
        ModelRouter.from_config(
            tables.llm,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            policies=policies,
            cache=cache,
        ) as router,
    ):
        log.info("loom serve: LLM providers: %s", ", ".join(tables.llm.providers))
        yield router


@asynccontextmanager
async def _hosted(
    tables: ServiceTables, runtime: AgentRuntime, router: ModelRouter | None, data_dir: Path
) -> AsyncIterator[dict[str, CognitiveAgent]]:
    """Register the native tools of ``[tools]`` and start the agents of ``[agents]``, before
    the bridge listens: its first caller finds them. (The runtime stops the agents.)"""
    tools = guard_tools(build_tools(tables.tools), runtime)
    for tool in tools:
        runtime.tools.register(tool)
    log.info("loom serve: native tools: %s", ", ".join(t.name for t in tools) or "none")
    hosted: dict[str, CognitiveAgent] = {}
    for agent_id, table in tables.agents.items():
        assert router is not None  # decode_agents refuses [agents] without [llm]
        llm = router.providers[table.llm] if table.llm else router
        agent = CognitiveAgent(
            agent_id,
            llm=llm,
            system_prompt=table.system_prompt,
            strategy=table.strategy,
            max_iterations=table.max_iterations,
            max_parallel_tools=table.max_parallel_tools,
            tool_timeout_s=table.tool_timeout_s,
            tools=agent_tools(agent_id, table, runtime.tools),
            use_capabilities=table.capabilities,
            data_dir=agent_data_dir(data_dir, agent_id),
            topics=table.topics,
            max_concurrency=table.max_concurrency,
            mailbox_size=table.mailbox_size,
            approval=table.approval,
            ask_user=table.ask_user,
            ask_user_timeout_s=table.ask_user_timeout_s,
            # At most once across restarts: <data-dir>/agents/<id>/effects.sqlite3.
            journal=True,
        )
        await anyio.Path(agent_data_dir(data_dir, agent_id)).mkdir(parents=True, exist_ok=True)
        await runtime.start(agent)
        hosted[agent_id] = agent
        log.info("loom serve: hosting agent %s (%s)", agent_id, table.llm or "the [llm] router")
    yield hosted


class _Readiness:
    """What ``/readyz`` answers: ready while the bridge serves and NATS (when there is one)
    is connected; not ready from the moment a drain begins."""

    def __init__(self, nats: NatsEngine) -> None:
        self.nats = nats
        self.draining = False

    def __call__(self) -> str | None:
        if self.draining:
            return "draining"
        status = self.nats.status()
        if status.mode != "off" and not status.connected:
            return f"NATS ({status.url}) is not connected"
        return None


@asynccontextmanager
async def _http(
    config: ServeConfig,
    tables: ServiceTables,
    runtime: AgentRuntime,
    ready: _Readiness,
    metrics: Metrics | None,
    a2a: A2AServer | None = None,
) -> AsyncIterator[HttpServer | None]:
    """The HTTP port (health, metrics, the dashboard, A2A), unless ``http = off``."""
    address = config.http_address()
    if address is None:
        if a2a is not None:
            raise ConfigError("[a2a] expose needs the HTTP port: http must not be off")
        yield None
        return
    tokens = tuple(t for t in (config.token, config.admin_token) if t is not None)
    async with HttpServer(
        runtime,
        host=address[0],
        port=address[1],
        tokens=tokens,
        # With an admin token, only its holder acts from the pages (as on the gRPC port).
        admin_tokens=(config.admin_token,) if config.admin_token is not None else (),
        # Tenant tokens confine a caller to a namespace; the dashboard shows everything,
        # so with only those it opens to nobody (set token or admin_token to open it).
        locked=bool(tables.tokens) and not tokens,
        tls_cert_file=config.tls_cert_file,
        tls_key_file=config.tls_key_file,
        metrics=metrics,
        ready=ready,
        grace_s=config.drain_grace_s,
        a2a=a2a,
    ) as http:
        yield http


async def serve(
    config: ServeConfig,
    *,
    tables: ServiceTables | None = None,
    environ: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
    on_metrics: Callable[[ServeMetrics], None] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Loom server until SIGINT or SIGTERM, then drain and stop.

    Reports the bound port through ``task_status`` once the bridge accepts calls, so
    ``await tg.start(serve, config)`` returns it (``port = 0`` picks a free one). The MCP
    servers of ``tables`` are connected first and their tools registered in the runtime, so
    every agent and ``ForwardToolCall`` can use them from the first call; ``environ`` is what
    their ``pass_env``/``headers_env`` read. ``metrics`` replaces the body of the HTTP port's
    ``/metrics`` (by default the server's own metrics, ``ServeMetrics.prometheus()``).
    ``on_metrics`` is called with the server's metrics once they read everything, before
    readiness is reported (not at all with ``config.metrics`` off: there are none).

    Raises:
        InsecureBind: a non-loopback host without a token or TLS.
        BindError: the address cannot be bound.
        HttpBindError: the HTTP port's address cannot be bound.
        NatsError: the embedded nats-server cannot start, or the first connection to NATS
            failed (``NatsServerNotFound``, ``NatsServerFailed``, ``NatsConnectFailed``).
    """
    data_dir = await anyio.Path(config.data_dir).resolve()
    await data_dir.mkdir(parents=True, exist_ok=True)
    tracing = trace_config(
        environ or {},
        endpoint=config.otlp_endpoint or None,
        sample=config.trace_sample,
        service_name="loom-serve",
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        tables = tables if tables is not None else ServiceTables()
        policies = build_policies(tables.policy)  # docs/guardrails.md
        cluster: ClusterTransport | None = None
        async with (
            # Outermost: the spans of the last moments (the drain) are flushed after it.
            open_tracing(tracing) as tracer_provider,
            # Next: the last export follows the drain; the runtime and the router record into
            # it, so it is made before them. None with metrics off (docs/observability.md).
            open_serve_metrics(config, environ or {}) as meters,
            # First in, last out: durable state outlives everything built on it.
            open_nats(
                config.nats,
                store_dir=data_dir / "nats",
                settings=config.nats_settings(),
                drain_grace_s=config.drain_grace_s,
            ) as nats,
            _durable_log(nats) as durable_log,
            # Outside the bus and the runtime, which the drain closes first: its timer's task
            # group must not be left open inside theirs.
            open_approvals(config, tables, data_dir, durable_log) as approvals,
            EventBus(
                transport=(cluster := _cluster(nats, config)),
                drain_grace=config.drain_grace_s,
                max_buffer_bytes=config.max_buffer_bytes,
                durable_log=durable_log,
                tracer_provider=tracer_provider,
            ) as bus,
            # The router first: the runtime offers it to its agents (llm="server") and the
            # bridge to agents elsewhere (loom.v1.LLM).
            _models(
                tables, tracer_provider, meter_provider(meters), Path(data_dir), policies
            ) as router,
            AgentRuntime(
                bus,
                stale_after_s=config.stale_after_s,
                # A short threshold gets a sweep to match (5 s, the default, for 15 s).
                sweep_interval_s=min(5.0, config.stale_after_s / 3),
                llm=router,
                node=config.node_name() if _clustered(nats) else "",
                meter_provider=meter_provider(meters),
                policies=policies,
            ) as runtime,
            # Before any agent starts: ids are claimed cluster-wide from the first.
            _barriers(bus) as stop_barriers,
            _cluster_directory(config, nats, runtime) as directory,
            # Before the agents: a turn that waited across a restart resumes from it.
            attach_approvals(approvals, runtime),
            budgets_applied(tables.budget, runtime),  # before the agents it limits start
            _mcp_hub(tables, runtime, environ or {}),
            open_a2a_remote(tables.a2a_remote, runtime),
            _hosted(tables, runtime, router, Path(data_dir)) as hosted,
            BridgeServer(
                runtime,
                host=config.host,
                port=config.port,
                token=config.token,
                admin_token=config.admin_token,
                tls=config.tls(),
                limits=config.limits(),
                grace_s=config.drain_grace_s,
                settle_s=config.settle_s,
                nats=nats.status,
                cluster=cluster.statistics if cluster is not None else None,
                tenants=tables.tokens,
                # The original Loom's MemoryService, durable here: its plans and episodes
                # outlive a restart, in <data-dir>/memory.sqlite3 (docs/interop.md).
                data_dir=data_dir,
            ) as server,
            # Last in, first out: the drain makes /readyz fail, then stops the HTTP port.
            _http(
                config,
                tables,
                runtime,
                ready := _Readiness(nats),
                metrics_body(meters, metrics),
                a2a_server(
                    tables,
                    runtime,
                    Path(data_dir),
                    hosted,
                    server,
                    http=config.http_address() is not None,
                ),
            ) as http,
        ):
            if cluster is not None:
                log.info(
                    "loom serve: cluster node %s (events cross to the other nodes)", cluster.node
                )
            log.info("loom serve: event bus up (pid %d, data dir %s)", os.getpid(), data_dir)
            log.info("loom serve: NATS %s", nats.describe())
            observe_metrics(
                meters,
                bus,
                runtime=runtime,
                server=server,
                router=router,
                durable=durable_log,
                cluster=cluster,
                on_metrics=on_metrics,
            )
            if tracing is not None:
                log.info(
                    "loom serve: traces to %s (%s %g)",
                    tracing.endpoint,
                    tracing.sampler,
                    tracing.sampler_arg,
                )
            log.info(
                "loom serve: listening on %s (%s%s)",
                server.address,
                "TLS" if config.tls_cert_file else "plaintext",
                ", token required" if config.token or tables.tokens else "",
            )
            if http is not None:
                log.info(
                    "loom serve: dashboard on %s (%s)",
                    http.url,
                    "token required" if http.auth.required else "no token: loopback only",
                )
            for tenant in tables.tokens:
                log.info(
                    "loom serve: tenant token %s confines its clients to namespace %s",
                    tenant.name,
                    tenant.namespace,
                )
            task_status.started(server.port)
            async for signum in signals:
                log.info("loom serve: %s received, draining", signal.Signals(signum).name)
                break
            ready.draining = True
            if http is not None:
                await http.aclose()
            await server.aclose()
            # Before the runtime: the directory's and the coordinator's task groups were
            # entered inside the runtime's, so they must end first (else the runtime's
            # cancellation reaches them with no scope left to catch it). The node leaves the
            # cluster's directory once its bridge has stopped taking agents, before its agents
            # stop; waiting participants get ``aborted``.
            if directory is not None:
                await directory.aclose()
            await stop_barriers()
            await runtime.aclose()
            await bus.aclose()
    log.info("loom serve: stopped")
