"""Metrics of a ``loom serve``: OpenTelemetry's ``MeterProvider``, read as Prometheus text
(``/metrics``) and exported over OTLP when an endpoint is configured (``docs/observability.md``).

Almost everything is an *observable* instrument: its callback reads the counters Loom keeps
anyway (``EventBus.statistics()``, the runtime's directory, ``BridgeServer.statistics()``,
each model provider's ``statistics()``, the durable log's), so the hot path of a publish pays
nothing for metrics. The two histograms are recorded as calls end, because no statistic keeps
a duration: tool calls (``ToolRegistry``, handed the histogram by ``AgentRuntime``) and model
calls (each provider of the ``ModelRouter``). Both get this module's ``MeterProvider``; only
this outermost layer holds the OpenTelemetry SDK and its exporters.

The statistics are read on the event loop, never from the exporter's thread: a scrape
(:meth:`ServeMetrics.prometheus`, called on the loop) takes a fresh snapshot first, and the
OTLP export takes one on the loop before it hands the collection to a worker thread. The
callbacks only read the last snapshot. The durable log's figures come from the server
(``await``), so a task refreshes them every few seconds.

The Prometheus text comes from the official bridge, ``opentelemetry-exporter-prometheus``'s
``PrometheusMetricReader``, registered in a ``CollectorRegistry`` of this object's own (not
``prometheus_client``'s global one), and ``prometheus_client.generate_latest``: the names,
units and ``_total`` suffixes follow the OpenTelemetry-to-Prometheus rules without a
converter of ours.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import msgspec

from loom.bridge import BridgeServer, ServerStatistics
from loom.cluster import ClusterStats, ClusterTransport
from loom.runtime import (
    AgentInfo,
    AgentRuntime,
    BudgetStats,
    BusStats,
    ConfigError,
    DurableStats,
    EventBus,
)
from loom.runtime.llm import ModelRouter, ProviderStats
from loom.runtime.lowlevel import DurableLog
from loom.runtime.resilience import PolicyStats

from ._metrics_cache import CacheRows, cache_instruments, cache_rows
from ._metrics_cluster import cluster_instruments
from ._metrics_policy import policy_instruments
from ._metrics_tracing import tracing_instruments

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider, Observation
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from prometheus_client import CollectorRegistry

__all__ = ["MetricsConfig", "ServeMetrics", "metrics_config", "open_metrics"]

log = logging.getLogger("loom.serve")

_TRUE = frozenset({"true", "1", "yes", "on"})
OTHER = "other"
"""The ``topic`` label of every topic beyond the first ``top_topics``."""


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where metrics go besides ``/metrics``.

    Attributes:
        otlp_endpoint: the OTLP/gRPC endpoint to export to (``""``: no OTLP export).
        interval_s: seconds between OTLP exports (``OTEL_METRIC_EXPORT_INTERVAL``, 60 s).
        service_name: the ``service.name`` resource attribute.
        resource: further resource attributes (``OTEL_RESOURCE_ATTRIBUTES``).
        top_topics: topics with a ``topic`` label of their own; the rest are ``other``.
    """

    otlp_endpoint: str = ""
    interval_s: float = 60.0
    service_name: str = "loom"
    resource: dict[str, str] = msgspec.field(default_factory=dict)
    top_topics: int = 50


