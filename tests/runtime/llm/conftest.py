"""Fixtures of the LLM tests: a scripted server, providers pointed at it, an in-memory tracer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom.runtime.llm import ProviderConfig, Secret
from loom.runtime.testing import ScriptedLLMServer

API_KEY = "sk-test-5f1c9a0e7b3d4c2a"


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as srv:
        yield srv


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def config_for(server: ScriptedLLMServer, kind: str = "openai", **fields: Any) -> ProviderConfig:
    """A provider config aimed at ``server``; fast backoffs unless the test says otherwise."""
    base = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    defaults: dict[str, Any] = {
        "kind": kind,
        "model": "scripted-model",
        "base_url": base,
        "api_key": Secret(API_KEY),
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
    }
    return msgspec.structs.replace(ProviderConfig(**defaults), **fields)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "openai_stream: streams through the openai SDK, which is asyncio-only here"
    )


@pytest.fixture(autouse=True)
def _openai_streams_on_asyncio_only(request: pytest.FixtureRequest, anyio_backend: str) -> None:
    # The openai SDK (3.x) leaves its SSE decoding generators unclosed after ``[DONE]``; asyncio
    # finalises them quietly, trio warns (ResourceWarning), and warnings are errors here.
    # The Anthropic SDK's streams and everything non-streaming run on both backends.
    if anyio_backend == "trio" and request.node.get_closest_marker("openai_stream"):
        pytest.skip("the openai SDK's streams leave async generators unclosed on trio")
