"""Traces exported over OTLP: what ``loom serve``, ``loom run`` and ``Agent.run()`` switch on.

The outermost layer decides (``docs/observability.md``): :func:`trace_config` reads the
standard ``OTEL_*`` variables from the mapping it is given, with the command's flags
(``--otlp-endpoint``, ``--trace-sample``) winning, and :func:`open_tracing` builds the
OpenTelemetry SDK's ``TracerProvider`` whose spans leave through a bounded buffer and a pipe
to an exporter process running the official OTLP/gRPC exporter (``sdk/_span_pipe.py``).
The provider is then handed down (``EventBus(tracer_provider=...)``,
the model router, cognitive agents): nothing below reads the environment or a global.

Off (no endpoint anywhere, ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``),
:func:`trace_config` returns ``None``, nothing of the OpenTelemetry SDK or the exporter is
imported, and every traced operation costs one ``is None`` test.

Leaving :func:`open_tracing` flushes what is buffered and waits for the exporter process
to send it (bounded by the exporter's timeout, 10 s): a drained process loses no span of
its last moments unless the collector cannot be reached.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import msgspec

from loom.runtime import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Link, SpanKind, TracerProvider
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

__all__ = [
    "TraceConfig",
    "head_sampler",
    "open_tracing",
    "provider_for",
    "trace_config",
    "trace_sampler",
    "tracer_provider",
]

_TRUE = frozenset({"true", "1", "yes", "on"})


class TraceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where spans go and which traces are kept.

    Attributes:
        endpoint: the OTLP/gRPC endpoint (``http://host:4317``; ``https://`` for TLS).
        sampler: an ``OTEL_TRACES_SAMPLER`` name (``parentbased_always_on`` by default).
        sampler_arg: its ratio, for the ``traceidratio`` samplers (0..1).
        service_name: the ``service.name`` resource attribute.
        resource: further resource attributes (``OTEL_RESOURCE_ATTRIBUTES``).
        queue_size: the most finished spans waiting for the exporter process
            (``OTEL_BSP_MAX_QUEUE_SIZE``); more are dropped and counted.
        export_interval_s: how often they are sent to it (``OTEL_BSP_SCHEDULE_DELAY``, ms).
    """

    endpoint: str
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    service_name: str = "loom"
    resource: dict[str, str] = msgspec.field(default_factory=dict)
    queue_size: int = 16384
    export_interval_s: float = 0.5


_SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)


