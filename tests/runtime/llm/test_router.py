"""The model router: policies, fallback, and the decisions it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom.runtime import InvalidArgument
from loom.runtime.llm import (
    LLM,
    CompletionRequest,
    ModelRouter,
    NoProviderAvailable,
    OpenAIProvider,
    ProviderConfig,
    RouteDecision,
    StreamEnd,
    TextDelta,
    ToolSpec,
    UserMessage,
    estimate_prompt_tokens,
    load_llm_config,
)
from loom.runtime.testing import Delay, HTTPError, Reply, ScriptedLLMServer

from .conftest import config_for

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

PLAIN = CompletionRequest(messages=(UserMessage(content="hello there"),))


def request(**fields: Any) -> CompletionRequest:
    return msgspec.structs.replace(PLAIN, **fields)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ScriptedLLMServer, ScriptedLLMServer]]:
    async with ScriptedLLMServer() as local, ScriptedLLMServer() as remote:
        yield local, remote


class Fleet:
    """Two real providers on two scripted servers: ``local`` (slow, free) and ``cloud``."""

    def __init__(
        self,
        local: ScriptedLLMServer,
        cloud: ScriptedLLMServer,
        *,
        local_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.local_server, self.cloud_server = local, cloud
        self.local = OpenAIProvider(
            "local",
            config_for(
                local,
                locality="local",
                typical_latency_s=3.0,
                max_retries=0,
                **(local_overrides or {}),
            ),
        )
        self.cloud = OpenAIProvider(
            "cloud",
            config_for(
                cloud,
                locality="remote",
                typical_latency_s=0.5,
                cost_per_1k_input=10.0,
                cost_per_1k_output=30.0,
                max_retries=0,
            ),
        )
        self.decisions: list[RouteDecision] = []

    def router(self, order: tuple[str, ...] = ("local", "cloud"), **kw: Any) -> ModelRouter:
        return ModelRouter(
            {"local": self.local, "cloud": self.cloud},
            order=order,
            on_decision=self.decisions.append,
            **kw,
        )

    async def aclose(self) -> None:
        await self.local.aclose()
        await self.cloud.aclose()


@pytest.fixture
async def fleet(
    servers: tuple[ScriptedLLMServer, ScriptedLLMServer],
) -> AsyncIterator[Fleet]:
    fleet = Fleet(*servers)
    try:
        yield fleet
    finally:
        await fleet.aclose()


async def test_router_is_an_llm(fleet: Fleet) -> None:
    assert isinstance(fleet.router(), LLM)


async def test_first_in_order_serves(fleet: Fleet) -> None:
    fleet.local_server.push(Reply(text="from local"))
    completion = await fleet.router().complete(PLAIN)
    assert completion.text == "from local"
    assert completion.provider == "local"
    [decision] = fleet.decisions
    assert decision.chosen == "local"
    assert decision.eligible == ("local", "cloud")
    assert decision.rejected == ()
    assert decision.fallbacks == 0
    assert decision.reason == "chose local"


async def test_privacy_keeps_local_only_requests_local(fleet: Fleet) -> None:
    fleet.local_server.push(HTTPError(status=500))
    with pytest.raises(NoProviderAvailable) as caught:
        await fleet.router(order=("cloud", "local")).complete(request(local_only=True))
    # The remote provider was never even asked, although local failed.
    assert fleet.cloud_server.requests == []
    decision = caught.value.decision
    assert [r.provider for r in decision.rejected] == ["cloud"]
    assert decision.rejected[0].reason.startswith("privacy:")
    assert [(a.provider, a.outcome) for a in decision.attempts] == [
        ("local", "ProviderUnavailable")
    ]
    assert fleet.decisions == [decision]


async def test_latency_budget(fleet: Fleet) -> None:
    fleet.cloud_server.push(Reply(text="fast"))
    completion = await fleet.router().complete(request(latency_budget_s=1.0))
    assert completion.provider == "cloud"
    [decision] = fleet.decisions
    assert decision.rejected[0].provider == "local"
    assert decision.rejected[0].reason.startswith("latency: typical 3s exceeds the budget 1s")


async def test_cost_cap(fleet: Fleet) -> None:
    fleet.local_server.push(Reply(text="cheap"))
    prompt = request(max_tokens=100, max_cost_usd=0.5)
    tokens = estimate_prompt_tokens(prompt)
    # cloud: tokens/1000*10 + 100/1000*30 = 3 + ... > 0.5; local is free.
    completion = await fleet.router(order=("cloud", "local")).complete(prompt)
    assert completion.provider == "local"
    [decision] = fleet.decisions
    assert decision.estimated_prompt_tokens == tokens
    assert decision.rejected[0].provider == "cloud"
    assert decision.rejected[0].reason.startswith("cost: estimated $")


async def test_cost_estimate_grows_with_the_prompt() -> None:
    short = estimate_prompt_tokens(PLAIN)
    long = estimate_prompt_tokens(request(messages=(UserMessage(content="x" * 4000),)))
    assert short > 0
    assert long > 1000 > short


@pytest.mark.openai_stream
async def test_capabilities(servers: tuple[ScriptedLLMServer, ScriptedLLMServer]) -> None:
    fleet = Fleet(*servers, local_overrides={"supports_tools": False, "supports_streaming": False})
    try:
        fleet.cloud_server.push(Reply(text="tools ok"), Reply(text="streamed"))
        router = fleet.router()
        with_tools = request(tools=(ToolSpec(name="fs.read"),))
        assert (await router.complete(with_tools)).provider == "cloud"
        async with router.stream(PLAIN) as chunks:
            text = "".join([c.text async for c in chunks if isinstance(c, TextDelta)])
        assert text == "streamed"
        tools_decision, stream_decision = fleet.decisions
        assert tools_decision.rejected[0].reason.startswith("capability: the request has tools")
        assert stream_decision.operation == "stream"
        assert stream_decision.rejected[0].reason.startswith("capability: streaming")
        assert fleet.local_server.requests == []
    finally:
        await fleet.aclose()


async def test_fallback_on_error(fleet: Fleet) -> None:
    fleet.local_server.push(HTTPError(status=503, message="down for maintenance"))
    fleet.cloud_server.push(Reply(text="cloud to the rescue"))
    completion = await fleet.router().complete(PLAIN)
    assert completion.provider == "cloud"
    [decision] = fleet.decisions
    assert decision.chosen == "cloud"
    assert decision.fallbacks == 1
    assert [(a.provider, a.outcome) for a in decision.attempts] == [
        ("local", "ProviderUnavailable"),
        ("cloud", "ok"),
    ]
    assert "down for maintenance" in decision.attempts[0].detail
    assert decision.reason == "chose cloud; local failed (ProviderUnavailable)"


async def test_fallback_on_timeout(fleet: Fleet) -> None:
    fleet.local_server.push(Delay(seconds=5))
    fleet.cloud_server.push(Reply(text="in time"))
    completion = await fleet.router().complete(request(timeout_s=0.3))
    assert completion.text == "in time"
    [decision] = fleet.decisions
    assert [a.outcome for a in decision.attempts] == ["ProviderTimeout", "ok"]


@pytest.mark.openai_stream
async def test_stream_fallback_while_opening(fleet: Fleet) -> None:
    fleet.local_server.push(HTTPError(status=429))
    fleet.cloud_server.push(Reply(text="streamed from cloud"))
    async with fleet.router().stream(PLAIN) as chunks:
        received = [c async for c in chunks]
    end = received[-1]
    assert isinstance(end, StreamEnd)
    assert end.completion.provider == "cloud"
    assert end.completion.text == "streamed from cloud"
    [decision] = fleet.decisions
    assert (decision.chosen, decision.fallbacks) == ("cloud", 1)
    assert decision.attempts[0].outcome == "RateLimited"


async def test_all_fail(fleet: Fleet) -> None:
    fleet.local_server.push(HTTPError(status=500))
    fleet.cloud_server.push(HTTPError(status=401))
    with pytest.raises(NoProviderAvailable) as caught:
        await fleet.router().complete(PLAIN)
    decision = caught.value.decision
    assert decision.chosen == ""
    assert [a.outcome for a in decision.attempts] == ["ProviderUnavailable", "RequestRejected"]
    assert "no provider served the request" in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_nothing_eligible(fleet: Fleet) -> None:
    with pytest.raises(NoProviderAvailable) as caught:
        await fleet.router().complete(request(local_only=True, latency_budget_s=0.1))
    decision = caught.value.decision
    assert decision.eligible == ()
    assert {r.provider for r in decision.rejected} == {"local", "cloud"}
    assert decision.attempts == ()


async def test_decision_is_a_span(
    fleet: Fleet, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    fleet.local_server.push(HTTPError(status=500))
    fleet.cloud_server.push(Reply(text="ok"))
    traced_local = OpenAIProvider("local", fleet.local.config, tracer_provider=tracer_provider)
    router = ModelRouter(
        {"local": traced_local, "cloud": fleet.cloud},
        tracer_provider=tracer_provider,
    )
    try:
        await router.complete(request(latency_budget_s=10))
    finally:
        await traced_local.aclose()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    route = spans["llm.route"]
    attributes = dict(route.attributes or {})
    assert attributes["loom.route.chosen"] == "cloud"
    assert attributes["loom.route.fallbacks"] == 1
    assert attributes["loom.route.attempts"] == ("local: ProviderUnavailable", "cloud: ok")
    assert attributes["loom.route.reason"] == "chose cloud; local failed (ProviderUnavailable)"
    # The provider's span is a child of the routing span.
    call = spans["chat scripted-model"]
    assert call.parent is not None
    assert call.parent.span_id == route.context.span_id


async def test_a_failing_hook_does_not_break_the_call(fleet: Fleet) -> None:
    def broken(decision: RouteDecision) -> None:
        raise RuntimeError("observer bug")

    fleet.local_server.push(Reply(text="ok"))
    router = ModelRouter({"local": fleet.local}, on_decision=broken)
    assert (await router.complete(PLAIN)).text == "ok"


async def test_unknown_provider_in_order(fleet: Fleet) -> None:
    with pytest.raises(InvalidArgument):
        fleet.router(order=("local", "ghost"))


async def test_from_config_owns_its_providers(
    servers: tuple[ScriptedLLMServer, ScriptedLLMServer],
) -> None:
    local, _ = servers
    local.push(Reply(text="configured"))
    config = load_llm_config(
        {
            "order": ["a"],
            "a": {"kind": "openai", "model": "m", "base_url": local.openai_base_url},
            "b": {"kind": "anthropic", "model": "c", "base_url": local.anthropic_base_url},
        },
        environ={},
    )
    async with ModelRouter.from_config(config) as router:
        assert set(router.providers) == {"a", "b"}
        assert isinstance(
            router.providers["a"].profile, type(ProviderConfig(kind="openai", model="m").profile)
        )
        assert (await router.complete(PLAIN)).text == "configured"
