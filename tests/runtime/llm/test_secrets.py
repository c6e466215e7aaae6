"""The API key appears nowhere but on the wire: not in reprs, errors, logs or spans."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom.runtime.llm import (
    AnthropicProvider,
    CompletionRequest,
    LLMError,
    ModelRouter,
    OpenAIProvider,
    RouteDecision,
    UserMessage,
    load_llm_config,
)
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer

from .conftest import API_KEY, config_for

pytestmark = pytest.mark.anyio

REQUEST = CompletionRequest(messages=(UserMessage(content="hi"),))


def test_config_repr_hides_the_key() -> None:
    config = load_llm_config(
        {"p": {"kind": "openai", "model": "m", "api_key_env": "K"}}, environ={"K": API_KEY}
    )
    assert config.providers["p"].api_key.reveal() == API_KEY
    for text in (repr(config), str(config), repr(config.providers["p"])):
        assert API_KEY not in text
        assert "***" in text


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_key_never_leaks_through_errors_logs_or_spans(
    server: ScriptedLLMServer,
    caplog: pytest.LogCaptureFixture,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    kind: str,
) -> None:
    # A hostile server that echoes the key back in its error body.
    server.push(
        HTTPError(status=500, message=f"bad key {API_KEY}"),
        HTTPError(status=401, message=f"invalid key: {API_KEY}"),
        Reply(text="fine"),
    )
    cls = OpenAIProvider if kind == "openai" else AnthropicProvider
    caplog.set_level(logging.DEBUG)
    errors: list[LLMError] = []
    async with cls("p", config_for(server, kind), tracer_provider=tracer_provider) as llm:
        assert API_KEY not in repr(llm)
        with pytest.raises(LLMError) as caught:
            await llm.complete(REQUEST)
        errors.append(caught.value)
        await llm.complete(REQUEST)
    assert len(server.requests) == 3  # the key did go out, on the wire
    error = errors[0]
    assert "***" in str(error)
    texts = [str(error), repr(error), *map(str, error.args), repr(error.__cause__)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [
        str(span.attributes) + str(span.status.description)
        for span in exporter.get_finished_spans()
    ]
    assert caplog.records, "debug logging was on: something should have been logged"
    for text in texts:
        assert API_KEY not in text


async def test_router_records_do_not_leak(server: ScriptedLLMServer) -> None:
    server.push(HTTPError(status=400, message=API_KEY))
    decisions: list[RouteDecision] = []
    async with OpenAIProvider("p", config_for(server)) as llm:
        router = ModelRouter({"p": llm}, on_decision=decisions.append)
        with pytest.raises(LLMError):
            await router.complete(REQUEST)
    assert API_KEY not in repr(decisions)
