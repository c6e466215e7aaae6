"""Light spans and the span pipe (issue 14, section 5): with the provider ``loom serve``
builds, the kept ``publish`` and ``process`` spans are records, not SDK spans, and every
span leaves through a bounded buffer and a pipe to an exporter process running the official
OTLP exporter. The tree is the same (user code's own spans nest under Loom's); what a full
buffer or a dead exporter drops is counted; a crashed process's written spans still arrive.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import SamplingResult
from opentelemetry.trace import SpanKind, StatusCode

from loom import trace_sampler, tracer_provider
from loom._span_exporter import readable_spans
from loom._span_pipe import RecordProcessor, SpanPipe
from loom.metrics import MetricsConfig, open_metrics
from loom.runtime import AgentRuntime, Context, Event, EventBus
from loom.runtime.lowlevel import SpanRecorder

from .._otlp import otlp_receiver
from ..runtime._agents_support import Seen, spec

pytestmark = pytest.mark.anyio


class Light:
    """A provider as ``loom serve`` builds it, the pipe left out: its records read here."""

    def __init__(self, ratio: float = 1.0, capacity: int = 1024) -> None:
        sampler = trace_sampler(ratio=ratio)
        self.asked = 0
        ask = sampler.should_sample

        def counted(*args: Any, **kwargs: Any) -> SamplingResult:
            self.asked += 1
            return ask(*args, **kwargs)

        sampler.should_sample = counted  # type: ignore[method-assign]
        self.provider = TracerProvider(sampler=sampler)
        self.recorder = SpanRecorder(capacity)
        self.provider.loom_span_recorder = self.recorder  # type: ignore[attr-defined]
        self.provider.add_span_processor(RecordProcessor(self.recorder))

    def spans(self) -> list[ReadableSpan]:
        return readable_spans(self.recorder.take(), self.provider.resource)


def _named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def _parent_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None
    assert parent.context is not None
    assert child.context is not None
    return bool(
        child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_kept_publish_and_process_spans_are_records_and_user_spans_nest_under_them() -> None:
    light = Light()
    done: Seen[str] = Seen()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        assert ctx.tracer_provider is not None
        tracer = ctx.tracer_provider.get_tracer("user.code")
        with tracer.start_as_current_span("user work") as span:
            span.set_attribute("user.step", 1)
            await ctx.emit("jobs.done", payload=b"ok")
        done.add(topic)

    with anyio.fail_after(10):
        async with (
            EventBus(tracer_provider=light.provider) as bus,
            AgentRuntime(bus) as runtime,
            bus.subscribe("jobs.done") as finished,
        ):
            await runtime.start(spec("worker", handle, topics=["jobs.new"]))
            await bus.publish("jobs.new", Event())
            await done.wait_for(1)
            await finished.receive()
    spans = light.spans()
    sent = _named(spans, "jobs.new publish")
    process = _named(spans, "jobs.new process")
    user = _named(spans, "user work")
    reply = _named(spans, "jobs.done publish")
    # The SDK was asked for the user's span only: Loom's spans did not go through it.
    assert light.asked == 1
    assert sent.parent is None
    assert _parent_of(process, sent)
    assert _parent_of(user, process)
    assert _parent_of(reply, user)
    assert (sent.kind, process.kind, reply.kind) == (
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
    )
    assert dict(sent.attributes or {}) == {
        "messaging.system": "loom",
        "messaging.operation.type": "publish",
        "messaging.destination.name": "jobs.new",
        "messaging.message.id": dict(process.attributes or {})["messaging.message.id"],
    }
    assert dict(process.attributes or {})["loom.agent.id"] == "worker"
    assert dict(user.attributes or {}) == {"user.step": 1}
    assert process.end_time is not None
    assert process.start_time is not None
    assert process.end_time >= process.start_time


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failing_handler_marks_its_light_span_an_error() -> None:
    light = Light()
    seen: Seen[str] = Seen()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        seen.add(topic)
        raise ValueError("bad event")

    with anyio.fail_after(10):
        async with EventBus(tracer_provider=light.provider) as bus, AgentRuntime(bus) as runtime:
            await runtime.start(spec("worker", handle, topics=["jobs.new"]))
            await bus.publish("jobs.new", Event())
            await seen.wait_for(1)
            await runtime.stop("worker")
    process = _named(light.spans(), "jobs.new process")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "ValueError: bad event"
    [exception] = process.events
    assert exception.name == "exception"
    assert dict(exception.attributes or {})["exception.message"] == "bad event"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_full_buffer_drops_records_and_counts_them() -> None:
    light = Light(capacity=3)
    with anyio.fail_after(10):
        async with EventBus(tracer_provider=light.provider) as bus:
            for _ in range(10):
                await bus.publish("jobs.new", Event())
    stats = light.recorder.statistics()
    assert (stats.recorded, stats.dropped, stats.buffered) == (3, 7, 3)
    assert len(light.spans()) == 3


async def _until(check: Any, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110  (the pipe's threads and processes: no event)
            await anyio.sleep(0.02)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_spans_reach_a_real_receiver_and_a_dead_exporter_is_counted(
    tmp_path: Any,
) -> None:
    async with otlp_receiver() as receiver:
        provider = tracer_provider(receiver.endpoint, ratio=1.0, service_name="svc")
        pipe: SpanPipe = provider.loom_span_pipe  # type: ignore[attr-defined]
        try:
            with anyio.fail_after(30):
                async with (
                    open_metrics(MetricsConfig()) as metrics,
                    EventBus(tracer_provider=provider) as bus,
                ):
                    metrics.observe(bus)
                    assert await anyio.to_thread.run_sync(pipe.wait_started, 20)
                    for _ in range(50):
                        await bus.publish("jobs.new", Event())
                    # Handed off: written to the exporter process, whatever it has exported.
                    assert await anyio.to_thread.run_sync(pipe.hand_off)
                    assert pipe.statistics().sent == 50
                    # An SDK span of user code leaves by the same pipe.
                    provider.get_tracer("user.code").start_span("user work").end()
                    assert await anyio.to_thread.run_sync(provider.force_flush)
                    spans = await receiver.wait_until(lambda s: len(s) >= 51, timeout=10)
                    assert sorted({s.name for s in spans}) == ["jobs.new publish", "user work"]
                    assert {s.service for s in spans} == {"svc"}
                    assert all(s.kind == "PRODUCER" for s in spans if s.name != "user work")
                    assert pipe.statistics().sent == 51

                    os.kill(pipe.exporter_pid, signal.SIGKILL)
                    await _until(lambda: not pipe.statistics().exporter_alive, 10)
                    for _ in range(5):
                        await bus.publish("jobs.new", Event())
                    assert not await anyio.to_thread.run_sync(provider.force_flush)
                    await _until(lambda: pipe.statistics().lost == 5, 10)
                    text = metrics.prometheus()[0].decode()
            assert 'loom_trace_spans_dropped_total{reason="exporter_gone"} 5.0' in text
            assert "loom_trace_spans_recorded_total 56.0" in text
            assert len(receiver.spans) == 51
        finally:
            started = time.monotonic()
            await anyio.to_thread.run_sync(provider.shutdown)
            assert time.monotonic() - started < 5  # a dead exporter holds nothing up


_CRASHING = textwrap.dedent(
    """
    import sys, time, anyio
    from loom import tracer_provider
    from loom.runtime import Event, EventBus

    async def main():
        provider = tracer_provider(sys.argv[1], ratio=1.0, service_name="crashes")
        pipe = provider.loom_span_pipe
        async with EventBus(tracer_provider=provider) as bus:
            for _ in range(20):
                await bus.publish("jobs.new", Event())
            while pipe.statistics().sent < 20:
                await anyio.sleep(0.01)
            print(pipe.exporter_pid, flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_spans_written_before_a_kill_9_are_exported_and_the_exporter_exits() -> None:
    async with otlp_receiver() as receiver:
        proc = await anyio.open_process(
            [sys.executable, "-c", _CRASHING, receiver.endpoint], stderr=None
        )
        async with proc:
            try:
                assert proc.stdout is not None
                with anyio.fail_after(30):
                    line = b""
                    while not line.endswith(b"\n"):
                        line += await proc.stdout.receive()
                    exporter = int(line)
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    spans = await receiver.wait_until(lambda s: len(s) >= 20, timeout=20)
                    assert {s.service for s in spans} == {"crashes"}

                    def gone() -> bool:
                        try:
                            os.kill(exporter, 0)
                        except ProcessLookupError:
                            return True
                        # A zombie until its parent (gone) is reaped by init: not running.
                        with open(f"/proc/{exporter}/stat") as f:
                            return f.read().split(") ")[1].startswith("Z")

                    await _until(gone, 15)
            finally:
                if proc.returncode is None:
                    proc.kill()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_spans_the_collector_does_not_take_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nobody listens there (the port was free a moment ago); the exporter process inherits
    # the exporter's own timeout, so its retries give up within the test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    provider = tracer_provider(f"http://127.0.0.1:{port}", ratio=1.0)
    pipe: SpanPipe = provider.loom_span_pipe  # type: ignore[attr-defined]
    try:
        with anyio.fail_after(30):
            async with EventBus(tracer_provider=provider) as bus:
                for _ in range(3):
                    await bus.publish("jobs.new", Event())
            assert await anyio.to_thread.run_sync(provider.force_flush)
        stats = pipe.statistics()
        assert (stats.sent, stats.export_failed, stats.exporter_alive) == (3, 3, True)
    finally:
        await anyio.to_thread.run_sync(provider.shutdown)
