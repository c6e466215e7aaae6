"""A declared tool's schema and a caller's arguments cannot stall the server: a pattern's worst
case is matched in linear time, and a slow validation ends at the call's timeout while other
clients' heartbeats are answered throughout."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import grpc
import pytest

from loom.bridge._generated import bridge_pb2, tools_pb2

from ._server_harness import OldAgent, channel, descriptor, serving

pytestmark = pytest.mark.anyio

CALLS = bridge_pb2.STREAM_FEATURE_TOOL_CALLS
EVIL = "^(a+)+$"
# Python's re backtracks through 2**29 ways on this (18-21 s in the probe that found it).
WORST = "a" * 29 + "!"


def exponential(levels: int) -> dict[str, Any]:
    """Every level tries two branches that both fail: 2**levels evaluations of one value."""
    defs: dict[str, Any] = {
        f"x{i}": {"anyOf": [{"$ref": f"#/$defs/x{i + 1}"}, {"$ref": f"#/$defs/x{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"x{levels}"] = {"not": {}}
    return {"type": "object", "$defs": defs, "properties": {"v": {"$ref": "#/$defs/x0"}}}


async def calls_agent(ch: Any, agent_id: str) -> OldAgent:
    agent = await OldAgent(ch, agent_id).connect()
    await agent.send(bridge_pb2.ClientEvent(hello=bridge_pb2.StreamHello(features=[CALLS])))
    assert CALLS in (await agent.next("welcome")).welcome.features
    return agent


async def while_pinging(observer: OldAgent, work: Callable[[], Awaitable[None]]) -> float:
    """Run ``work`` while ``observer`` pings the server back to back; the slowest round trip."""
    slowest = 0.0
    first = anyio.Event()
    done = anyio.Event()
    pings = 0

    async def ping() -> None:
        nonlocal slowest, pings
        while not done.is_set() or pings < 3:
            started = time.perf_counter()
            pings += 1
            await observer.ping(pings)
            slowest = max(slowest, time.perf_counter() - started)
            first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ping)
        await first.wait()
        try:
            await work()
        finally:
            done.set()
    return slowest


SCHEMAS = [
    pytest.param(
        {"type": "object", "properties": {"s": {"type": "string", "pattern": EVIL}}},
        lambda text: {"s": text},
        id="pattern",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
        lambda text: {text: 1},
        id="patternProperties",
    ),
]


@pytest.mark.parametrize(("schema", "arguments"), SCHEMAS)
async def test_a_declared_patterns_worst_case_stalls_no_one(
    schema: dict[str, Any], arguments: Callable[[str], Any]
) -> None:
    async with (
        serving() as s,
        channel(s.target) as worker_ch,
        channel(s.target) as attacker_ch,
        channel(s.target) as observer_ch,
    ):
        await OldAgent(worker_ch, "worker").connect(tools=[descriptor("w.match", schema)])
        attacker = await calls_agent(attacker_ch, "attacker")
        observer = await OldAgent(observer_ch, "observer").connect()
        results: list[tools_pb2.ToolResult] = []
        elapsed: list[float] = []

        async def attack() -> None:
            for text in (WORST, "a" * 200_000 + "!"):
                call = tools_pb2.ToolCall(
                    name="w.match", arguments=json.dumps(arguments(text)), timeout_ms=5000
                )
                started = time.perf_counter()
                results.append(await attacker.tools.Call(call))
                results.append(await attacker.bridge.ForwardToolCall(call))
                call.id = f"c{len(results)}"  # a call on the stream needs its id
                await attacker.send(bridge_pb2.ClientEvent(call=call))
                results.append((await attacker.next("call_result")).call_result)
                elapsed.append(time.perf_counter() - started)

        with anyio.fail_after(30):
            slowest = await while_pinging(observer, attack)
    assert [r.status for r in results] == [tools_pb2.TOOL_INVALID_ARGUMENTS] * 6, results
    assert all("match" in r.error.message for r in results), results
    assert max(elapsed) < 1.0, elapsed  # three calls each, far within their 5 s timeout
    assert slowest < 1.0, slowest


async def test_a_slow_validation_ends_at_the_calls_timeout_and_stalls_no_one() -> None:
    async with (
        serving() as s,
        channel(s.target) as worker_ch,
        channel(s.target) as attacker_ch,
        channel(s.target) as observer_ch,
    ):
        worker = await OldAgent(worker_ch, "worker").connect(
            tools=[descriptor("w.slow", exponential(40))]
        )
        attacker = await calls_agent(attacker_ch, "attacker")
        observer = await OldAgent(observer_ch, "observer").connect()
        results: list[tools_pb2.ToolResult] = []
        elapsed: list[float] = []
        call = tools_pb2.ToolCall(id="slow", name="w.slow", arguments='{"v": 1}', timeout_ms=1000)

        async def one(rpc: Callable[[], Awaitable[tools_pb2.ToolResult]]) -> None:
            started = time.perf_counter()
            results.append(await rpc())
            elapsed.append(time.perf_counter() - started)

        async def on_stream() -> tools_pb2.ToolResult:
            await attacker.send(bridge_pb2.ClientEvent(call=call))
            return (await attacker.next("call_result")).call_result

        async def attack() -> None:
            # All at once: each keeps one worker thread busy, none the event loop.
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, lambda: attacker.tools.Call(call))
                tg.start_soon(one, lambda: attacker.bridge.ForwardToolCall(call))
                tg.start_soon(one, on_stream)

        with anyio.fail_after(30):
            slowest = await while_pinging(observer, attack)
            # The attacker's stream serves on; nothing reached the worker (its next frame is
            # the pong, not a pushed call).
            await attacker.ping(7)
            await worker.ping(8)
    assert [r.status for r in results] == [tools_pb2.TOOL_TIMEOUT] * 3, results
    assert all(0.9 <= e < 3.0 for e in elapsed), elapsed
    assert slowest < 1.0, slowest


async def test_a_pattern_re2_cannot_compile_is_refused_at_registration_naming_it() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "declarer")
        for pattern in (r"(a)\1", r"(?<=a)b"):
            schema = {"type": "object", "properties": {"s": {"pattern": pattern}}}
            with anyio.fail_after(5), pytest.raises(grpc.aio.AioRpcError) as info:
                await agent.register(tools=[descriptor("d.tool", schema)])
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details() or ""
            assert repr(pattern) in details
            assert "RE2" in details
        # Nothing was registered; a schema RE2 takes registers.
        schema = {"type": "object", "properties": {"s": {"pattern": r"^a+\z"}}}
        assert (await agent.register(tools=[descriptor("d.tool", schema)])).success
