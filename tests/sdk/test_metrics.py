"""Metrics of ``loom serve`` (issue 14, section 2): after real traffic through a real server
(``serve()``'s own composition, in this process: a real gRPC port, embedded NATS, remote
agents on real streams, a tool call between them, a model call to the scripted LLM over real
HTTP), the Prometheus text that ``/metrics`` answers parses with ``prometheus_client``'s
parser and holds the families, bounded labels and values; and the same metrics reach a real
OTLP/gRPC receiver."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom import Agent, Context, capability, serve_agent
from loom.bridge import AdminClient, BridgeClient
from loom.cli._config import ServeConfig, load_tables
from loom.cli._serve import serve
from loom.metrics import MetricsConfig, ServeMetrics, metrics_config, open_metrics
from loom.runtime import ConfigError, Event, EventBus
from loom.runtime.llm import CompletionRequest, UserMessage
from loom.runtime.testing import Reply, ScriptedLLMServer

from .._otlp import otlp_receiver

pytestmark = pytest.mark.anyio

TOPICS = 60  # more than the 50 topics with a label of their own
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        'api_key_env = "SCRIPTED_KEY"\n'
        "timeout_s = 10\n"
        "max_retries = 0\n"
        "cost_per_1k_input = 2.0\n"
        "cost_per_1k_output = 4.0\n"
    )


def _parse(text: str) -> tuple[set[str], Samples]:
    """The family names, and every sample by (name, labels)."""
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, (name, labels, sorted(k for k in samples if k[0] == name))
    return samples[key]


def _labels(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(k[1])[label] for k in samples if k[0] == name and label in dict(k[1])}


@asynccontextmanager
async def _served(
    tmp_path: Path, llm: ScriptedLLMServer, **environ: str
) -> AsyncIterator[tuple[str, ServeMetrics]]:
    """``serve()`` in this process, its address and its metrics; stopped by SIGTERM."""
    (tmp_path / "loom.toml").write_text(_toml(llm))
    env = {"SCRIPTED_KEY": "sk-test", **environ}
    tables = load_tables(toml_path=tmp_path / "loom.toml", environ=env)
    config = ServeConfig(port=0, data_dir=str(tmp_path / "data"), drain_grace_s=1)
    got: list[ServeMetrics] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            partial(serve, config, tables=tables, environ=env, on_metrics=got.append)
        )
        try:
            yield f"127.0.0.1:{port}", got[0]
        finally:
            os.kill(os.getpid(), signal.SIGTERM)


@capability("calc.add")
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_the_prometheus_text_after_real_traffic(tmp_path: Path) -> None:
    handled = 0
    all_handled = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        nonlocal handled
        assert await ctx.tool("calc.add", {"a": 2, "b": 3}) == 5
        handled += 1
        if handled == TOPICS + 4:
            all_handled.set()

    calc = Agent("calc", capabilities=[add])
    worker = Agent("worker", topics=["jobs.*"], on_event=on_event)
    with anyio.fail_after(60):
        async with ScriptedLLMServer() as llm, _served(tmp_path, llm) as (address, metrics):
            async with anyio.create_task_group() as tg:
                await tg.start(partial(serve_agent, calc, address))
                client: BridgeClient = await tg.start(partial(serve_agent, worker, address))
                async with AdminClient(address, timeout=10) as admin:
                    # One hot topic, then more topics than get a label of their own.
                    await admin.publish("jobs.hot", [Event(type="job") for _ in range(5)])
                    for i in range(TOPICS - 1):
                        await admin.publish(f"jobs.t{i:02}", [Event(type="job")])
                await all_handled.wait()
                llm.push(Reply(text="hello", prompt_tokens=100, completion_tokens=50))
                answer = await client.llm("scripted").complete(
                    CompletionRequest(messages=(UserMessage(content="hi"),))
                )
                assert answer.text == "hello"
                # A remote agent's deliveries count as delivered once its credit for them is
                # back (within the client's credit linger): read until it is.
                delivered = ("loom_tier_delivered_total", frozenset({("qos", "batched")}))
                while True:
                    body, content_type = metrics.prometheus()
                    if _parse(body.decode())[1].get(delivered, 0) >= TOPICS + 4:
                        break
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
            # The worker and the calc agent have gone: their streams ended.
            with anyio.fail_after(10):
                while True:
                    after, _ = metrics.prometheus()
                    if _value(_parse(after.decode())[1], "loom_bridge_streams") == 0:
                        break
                    await anyio.sleep(0.05)

    assert content_type.startswith("text/plain")
    families, samples = _parse(body.decode())
    assert {
        "loom_events_published",
        "loom_events_delivered",
        "loom_events_dropped",
        "loom_tier_delivered",
        "loom_tier_dropped",
        "loom_subscription_queued",
        "loom_subscription_high_water",
        "loom_subscription_waiting_publishers",
        "loom_agents",
        "loom_agent_restarts",
        "loom_tool_duration_seconds",
        "loom_llm_calls",
        "loom_llm_tokens",
        "loom_llm_cost_usd",
        "loom_llm_duration_seconds",
        "loom_bridge_streams",
        "loom_bridge_frames",
        "loom_bridge_bytes",
        "loom_durable_stored",
    } <= families, sorted(families)

    # Topics: the hot one by itself, never more than 50 labels plus "other", and the labels
    # add up to the bus's totals.
    published = "loom_events_published_total"
    topics = _labels(samples, published, "topic")
    assert len(topics) == 51  # more than 50 topics were seen
    assert "other" in topics
    assert _value(samples, published, topic="jobs.hot") == 5
    labelled = sum(v for (n, ls), v in samples.items() if n == published and "jobs." in str(ls))
    other = _value(samples, published, topic="other")
    assert labelled < TOPICS + 4
    assert other >= TOPICS + 4 - labelled  # "other" holds the topics beyond the labelled ones
    assert _value(samples, "loom_events_delivered_total", topic="jobs.hot") == 5
    assert _labels(samples, "loom_events_dropped_total", "reason") == {
        "overflow",
        "closed",
        "bytes",
    }
    assert _value(samples, "loom_tier_delivered_total", qos="batched") >= TOPICS + 4

    # The worker's mailbox is a subscription with its depth, high water and waiters.
    patterns = _labels(samples, "loom_subscription_high_water", "pattern")
    assert any("jobs.*" in p or "agent.worker" in p for p in patterns), patterns

    assert _value(samples, "loom_agents", status="running") >= 2
    assert _value(samples, "loom_agent_restarts_total", agent="worker") == 0

    # One tool call per event, each timed, by tool and outcome.
    calls = _value(samples, "loom_tool_duration_seconds_count", tool="calc.add", outcome="ok")
    assert calls == TOPICS + 4
    assert _value(samples, "loom_tool_duration_seconds_sum", tool="calc.add", outcome="ok") > 0

    # The model call: counted, its tokens, its cost at the configured prices, timed.
    model = {"provider": "scripted", "model": "scripted-model"}
    assert _value(samples, "loom_llm_calls_total", **model) == 1
    assert _value(samples, "loom_llm_tokens_total", type="input", **model) == 100
    assert _value(samples, "loom_llm_tokens_total", type="output", **model) == 50
    assert _value(samples, "loom_llm_cost_usd_total", **model) == pytest.approx(0.2 + 0.2)
    ok = {**model, "outcome": "ok"}
    assert _value(samples, "loom_llm_duration_seconds_count", **ok) == 1

    # The two agents' streams, and what went over them.
    assert _value(samples, "loom_bridge_streams") == 2
    assert _value(samples, "loom_bridge_streams_opened_total") == 2
    for direction in ("received", "sent"):
        assert _value(samples, "loom_bridge_frames_total", direction=direction) > TOPICS
        assert _value(samples, "loom_bridge_bytes_total", direction=direction) > TOPICS * 20


def test_metrics_config_follows_the_otel_variables() -> None:
    assert metrics_config({}).otlp_endpoint == ""
    assert metrics_config({}, endpoint="http://a:4317").otlp_endpoint == "http://a:4317"
    both = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://all:4317",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:4317",
    }
    assert metrics_config(both).otlp_endpoint == "http://metrics:4317"
    assert metrics_config({"OTEL_METRICS_EXPORTER": "otlp"}).otlp_endpoint == (
        "http://localhost:4317"
    )
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://all:4317", "OTEL_METRICS_EXPORTER": "none"}
    assert metrics_config(off).otlp_endpoint == ""
    assert metrics_config({**off, "OTEL_SDK_DISABLED": "true"}, endpoint="").otlp_endpoint == ""
    assert metrics_config({"OTEL_METRIC_EXPORT_INTERVAL": "250"}).interval_s == 0.25
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        metrics_config({"OTEL_METRIC_EXPORT_INTERVAL": "soon"})


async def test_metrics_reach_an_otlp_receiver(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with otlp_receiver() as receiver, ScriptedLLMServer() as llm:
            env = {
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.endpoint,
                "OTEL_METRIC_EXPORT_INTERVAL": "100",
            }
            async with _served(tmp_path, llm, **env) as (address, _):
                async with AdminClient(address, timeout=10) as admin:
                    await admin.publish("orders.new", [Event(type="order")])
                points = receiver.metric_points
                names = await receiver.wait_for_metrics(
                    lambda _: points.get(("loom.events.published", "orders.new")) == 1,
                    timeout=20,
                )
    assert {"loom.events.published", "loom.bridge.frames", "loom.durable.stored"} <= names


async def test_topic_labels_are_bounded_and_stay_put() -> None:
    # Two topics get a label; a third, even once it is the busiest, stays in "other", so no
    # series moves between a topic and "other", and each only grows.
    def published(metrics: ServeMetrics) -> dict[str, float]:
        _, samples = _parse(metrics.prometheus()[0].decode())
        return {
            dict(ls)["topic"]: v
            for (n, ls), v in samples.items()
            if n == "loom_events_published_total"
        }

    with anyio.fail_after(10):
        async with open_metrics(MetricsConfig(top_topics=2)) as metrics, EventBus() as bus:
            metrics.observe(bus)
            for topic in ("a.one", "a.two", "a.one"):
                await bus.publish(topic, Event(type="x"))
            assert published(metrics) == {"a.one": 2, "a.two": 1, "other": 0}
            for _ in range(5):
                await bus.publish("a.three", Event(type="x"))
            assert published(metrics) == {"a.one": 2, "a.two": 1, "other": 5}


async def test_a_durable_agents_backlog(tmp_path: Path) -> None:
    # A remote durable agent that holds its first event: the other four wait in the log for
    # it, and the metrics say so once the durable log's figures are read again.
    release = anyio.Event()

    async def hold(ctx: Context, topic: str, event: Event) -> None:
        await release.wait()

    slow = Agent("ledger", topics=["orders.*"], durable=True, on_event=hold)

    def backlog(metrics: ServeMetrics) -> float:
        _, samples = _parse(metrics.prometheus()[0].decode())
        return sum(
            v
            for (n, _), v in samples.items()
            if n in ("loom_durable_backlog", "loom_durable_in_flight")
        )

    with anyio.fail_after(60):
        async with (
            ScriptedLLMServer() as llm,
            _served(tmp_path, llm) as (address, metrics),
            anyio.create_task_group() as tg,
        ):
            await tg.start(partial(serve_agent, slow, address))
            async with AdminClient(address, timeout=10) as admin:
                await admin.publish("orders.new", [Event(type="order") for _ in range(5)])
            # The log's figures are read every 5 s: poll for a reading that has them (within
            # the test's deadline; nothing signals a reading).
            while True:
                if backlog(metrics) >= 4:
                    break
                await anyio.sleep(0.2)
            _, samples = _parse(metrics.prometheus()[0].decode())
            assert _value(samples, "loom_durable_stored") >= 5
            assert _labels(samples, "loom_durable_backlog", "durable")
            release.set()
            tg.cancel_scope.cancel()
