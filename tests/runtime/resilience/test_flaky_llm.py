"""Resilience policies on the model providers, against the scripted LLM server failing on a
schedule over real HTTP: the provider's retry is a policy, and a named one adds a breaker, a
rate limit, a timeout and a concurrency cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

from loom.runtime.llm import (
    CompletionRequest,
    LLMConfig,
    ModelRouter,
    ProviderConfig,
    ProviderTimeout,
    ProviderUnavailable,
    Secret,
    UserMessage,
)
from loom.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    Policies,
    PolicyConfig,
    RateLimit,
    Retry,
)
from loom.runtime.testing import Delay, FailSchedule, HTTPError, Reply, ScriptedLLMServer

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

REQUEST = CompletionRequest(messages=(UserMessage(content="hello"),))
NO_RETRY = Retry(max_retries=0)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLLMServer]:
    async with ScriptedLLMServer() as srv:
        yield srv


def provider_config(server: ScriptedLLMServer, **fields: Any) -> ProviderConfig:
    config = ProviderConfig(
        kind="openai",
        model="m",
        base_url=server.openai_base_url,
        api_key=Secret("sk-test"),
        timeout_s=10.0,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
    )
    return msgspec.structs.replace(config, **fields)


def router_of(policies: Policies, **providers: tuple[ScriptedLLMServer, str]) -> ModelRouter:
    configs = {
        name: provider_config(server, policy=policy) for name, (server, policy) in providers.items()
    }
    return ModelRouter.from_config(LLMConfig(providers=configs), policies=policies)


async def test_the_default_policy_retries_5xx_and_counts_it(server: ScriptedLLMServer) -> None:
    server.fail_on_schedule(FailSchedule(error=HTTPError(status=500), first=2))
    policies = Policies()
    async with router_of(policies, a=(server, "")) as router:
        with anyio.fail_after(10):
            completion = await router.route("a").complete(REQUEST)
        assert completion.text == "ok"
        provider = router.providers["a"]
        assert provider.statistics().retries == 2  # type: ignore[attr-defined]
    (stats,) = policies.statistics().policies
    assert stats.name == "default@llm.a"
    assert (stats.retries, stats.succeeded) == (2, 1)
    assert len(server.requests) == 3


async def test_retry_after_is_honoured_by_a_named_policy(server: ScriptedLLMServer) -> None:
    server.fail_on_schedule(FailSchedule(error=HTTPError(status=429, retry_after=0.3), first=1))
    policies = Policies({"patient": PolicyConfig(retry=Retry(duration=0.001, max_retries=2))})
    async with router_of(policies, a=(server, "patient")) as router:
        started = anyio.current_time()
        with anyio.fail_after(10):
            await router.route("a").complete(REQUEST)
        assert anyio.current_time() - started >= 0.29
    assert [s.name for s in policies.statistics().policies] == ["patient@llm.a"]


async def test_the_breaker_opens_refuses_without_a_request_half_opens_and_closes(
    server: ScriptedLLMServer,
) -> None:
    breaker = CircuitBreaker(trip="consecutiveFailures >= 2", timeout=0.3)
    policies = Policies({"guarded": PolicyConfig(retry=NO_RETRY, circuit_breaker=breaker)})
    server.fail_on_schedule(FailSchedule(error=HTTPError(status=503), first=2))
    async with router_of(policies, a=(server, "guarded")) as router:
        provider = router.route("a")
        with anyio.fail_after(10):
            for _ in range(2):
                with pytest.raises(ProviderUnavailable, match="503"):
                    await provider.complete(REQUEST)
            (policy,) = policies.statistics().policies
            assert policy.breaker is not None
            assert policy.breaker.state is BreakerState.OPEN
            # Open: refused at once, nothing sent.
            with pytest.raises(ProviderUnavailable, match="circuit breaker"):
                await provider.complete(REQUEST)
            assert len(server.requests) == 2
            await anyio.sleep(policy.breaker.retry_in)  # the breaker's own timeout
            (policy,) = policies.statistics().policies
            assert policy.breaker is not None
            assert policy.breaker.state is BreakerState.HALF_OPEN
            assert (await provider.complete(REQUEST)).text == "ok"
    (policy,) = policies.statistics().policies
    assert policy.breaker is not None
    assert (policy.breaker.state, policy.breaker.opened, policy.rejected) == (
        BreakerState.CLOSED,
        1,
        1,
    )


async def test_an_open_breaker_sends_the_router_to_the_next_provider() -> None:
    breaker = CircuitBreaker(trip="consecutiveFailures >= 1", timeout=60)
    policies = Policies({"guarded": PolicyConfig(retry=NO_RETRY, circuit_breaker=breaker)})
    async with ScriptedLLMServer() as bad, ScriptedLLMServer() as good:
        bad.fail_on_schedule(FailSchedule(error=HTTPError(status=500), every=1))
        good.push(Reply(text="from good"), Reply(text="from good again"))
        async with router_of(policies, a=(bad, "guarded"), b=(good, "")) as router:
            with anyio.fail_after(10):
                assert (await router.complete(REQUEST)).text == "from good"
                assert len(bad.requests) == 1  # tripped it
                assert (await router.complete(REQUEST)).text == "from good again"
                assert len(bad.requests) == 1  # refused without a request


async def test_the_timeout_ends_a_slow_attempt_and_the_retry_answers(
    server: ScriptedLLMServer,
) -> None:
    server.push(Delay(seconds=5, then=Reply(text="late")), Reply(text="prompt"))
    retry = Retry(policy="constant", duration=0.001, max_retries=1)
    policies = Policies({"quick": PolicyConfig(timeout=0.3, retry=retry)})
    async with router_of(policies, a=(server, "quick")) as router:
        started = anyio.current_time()
        with anyio.fail_after(10):
            assert (await router.route("a").complete(REQUEST)).text == "prompt"
        assert 0.3 <= anyio.current_time() - started < 4
        with anyio.fail_after(5):
            await server.wait_abandoned(1)  # the slow attempt's connection was closed
    (policy,) = policies.statistics().policies
    assert (policy.timeouts, policy.retries) == (1, 1)


async def test_a_timeout_without_retry_is_a_provider_timeout(server: ScriptedLLMServer) -> None:
    server.push(Delay(seconds=5))
    policies = Policies({"quick": PolicyConfig(timeout=0.2, retry=NO_RETRY)})
    async with router_of(policies, a=(server, "quick")) as router:
        with anyio.fail_after(5), pytest.raises(ProviderTimeout):
            await router.route("a").complete(REQUEST)


async def test_the_rate_limit_spaces_requests(server: ScriptedLLMServer) -> None:
    policies = Policies({"slow": PolicyConfig(rate_limit=RateLimit(rate=10, burst=1))})
    # No failures: the schedule only answers every request with its "otherwise" reply.
    server.fail_on_schedule(FailSchedule(error=HTTPError(status=500), first=0))
    async with router_of(policies, a=(server, "slow")) as router:
        provider = router.route("a")
        started = anyio.current_time()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(provider.complete, REQUEST)
        # One at once, then one each 100 ms.
        assert 0.4 - 0.01 <= anyio.current_time() - started < 5
    assert len(server.requests) == 5


async def test_the_concurrency_cap_holds(server: ScriptedLLMServer) -> None:
    policies = Policies({"two": PolicyConfig(max_concurrency=2)})
    done = 0
    most = 0

    def step(_: object) -> Delay:
        nonlocal most
        most = max(most, len(server.requests) - done)
        return Delay(seconds=0.2, then=Reply(text="ok"))

    server.push(*[step] * 12)
    async with router_of(policies, a=(server, "two")) as router:
        provider = router.route("a")

        async def one() -> None:
            nonlocal done
            await provider.complete(REQUEST)
            done += 1

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
    assert done == 12
    assert most == 2
