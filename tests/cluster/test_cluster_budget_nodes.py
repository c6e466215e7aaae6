"""A turn's tool-call count across cluster nodes: the calls another node makes for a turn come
back with the call's answer (``CallReply.scope_calls``), so ``max_tool_calls`` holds over the
whole call tree, on a real nats-server."""

from __future__ import annotations

import sys
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

from ..sdk._cli_support import clean_env, running_argv
from .conftest import NatsServerProcess
from .test_cluster_directory import node, wait_until

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
