"""Calls pushed to an agent that turns stale fail with ``AGENT_UNRESPONSIVE`` at the stale
threshold, not at their timeout (issue 17, item 12): a real agent process, frozen with
SIGSTOP while a call to it is pending."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from loom.bridge import AgentUnresponsive, BridgeServer, error_from_outcome
from loom.bridge._convert import tool_result_from_proto
from loom.bridge._generated import tools_pb2
from loom.runtime import AgentRuntime, AgentStatus, EventBus
from loom.runtime.tools import ToolTimeout

from ._server_harness import OldAgent, channel

pytestmark = pytest.mark.anyio

STALE_AFTER_S = 1.0
AGENT = Path(__file__).with_name("_frozen_agent.py")


@asynccontextmanager
async def frozen_agent_setup() -> AsyncIterator[tuple[AgentRuntime, str, Process]]:
    """A server whose agents turn stale after 1 s of silence, and a real agent process
    offering ``frozen.work`` (which never returns) connected to it."""
    try:
        async with (
            EventBus(drain_grace=0.5) as bus,
            AgentRuntime(
                bus, stop_timeout_s=1.0, stale_after_s=STALE_AFTER_S, sweep_interval_s=0.2
            ) as runtime,
            BridgeServer(runtime, grace_s=1.0) as server,
        ):
            target = f"127.0.0.1:{server.port}"
            proc = await anyio.open_process(
                [sys.executable, str(AGENT), target, "frozen"], stdout=subprocess.PIPE
            )
            try:
                with anyio.fail_after(20):
                    assert await read_line(proc) == "ready"
                yield runtime, target, proc
            finally:
                if proc.returncode is None:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot die of SIGKILL
                    proc.kill()  # ... until it is continued, on some kernels
                with anyio.CancelScope(shield=True):
                    await proc.wait()
    finally:
        gc.collect()  # see _server_harness.serving


async def read_line(proc: Process) -> str:
    assert proc.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        data += await proc.stdout.receive(1)
    return data.decode().strip()


def status_of(runtime: AgentRuntime, agent_id: str) -> AgentStatus | None:
    info = runtime.directory.get(agent_id)
    return None if info is None else info.status


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` (a directory status changes at the runtime's sweeps) until true."""
    with anyio.fail_after(timeout):
        for _ in itertools.count():
            if condition():
                return
            await anyio.sleep(0.05)


async def test_a_frozen_agent_fails_its_pending_calls_when_it_turns_stale() -> None:
    async with frozen_agent_setup() as (runtime, target, proc), channel(target) as ch:
        caller = OldAgent(ch, "caller")
        wire: list[tools_pb2.ToolResult] = []
        local: list[BaseException] = []

        async def call_over_the_wire() -> None:
            call = tools_pb2.ToolCall(name="frozen.work", timeout_ms=30_000)
            wire.append(await caller.bridge.ForwardToolCall(call))

        async def call_in_process() -> None:
            try:
                await runtime.call_tool("frozen.work", "{}", timeout=30.0)
            except Exception as exc:
                local.append(exc)

        # Without the stale check, both calls would wait their 30 s timeout.
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_over_the_wire)
                assert (await read_line(proc)).startswith("call ")
                tg.start_soon(call_in_process)
                assert (await read_line(proc)).startswith("call ")
                os.kill(proc.pid, signal.SIGSTOP)
                stopped = anyio.current_time()
        took = anyio.current_time() - stopped
        # At the threshold (the last ping the server read may be a little older than the
        # SIGSTOP: 0.1 s between pings, more on a loaded machine), and not long after it.
        assert STALE_AFTER_S - 0.5 <= took < STALE_AFTER_S + 2.0, took
        (result,) = wire
        assert result.status == tools_pb2.TOOL_ERROR
        assert result.error.code == "AGENT_UNRESPONSIVE"
        assert result.error.details["agent_id"] == "frozen"
        error = error_from_outcome(tool_result_from_proto(result), tool="frozen.work", timeout=30)
        assert isinstance(error, AgentUnresponsive)
        assert error.stale_after_s == STALE_AFTER_S
        (exc,) = local
        assert isinstance(exc, AgentUnresponsive)
        assert exc.agent_id == "frozen"
        # The directory says the same at its next sweep; the stream itself is still open.
        await wait_until(lambda: status_of(runtime, "frozen") is AgentStatus.STALE, 5)
        # Continued, it pings again and is running: a new call reaches it.
        os.kill(proc.pid, signal.SIGCONT)
        await wait_until(lambda: status_of(runtime, "frozen") is AgentStatus.RUNNING, 10)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_over_the_wire)
                assert (await read_line(proc)).startswith("call ")
                tg.cancel_scope.cancel()


async def test_a_live_agent_keeps_a_long_call_past_the_stale_threshold() -> None:
    # The agent pings while its tool runs: the call outlives the threshold three times over
    # and ends by its own timeout, not as AGENT_UNRESPONSIVE.
    async with frozen_agent_setup() as (runtime, _target, proc):
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                errors: list[BaseException] = []

                async def call() -> None:
                    try:
                        await runtime.call_tool("frozen.work", "{}", timeout=3 * STALE_AFTER_S)
                    except Exception as exc:
                        errors.append(exc)

                tg.start_soon(call)
                assert (await read_line(proc)).startswith("call ")
        (exc,) = errors
        assert isinstance(exc, ToolTimeout), exc