def metrics_config(
    environ: Mapping[str, str],
    *,
    endpoint: str | None = None,
    service_name: str = "loom",
    top_topics: int = 50,
) -> MetricsConfig:
    """The metrics this process exports, by the rules the traces follow (``sdk/_telemetry.py``).

    ``endpoint`` (``--otlp-endpoint``) wins over ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``,
    which wins over ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``OTEL_METRICS_EXPORTER=otlp`` alone
    means ``http://localhost:4317``, ``OTEL_METRICS_EXPORTER=none`` or
    ``OTEL_SDK_DISABLED=true`` no OTLP export (the Prometheus text is Loom's own endpoint and
    stays).

    Raises:
        ConfigError: an ``OTEL_METRIC_EXPORT_INTERVAL`` that is not a positive number of ms.
    """
    resource: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            resource[key.strip()] = value.strip()
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    try:
        interval_ms = float(raw) if raw else 60_000.0
    except ValueError:
        interval_ms = math.nan
    if not (math.isfinite(interval_ms) and interval_ms > 0):
        raise ConfigError(
            f"$OTEL_METRIC_EXPORT_INTERVAL is a positive number of milliseconds, not {raw!r}"
        )
    exporters = environ.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    url = (
        endpoint
        or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("http://localhost:4317" if exporters == "otlp" else "")
    )
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE
    if disabled or (exporters == "none" and not endpoint):
        url = ""
    return MetricsConfig(
        otlp_endpoint=url,
        interval_s=interval_ms / 1000,
        service_name=environ.get("OTEL_SERVICE_NAME") or service_name,
        resource=resource,
        top_topics=top_topics,
    )


class _Sources(msgspec.Struct, kw_only=True):
    bus: EventBus
    runtime: AgentRuntime | None = None
    server: BridgeServer | None = None
    router: ModelRouter | None = None
    durable: DurableLog | None = None
    cluster: ClusterTransport | None = None


_Counts = dict[str, float]  # "published", "delivered", "overflow"... -> count
_DROPS = ("overflow", "closed", "bytes")


