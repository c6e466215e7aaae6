"""The resilience policy on its own and through the tool registry, with real tools: what each
part does, measured with the clock where it is about time (bounded, never slept on)."""

from __future__ import annotations

import anyio
import pytest

from loom import Agent, capability
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    Policies,
    Policy,
    PolicyConfig,
    RateLimit,
    Retry,
    current_idempotency_key,
)
from loom.runtime.tools import FunctionTool, ToolFailed, ToolRegistry, ToolTimeout

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}
FAST_RETRY = Retry(policy="constant", duration=0.001, max_retries=3)


class Flaky:
    """Fails the first ``fail_first`` calls, then answers how many calls it had."""

    def __init__(self, fail_first: int = 0, *, hold: float = 0.0) -> None:
        self.fail_first = fail_first
        self.hold = hold
        self.calls = 0
        self.keys: list[str | None] = []
        self.in_flight = 0
        self.most = 0

    async def __call__(self, n: int = 0) -> int:
        self.calls += 1
        self.keys.append(current_idempotency_key())
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.hold:
                await anyio.sleep(self.hold)
            if self.calls <= self.fail_first:
                raise ConnectionError(f"scheduled failure {self.calls}")
            return self.calls
        finally:
            self.in_flight -= 1


def breaker_state(policy: Policy) -> BreakerState:
    breaker = policy.statistics().breaker
    assert breaker is not None
    return breaker.state


def registry_with(
    fn: Flaky, policy: Policy, *, idempotent: bool = False, name: str = "svc.op"
) -> ToolRegistry:
    registry = ToolRegistry()
    tool = FunctionTool(
        fn, name=name, description="d", parameters_schema=SCHEMA, idempotent=idempotent
    )
    registry.register(tool, policy=policy)
    return registry


async def test_an_idempotent_call_is_retried_until_it_succeeds() -> None:
    fn = Flaky(fail_first=2)
    policy = Policy.of("p", retry=FAST_RETRY)
    registry = registry_with(fn, policy, idempotent=True)
    with anyio.fail_after(5):
        assert await registry.call("svc.op", {}) == 3
    stats = policy.statistics()
    assert (stats.calls, stats.succeeded, stats.retries) == (1, 1, 2)


async def test_a_call_that_is_not_idempotent_is_never_retried() -> None:
    fn = Flaky(fail_first=1)
    policy = Policy.of("p", retry=FAST_RETRY)
    registry = registry_with(fn, policy, idempotent=False)
    with anyio.fail_after(5), pytest.raises(ToolFailed, match="scheduled failure 1"):
        await registry.call("svc.op", {})
    assert fn.calls == 1
    assert policy.statistics().retries == 0


async def test_an_idempotency_key_makes_a_call_retryable_and_reaches_every_attempt() -> None:
    fn = Flaky(fail_first=2)
    registry = registry_with(fn, Policy.of("p", retry=FAST_RETRY), idempotent=False)
    with anyio.fail_after(5):
        assert await registry.call("svc.op", {}, idempotency_key="order-7") == 3
    assert fn.keys == ["order-7"] * 3
    # Outside the call, no key.
    assert current_idempotency_key() is None


async def test_retries_stop_at_max_retries_with_the_last_error() -> None:
    fn = Flaky(fail_first=10)
    registry = registry_with(fn, Policy.of("p", retry=FAST_RETRY), idempotent=True)
    with anyio.fail_after(5), pytest.raises(ToolFailed, match="scheduled failure 4"):
        await registry.call("svc.op", {})
    assert fn.calls == 4


async def test_a_retry_that_would_end_past_the_deadline_is_not_made() -> None:
    fn = Flaky(fail_first=10)
    slow_retry = Retry(policy="constant", duration=5, max_retries=3)
    registry = registry_with(fn, Policy.of("p", retry=slow_retry), idempotent=True)
    started = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(ToolFailed, match="scheduled failure 1"):
        await registry.call("svc.op", {}, timeout=1)
    assert fn.calls == 1
    assert anyio.current_time() - started < 1  # given up at once, not at the deadline


