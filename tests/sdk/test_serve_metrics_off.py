"""``loom serve`` without metrics (issue 14, section 5: the baseline of the bridge's metrics
line): ``[serve] metrics = false`` (``--no-metrics``, ``LOOM_METRICS``) makes no meters, so
nothing is exported over OTLP and ``/metrics`` answers 404 with the reason, while events,
tool calls, health, ``loom status`` and the dashboard's APIs work as before. The same test with
metrics on shows what off takes away. Real ``loom serve`` subprocesses, a real OTLP receiver,
real agents on real streams, real signals."""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom import Agent, Context, capability, serve_agent
from loom.bridge import AdminClient
from loom.cli._config import ServeConfig
from loom.cli._serve_metrics import open_serve_metrics
from loom.runtime import ConfigError, Event
from tests.web._support import serve_http

from .._otlp import otlp_receiver
from ._cli_support import clean_env, loom

pytestmark = pytest.mark.anyio

EVENTS = 20
OFF_BODY = (
    "metrics are off on this server ([serve] metrics = false in loom.toml, --no-metrics "
    "or LOOM_METRICS=false)\n"
)


@capability("calc.add")
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _published(text: str) -> float:
    """``loom_events_published_total`` over every topic label."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "loom_events_published_total"
    )


@pytest.mark.parametrize("metrics", [False, True], ids=["off", "on"])
async def test_loom_serve_with_metrics_off_and_on(tmp_path: Path, metrics: bool) -> None:
    (tmp_path / "loom.toml").write_text(f"[serve]\nmetrics = {str(metrics).lower()}\n")
    handled = 0
    all_handled = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        nonlocal handled
        assert await ctx.tool("calc.add", {"a": 2, "b": 3}) == 5  # a call through the server
        handled += 1
        if handled == EVENTS:
            all_handled.set()

    with anyio.fail_after(90):
        async with otlp_receiver() as receiver:
            # Were there meters, they would go to the receiver every 0.1 s.
            env = clean_env(
                OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=receiver.endpoint,
                OTEL_METRIC_EXPORT_INTERVAL="100",
            )
            async with (
                serve_http(tmp_path, "--nats", "off", env=env) as (server, address, url),
                httpx2.AsyncClient(base_url=url, timeout=10) as http,
            ):
                said = "metrics off" if not metrics else "metrics to"
                await server.wait_for(said)
                assert (await http.get("/healthz")).text == "ok\n"
                assert (await http.get("/readyz")).text == "ready\n"
                async with anyio.create_task_group() as tg:
                    await tg.start(partial(serve_agent, Agent("calc", capabilities=[add]), address))
                    worker = Agent("worker", topics=["jobs.*"], on_event=on_event)
                    await tg.start(partial(serve_agent, worker, address))
                    async with AdminClient(address, timeout=10) as admin:
                        await admin.publish("jobs.a", [Event(type="job") for _ in range(EVENTS)])
                    await all_handled.wait()

                    # The dashboard reads the runtime, not the meters: the same either way.
                    agents = (await http.get("/api/agents")).json()
                    assert {"calc", "worker"} <= {a["id"] for a in agents}
                    topics = (await http.get("/api/topics")).json()
                    assert "jobs.a" in json.dumps(topics)
                    for page in ("/", "/api/topology", "/api/policies", "/api/budgets"):
                        assert (await http.get(page)).status_code == 200, page
                    status = await loom("status", "--json", "--address", address, cwd=tmp_path)
                    assert status.returncode == 0, status.stderr
                    assert json.loads(status.stdout)["published"] >= EVENTS

                    scraped = await http.get("/metrics")
                    if metrics:
                        assert scraped.status_code == 200
                        assert _published(scraped.text) >= EVENTS
                    else:
                        assert scraped.status_code == 404
                        assert scraped.text == OFF_BODY
                        assert scraped.headers["content-type"].startswith("text/plain")
                    tg.cancel_scope.cancel()
                assert await server.stop(signal.SIGTERM) == 0
            # On, a last export follows the drain, so the receiver has it by now; off, no
            # meters were made and nothing was ever sent.
            assert (receiver.metric_exports > 0) is metrics
            assert ("loom.events.published" in receiver.metric_names) is metrics


async def test_the_flag_and_the_variable_turn_metrics_off(tmp_path: Path) -> None:
    for args, env in (
        (("--no-metrics",), clean_env()),
        ((), clean_env(LOOM_METRICS="false")),
    ):
        shown = await loom("config", "--json", *args, cwd=tmp_path, env=env)
        assert shown.returncode == 0, shown.stderr
        setting = json.loads(shown.stdout)["metrics"]
        assert setting["value"] is False
        assert setting["source"] == ("flag --metrics" if args else "env LOOM_METRICS")
    # The flag wins over loom.toml, as every flag does.
    (tmp_path / "loom.toml").write_text("[serve]\nmetrics = false\n")
    shown = await loom("config", "--json", "--metrics", cwd=tmp_path, env=clean_env())
    assert json.loads(shown.stdout)["metrics"]["value"] is True


@pytest.mark.parametrize(
    ("toml", "env", "line"),
    [
        (
            '[serve]\nmetrics = "sometimes"\n',
            {},
            "loom: configuration: loom.toml [serve] metrics: Expected `bool`, got `str`",
        ),
        (
            "",
            {"LOOM_METRICS": "sometimes"},
            "loom: configuration: $LOOM_METRICS: Expected `bool`, got `str`",
        ),
    ],
    ids=["loom.toml", "variable"],
)
async def test_a_bad_value_stops_loom_serve_with_one_line(
    tmp_path: Path, toml: str, env: dict[str, str], line: str
) -> None:
    (tmp_path / "loom.toml").write_text(toml)
    result = await loom("serve", "--port", "0", "--nats", "off", cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [line]


async def test_metrics_off_reads_no_metrics_settings() -> None:
    """Off, the ``OTEL_METRIC*`` variables are not even read: a bad interval stops only a
    server that has metrics."""
    environ = {"OTEL_METRIC_EXPORT_INTERVAL": "soon"}
    async with open_serve_metrics(ServeConfig(metrics=False), environ) as meters:
        assert meters is None
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        async with open_serve_metrics(ServeConfig(), environ):
            pass
