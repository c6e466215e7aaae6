"""How fast is the event bus, next to the plain thing a user would write instead?

The naive baseline: one ``asyncio.Queue(1024)`` per subscriber and one consumer task per
subscriber calling a handler. Both sides deliver to a handler that reads the event (a no-op
handler would let either side cheat), both use buffers of 1024, both run on plain asyncio in
this process, interleaved, best of several runs.

Tracing lines: the same 1:1 and fan-out runs on a bus given a tracer provider as ``loom serve``
builds it (``loom.tracer_provider``: Loom's sampler, kept spans as light records, sent through
a pipe to an exporter process running the official OTLP/gRPC exporter, which sends them to a
receiver in another process, ``benchmarks/_otlp_sink.py``), sampling all traces (1.0) and one
in a hundred (0.01, parent-based), measured next to the untraced runs; and, to tell the costs
apart, with a sampler of 0 (the runtime's decision alone) and at 0.01 with the SDK's own
sampler and ``BatchSpanProcessor`` (what a provider built in code with a sampler Loom does not
know costs: every publish asks the SDK, and the export runs in this process).
``exporter_process_cpu_us_per_span``: what the export costs where it now runs.

Metrics lines: the same 1:1 and fan-out runs with ``loom serve``'s metrics on
(``sdk/_metrics.py``: the MeterProvider read as Prometheus text, exported over OTLP to the same
receiver every second, and scraped every 0.1 s, far more often than Prometheus's 15 s, while
the events flow), measured next to the runs without.

Prints one JSON line; see docs/performance.md for what the figures mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from benchmarks._util import best_rate, emit
from loom import tracer_provider
from loom.metrics import MetricsConfig, open_metrics
from loom.runtime import AgentRuntime, Delivery, Event, EventBus, QoS

N = int(os.environ.get("LOOM_BENCH_EVENTS", "200000"))
SCRAPE_EVERY_S = 0.1
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "5"))
BUFFER = 1024
EVENTS = [Event(type="bench", payload=b"x" * (i % 64)) for i in range(1024)]
CPU_NS: list[float] = [0.0]
"""The CPU time (this process, every thread: the span exporter's too) per delivery of the
last :func:`run_on`: on a shared machine a steadier measure of a cost than the rate."""


class Sink:
    """The handler: it reads the event, so the event must really arrive."""

    __slots__ = ("bytes", "count")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def handle(self, topic: str, event: Event) -> None:
        self.count += 1
        self.bytes += len(event.payload) + len(topic)


async def bus_run(
    fanout: int,
    pattern: str,
    topic: str,
    n: int,
    extra_subs: int = 0,
    qos: QoS = QoS.BATCHED,
    tracer_provider: TracerProvider | None = None,
    wait_export: bool = False,
) -> float:
    """Deliveries per second through a bus of its own (``wait_export``: the clock stops only
    once the exporter process has exported the run's spans). A traced run's clock stops once this
    process has done its part of its spans' export: exported, with the SDK's processor in this
    process; handed to the exporter process, with ``loom.tracer_provider``'s pipe (what that
    process spends is ``exporter_process_cpu_us_per_span``, on another core, as a collector's
    work is). Either way the run ends once its spans are exported, so none spills into the
    next run."""
    async with EventBus(tracer_provider=tracer_provider) as bus:
        flush = None if tracer_provider is None else tracer_provider.force_flush
        pipe = getattr(tracer_provider, "loom_span_pipe", None)
        timed = flush if pipe is None or wait_export else pipe.hand_off
        rate = await run_on(bus, fanout, pattern, topic, n, extra_subs, qos, timed)
        if flush is not None:
            flush()
        return rate


async def metered_run(fanout: int, topic: str, n: int, endpoint: str) -> float:
    """Deliveries per second through a bus of its own with ``loom serve``'s metrics on: the
    statistics read by a scrape every ``SCRAPE_EVERY_S`` and an OTLP export every second."""
    config = MetricsConfig(otlp_endpoint=endpoint, interval_s=1.0)
    async with (
        open_metrics(config) as metrics,
        EventBus() as bus,
        AgentRuntime(bus, meter_provider=metrics.meter_provider) as runtime,
    ):
        metrics.observe(bus, runtime=runtime)

        async def scrape() -> None:
            while True:
                metrics.prometheus()
                await anyio.sleep(SCRAPE_EVERY_S)

        async with anyio.create_task_group() as tg:
            tg.start_soon(scrape)
            rate = await run_on(bus, fanout, topic, topic, n)
            tg.cancel_scope.cancel()
    return rate


async def run_on(
    bus: EventBus,
    fanout: int,
    pattern: str,
    topic: str,
    n: int,
    extra_subs: int = 0,
    qos: QoS = QoS.BATCHED,
    flush: Callable[[], object] | None = None,
) -> float:
    """Deliveries per second through ``bus`` (its subscriptions closed afterwards);
    ``flush`` is timed too, after the last delivery."""
    idle = [bus.subscribe(f"idle.{i}.events", qos=QoS.REALTIME) for i in range(extra_subs)]
    subs = [bus.subscribe(pattern, qos=qos, buffer_size=BUFFER) for _ in range(fanout)]
    sinks = [Sink() for _ in range(fanout)]

    async def consume(sub: object, sink: Sink) -> None:
        assert hasattr(sub, "__anext__")
        handle = sink.handle
        d: Delivery
        async for d in sub:  # type: ignore[attr-defined]
            handle(d.topic, d.event)
            if sink.count == n:
                return

    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for sub, sink in zip(subs, sinks, strict=True):
            tg.start_soon(consume, sub, sink)
        publish = bus.publish
        for i in range(n):
            await publish(topic, EVENTS[i & 1023])
    if flush is not None:
        flush()
    elapsed = time.perf_counter() - start
    CPU_NS[0] = (time.process_time() - cpu) * 1e9 / (n * fanout)
    assert all(s.count == n for s in sinks)
    for sub in subs + idle:
        sub.close()
    return n * fanout / elapsed


async def naive_run(fanout: int, topic: str, n: int) -> float:
    """Deliveries per second through asyncio.Queue + one consumer task per subscriber."""
    queues: list[asyncio.Queue[tuple[str, Event]]] = [asyncio.Queue(BUFFER) for _ in range(fanout)]
    sinks = [Sink() for _ in range(fanout)]

    async def consume(q: asyncio.Queue[tuple[str, Event]], sink: Sink) -> None:
        handle = sink.handle
        while True:
            t, ev = await q.get()
            handle(t, ev)
            if sink.count == n:
                return

    gc.collect()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for q, sink in zip(queues, sinks, strict=True):
            tg.start_soon(consume, q, sink)
        for i in range(n):
            ev = EVENTS[i & 1023]
            for q in queues:
                await q.put((topic, ev))
    elapsed = time.perf_counter() - start
    return n * fanout / elapsed


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """A receiver in a subprocess; its endpoint."""
    with subprocess.Popen(
        [sys.executable, "-m", "benchmarks._otlp_sink"],
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ) as sink:
        try:
            assert sink.stdout is not None
            port = int(sink.stdout.readline())
            yield f"http://127.0.0.1:{port}"
        finally:
            sink.kill()


def traced(endpoint: str, ratio: float, *, sdk_sampler: bool = False) -> TracerProvider:
    """A tracer provider as ``loom serve --trace-sample RATIO`` builds it (Loom's sampler:
    the runtime decides which spans are not kept; kept spans leave through the span pipe to
    an exporter process: ``sdk/_span_pipe.py``); ``sdk_sampler``: a provider built in code
    with the SDK's own sampler and ``BatchSpanProcessor`` instead, as a custom sampler runs
    (the SDK asked for every span, and exporting in this process)."""
    if not sdk_sampler:
        return tracer_provider(endpoint, ratio=ratio)
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    return provider


def _cpu_s(pid: int) -> float:
    """The CPU time (user and system) of a running process, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    with otlp_sink() as endpoint:
        await _main(endpoint)


async def _main(endpoint: str) -> None:
    topic = "bench.orders.created"
    figures: dict[str, float | int | str | bool] = {}
    fan_n = N // 5
    # Every span kept costs far more than a delivery: fewer events keep the run at 1.0 short.
    # The others run as long as their untraced baselines, so that the export at the end of
    # each (one round trip to the receiver) is as small a share of it.
    traced_n = N // 10
    all_traces, one_in_100 = traced(endpoint, 1.0), traced(endpoint, 0.01)
    none_kept, sdk_one_in_100 = traced(endpoint, 0.0), traced(endpoint, 0.01, sdk_sampler=True)

    # Each traced run's spans are exported before it ends (bus_run): an exporter thread still
    # busy with them would take the GIL from the next run, whichever it is.
    async def t1_all() -> float:
        return await bus_run(1, topic, topic, traced_n, tracer_provider=all_traces)

    async def t1_sampled() -> float:
        return await bus_run(1, topic, topic, N, tracer_provider=one_in_100)

    async def t1_waited() -> float:
        return await bus_run(1, topic, topic, N, tracer_provider=one_in_100, wait_export=True)

    async def t1_none() -> float:
        return await bus_run(1, topic, topic, N, tracer_provider=none_kept)

    async def t1_sdk() -> float:
        return await bus_run(1, topic, topic, traced_n, tracer_provider=sdk_one_in_100)

    async def t10_sampled() -> float:
        return await bus_run(10, topic, topic, fan_n, tracer_provider=one_in_100)

    async def m1() -> float:
        return await metered_run(1, topic, N, endpoint)

    async def m10() -> float:
        return await metered_run(10, topic, fan_n, endpoint)

    async def b1() -> float:
        return await bus_run(1, topic, topic, N)

    async def n1() -> float:
        return await naive_run(1, topic, N)

    async def b10() -> float:
        return await bus_run(10, topic, topic, fan_n)

    async def n10() -> float:
        return await naive_run(10, topic, fan_n)

    async def wc() -> float:
        return await bus_run(1, "bench.*.created", topic, N)

    async def with_100k() -> float:
        return await bus_run(1, topic, topic, N, extra_subs=100_000)

    # Interleave each measurement with its baseline so drift on the machine hits both alike.
    pairs = [
        ("publish_1to1", b1),
        ("metered_1to1", m1),
        ("naive_1to1", n1),
        ("fanout10", b10),
        ("metered_fanout10", m10),
        ("naive_fanout10", n10),
        ("wildcard_1to1", wc),
        ("traced_1_1to1", t1_all),
        ("traced_001_1to1", t1_sampled),
        ("traced_001_waited_1to1", t1_waited),
        ("traced_001_fanout10", t10_sampled),
        ("traced_0_1to1", t1_none),
        ("traced_001_sdk_sampler_1to1", t1_sdk),
    ]
    for _, fn in pairs:  # warm-up: first runs pay for imports, allocator growth, caches
        await fn()
    # What the export costs where it now runs: the exporter process's CPU per span it was
    # sent (the spans kept at 1.0, which are nearly all of them), after its start-up.
    exporters = [p.loom_span_pipe for p in (all_traces, one_in_100)]  # type: ignore[attr-defined]
    exporter_cpu = sum(_cpu_s(p.exporter_pid) for p in exporters)
    exporter_sent = sum(p.statistics().sent for p in exporters)
    best: dict[str, float] = {}
    least_cpu: dict[str, float] = {}
    for _ in range(REPEATS):
        for name, fn in pairs:
            best[name] = max(best.get(name, 0.0), await fn())
            least_cpu[name] = min(least_cpu.get(name, float("inf")), CPU_NS[0])
    for provider in (all_traces, one_in_100):
        provider.force_flush()
    exporter_cpu = sum(_cpu_s(p.exporter_pid) for p in exporters) - exporter_cpu
    exporter_sent = sum(p.statistics().sent for p in exporters) - exporter_sent
    one_sub = best["publish_1to1"]
    many = await best_rate(with_100k, max(2, REPEATS // 2))

    for name in ("publish_1to1", "naive_1to1", "fanout10", "naive_fanout10", "wildcard_1to1"):
        figures[f"{name}_per_s"] = round(best[name])
    figures["publish_100k_subs_per_s"] = round(many)
    figures["publish_cost_ratio_100k_vs_1_subs"] = round(one_sub / many, 3)
    figures["ratio_1to1_vs_naive"] = round(best["publish_1to1"] / best["naive_1to1"], 3)
    figures["ratio_fanout10_vs_naive"] = round(best["fanout10"] / best["naive_fanout10"], 3)
    traced_names = ("traced_1_1to1", "traced_001_1to1", "traced_001_fanout10", "traced_0_1to1")
    for name in (*traced_names, "traced_001_sdk_sampler_1to1"):
        figures[f"{name}_per_s"] = round(best[name])
    # The share of throughput that tracing costs, against the untraced run of the same shape.
    figures["tracing_cost_1to1_at_1"] = round(1 - best["traced_1_1to1"] / best["publish_1to1"], 3)
    figures["tracing_cost_1to1_at_001"] = round(
        1 - best["traced_001_1to1"] / best["publish_1to1"], 3
    )
    figures["tracing_cost_fanout10_at_001"] = round(
        1 - best["traced_001_fanout10"] / best["fanout10"], 3
    )
    # The same, the clock stopped only once the exporter process has exported the run's
    # spans: its work (on the other core) serialised after the run's, as it never is in a
    # process that runs on.
    figures["traced_001_waited_1to1_per_s"] = round(best["traced_001_waited_1to1"])
    figures["tracing_cost_1to1_at_001_export_waited"] = round(
        1 - best["traced_001_waited_1to1"] / best["publish_1to1"], 3
    )
    # Nothing kept: what the runtime's own decision costs, without a span or an export.
    figures["tracing_cost_1to1_at_0"] = round(1 - best["traced_0_1to1"] / best["publish_1to1"], 3)
    # A sampler Loom does not know (here the SDK's own): every publish asks the SDK.
    figures["tracing_cost_1to1_at_001_sdk_sampler"] = round(
        1 - best["traced_001_sdk_sampler_1to1"] / best["publish_1to1"], 3
    )
    # The same costs in CPU time per delivery (the process's, its exporter thread's included):
    # what tracing adds to the work, whatever the neighbours do to the rate.
    cpu_pairs = (
        ("1to1_at_001", "traced_001_1to1", "publish_1to1"),
        ("fanout10_at_001", "traced_001_fanout10", "fanout10"),
        ("1to1_at_0", "traced_0_1to1", "publish_1to1"),
    )
    for label, traced_name, plain in cpu_pairs:
        figures[f"tracing_cpu_cost_{label}"] = round(
            least_cpu[traced_name] / least_cpu[plain] - 1, 3
        )
    figures["exporter_process_cpu_us_per_span"] = round(exporter_cpu * 1e6 / exporter_sent, 1)
    figures["publish_1to1_cpu_ns"] = round(least_cpu["publish_1to1"])
    figures["traced_001_1to1_cpu_ns"] = round(least_cpu["traced_001_1to1"])
    # And the share that metrics cost (on against off, same shape, same run).
    figures["metered_1to1_per_s"] = round(best["metered_1to1"])
    figures["metered_fanout10_per_s"] = round(best["metered_fanout10"])
    figures["metrics_cost_1to1"] = round(1 - best["metered_1to1"] / best["publish_1to1"], 3)
    figures["metrics_cost_fanout10"] = round(1 - best["metered_fanout10"] / best["fanout10"], 3)
    for provider in (all_traces, one_in_100, none_kept, sdk_one_in_100):
        provider.shutdown()
    figures["events"] = N
    emit("bus", figures)


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
