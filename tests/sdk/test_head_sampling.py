"""Head sampling without the SDK (issue 14, section 5): with Loom's sampler
(``loom.trace_sampler``, what ``loom serve`` and ``Agent.run()`` build), the runtime draws a
root's decision itself, asks the SDK only for spans that are kept, and a trace it does not
keep costs no span anywhere after it. The cross-process half is in ``test_traces_export.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.context import Context, set_value
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import get_current_span

from loom import trace_sampler
from loom.runtime import AgentRuntime, ConfigError, Envelope, Event, EventBus
from loom.runtime import Context as AgentContext
from loom.runtime.lowlevel import (
    SAMPLED_ROOT,
    UNSAMPLED_TRACEPARENT,
    HeadSampling,
    head_sampling,
    is_sampled,
)
from loom.runtime.tools import FunctionTool

from ..runtime._agents_support import Seen, spec


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


class Traced:
    """A provider with Loom's sampler at ``ratio``, its spans in memory, and how many times
    the SDK's sampler was asked (once per span the SDK started)."""

    def __init__(self, ratio: float) -> None:
        self.exporter = InMemorySpanExporter()
        sampler = trace_sampler(ratio=ratio)
        self.asked = 0
        ask = sampler.should_sample

        def counted(*args: Any, **kwargs: Any) -> SamplingResult:
            self.asked += 1
            return ask(*args, **kwargs)

        sampler.should_sample = counted  # type: ignore[method-assign]
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def tenth() -> Iterator[Traced]:
    traced = Traced(0.1)
    yield traced
    traced.provider.shutdown()


@pytest.mark.anyio
async def test_the_ratio_holds_and_the_sdk_is_asked_only_for_kept_roots(tenth: Traced) -> None:
    # 20,000 roots at 0.1: 2,000 expected, sd 42; the bounds are 5 sd. Drawn twice (once
    # here, once by the SDK's ratio sampler) it would be about 200.
    n = 20_000
    bare = stamped = 0
    async with EventBus(tracer_provider=tenth.provider) as bus, bus.subscribe("jobs.*") as sub:
        for i in range(n):
            if i % 2:
                await bus.publish("jobs.new", Event())
            else:
                bus.publish_nowait("jobs.new", Event())
            traceparent = sub.receive_nowait().event.envelope.traceparent
            if traceparent:
                assert is_sampled(traceparent)
                stamped += 1
            else:
                bare += 1
    kept = tenth.spans("jobs.new publish")
    assert 1_790 <= len(kept) <= 2_210
    assert all(s.parent is None for s in kept)
    assert stamped == len(kept)
    assert bare == n - len(kept)
    assert tenth.asked == len(kept)


def _add_tool() -> FunctionTool:
    async def add(a: int, b: int) -> int:
        return a + b

    return FunctionTool(
        add,
        name="calc.add",
        description="Add two numbers.",
        parameters_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        },
    )


@pytest.mark.anyio
async def test_an_unsampled_roots_later_hops_record_nothing_in_process() -> None:
    # A worker calls a tool and emits on; a closer handles that. Half the roots are kept:
    # each kept one is whole (every hop recorded, in its trace) and no hop of the others
    # records anything (no orphan span begins a trace of its own halfway).
    traced = Traced(0.5)
    n = 200
    closed: Seen[str] = Seen()

    async def work(ctx: AgentContext, topic: str, event: Event) -> None:
        await ctx.tool("calc.add", {"a": 2, "b": 3})
        await ctx.emit("jobs.done", payload=b"5")

    async def close(ctx: AgentContext, topic: str, event: Event) -> None:
        closed.add(event.envelope.traceparent)

    with anyio.fail_after(30):
        async with EventBus(tracer_provider=traced.provider) as bus, AgentRuntime(bus) as rt:
            await rt.start(spec("calc", tools=[_add_tool()]))
            await rt.start(spec("worker", work, topics=["jobs.new"]))
            await rt.start(spec("closer", close, topics=["jobs.done"]))
            for _ in range(n):
                await bus.publish("jobs.new", Event())
            await closed.wait_for(n)
    roots = traced.spans("jobs.new publish")
    assert 0 < len(roots) < n
    traces = {s.context.trace_id for s in roots if s.context}
    hops = ("jobs.new process", "call_tool calc.add", "jobs.done publish", "jobs.done process")
    recorded = {s.context.span_id for s in traced.exporter.get_finished_spans() if s.context}
    for name in hops:
        spans = traced.spans(name)
        assert len(spans) == len(roots), name
        for span in spans:
            assert span.context is not None
            assert span.context.trace_id in traces
            assert span.parent is not None
            assert span.parent.span_id in recorded
    # In process an event whose trace is not kept travels bare.
    assert sum(1 for tp in closed.items if not tp) == n - len(roots)
    assert traced.asked == len(traced.exporter.get_finished_spans())
    traced.provider.shutdown()