async def test_the_timeout_bounds_each_attempt_and_a_retry_follows() -> None:
    class SlowFirst(Flaky):
        async def __call__(self, n: int = 0) -> int:
            self.calls += 1
            if self.calls == 1:
                await anyio.sleep(10)
            return self.calls

    fn = SlowFirst()
    policy = Policy.of("p", timeout=0.1, retry=FAST_RETRY)
    registry = registry_with(fn, policy, idempotent=True)
    started = anyio.current_time()
    with anyio.fail_after(5):
        assert await registry.call("svc.op", {}) == 2
    assert 0.1 <= anyio.current_time() - started < 2
    assert policy.statistics().timeouts == 1


async def test_a_timeout_without_retry_is_a_tool_timeout() -> None:
    fn = Flaky(hold=10)
    policy = Policy.of("p", timeout=0.05)
    registry = registry_with(fn, policy)
    with anyio.fail_after(5), pytest.raises(ToolTimeout) as caught:
        await registry.call("svc.op", {})
    assert caught.value.timeout == 0.05
    stats = registry.statistics().tools["svc.op"]
    assert stats.failures.timeouts == 1
    assert stats.in_flight == 0


async def test_the_breaker_opens_then_half_opens_then_closes() -> None:
    fn = Flaky(fail_first=3)
    breaker = CircuitBreaker(trip="consecutiveFailures >= 3", timeout=1.0, max_requests=1)
    policy = Policy.of("p", circuit_breaker=breaker)
    registry = registry_with(fn, policy)
    with anyio.fail_after(5):
        for _ in range(3):
            with pytest.raises(ToolFailed, match="scheduled failure"):
                await registry.call("svc.op", {})
        stats = policy.statistics()
        assert stats.breaker is not None
        assert stats.breaker.state is BreakerState.OPEN
        # Open: refused at once, the tool not called.
        with pytest.raises(ToolFailed) as refused:
            await registry.call("svc.op", {})
        assert refused.value.cause_type == "CircuitOpen"
        assert fn.calls == 3
        # Open for its timeout (the time the breaker is about, not a readiness wait).
        assert 0.5 <= stats.breaker.retry_in <= 1.0  # bounded: a loaded machine is slow
        await anyio.sleep(0.1)
        assert breaker_state(policy) is BreakerState.OPEN
        await anyio.sleep(policy.statistics().breaker.retry_in)  # type: ignore[union-attr]
        assert breaker_state(policy) is BreakerState.HALF_OPEN
        # The probe succeeds: closed again.
        assert await registry.call("svc.op", {}) == 4
    final = policy.statistics().breaker
    assert final is not None
    assert (final.state, final.opened, final.rejected) == (BreakerState.CLOSED, 1, 1)


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    fn = Flaky(fail_first=100)
    breaker = CircuitBreaker(trip="consecutiveFailures > 0", timeout=0.05)
    policy = Policy.of("p", circuit_breaker=breaker)
    registry = registry_with(fn, policy)
    with anyio.fail_after(5):
        with pytest.raises(ToolFailed):
            await registry.call("svc.op", {})
        await anyio.sleep(policy.statistics().breaker.retry_in)  # type: ignore[union-attr]
        assert breaker_state(policy) is BreakerState.HALF_OPEN
        with pytest.raises(ToolFailed, match="scheduled failure 2"):
            await registry.call("svc.op", {})
    stats = policy.statistics().breaker
    assert stats is not None
    assert stats.state is BreakerState.OPEN
    assert stats.opened == 2


async def test_a_callers_mistake_does_not_count_against_the_breaker() -> None:
    fn = Flaky()
    policy = Policy.of("p", circuit_breaker=CircuitBreaker(trip="consecutiveFailures >= 1"))
    registry = registry_with(fn, policy)
    with anyio.fail_after(5):
        for _ in range(3):
            with pytest.raises(Exception, match="not of type"):
                await registry.call("svc.op", {"n": "x"})
    assert breaker_state(policy) is BreakerState.CLOSED


