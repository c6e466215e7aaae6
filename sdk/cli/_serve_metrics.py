"""``loom serve``'s metrics, or none: ``[serve] metrics = false`` (``--no-metrics``,
``LOOM_METRICS=false``) makes no ``MeterProvider`` at all.

Off, nothing is metered: the runtime and the model router get no meter, so tool and model
calls record no duration; there is no OTLP metrics export and no task refreshing the durable
log's figures; ``/metrics`` answers 404 with a line saying why (a Prometheus scrape reports
the target down, which is what an operator who scrapes it should see, rather than an empty
success). The counters the bus, the runtime and the bridge keep for their own statistics
(``loom status``, the dashboard) are not metrics and stay. ``docs/observability.md``,
"Running without metrics".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from opentelemetry.metrics import MeterProvider

from loom.bridge import BridgeServer
from loom.cluster import ClusterTransport
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.llm import ModelRouter
from loom.runtime.lowlevel import DurableLog
from loom.web import Metrics

from .._metrics import ServeMetrics, metrics_config, open_metrics
from ._config import ServeConfig

__all__ = ["meter_provider", "metrics_body", "observe_metrics", "open_serve_metrics"]

log = logging.getLogger("loom.serve")


@asynccontextmanager
async def open_serve_metrics(
    config: ServeConfig, environ: Mapping[str, str]
) -> AsyncIterator[ServeMetrics | None]:
    """The server's metrics (``sdk/_metrics.py``), or ``None`` when ``config.metrics`` is
    off: then the ``OTEL_METRIC*`` variables are not read either.

    Raises:
        ConfigError: metrics on and an ``OTEL_METRIC_EXPORT_INTERVAL`` that is not a positive
            number of milliseconds.
    """
    if not config.metrics:
        yield None
        return
    metering = metrics_config(
        environ, endpoint=config.otlp_endpoint or None, service_name="loom-serve"
    )
    async with open_metrics(metering) as meters:
        yield meters


def meter_provider(meters: ServeMetrics | None) -> MeterProvider | None:
    """What the runtime and the router time their calls with (``None``: they do not)."""
    return None if meters is None else meters.meter_provider


def metrics_body(meters: ServeMetrics | None, override: Metrics | None) -> Metrics | None:
    """The body of ``/metrics``: ``override`` (``serve(metrics=...)``), else the server's
    own; ``None`` (off): the HTTP port answers 404."""
    if override is not None:
        return override
    return None if meters is None else meters.prometheus


def observe_metrics(
    meters: ServeMetrics | None,
    bus: EventBus,
    *,
    runtime: AgentRuntime,
    server: BridgeServer,
    router: ModelRouter | None,
    durable: DurableLog | None,
    cluster: ClusterTransport | None,
    on_metrics: Callable[[ServeMetrics], None] | None,
) -> None:
    """Point the observable instruments at what the server built, say where the metrics go,
    and hand them to ``on_metrics``; off, say so once (and ``on_metrics`` is not called)."""
    if meters is None:
        log.info("loom serve: metrics off ([serve] metrics = false): /metrics answers 404")
        return
    meters.observe(bus, runtime=runtime, server=server, router=router, durable=durable)
    meters.observe_cluster(cluster)
    if meters.otlp_endpoint:
        log.info("loom serve: metrics to %s (every %g s)", meters.otlp_endpoint, meters.interval_s)
    if on_metrics is not None:
        on_metrics(meters)