class _Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The statistics read at once, on the event loop, for one collection (the callbacks,
    which may run on the exporter's thread, only read it)."""

    bus: BusStats | None = None
    topics: dict[str, _Counts] = msgspec.field(default_factory=dict)
    tiers: dict[str, _Counts] = msgspec.field(default_factory=dict)
    agents: tuple[AgentInfo, ...] = ()
    server: ServerStatistics | None = None
    providers: tuple[tuple[str, str, float, float, ProviderStats], ...] = ()
    durable: DurableStats | None = None
    caches: CacheRows = ()
    policies: tuple[PolicyStats, ...] = ()
    budgets: BudgetStats | None = None
    cluster: ClusterStats | None = None


class ServeMetrics:
    """The metrics of one server: a ``MeterProvider`` to hand to what records durations, and
    the Prometheus text of everything (:meth:`prometheus`). Made by :func:`open_metrics`."""

    def __init__(
        self,
        provider: SdkMeterProvider,
        registry: CollectorRegistry,
        config: MetricsConfig,
        otlp: PeriodicExportingMetricReader | None,
    ) -> None:
        self._provider = provider
        self._registry = registry
        self._config = config
        self._otlp = otlp
        self._sources: _Sources | None = None
        self._observed = anyio.Event()
        self._snap = _Snapshot()
        self._durable: DurableStats | None = None
        # Topics with a label of their own: the first top_topics seen (the busiest first
        # within one collection), kept for good, so that no series jumps between a topic and
        # "other" and every counter only grows.
        self._admitted: set[str] = set()
        self._instruments()

    @property
    def meter_provider(self) -> MeterProvider:
        """Hand it to ``AgentRuntime`` and ``ModelRouter.from_config``: they time their calls."""
        return self._provider

    @property
    def otlp_endpoint(self) -> str:
        """Where metrics are exported over OTLP (``""``: nowhere)."""
        return self._config.otlp_endpoint

    @property
    def interval_s(self) -> float:
        """Seconds between OTLP exports."""
        return self._config.interval_s

    def observe(
        self,
        bus: EventBus,
        *,
        runtime: AgentRuntime | None = None,
        server: BridgeServer | None = None,
        router: ModelRouter | None = None,
        durable: DurableLog | None = None,
    ) -> None:
        """Read these from now on (until then, the observable instruments report nothing)."""
        self._sources = _Sources(
            bus=bus, runtime=runtime, server=server, router=router, durable=durable
        )
        self._observed.set()

    def observe_cluster(self, transport: ClusterTransport | None) -> None:
        """Read this cluster node's transport too (``loom.cluster.*``; after :meth:`observe`)."""
        if self._sources is not None:
            self._sources.cluster = transport

    def prometheus(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric now, and its content type: what
        ``/metrics`` answers. Call it on the event loop (it reads the runtime's state)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._snap = self._take()
        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    async def refresh_durable(self) -> None:
        """Read the durable log's figures (an ``await`` on its server; the callbacks cannot).
        A log that cannot answer now (NATS away) keeps its last figures: metrics never stop
        the server."""
        sources = self._sources
        if sources is not None and sources.durable is not None:
            try:
                self._durable = await sources.durable.statistics()
            except Exception as exc:
                log.debug("metrics: the durable log's statistics: %r", exc)

    async def export(self) -> None:
        """Export over OTLP now (nothing without an endpoint)."""
        if self._otlp is None:
            return
        self._snap = self._take()
        await anyio.to_thread.run_sync(self._otlp.force_flush)

    # ------------------------------------------------------------------ the snapshot

    def _take(self) -> _Snapshot:
        s = self._sources
        if s is None:
            return _Snapshot()
        providers: list[tuple[str, str, float, float, ProviderStats]] = []
        if s.router is not None:
            for name, provider in s.router.providers.items():
                statistics = getattr(provider, "statistics", None)
                if callable(statistics):
                    stats = statistics()
                    if isinstance(stats, ProviderStats):
                        profile = provider.profile
                        model = str(getattr(getattr(provider, "config", None), "model", ""))
                        providers.append(
                            (
                                name,
                                model,
                                profile.cost_per_1k_input,
                                profile.cost_per_1k_output,
                                stats,
                            )
                        )
        bus = s.bus.statistics()
        return _Snapshot(
            bus=bus,
            topics=self._topic_rows(bus),
            tiers=self._tiers(bus),
            agents=tuple(s.runtime.directory.all()) if s.runtime is not None else (),
            server=s.server.statistics() if s.server is not None else None,
            providers=tuple(providers),
            durable=self._durable,
            caches=cache_rows(s.router),
            policies=s.runtime.policies.statistics().policies if s.runtime is not None else (),
            budgets=s.runtime.budgets.statistics() if s.runtime is not None else None,
            cluster=s.cluster.statistics() if s.cluster is not None else None,
        )

    # ------------------------------------------------------------------ the instruments

    def _instruments(self) -> None:
        meter = self._provider.get_meter("loom.serve")

        def counter(name: str, read: Callable[[], Iterable[Observation]], **kw: str) -> None:
            meter.create_observable_counter(name, [lambda _: read()], **kw)

        def gauge(name: str, read: Callable[[], Iterable[Observation]], **kw: str) -> None:
            meter.create_observable_gauge(name, [lambda _: read()], **kw)

        def topics() -> dict[str, _Counts]:
            return self._snap.topics

        counter(
            "loom.events.published",
            lambda: self._by_topic(topics(), "published"),
            description="Events published, by topic (the first topics seen; the rest: other)",
        )
        counter(
            "loom.events.delivered",
            lambda: self._by_topic(topics(), "delivered"),
            description="Deliveries put into subscriptions' buffers, by topic",
        )
        counter(
            "loom.events.dropped",
            lambda: self._drops_by_topic(topics()),
            description="Deliveries lost, by topic and reason (overflow, closed, bytes)",
        )
        counter(
            "loom.tier.delivered",
            lambda: self._by_tier("delivered"),
            description="Events taken by subscribers, by QoS tier",
        )
        counter(
            "loom.tier.dropped",
            self._tier_drops,
            description="Events lost by subscriptions, by QoS tier and reason",
        )
        for field, what in (
            ("queued", "Events waiting in a subscription's buffer"),
            ("high_water", "The most events a subscription's buffer has held"),
            ("waiting_publishers", "Publishers held back by a subscription's full buffer"),
            ("capacity", "A subscription's buffer size"),
        ):
            gauge(f"loom.subscription.{field}", self._per_sub(field), description=what)
        gauge("loom.agents", self._agents_by_status, description="Agents, by status")
        counter("loom.agent.restarts", self._restarts, description="Restarts of each known agent")
        gauge(
            "loom.agent.mailbox_depth", self._mailboxes, description="Events in agents' mailboxes"
        )
        self._llm_instruments(counter)
        cache_instruments(counter, gauge, lambda: self._snap.caches)
        self._bridge_instruments(counter, gauge)
        self._durable_instruments(gauge)
        policy_instruments(counter, gauge, lambda: self._snap.policies)
        self._budget_instruments(counter, gauge)
        cluster_instruments(counter, gauge, lambda: self._snap.cluster)
        tracing_instruments(
            counter,
            gauge,
            lambda: None if self._sources is None else self._sources.bus.tracer_provider,
        )

    def _llm_instruments(
        self, counter: Callable[[str, Callable[[], Iterable[Observation]]], None]
    ) -> None:
        from opentelemetry.metrics import Observation

        def rows() -> Iterable[tuple[dict[str, str], float, float, ProviderStats]]:
            for name, model, per_in, per_out, stats in self._snap.providers:
                yield {"provider": name, "model": model}, per_in, per_out, stats

        counter(
            "loom.llm.calls",
            lambda: [Observation(s.calls, labels) for labels, _, _, s in rows()],
        )
        counter(
            "loom.llm.failures",
            lambda: [Observation(s.failed, labels) for labels, _, _, s in rows()],
        )
        counter(
            "loom.llm.tokens",
            lambda: [
                Observation(count, {**labels, "type": kind})
                for labels, _, _, s in rows()
                for kind, count in (("input", s.prompt_tokens), ("output", s.completion_tokens))
            ],
        )
        counter(
            "loom.llm.cost.usd",
            lambda: [
                Observation(
                    s.prompt_tokens / 1000 * per_in + s.completion_tokens / 1000 * per_out,
                    labels,
                )
                for labels, per_in, per_out, s in rows()
            ],
        )

    def _bridge_instruments(
        self,
        counter: Callable[[str, Callable[[], Iterable[Observation]]], None],
        gauge: Callable[[str, Callable[[], Iterable[Observation]]], None],
    ) -> None:
        from opentelemetry.metrics import Observation

        def read(
            pick: Callable[[ServerStatistics], Iterable[Observation]],
        ) -> Callable[[], Iterable[Observation]]:
            return lambda: () if self._snap.server is None else pick(self._snap.server)

        gauge("loom.bridge.streams", read(lambda s: [Observation(s.connected)]))
        counter("loom.bridge.streams.opened", read(lambda s: [Observation(s.streams_opened)]))
        counter(
            "loom.bridge.frames",
            read(
                lambda s: [
                    Observation(s.frames_received, {"direction": "received"}),
                    Observation(s.frames_sent, {"direction": "sent"}),
                ]
            ),
        )
        counter(
            "loom.bridge.bytes",
            read(
                lambda s: [
                    Observation(s.bytes_received, {"direction": "received"}),
                    Observation(s.bytes_sent, {"direction": "sent"}),
                ]
            ),
        )
        gauge("loom.bridge.in_flight", read(lambda s: [Observation(s.in_flight)]))
        gauge("loom.bridge.pending_tool_calls", read(lambda s: [Observation(s.pending_tool_calls)]))

    def _durable_instruments(
        self, gauge: Callable[[str, Callable[[], Iterable[Observation]]], None]
    ) -> None:
        from opentelemetry.metrics import Observation

        def read(
            pick: Callable[[DurableStats], Iterable[Observation]],
        ) -> Callable[[], Iterable[Observation]]:
            return lambda: () if self._snap.durable is None else pick(self._snap.durable)

        gauge("loom.durable.stored", read(lambda d: [Observation(d.stored)]))
        gauge("loom.durable.stored_bytes", read(lambda d: [Observation(d.bytes)]))
        gauge(
            "loom.durable.backlog",
            read(lambda d: [Observation(c.pending, {"durable": c.name}) for c in d.consumers]),
        )
        gauge(
            "loom.durable.in_flight",
            read(lambda d: [Observation(c.in_flight, {"durable": c.name}) for c in d.consumers]),
        )
        gauge(
            "loom.durable.redelivered",
            read(lambda d: [Observation(c.redelivered, {"durable": c.name}) for c in d.consumers]),
        )

    def _budget_instruments(
        self,
        counter: Callable[[str, Callable[[], Iterable[Observation]]], None],
        gauge: Callable[[str, Callable[[], Iterable[Observation]]], None],
    ) -> None:
        from opentelemetry.metrics import Observation

        def read(
            pick: Callable[[BudgetStats], Iterable[Observation]],
        ) -> Callable[[], Iterable[Observation]]:
            return lambda: () if self._snap.budgets is None else pick(self._snap.budgets)

        # The spend of the runtime's turns (its budget ledger), beside loom.llm.tokens (the
        # providers' view): the same calls, counted by who made them.
        counter("loom.budget.tokens", read(lambda b: [Observation(b.tokens)]))
        counter("loom.budget.cost.usd", read(lambda b: [Observation(b.cost_usd)]))
        counter(
            "loom.budget.exhausted",
            read(lambda b: [Observation(n, {"budget": k}) for k, n in b.exhausted]),
        )
        # The keys spending most within the window (at most 20 series at a time).
        gauge(
            "loom.budget.window.tokens",
            read(lambda b: [Observation(r.tokens, {"kind": r.kind, "key": r.key}) for r in b.top]),
        )
        gauge(
            "loom.budget.window.cost.usd",
            read(
                lambda b: [Observation(r.cost_usd, {"kind": r.kind, "key": r.key}) for r in b.top]
            ),
        )
        gauge("loom.budget.keys", read(lambda b: [Observation(b.keys)]))
        # Of the above, what agents in their own process spent (held through loom.v1.Budgets).
        counter("loom.budget.remote.tokens", read(lambda b: [Observation(b.remote_tokens)]))
        counter("loom.budget.remote.cost.usd", read(lambda b: [Observation(b.remote_cost_usd)]))

    # ------------------------------------------------------------------ the readings

    def _topic_rows(self, bus: BusStats) -> dict[str, _Counts]:
        """Each admitted topic's counters, and ``other``: the bus's totals less theirs (so the
        series of a topic the bus stops tracking moves into ``other``, which only grows)."""
        rows: dict[str, _Counts] = {}
        admitted = self._admitted
        room = self._config.top_topics - len(admitted)
        ranked = sorted(bus.topics, key=lambda t: -t.published) if room > 0 else bus.topics
        for t in ranked:
            if t.topic not in admitted:
                if room <= 0 or t.topic == OTHER:
                    continue
                admitted.add(t.topic)
                room -= 1
            d = t.dropped
            rows[t.topic] = {
                "published": t.published,
                "delivered": t.delivered,
                "overflow": d.overflow,
                "closed": d.closed,
                "bytes": d.bytes,
            }
        d = bus.dropped
        other: _Counts = {
            "published": bus.published,
            "delivered": bus.delivered,
            "overflow": d.overflow,
            "closed": d.closed,
            "bytes": d.bytes,
        }
        for row in rows.values():
            for key, value in row.items():
                other[key] -= value
        rows[OTHER] = other
        return rows

    @staticmethod
    def _by_topic(rows: dict[str, _Counts], field: str) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(row[field], {"topic": topic}) for topic, row in rows.items()]

    @staticmethod
    def _drops_by_topic(rows: dict[str, _Counts]) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(row[reason], {"topic": topic, "reason": reason})
            for topic, row in rows.items()
            for reason in _DROPS
        ]

    def _tiers(self, bus: BusStats) -> dict[str, _Counts]:
        """Each tier's counters, over its open and closed subscriptions (the bus keeps what a
        closed one had counted, so a tier's counters only grow)."""
        return {
            tier.qos.name.lower(): {
                "delivered": tier.delivered,
                "overflow": tier.dropped.overflow,
                "closed": tier.dropped.closed,
                "bytes": tier.dropped.bytes,
            }
            for tier in bus.tiers
        }

    def _by_tier(self, field: str) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(c.get(field, 0), {"qos": t}) for t, c in self._snap.tiers.items()]

    def _tier_drops(self) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(c.get(reason, 0), {"qos": tier, "reason": reason})
            for tier, c in self._snap.tiers.items()
            for reason in _DROPS
        ]

    def _per_sub(self, field: str) -> Callable[[], list[Observation]]:
        from opentelemetry.metrics import Observation

        def read() -> list[Observation]:
            bus = self._snap.bus
            if bus is None:
                return []
            return [
                Observation(
                    getattr(sub, field),
                    {
                        "subscription": str(sub.id),
                        "pattern": sub.pattern,
                        "qos": sub.qos.name.lower(),
                    },
                )
                for sub in bus.subscriptions
            ]

        return read

    def _agents_by_status(self) -> list[Observation]:
        from opentelemetry.metrics import Observation

        counts: dict[str, int] = defaultdict(int)
        for agent in self._snap.agents:
            counts[agent.status.value] += 1
        return [Observation(n, {"status": status}) for status, n in counts.items()]

    def _restarts(self) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(a.restarts, {"agent": a.id}) for a in self._snap.agents]

    def _mailboxes(self) -> list[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(a.mailbox_depth, {"agent": a.id, "status": a.status.value})
            for a in self._snap.agents
        ]


