"""``scoped_local_call_us`` of ``benchmarks/guardrails.py``: what exact caps cost a local tool
call of a turn in an agent's own process whose calls span processes.

A capped turn (``max_tool_calls`` / ``max_parallel_tool_calls``) of an agent connected to a
server reserves each of its calls from the server before it runs (``loom.v1.Scopes``): one
round trip per call. Timed here against a real bridge server in another process, the turn's
local tool called through a registry:

* ``local_call_us``: the call with no cap (no scope: nothing reserved, the baseline);
* ``scoped_local_call_inproc_us``: with a cap kept in this process (a hosted turn's path);
* ``scoped_local_call_us``: with a cap reserved from the server;
* ``scoped_local_call_added_us``: the last minus the baseline, same run.

Interleaved round by round, best round of each kept (the shared machine's noise).
"""

from __future__ import annotations

import os
import sys
import time

import anyio

from loom.bridge import AgentRegistration, BridgeClient
from loom.runtime.lowlevel import CallScope, ScopeAuthority, reserved_call
from loom.runtime.tools import FunctionTool, ToolRegistry

__all__ = ["measure_scopes"]

CALLS = int(os.environ.get("LOOM_BENCH_SCOPE_CALLS", "300"))
ROUNDS = int(os.environ.get("LOOM_BENCH_SCOPE_ROUNDS", "15"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Figures = dict[str, float | int | str | bool]


async def _echo() -> int:
    return 1


async def _rounds(registry: ToolRegistry, authority: ScopeAuthority) -> dict[str, float]:
    best = {"bare": float("inf"), "inproc": float("inf"), "remote": float("inf")}
    for _ in range(ROUNDS):
        # A scope per round, with room for every call (none refused).
        local = CallScope(max_tool_calls=10 * CALLS, max_parallel=8)
        remote = CallScope(max_tool_calls=10 * CALLS, max_parallel=8, authority=authority)
        start = time.perf_counter()
        for _ in range(CALLS):
            await registry.call("echo", "{}")
        best["bare"] = min(best["bare"], (time.perf_counter() - start) / CALLS)
        start = time.perf_counter()
        for _ in range(CALLS):
            async with reserved_call(local, "echo", wait=True):
                await registry.call("echo", "{}")
        best["inproc"] = min(best["inproc"], (time.perf_counter() - start) / CALLS)
        start = time.perf_counter()
        for _ in range(CALLS):
            async with reserved_call(remote, "echo", wait=True) as held:
                assert held, "the server keeps no scopes"
                await registry.call("echo", "{}")
        best["remote"] = min(best["remote"], (time.perf_counter() - start) / CALLS)
    return best


async def _serve() -> None:
    """A bridge server in its own process: prints its port, runs until stdin closes."""
    from loom.bridge import BridgeServer
    from loom.runtime import AgentRuntime, EventBus

    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, port=0) as server,
    ):
        print(server.port, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


async def measure_scopes() -> Figures:
    async with await anyio.open_process(
        [sys.executable, "-m", "benchmarks._scope_bench", "serve"], cwd=ROOT
    ) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        with anyio.fail_after(60):
            port = int((await server.stdout.receive()).decode().split()[0])
        registry = ToolRegistry()
        registry.register(FunctionTool(_echo, name="echo", description="-", parameters_schema={}))
        async with BridgeClient(f"127.0.0.1:{port}", AgentRegistration(agent_id="bench")) as c:
            best = await _rounds(registry, c.scopes())
        await server.stdin.aclose()  # the server ends with its stdin
        with anyio.fail_after(30):
            await server.wait()
    us = {name: round(value * 1e6, 2) for name, value in best.items()}
    return {
        "local_call_us": us["bare"],
        "scoped_local_call_inproc_us": us["inproc"],
        "scoped_local_call_us": us["remote"],
        "scoped_local_call_added_us": round(us["remote"] - us["bare"], 2),
    }


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    anyio.run(_serve, backend="asyncio")
