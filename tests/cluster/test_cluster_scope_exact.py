"""A turn's caps over calls made on other nodes hold exactly: the node serving a call for a
turn whose scope another node keeps reserves each call it makes for the turn from that node
(``cluster/_scopes.py``), instead of counting in a copy of its own and reporting after the
fact. Two node processes and a real nats-server; the calls of every process counted in one
directory (``tests/sdk/_scope_counter.py``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from loom import CognitiveAgent
from loom.cluster._directory_wire import error_from_wire, error_to_wire
from loom.runtime import Budget
from loom.runtime.cognition import TurnOutcome
from loom.runtime.collab import request
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import ScopeUnavailable, ToolCallRefused

from ..sdk._cli_support import clean_env, loom, running_argv
from ..sdk._scope_counter import Running as Calls
from .conftest import NatsServerProcess
from .test_cluster_directory import Node, node, wait_until
from .test_tool_output_nodes import node as serve_node
from .test_tool_output_nodes import wait_for_tool

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
AGENT = str(HERE.parent / "sdk" / "_scope_exact_agent.py")


@asynccontextmanager
async def cluster(nats_server: NatsServerProcess, root: Path) -> AsyncIterator[Node]:
    """Node a in this process; nodes b and c in processes of their own."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node(nats_server.url, "a"))
        for name in ("b", "c"):
            argv = [sys.executable, str(HERE / "_scope_node.py"), nats_server.url, name, str(root)]
            other = await stack.enter_async_context(running_argv(argv, cwd=root, env=clean_env()))
            await other.wait_for("^ready$", timeout=30)
        await wait_until(
            lambda: all(a.runtime.directory.by_capability(f"fan.{n}") for n in "bc"), 30
        )
        yield a


async def turn(a: Node, server: ScriptedLLMServer, budget: Budget) -> TurnOutcome:
    config = ProviderConfig(kind="openai", model="m", base_url=server.openai_base_url)
    async with OpenAIProvider("scripted", config) as llm:
        origin = CognitiveAgent(
            "origin", llm=llm, use_capabilities=["fan.b", "fan.c"], budget=budget
        )
        await a.runtime.start(origin)
        async with a.runtime.bus.subscribe(origin.stream_topic) as stream:
            await request(a.runtime.bus, "agent.origin.replies", b"go", timeout=30)
            async for delivery in stream:
                if delivery.event.type == "turn.end":
                    return msgspec.json.decode(delivery.event.payload, type=TurnOutcome)
    raise AssertionError("no turn.end")


def both(n: int) -> Reply:
    return Reply(
        tool_calls=[
            ScriptedToolCall(name="fan_b", arguments={"n": n}),
            ScriptedToolCall(name="fan_c", arguments={"n": n}),
        ]
    )


async def test_the_parallel_cap_holds_over_calls_on_two_other_nodes(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    calls = Calls(tmp_path)
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as server, cluster(nats_server, tmp_path) as a:
            server.push(both(2), Reply(text="done"))
            outcome = await turn(a, server, Budget(max_parallel_tool_calls=3))
    assert outcome.kind == "answer", outcome
    # The two fan calls hold two of the three slots on node a, the turn's node; the four
    # leaf calls reserve there too, so one runs and three are refused. Before, each node's
    # copy had three slots of its own: four leaves ran beside the two fans (6 at once).
    assert calls.peak() <= 3, calls.lines()


async def test_the_tool_call_cap_holds_over_calls_on_two_other_nodes(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    calls = Calls(tmp_path)
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as server, cluster(nats_server, tmp_path) as a:
            server.push(both(3), Reply(text="done"))
            outcome = await turn(a, server, Budget(max_tool_calls=5))
    assert outcome.kind == "answer", outcome
    # Eight calls tried (two fans, six leaves), five made. Before, each node was sent the
    # calls the turn had left (three) and counted in its own copy, the counts coming back
    # with the answers: both nodes ran three leaves (eight in all).
    assert sum(calls.calls().values()) == 5, calls.lines()


def test_an_unreachable_authority_crosses_nodes_as_itself() -> None:
    refused = ScopeUnavailable("node a did not answer", tool="leaf.b")
    again = error_from_wire(error_to_wire(refused))
    assert isinstance(again, ScopeUnavailable)
    assert (again.why, again.tool, again.budget) == (
        "node a did not answer",
        "leaf.b",
        "call_scope",
    )
    # A cap reached still crosses as the cap.
    capped = error_from_wire(error_to_wire(ToolCallRefused("max_tool_calls", 5, tool="t")))
    assert type(capped) is ToolCallRefused
    assert (capped.budget, capped.limit) == ("max_tool_calls", 5)


async def test_calls_of_bridge_agents_on_another_serve_node_count_exactly(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    # Two ``loom serve --nats`` nodes. Node a hosts ``assistant`` under [budget]
    # max_tool_calls = 6; its one step calls think.helper and fan.p1, SDK agents connected to
    # node b: the helper's turn (joined, in its process) calls its local tool twice, then
    # twice more; fan.p1 calls leaf.x (another SDK agent of node b) three times at once. Nine
    # calls are tried: every one made on node b reserves from node a (the helper's local
    # calls through node b's server, which reserves in turn from node a), so six are made.
    # Without reservations (an older server and node) all nine ran: the helper's local calls
    # were counted in its own copy and reported after its turn.
    calls = Calls(tmp_path / "calls")
    (tmp_path / "a").mkdir()
    with anyio.fail_after(180):
        async with (
            ScriptedLLMServer() as llm,
            ScriptedLLMServer() as thinking,
            AsyncExitStack() as stack,
        ):
            (tmp_path / "a" / "loom.toml").write_text(
                "[llm.scripted]\n"
                'kind = "openai"\n'
                'model = "scripted-model"\n'
                f'base_url = "{llm.openai_base_url}"\n'
                "timeout_s = 10\n\n"
                "[agents.assistant]\n"
                'llm = "scripted"\n'
                'capabilities = ["think.helper", "fan.p1"]\n\n'
                "[budget]\n"
                "max_tool_calls = 6\n"
            )
            step = Reply(
                tool_calls=[
                    ScriptedToolCall(name="think_helper", arguments={}),
                    ScriptedToolCall(name="fan_p1", arguments={"n": 3}),
                ]
            )
            llm.push(step, Reply(text="done"))
            local = Reply(tool_calls=[ScriptedToolCall(name="local_y", arguments={})] * 2)
            thinking.push(local, local, Reply(text="thought"))
            server_a, a = await serve_node(stack, tmp_path, nats_server, "a")
            await server_a.wait_for(r"hosting agent assistant")
            _, b = await serve_node(stack, tmp_path, nats_server, "b")
            env = clean_env(LOOM_BRIDGE_ADDR=b)
            where = str(tmp_path / "calls")
            for argv, name in (
                ([AGENT, "helper", thinking.openai_base_url, where], "helper"),
                ([AGENT, "fan", "p1", where], "p1"),
                ([AGENT, "leaf", where], "leafer"),
            ):
                agent = await stack.enter_async_context(
                    running_argv([sys.executable, *argv], cwd=tmp_path, env=env)
                )
                await agent.wait_for(f"connected to .* as {name}$", timeout=30)
            await wait_for_tool(a, "think.helper", tmp_path)
            await wait_for_tool(a, "fan.p1", tmp_path)
            asked = await loom("ask", "assistant", "go", "-a", a, cwd=tmp_path)
            assert asked.returncode == 0, asked.stderr
    assert sum(calls.calls().values()) == 6, calls.lines()
