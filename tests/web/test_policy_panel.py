"""The resilience policies on the HTTP port: ``/api/policies``, the dashboard's panel in a real
browser, and ``/metrics``: a breaker tripped by a failing tool shows as open everywhere."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from playwright.async_api import async_playwright, expect

from loom.metrics import MetricsConfig, open_metrics
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.resilience import CircuitBreaker, Policies, PolicyConfig
from loom.runtime.tools import FunctionTool, ToolFailed
from loom.web import HttpServer

from .test_dashboard_browser import CHROMIUM

pytestmark = pytest.mark.anyio


async def _broken() -> None:
    raise ConnectionError("down")


def _policies() -> Policies:
    breaker = CircuitBreaker(trip="consecutiveFailures >= 2", timeout=600)
    policies = Policies({"guarded": PolicyConfig(circuit_breaker=breaker)})
    policies.attach_tools({"svc.*": "guarded"})
    return policies


async def _trip(runtime: AgentRuntime) -> None:
    runtime.tools.register(
        FunctionTool(_broken, name="svc.down", description="d", parameters_schema={})
    )
    for _ in range(3):  # two failures open it; the third is refused
        with pytest.raises(ToolFailed):
            await runtime.call_tool("svc.down", {})


async def test_an_open_breaker_in_the_api_the_panel_and_the_metrics() -> None:
    async with (
        open_metrics(MetricsConfig()) as metrics,
        EventBus() as bus,
        AgentRuntime(bus, policies=_policies()) as runtime,
        HttpServer(runtime, metrics=metrics.prometheus) as http,
        httpx2.AsyncClient(base_url=http.url, timeout=10) as client,
        async_playwright() as p,
    ):
        metrics.observe(bus, runtime=runtime)
        with anyio.fail_after(30):
            await _trip(runtime)
            (row,) = (await client.get("/api/policies")).json()
            assert row["name"] == "guarded@tools:svc.*"
            assert (row["calls"], row["failed"], row["rejected"]) == (3, 3, 1)
            assert row["breaker"]["state"] == "open"
            assert row["breaker"]["opened"] == 1

            text = (await client.get("/metrics")).text
            labels = 'policy="guarded@tools:svc.*"'
            assert f'loom_policy_breaker_state{{{labels},state="open"}} 1.0' in text
            assert f'loom_policy_breaker_state{{{labels},state="closed"}} 0.0' in text
            assert f"loom_policy_rejected_total{{{labels}}} 1.0" in text
            assert f"loom_policy_calls_total{{{labels}}} 3.0" in text

            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = await browser.new_page()
                await page.goto(http.url + "#agents")
                policy_row = page.locator("[data-testid=policies] tr[data-policy]")
                await expect(policy_row).to_have_count(1)
                await expect(policy_row).to_have_attribute("data-state", "open")
            finally:
                await browser.close()


async def test_no_policy_no_panel() -> None:
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime) as http,
        httpx2.AsyncClient(base_url=http.url, timeout=10) as client,
    ):
        assert (await client.get("/api/policies")).json() == []
