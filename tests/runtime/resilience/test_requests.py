"""Resilience policies on ``ctx.request``, by topic: a responder that ignores requests on a
schedule; retries only for requests carrying an idempotency key (which the responder receives),
the breaker refusing without publishing, the per-attempt timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from loom import Agent, Context
from loom.runtime import AgentRuntime, Event, EventBus
from loom.runtime.collab import RequestTimeout
from loom.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    Policies,
    PolicyConfig,
    Retry,
)

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

RETRY = Retry(policy="constant", duration=0.001, max_retries=3)


class Responder:
    """Answers requests on ``billing.charge``, ignoring the first ``ignore_first``."""

    def __init__(self, ignore_first: int) -> None:
        self.ignore_first = ignore_first
        self.seen: list[Event] = []

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        self.seen.append(event)
        if len(self.seen) > self.ignore_first:
            await ctx.reply(event, f"charged {len(self.seen)}")


@asynccontextmanager
async def runtime_with(config: PolicyConfig, responder: Responder) -> AsyncIterator[AgentRuntime]:
    policies = Policies({"p": config})
    policies.attach_requests({"billing.*": "p"})
    async with EventBus() as bus, AgentRuntime(bus, policies=policies) as runtime:
        await runtime.start(
            Agent("billing", topics=["billing.charge"], on_event=responder.on_event)
        )
        yield runtime


async def ask(runtime: AgentRuntime, **metadata: str) -> str:
    """``ctx.request`` from an agent's handler; its answer or the error's class name."""
    answer: list[str] = []
    done = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        try:
            got = await ctx.request(
                "billing.charge", b"10 EUR", timeout=5, metadata=metadata or None
            )
            answer.append(got.payload.decode())
        except Exception as exc:
            answer.append(type(exc).__name__)
        done.set()

    name = f"asker-{len(runtime.agents())}"
    await runtime.start(Agent(name, topics=[f"{name}.go"], on_event=on_event))
    await runtime.bus.publish(f"{name}.go", Event(payload=b""))
    await done.wait()
    return answer[0]


async def test_a_keyed_request_is_retried_and_the_responder_sees_the_key() -> None:
    responder = Responder(ignore_first=2)
    config = PolicyConfig(timeout=0.2, retry=RETRY)
    async with runtime_with(config, responder) as runtime:
        with anyio.fail_after(10):
            assert await ask(runtime, **{"idempotency-key": "charge-1"}) == "charged 3"
    assert [e.metadata["idempotency-key"] for e in responder.seen] == ["charge-1"] * 3
    # One request, published three times: one correlation id.
    assert len({e.envelope.correlation_id for e in responder.seen}) == 1


async def test_a_request_without_a_key_is_not_retried() -> None:
    responder = Responder(ignore_first=1)
    async with runtime_with(PolicyConfig(timeout=0.2, retry=RETRY), responder) as runtime:
        with anyio.fail_after(10):
            assert await ask(runtime) == RequestTimeout.__name__
    assert len(responder.seen) == 1


async def test_an_open_breaker_refuses_without_publishing() -> None:
    responder = Responder(ignore_first=100)
    breaker = CircuitBreaker(trip="consecutiveFailures >= 2", timeout=60)
    config = PolicyConfig(timeout=0.1, circuit_breaker=breaker)
    async with runtime_with(config, responder) as runtime:
        with anyio.fail_after(10):
            assert await ask(runtime) == RequestTimeout.__name__
            assert await ask(runtime) == RequestTimeout.__name__
            assert await ask(runtime) == CircuitOpen.__name__
        (stats,) = runtime.policies.statistics().policies
    assert len(responder.seen) == 2
    assert stats.breaker is not None
    assert stats.breaker.state is BreakerState.OPEN
    assert stats.name == "p@requests:billing.*"


async def test_unguarded_topics_pass_untouched() -> None:
    responder = Responder(ignore_first=0)
    policies = Policies({"p": PolicyConfig(timeout=0.01)})
    policies.attach_requests({"other.*": "p"})
    async with EventBus() as bus, AgentRuntime(bus, policies=policies) as runtime:
        await runtime.start(
            Agent("billing", topics=["billing.charge"], on_event=responder.on_event)
        )
        with anyio.fail_after(10):
            assert await ask(runtime) == "charged 1"
    (stats,) = policies.statistics().policies
    assert stats.calls == 0