def trace_config(
    environ: Mapping[str, str],
    *,
    endpoint: str | None = None,
    sample: float | None = None,
    service_name: str = "loom",
) -> TraceConfig | None:
    """The tracing this process runs with, or ``None`` when it is off.

    ``endpoint`` (``--otlp-endpoint``) wins over ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, which
    wins over ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``OTEL_TRACES_EXPORTER=otlp`` alone means the
    exporter's default, ``http://localhost:4317``. ``sample`` (``--trace-sample``) is a
    ratio for ``parentbased_traceidratio``: a trace begun elsewhere keeps its caller's
    decision, so one trace is never half exported. ``service_name`` is used when
    ``OTEL_SERVICE_NAME`` is not set.

    Raises:
        ConfigError: an unknown sampler, or a ratio outside 0..1.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    url = (
        endpoint
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("http://localhost:4317" if exporters == "otlp" else "")
    )
    if not url or (exporters == "none" and not endpoint):
        return None
    if sample is not None:
        sampler, ratio = "parentbased_traceidratio", sample
    else:
        sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or (
            "parentbased_always_on"
        )
        if sampler not in _SAMPLERS:
            raise ConfigError(
                f"$OTEL_TRACES_SAMPLER must be one of {', '.join(sorted(_SAMPLERS))}, "
                f"not {sampler!r}"
            )
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = float(raw) if raw else 1.0
        except ValueError:
            raise ConfigError(f"$OTEL_TRACES_SAMPLER_ARG is a ratio, not {raw!r}") from None
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ConfigError(f"the trace sampling ratio must be within 0..1, not {ratio!r}")
    resource: dict[str, str] = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            resource[key.strip()] = value.strip()
    queue_size = _positive(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 16384)
    interval_ms = _positive(environ, "OTEL_BSP_SCHEDULE_DELAY", 500)
    return TraceConfig(
        queue_size=queue_size,
        export_interval_s=interval_ms / 1000,
        endpoint=url,
        sampler=sampler,
        sampler_arg=ratio,
        service_name=environ.get("OTEL_SERVICE_NAME") or service_name,
        resource=resource,
    )


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"${name} must be a positive whole number, not {raw!r}")
    return value


def head_sampler(config: TraceConfig) -> Sampler:
    """The sampler ``config`` names, as Loom's providers carry it: with the
    :class:`~loom.runtime.lowlevel.HeadSampling` it stands for, so that the runtime decides
    without the SDK which spans are not kept (``runtime/_tracing.py``), and honouring a root
    the runtime drew as kept (:data:`~loom.runtime.lowlevel.SAMPLED_ROOT`) instead of drawing
    again."""
    from opentelemetry.sdk.trace import sampling

    from loom.runtime.lowlevel import SAMPLED_ROOT, HeadSampling

    ratio = config.sampler_arg
    match config.sampler:
        case "always_on":
            inner: sampling.Sampler = sampling.ALWAYS_ON
            head = HeadSampling(ratio=1.0, parent_based=False)
        case "always_off":
            inner, head = sampling.ALWAYS_OFF, HeadSampling(ratio=0.0, parent_based=False)
        case "traceidratio":
            # Each hop decides on the trace id, which only the SDK draws: below 1.0 the
            # runtime leaves every decision to the SDK (``head_sampling`` refuses it).
            inner = sampling.TraceIdRatioBased(ratio)
            head = HeadSampling(ratio=ratio, parent_based=False)
        case "parentbased_always_off":
            inner = sampling.ParentBased(sampling.ALWAYS_OFF)
            head = HeadSampling(ratio=0.0)
        case "parentbased_traceidratio":
            inner = sampling.ParentBased(sampling.TraceIdRatioBased(ratio))
            head = HeadSampling(ratio=ratio)
        case _:
            inner, head = sampling.ParentBased(sampling.ALWAYS_ON), HeadSampling(ratio=1.0)

    class LoomSampler(sampling.Sampler):
        loom_head_sampling = head

        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> sampling.SamplingResult:
            if parent_context is not None and parent_context.get(SAMPLED_ROOT):
                return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, attributes)
            return inner.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"Loom({inner.get_description()})"

    return LoomSampler()


def trace_sampler(name: str = "parentbased_traceidratio", ratio: float = 1.0) -> Sampler:
    """The sampler ``loom serve`` uses, for a ``TracerProvider`` built in code
    (``TracerProvider(sampler=loom.trace_sampler(ratio=0.01))``): with it, the runtime decides
    without the SDK which spans are not kept, which is most of what tracing costs
    (``docs/observability.md``). Another sampler works too, asking the SDK for every span.

    Args:
        name: an ``OTEL_TRACES_SAMPLER`` name (``parentbased_traceidratio``, ``always_on``...).
        ratio: the share of traces kept, for the ``traceidratio`` samplers (0..1).

    Raises:
        ConfigError: an unknown sampler, or a ratio outside 0..1.
    """
    _check_sampler(name, ratio)
    return head_sampler(TraceConfig(endpoint="", sampler=name, sampler_arg=ratio))


def _check_sampler(name: str, ratio: float) -> None:
    if name not in _SAMPLERS:
        raise ConfigError(
            f"the sampler must be one of {', '.join(sorted(_SAMPLERS))}, not {name!r}"
        )
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ConfigError(f"the trace sampling ratio must be within 0..1, not {ratio!r}")


@asynccontextmanager
async def open_tracing(config: TraceConfig | None) -> AsyncIterator[TracerProvider | None]:
    """The tracer provider ``config`` asks for (``None``: none, nothing imported); its spans
    are flushed and the exporter shut down on leaving."""
    if config is None:
        yield None
        return
    provider = provider_for(config)
    try:
        yield provider
    finally:
        # The flush blocks on the exporter process: in a thread, shielded, so a cancelled
        # process still sends what it traced (the exporter's timeout bounds it).
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(provider.shutdown)


def tracer_provider(
    endpoint: str,
    *,
    sampler: str = "parentbased_traceidratio",
    ratio: float = 1.0,
    service_name: str = "loom",
) -> SdkTracerProvider:
    """A tracer provider as ``loom serve`` builds it, for code that builds its own
    (``EventBus(tracer_provider=loom.tracer_provider("http://127.0.0.1:4317", ratio=0.01))``;
    ``shutdown()`` it when done): Loom's sampler, the runtime's kept spans as light records,
    and every span sent to an exporter process that exports it with the official OTLP/gRPC
    exporter (``docs/observability.md``).

    Args:
        endpoint: the OTLP/gRPC endpoint (``http://host:4317``; ``https://`` for TLS).
        sampler: an ``OTEL_TRACES_SAMPLER`` name.
        ratio: the share of traces kept, for the ``traceidratio`` samplers (0..1).
        service_name: the ``service.name`` resource attribute.

    Raises:
        ConfigError: an unknown sampler, or a ratio outside 0..1.
    """
    _check_sampler(sampler, ratio)
    return provider_for(
        TraceConfig(
            endpoint=endpoint, sampler=sampler, sampler_arg=ratio, service_name=service_name
        )
    )


def provider_for(config: TraceConfig) -> SdkTracerProvider:
    """The provider :func:`open_tracing` and :func:`tracer_provider` build: Loom's sampler, a
    bounded span recorder for the runtime's light spans, and every span sent to an exporter
    process (``sdk/_span_pipe.py``)."""
    # Imported here: a process that traces nothing loads neither the SDK nor the pipe.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from loom.runtime.lowlevel import SpanRecorder

    from ._span_pipe import RecordProcessor, SpanPipe

    attributes = {**config.resource, "service.name": config.service_name}
    provider = SdkTracerProvider(sampler=head_sampler(config), resource=Resource.create(attributes))
    recorder = SpanRecorder(config.queue_size)
    pipe = SpanPipe(
        recorder,
        endpoint=config.endpoint,
        resource=dict(provider.resource.attributes),
        interval_s=config.export_interval_s,
    )
    # Read by the runtime (``span_recorder``): its kept publish and process spans are
    # records added here directly, not SDK spans.
    provider.loom_span_recorder = recorder  # type: ignore[attr-defined]
    provider.loom_span_pipe = pipe  # type: ignore[attr-defined]
    provider.add_span_processor(RecordProcessor(recorder, pipe))
    return provider