@asynccontextmanager
async def open_metrics(
    config: MetricsConfig, *, durable_every_s: float = 5.0
) -> AsyncIterator[ServeMetrics]:
    """The server's metrics: a ``MeterProvider`` read as Prometheus text, and exported over
    OTLP every ``config.interval_s`` when ``config.otlp_endpoint`` is set. Call
    :meth:`ServeMetrics.observe` once the bus, runtime, bridge and router are up.

    Leaving exports what is left (OTLP; bounded by the exporter's timeout) and shuts the
    provider down.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    readers: list[MetricReader] = [
        PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    ]
    otlp: PeriodicExportingMetricReader | None = None
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(
            endpoint=config.otlp_endpoint, insecure=config.otlp_endpoint.startswith("http://")
        )
        # No thread of its own (interval inf): this module exports from its task, after it
        # read the statistics on the event loop.
        otlp = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        readers.append(otlp)
    attributes = {**config.resource, "service.name": config.service_name}
    provider = SdkMeterProvider(metric_readers=readers, resource=Resource.create(attributes))
    metrics = ServeMetrics(provider, registry, config, otlp)

    async def refresh_durable() -> None:
        await metrics._observed.wait()
        while True:
            await metrics.refresh_durable()
            await anyio.sleep(durable_every_s)

    async def export() -> None:
        while True:
            await anyio.sleep(config.interval_s)
            await metrics.export()

    tg = anyio.create_task_group()
    await tg.__aenter__()
    try:
        tg.start_soon(refresh_durable)
        if otlp is not None:
            tg.start_soon(export)
        yield metrics
    finally:
        try:
            tg.cancel_scope.cancel()
            # The body's own exception propagates as itself (not in an ExceptionGroup): the
            # task group only ever holds the two loops above, cancelled here.
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if otlp is not None:
                    with anyio.move_on_after(10):
                        await metrics.export()
                await anyio.to_thread.run_sync(provider.shutdown)
