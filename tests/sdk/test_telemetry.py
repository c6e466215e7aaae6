"""How a process decides whether and where to export traces: ``OTEL_*`` variables and the
flags (``sdk/_telemetry.py``); exporting itself is tested against a real receiver in
``test_traces_export.py``."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision

from loom._telemetry import TraceConfig, open_tracing, trace_config
from loom.runtime import ConfigError

pytestmark = pytest.mark.anyio

URL = "http://collector:4317"


def test_off_when_nothing_is_set() -> None:
    assert trace_config({}) is None
    assert trace_config({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_off_when_disabled_or_exporter_none() -> None:
    assert trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": URL, "OTEL_SDK_DISABLED": "true"}) is None
    assert (
        trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": URL, "OTEL_TRACES_EXPORTER": "none"}) is None
    )


def test_endpoints_in_order_of_precedence() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317",
    }
    assert trace_config(env) == TraceConfig(endpoint="http://traces:4317")
    assert trace_config(env, endpoint=URL) == TraceConfig(endpoint=URL)
    assert trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": URL}) == TraceConfig(endpoint=URL)
    # The exporter named alone: its default endpoint.
    only = trace_config({"OTEL_TRACES_EXPORTER": "otlp"})
    assert only is not None
    assert only.endpoint == "http://localhost:4317"


def test_service_name_sampler_and_resource() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": URL,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team=agents",
    }
    config = trace_config(env, service_name="worker")
    assert config == TraceConfig(
        endpoint=URL,
        sampler="traceidratio",
        sampler_arg=0.25,
        service_name="shop",
        resource={"deployment.environment": "prod", "team": "agents"},
    )
    # The flag's ratio wins, parent-based; the default service name is the caller's.
    flagged = trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": URL}, sample=0.01, service_name="w")
    assert flagged == TraceConfig(
        endpoint=URL, sampler="parentbased_traceidratio", sampler_arg=0.01, service_name="w"
    )


@pytest.mark.parametrize(
    ("env", "sample", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, None, "OTEL_TRACES_SAMPLER must be one of"),
        ({"OTEL_TRACES_SAMPLER_ARG": "half"}, None, "OTEL_TRACES_SAMPLER_ARG is a ratio"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, None, "within 0..1, not 2.0"),
        ({}, -0.5, "within 0..1, not -0.5"),
    ],
)
def test_a_bad_sampler_is_a_config_error(
    env: dict[str, str], sample: float | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": URL, **env}, sample=sample)


async def test_open_tracing_off_yields_none() -> None:
    async with open_tracing(None) as provider:
        assert provider is None


async def test_open_tracing_builds_the_sampler_and_resource() -> None:
    config = TraceConfig(endpoint="http://127.0.0.1:9", sampler="always_off", service_name="svc")
    async with open_tracing(config) as provider:
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "svc"
        result = provider.sampler.should_sample(None, 1, "x")
        assert result.decision is Decision.DROP