@pytest.mark.anyio
async def test_a_current_span_of_the_caller_decides_and_an_unsampled_one_is_followed() -> None:
    # Loom's sampler at 1.0, but the caller's own span is not sampled: the publish follows
    # it (nothing recorded); in process the event travels bare (not kept).
    traced = Traced(1.0)
    outer = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    async with EventBus(tracer_provider=traced.provider) as bus, bus.subscribe("a") as sub:
        with outer.get_tracer("caller").start_as_current_span("caller"):
            assert not get_current_span().get_span_context().trace_flags.sampled
            await bus.publish("a", Event())
        await bus.publish("a", Event())  # a root: kept at 1.0
        first, second = sub.receive_nowait(), sub.receive_nowait()
    assert first.event.envelope.traceparent == ""
    assert is_sampled(second.event.envelope.traceparent)
    assert len(traced.spans("a publish")) == 1
    traced.provider.shutdown()


@pytest.mark.anyio
async def test_a_malformed_context_is_ignored_and_a_root_drawn_instead() -> None:
    traced = Traced(0.0)
    junk = Event(envelope=Envelope(traceparent="00-not-a-trace-context-at-all-01"))
    async with EventBus(tracer_provider=traced.provider) as bus, bus.subscribe("a") as sub:
        await bus.publish("a", junk)
        bus.publish_nowait("a", junk)
        assert sub.receive_nowait().event.envelope.traceparent == ""
        assert sub.receive_nowait().event.envelope.traceparent == ""
    assert is_sampled("junk") is None
    assert traced.exporter.get_finished_spans() == ()
    traced.provider.shutdown()


def test_the_unsampled_context_is_dropped_by_any_sampler_that_looks_at_it() -> None:
    version, trace_id, span_id, flags = UNSAMPLED_TRACEPARENT.split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "00", 32, 16)
    assert int(trace_id, 16)
    assert int(span_id, 16)
    # A per-hop ratio sampler elsewhere (below 1.0) drops its trace id too.
    assert (
        TraceIdRatioBased(0.999).should_sample(None, int(trace_id, 16), "x").decision
        is not Decision.RECORD_AND_SAMPLE
    )


def test_which_samplers_the_runtime_decides_for() -> None:
    def head(sampler: Any) -> HeadSampling | None:
        return head_sampling(TracerProvider(sampler=sampler))

    assert head(trace_sampler(ratio=0.01)) == HeadSampling(ratio=0.01)
    assert head(trace_sampler("always_off")) == HeadSampling(ratio=0.0, parent_based=False)
    assert head(trace_sampler("always_on")) == HeadSampling(ratio=1.0, parent_based=False)
    assert head(trace_sampler("parentbased_always_off")) == HeadSampling(ratio=0.0)
    assert head(trace_sampler("parentbased_always_on")) == HeadSampling(ratio=1.0)
    # Decided per hop on the trace id, which only the SDK draws; and samplers Loom does not
    # know: the SDK decides every span.
    assert head(trace_sampler("traceidratio", 0.5)) is None
    assert head(ParentBased(TraceIdRatioBased(0.5))) is None
    with pytest.raises(ConfigError):
        trace_sampler("sometimes")
    with pytest.raises(ConfigError):
        trace_sampler(ratio=1.5)


def test_loom_s_sampler_keeps_a_root_the_runtime_drew_and_otherwise_is_the_sdk_s() -> None:
    sampler = trace_sampler(ratio=0.0)
    drawn = set_value(SAMPLED_ROOT, True, Context())
    assert sampler.should_sample(drawn, 1, "x").decision is Decision.RECORD_AND_SAMPLE
    assert sampler.should_sample(None, 1, "x").decision is not Decision.RECORD_AND_SAMPLE
    assert "ParentBased" in sampler.get_description()


@pytest.mark.anyio
async def test_a_kept_span_of_the_caller_is_followed_though_roots_are_never_kept() -> None:
    # Loom's sampler at 0: every root is left out inline, without the SDK. A publish made
    # while the caller's own kept span is current is no root: it is that span's child, kept
    # (parent-based); after the span, the next publish is a root again, left out.
    traced = Traced(0.0)
    outer = TracerProvider()
    async with EventBus(tracer_provider=traced.provider) as bus, bus.subscribe("a") as sub:
        with outer.get_tracer("caller").start_as_current_span("caller") as caller:
            await bus.publish("a", Event())
        await bus.publish("a", Event())
        first, second = sub.receive_nowait(), sub.receive_nowait()
    [span] = traced.spans("a publish")
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert is_sampled(first.event.envelope.traceparent)
    assert second.event.envelope.traceparent == ""
    traced.provider.shutdown()
    outer.shutdown()
