"""Resilience policies on MCP tools, against a real MCP server (a subprocess over stdio) whose
tools fail on a schedule: retries only for tools the server marks idempotent, or calls with an
idempotency key (which reaches the server in ``_meta``); the breaker; the cap; the limit."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from loom.runtime import AgentRuntime, EventBus
from loom.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    Policies,
    PolicyConfig,
    RateLimit,
    Retry,
)
from loom.runtime.tools import McpServer, McpStdioConfig, ToolFailed, ToolTimeout, load_mcp_config

from ..tools.mcp_servers import TOOLS_SERVER

pytestmark = pytest.mark.anyio

FLAKY_SERVER = TOOLS_SERVER.parent / "flaky_server.py"
RETRY = Retry(policy="constant", duration=0.001, max_retries=3)


def config() -> McpStdioConfig:
    table: dict[str, Any] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(FLAKY_SERVER)],
        "call_timeout": 5,
        "connect_timeout": 10,
    }
    loaded = load_mcp_config({"f": table})["f"]
    assert isinstance(loaded, McpStdioConfig)
    return loaded


@pytest.fixture
async def runtime_with(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[AgentRuntime, Policies]]:
    configs, rules = request.param
    policies = Policies(configs)
    policies.attach_tools(rules)
    async with (
        EventBus() as bus,
        AgentRuntime(bus, policies=policies) as runtime,
        McpServer("f", config(), registry=runtime.tools) as server,
    ):
        with anyio.fail_after(15):
            await server.wait_connected()
        yield runtime, policies


def with_policy(config: PolicyConfig, pattern: str = "f.*") -> pytest.MarkDecorator:
    return pytest.mark.parametrize("runtime_with", [({"p": config}, {pattern: "p"})], indirect=True)


@with_policy(PolicyConfig(retry=RETRY))
async def test_a_tool_marked_idempotent_is_retried(
    runtime_with: tuple[AgentRuntime, Policies],
) -> None:
    runtime, policies = runtime_with
    with anyio.fail_after(10):
        result = await runtime.call_tool("f.flaky", {"key": "a", "fail_first": 2})
    assert result["calls"] == 3
    (stats,) = policies.statistics().policies
    assert (stats.name, stats.retries) == ("p@tools:f.*", 2)


@with_policy(PolicyConfig(retry=RETRY))
async def test_a_tool_with_effects_is_not_retried_without_a_key(
    runtime_with: tuple[AgentRuntime, Policies],
) -> None:
    runtime, _ = runtime_with
    with anyio.fail_after(10):
        with pytest.raises(ToolFailed, match="scheduled failure 1"):
            await runtime.call_tool("f.effect", {"key": "b", "fail_first": 1})
        assert await runtime.call_tool("f.calls", {"key": "b"}) == {"result": 1}


@with_policy(PolicyConfig(retry=RETRY))
async def test_a_keyed_call_is_retried_and_the_server_receives_the_key(
    runtime_with: tuple[AgentRuntime, Policies],
) -> None:
    runtime, _ = runtime_with
    with anyio.fail_after(10):
        result = await runtime.call_tool(
            "f.effect", {"key": "c", "fail_first": 2}, idempotency_key="send-42"
        )
    assert result == {"calls": 3, "keys": ["send-42"] * 3}


@with_policy(
    PolicyConfig(
        retry=Retry(max_retries=0),
        circuit_breaker=CircuitBreaker(trip="consecutiveFailures >= 2", timeout=0.5),
    )
)
async def test_the_breaker_trips_open_half_opens_and_closes(
    runtime_with: tuple[AgentRuntime, Policies],
) -> None:
    runtime, policies = runtime_with
    arguments = {"key": "d", "fail_first": 2}
    with anyio.fail_after(10):
        for _ in range(2):
            with pytest.raises(ToolFailed, match="scheduled failure"):
                await runtime.call_tool("f.effect", arguments)
        (stats,) = policies.statistics().policies
        assert stats.breaker is not None
        assert stats.breaker.state is BreakerState.OPEN
        with pytest.raises(ToolFailed) as refused:
            await runtime.call_tool("f.effect", arguments)
        assert refused.value.cause_type == "CircuitOpen"
        await anyio.sleep(stats.breaker.retry_in)  # the breaker's own timeout
        (stats,) = policies.statistics().policies
        assert stats.breaker is not None
        assert stats.breaker.state is BreakerState.HALF_OPEN
        assert (await runtime.call_tool("f.effect", arguments))["calls"] == 3
    (stats,) = policies.statistics().policies
    assert stats.breaker is not None
    assert stats.breaker.state is BreakerState.CLOSED
    assert stats.rejected == 1


@with_policy(PolicyConfig(max_concurrency=3), pattern="f.hold")
async def test_the_concurrency_cap_holds_under_many_parallel_calls(
    runtime_with: tuple[AgentRuntime, Policies],
) -> None:
    runtime, _ = runtime_with
    most: list[int] = []

    async def one() -> None:
        most.append((await runtime.call_tool("f.hold", {"seconds": 0.1}))["result"])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(one)
    assert max(most) == 3


@with_policy(PolicyConfig(rate_limit=RateLimit(rate=10, burst=1)), pattern="f.calls")
async def test_the_rate_limit_spaces_calls(runtime_with: tuple[AgentRuntime, Policies]) -> None:
    runtime, policies = runtime_with
    started = anyio.current_time()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(runtime.call_tool, "f.calls", {"key": "e"})
    assert 0.3 - 0.01 <= anyio.current_time() - started < 5
    (stats,) = policies.statistics().policies
    assert stats.rate_limited == 3


@with_policy(PolicyConfig(timeout=0.3), pattern="f.hold")
async def test_the_timeout_cancels_a_slow_call(runtime_with: tuple[AgentRuntime, Policies]) -> None:
    runtime, policies = runtime_with
    started = anyio.current_time()
    with anyio.fail_after(10), pytest.raises(ToolTimeout):
        await runtime.call_tool("f.hold", {"seconds": 5})
    assert 0.3 <= anyio.current_time() - started < 3
    (stats,) = policies.statistics().policies
    assert (stats.timeouts, stats.in_flight) == (1, 0)