async def test_the_rate_limit_spaces_calls() -> None:
    starts: list[float] = []

    async def stamp(n: int = 0) -> int:
        starts.append(anyio.current_time())
        return len(starts)

    registry = ToolRegistry()
    policy = Policy.of("p", rate_limit=RateLimit(rate=20, burst=2))
    registry.register(
        FunctionTool(stamp, name="svc.op", description="d", parameters_schema=SCHEMA),
        policy=policy,
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(registry.call, "svc.op", {})
    first = starts[0]
    offsets = sorted(t - first for t in starts)
    # Two banked tokens at once, then one every 50 ms: call k starts at (k - 1) * 50 ms at
    # the earliest, however the tasks were scheduled; and not much later (bounded).
    for k, offset in enumerate(offsets):
        assert offset >= max(k - 1, 0) * 0.05 - 0.002, offsets
    assert offsets[-1] < 0.3 + 1.0
    assert policy.statistics().rate_limited == 6


async def test_the_concurrency_cap_holds_under_many_parallel_calls() -> None:
    fn = Flaky(hold=0.01)
    policy = Policy.of("p", max_concurrency=3)
    registry = registry_with(fn, policy)
    seen_waiting = 0

    async def one() -> None:
        nonlocal seen_waiting
        await registry.call("svc.op", {})
        seen_waiting = max(seen_waiting, policy.statistics().waiting)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
    assert fn.calls == 100
    assert fn.most == 3
    assert seen_waiting > 0
    stats = policy.statistics()
    assert (stats.in_flight, stats.waiting, stats.succeeded) == (0, 0, 100)


async def test_an_empty_policy_only_counts() -> None:
    fn = Flaky(fail_first=1)
    policy = Policy("nothing")
    registry = registry_with(fn, policy, idempotent=True)
    with pytest.raises(ToolFailed):
        await registry.call("svc.op", {})
    assert await registry.call("svc.op", {}) == 2
    stats = policy.statistics()
    assert (stats.calls, stats.succeeded, stats.failed, stats.retries) == (2, 1, 1, 0)


async def test_runtime_rules_guard_tools_by_name_once() -> None:
    policies = Policies({"retry": PolicyConfig(retry=FAST_RETRY)})
    policies.attach_tools({"svc.*": "retry"})
    fn = Flaky(fail_first=1)
    async with EventBus() as bus, AgentRuntime(bus, policies=policies) as runtime:
        runtime.tools.register(
            FunctionTool(fn, name="svc.op", description="d", parameters_schema=SCHEMA),
            idempotent=True,
        )
        with anyio.fail_after(5):
            assert await runtime.call_tool("svc.op", {}) == 2
    (stats,) = policies.statistics().policies
    assert stats.name == "retry@tools:svc.*"
    assert stats.retries == 1


async def test_an_open_breaker_refuses_before_the_call_waits_for_a_slot() -> None:
    fn = Flaky(fail_first=1, hold=0.05)
    breaker = CircuitBreaker(trip="consecutiveFailures >= 1", timeout=60)
    policy = Policy.of("p", circuit_breaker=breaker, max_concurrency=1)
    registry = registry_with(fn, policy)
    with anyio.fail_after(5):
        with pytest.raises(ToolFailed, match="scheduled failure"):
            await registry.call("svc.op", {})
        # Every slot taken (by hand: a call could not take one past the open breaker): the
        # refusal does not wait for one.
        slots = policy._slots
        assert slots is not None
        await slots.acquire()
        started = anyio.current_time()
        with pytest.raises(ToolFailed) as refused:
            await registry.call("svc.op", {})
        assert anyio.current_time() - started < 1
        slots.release()
    assert refused.value.cause_type == "CircuitOpen"


async def test_an_agents_capability_is_guarded_but_not_again_for_another_node() -> None:
    @capability("svc.echo")
    async def echo(text: str) -> str:
        return text

    policies = Policies({"p": PolicyConfig(retry=FAST_RETRY)})
    policies.attach_tools({"svc.*": "p"})
    async with EventBus() as bus, AgentRuntime(bus, policies=policies) as runtime:
        await runtime.start(Agent("provider", topics=["unused"], capabilities=[echo]))
        with anyio.fail_after(10):
            assert await runtime.call_tool("svc.echo", {"text": "a"}) == "a"
            (stats,) = policies.statistics().policies
            assert stats.calls == 1
            # As a call another node chose this agent for arrives: that node guarded it.
            assert await runtime.call_tool("svc.echo", {"text": "b"}, provider="provider") == "b"
    (stats,) = policies.statistics().policies
    assert stats.calls == 1
