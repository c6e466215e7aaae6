"""Several ``loom serve --nats URL --node X`` processes on one real nats-server, with SDK agent
processes connected to each: one directory seen from every node (``loom agents``, ``loom
tools`` with a node column), ids unique across nodes, tool calls from one node's agents to
another's, a caller's deadline cancelling the remote call, and a node killed with SIGKILL."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from ..sdk._cli_support import Running, clean_env, loom, running, running_argv
from .conftest import NatsServerProcess
from .test_embedded import wait_until

pytestmark = pytest.mark.anyio

HEARTBEAT = 0.5

PROVIDER = """\
import asyncio
import os
import sys
from pathlib import Path

from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


@capability("work.slow")
async def slow(tag: str) -> str:
    \"\"\"Take a minute; leave a mark when cancelled.\"\"\"
    print(f"slow {tag} started", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        Path(os.environ["MARKS"], f"cancelled-{tag}").touch()
        raise
    return tag


agent = Agent("upperer", topics=["jobs.upper"], capabilities=[upper, slow])

if __name__ == "__main__":
    agent.run()
"""

CALLER = """\
import sys

from loom import Agent


async def on_event(ctx, topic, event):
    result = await ctx.tool("text.upper", {"text": event.payload.decode()})
    print(f"relay got {result}", file=sys.stderr, flush=True)


agent = Agent("relay", topics=["jobs.relay"], on_event=on_event)

if __name__ == "__main__":
    agent.run()
"""


class Cluster:
    def __init__(self, root: Path, nats: NatsServerProcess) -> None:
        self.root = root
        self.nats = nats
        self.nodes: dict[str, tuple[Running, str]] = {}

    def address(self, node: str) -> str:
        return self.nodes[node][1]

    def server(self, node: str) -> Running:
        return self.nodes[node][0]

    def agent_file(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.py"
        path.write_text(text)
        return path


@asynccontextmanager
async def cluster(
    tmp_path: Path, nats: NatsServerProcess, *names: str
) -> AsyncIterator[tuple[Cluster, AsyncExitStack]]:
    """``loom serve`` nodes ``names`` on ``nats``, each with a data dir of its own."""
    found = Cluster(tmp_path, nats)
    async with AsyncExitStack() as stack:
        for name in names:
            server = await stack.enter_async_context(
                running(
                    "serve",
                    "--port",
                    "0",
                    "--data-dir",
                    str(tmp_path / f"data-{name}"),
                    "--nats",
                    nats.url,
                    "--node",
                    name,
                    "--cluster-heartbeat",
                    str(HEARTBEAT),
                    cwd=tmp_path,
                )
            )
            address = (await server.wait_for(r"listening on (\S+:\d+)", timeout=60)).group(1)
            await server.wait_for(rf"loom serve: cluster node {name} ")
            found.nodes[name] = (server, address)
        yield found, stack


async def agent_on(
    stack: AsyncExitStack, found: Cluster, node: str, path: Path, **env: str
) -> Running:
    environ = clean_env(LOOM_BRIDGE_ADDR=found.address(node), MARKS=str(found.root), **env)
    agent = await stack.enter_async_context(
        running_argv([sys.executable, str(path)], cwd=found.root, env=environ)
    )
    return agent


async def agents_seen(found: Cluster, node: str) -> str:
    shown = await loom("agents", "-a", found.address(node), cwd=found.root)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.decode()


def row_of(table: str, first: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [first])


async def test_one_directory_and_one_tool_namespace_over_three_nodes(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    with anyio.fail_after(150):
        async with cluster(tmp_path, nats_server, "a", "b", "c") as (found, stack):
            provider = await agent_on(stack, found, "b", found.agent_file("p", PROVIDER))
            await provider.wait_for("connected to .* as upperer$", timeout=30)
            relay = await agent_on(stack, found, "a", found.agent_file("r", CALLER))
            await relay.wait_for("connected to .* as relay$", timeout=30)

            # Every node lists the whole cluster, each agent with its node.
            for node in ("a", "b", "c"):
                table = ""
                with anyio.fail_after(10):
                    while "relay" not in table or "upperer" not in table:
                        table = await agents_seen(found, node)
                header = table.splitlines()[0].split()
                assert header[:4] == ["ID", "STATUS", "WHERE", "NODE"], table
                assert row_of(table, "upperer")[1:4] == ["running", "remote", "b"], table
                assert row_of(table, "relay")[1:4] == ["running", "remote", "a"], table
                assert "jobs.upper" in row_of(table, "upperer")[-2]
            tools = await loom("tools", "-a", found.address("c"), cwd=tmp_path)
            listed = tools.stdout.decode()
            assert listed.splitlines()[0].split() == ["TOOL", "FROM", "NODE", "DESCRIPTION"]
            assert row_of(listed, "text.upper")[:4] == ["text.upper", "agent", "upperer", "b"]

            # ToolService.Call through a node where the agent is not.
            called = await loom(
                "call", "-a", found.address("c"), "text.upper", '{"text": "hi"}', cwd=tmp_path
            )
            assert called.returncode == 0, called.stderr
            assert called.stdout.decode().strip() == '"HI"'

            # ctx.tool of an agent on node a reaches the capability of the agent on node b.
            sent = await loom(
                "publish", "-a", found.address("a"), "jobs.relay", "hello", cwd=tmp_path
            )
            assert sent.returncode == 0, sent.stderr
            await relay.wait_for("relay got HELLO$")

            # The id is the cluster's: a second "upperer" on node a is refused.
            second = await agent_on(
                stack, found, "a", found.agent_file("p2", PROVIDER), LOOM_ID_WAIT="1"
            )
            assert await second.wait(timeout=30) == 3
            assert re.search(r"ALREADY_EXISTS: .*upperer.* on node b", second.output)


async def test_a_callers_deadline_cancels_the_call_on_the_other_node(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    with anyio.fail_after(120):
        async with cluster(tmp_path, nats_server, "a", "b") as (found, stack):
            provider = await agent_on(stack, found, "b", found.agent_file("p", PROVIDER))
            await provider.wait_for("connected to .* as upperer$", timeout=30)
            with anyio.fail_after(15):
                while "upperer" not in await agents_seen(found, "a"):
                    pass
            called = await loom(
                "call", "-a", found.address("a"), "--timeout", "1", "work.slow",
                '{"tag": "x"}', cwd=tmp_path,
            )  # fmt: skip
            assert called.returncode == 1
            await provider.wait_for("slow x started")
            # Well before its minute: the deadline went with the call, and node b cancelled
            # the agent's invocation.
            await wait_until(lambda: (tmp_path / "cancelled-x").exists(), timeout=5)


async def test_a_killed_node_leaves_every_directory_and_its_calls_fail(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    with anyio.fail_after(150):
        async with cluster(tmp_path, nats_server, "a", "b", "c") as (found, stack):
            provider = await agent_on(stack, found, "b", found.agent_file("p", PROVIDER))
            await provider.wait_for("connected to .* as upperer$", timeout=30)
            with anyio.fail_after(15):
                while "upperer" not in await agents_seen(found, "a"):
                    pass
            caller = await stack.enter_async_context(
                running(
                    "call",
                    "-a",
                    found.address("a"),
                    "--timeout",
                    "60",
                    "work.slow",
                    '{"tag": "k"}',
                    cwd=tmp_path,
                )
            )
            await provider.wait_for("slow k started")
            found.server("b").signal(signal.SIGKILL)
            killed = time.monotonic()
            gone = r"cluster: node b is gone .*: 1 agents left"
            await found.server("a").wait_for(gone + ", 1 calls failed", timeout=10)
            left_a = time.monotonic() - killed
            await found.server("c").wait_for(gone, timeout=10)
            left_c = time.monotonic() - killed
            # Read as the test reads each node's output: a little later than it happened.
            assert left_a <= 2 * HEARTBEAT + 0.5, left_a
            assert left_c <= 2 * HEARTBEAT + 0.5, left_c
            # The call failed when the caller printed why; its process then exits, which on a
            # loaded machine takes seconds of its own (interpreter and gRPC teardown).
            await caller.wait_for("AGENT_DISCONNECTED", timeout=5)
            failed_in = time.monotonic() - killed - left_a
            assert failed_in <= 1.0, failed_in
            assert await caller.wait(timeout=30) == 1
            assert "upperer" not in await agents_seen(found, "a")
            assert "upperer" not in await agents_seen(found, "c")
