"""A turn's tool-call count across cluster nodes: the calls another node makes for a turn come
back with the call's answer (``CallReply.scope_calls``), so ``max_tool_calls`` holds over the
whole call tree, on a real nats-server."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import msgspec
import pytest

from loom import CognitiveAgent
from loom.cluster._directory_wire import CallReply
from loom.runtime import Budget
from loom.runtime.cognition import TurnOutcome
from loom.runtime.collab import request
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ..sdk._cli_support import clean_env, loom, running_argv
from .conftest import NatsServerProcess
from .test_cluster_directory import node, wait_until
from .test_tool_output_nodes import node as serve_node
from .test_tool_output_nodes import wait_for_tool

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent


def fan_out(n: int) -> Reply:
    return Reply(tool_calls=[ScriptedToolCall(name="fan_b", arguments={"n": n})])


async def test_the_tool_call_cap_holds_over_calls_made_on_another_node(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    # origin (node a, max_tool_calls=5) calls fan.b (node b, another process) which calls
    # leaf.x (node b) three times: four calls of the tree. Its next call of fan.b is the
    # fifth, and leaves nothing for fan.b's calls; the third is refused in origin's node.
    # Without the count back, node a would know of two calls only and let fan.b make three
    # more (six leaf.x calls).
    with anyio.fail_after(90):
        async with (
            node(nats_server.url, "a") as a,
            ScriptedLLMServer() as server,
            running_argv(
                [sys.executable, str(HERE / "_budget_node.py"), nats_server.url, "b"],
                cwd=tmp_path,
                env=clean_env(),
            ) as b,
        ):
            await b.wait_for("^ready$", timeout=30)
            config = ProviderConfig(
                kind="openai", model="m", base_url=server.openai_base_url, timeout_s=5.0
            )
            async with OpenAIProvider("scripted", config) as llm:
                await wait_until(lambda: bool(a.runtime.directory.by_capability("fan.b")))
                server.push(fan_out(3), fan_out(3), fan_out(1), Reply(text="done"))
                origin = CognitiveAgent(
                    "origin", llm=llm, use_capabilities=["fan.b"], budget=Budget(max_tool_calls=5)
                )
                await a.runtime.start(origin)
                async with a.runtime.bus.subscribe(origin.stream_topic) as stream:
                    await request(a.runtime.bus, "agent.origin.replies", b"go", timeout=30)
                    async for delivery in stream:
                        if delivery.event.type == "turn.end":
                            outcome = msgspec.json.decode(delivery.event.payload, type=TurnOutcome)
                            break
            await b.wait_for(r"^leaf\.x 3$")
            assert b.count(r"^leaf\.x ") == 3, b.output
    first, second, third = outcome.tool_results
    assert msgspec.json.decode(first.content) == {"ok": 3, "refused": 0}
    assert msgspec.json.decode(second.content) == {"ok": 0, "refused": 3}
    assert third.is_error
    assert "refused: max_tool_calls (5) reached" in third.content
    assert (outcome.kind, outcome.budget) == ("budget_exhausted", "max_tool_calls")


LEAF = """\
import sys

from loom import Agent
from loom.runtime.tools import FunctionTool

count = 0


async def leaf() -> str:
    global count
    count += 1
    print("leaf.x", count, flush=True)
    return "leaf"


tool = FunctionTool(
    leaf, name="leaf.x", description="A leaf.", parameters_schema={"type": "object"}
)
if __name__ == "__main__":
    Agent("leafer", capabilities=[tool]).run()
"""


async def test_the_servers_cap_holds_over_bridge_agents_of_another_serve_node(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    # Two ``loom serve --nats`` nodes. Node a hosts ``assistant`` under its [budget]
    # max_tool_calls = 5; on node b, SDK agents: fan.p1 (calls leaf.x n times through node b's
    # server) and leaf.x. As in process: the first fan.p1 call and its three leaf.x calls are
    # four; the second fan.p1 the fifth, its calls all refused; the third refused on node a.
    (tmp_path / "leaf.py").write_text(LEAF)
    (tmp_path / "a").mkdir()
    with anyio.fail_after(150):
        async with ScriptedLLMServer() as llm, AsyncExitStack() as stack:
            (tmp_path / "a" / "loom.toml").write_text(
                "[llm.scripted]\n"
                'kind = "openai"\n'
                'model = "scripted-model"\n'
                f'base_url = "{llm.openai_base_url}"\n'
                "timeout_s = 10\n\n"
                "[agents.assistant]\n"
                'llm = "scripted"\n'
                'capabilities = ["fan.p1"]\n\n'
                "[budget]\n"
                "max_tool_calls = 5\n"
            )
            fan_p1 = [ScriptedToolCall(name="fan_p1", arguments={"n": n}) for n in (3, 3, 1)]
            llm.push(*(Reply(tool_calls=[call]) for call in fan_p1), Reply(text="done"))
            server_a, a = await serve_node(stack, tmp_path, nats_server, "a")
            await server_a.wait_for(r"hosting agent assistant")
            _, b = await serve_node(stack, tmp_path, nats_server, "b")
            env = clean_env(LOOM_BRIDGE_ADDR=b)
            leafer = await stack.enter_async_context(
                running_argv([sys.executable, str(tmp_path / "leaf.py")], cwd=tmp_path, env=env)
            )
            fanner = await stack.enter_async_context(
                running_argv(
                    [
                        sys.executable,
                        str(HERE.parent / "sdk" / "_budget_remote_agent.py"),
                        "fan",
                        "p1",
                    ],
                    cwd=tmp_path,
                    env=env,
                )
            )
            await leafer.wait_for("connected to .* as leafer$", timeout=30)
            await fanner.wait_for("connected to .* as p1$", timeout=30)
            await wait_for_tool(a, "fan.p1", tmp_path)
            asked = await loom("ask", "assistant", "go", "-a", a, cwd=tmp_path)
            assert asked.returncode == 1, asked.stdout
            assert b"budget max_tool_calls exhausted" in asked.stderr, asked.stderr
            await leafer.wait_for(r"^leaf\.x 3$")
            assert leafer.count(r"^leaf\.x ") == 3, leafer.output
            # The model saw the second fan.p1 call's result: all three of its calls refused.
            third_request = str(llm.requests[2])
            assert '"refused":3' in third_request, third_request


def test_a_reply_count_is_last_and_optional_on_the_wire() -> None:
    # A node that predates the count sends a three-field reply; one that has it sends four,
    # which the older decoder reads with the count ignored.
    class OldReply(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
        id: str
        output: str = ""
        error: object | None = None

    old = msgspec.msgpack.encode(OldReply(id="c1", output="1"))
    assert msgspec.msgpack.decode(old, type=CallReply) == CallReply(id="c1", output="1")
    new = msgspec.msgpack.encode(CallReply(id="c1", output="1", scope_calls=4))
    assert msgspec.msgpack.decode(new, type=OldReply) == OldReply(id="c1", output="1")
