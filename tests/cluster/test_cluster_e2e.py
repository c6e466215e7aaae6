"""The end-to-end cluster (``_e2e_support``): 3 NATS servers routed together, 3 ``loom serve``
nodes, SDK agent processes on each. One cluster for the module: these tests kill nothing
(the faults are in ``test_cluster_faults.py``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest

from loom.bridge._client import AgentRegistration, BridgeClient
from loom.bridge._generated import bridge_pb2_grpc, tools_pb2
from loom.runtime import Envelope, Event

from ..bridge._client_support import FAST
from ..bridge._server_harness import OldAgent, channel, descriptor
from ._e2e_support import Nodes, nats_cluster, nodes_on

pytestmark = pytest.mark.anyio

LISTENER = """\
from loom import Agent, QoS


async def on_start(ctx):
    for tier in ("realtime", "batched", "background"):
        await ctx.subscribe(f"tier.{tier}", qos=QoS[tier.upper()])


async def on_event(ctx, topic, event):
    tp = event.envelope.traceparent or "-"
    print(f"listener got {topic} {event.payload.decode()} {tp}", flush=True)


agent = Agent("listener", on_start=on_start, on_event=on_event)

if __name__ == "__main__":
    agent.run()
"""

RESPONDER = """\
from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


async def on_event(ctx, topic, event):
    await ctx.reply(event, event.payload.upper())


agent = Agent("responder", topics=["ask.upper"], on_event=on_event, capabilities=[upper])

if __name__ == "__main__":
    agent.run()
"""

WORKER = """\
import os

from loom import Agent

NAME = os.environ["WORKER"]


SCORES = {"w-a": 1.0, "w-b": 3.0, "w-c": 2.0}


async def on_event(ctx, topic, event):
    if topic == "bid.job":  # a bidder on each node; w-b's bid is the best
        outcome = await ctx.collab.propose(event, score=SCORES[NAME], timeout=15)
        print(f"{NAME} bid {outcome.decision.name}", flush=True)
        return
    if topic == "go.barrier":
        if NAME in ("w-a", "w-b"):  # two parties, on two nodes
            result = await ctx.collab.arrive("phase", parties=2, timeout=15, thread_id="t1")
            arrived = ",".join(sorted(result.arrived))
            print(f"{NAME} barrier {arrived} complete={result.complete}", flush=True)
        return
    await ctx.reply(event, f"{NAME}:{event.payload.decode()}")


agent = Agent(NAME, topics=[f"work.{NAME}", "go.barrier", "bid.job"], on_event=on_event)

if __name__ == "__main__":
    agent.run()
"""

BOSS = """\
from loom import Agent


async def on_event(ctx, topic, event):
    if topic == "go.request":
        reply = await ctx.request("ask.upper", event.payload, timeout=15)
        print(f"boss reply {reply.payload.decode()}", flush=True)
    elif topic == "go.gather":
        targets = ["work.w-a", "work.w-b", "work.w-c"]
        result = await ctx.collab.gather(targets, b"job", timeout=15)
        got = sorted(r.event.payload.decode() for r in result.replies)
        print(f"boss gathered {','.join(got)} satisfied={result.satisfied}", flush=True)
    elif topic == "go.contract":
        # expected=3 closes the window once the three nodes' bidders answered.
        result = await ctx.collab.contract_net("bid.job", b"job", window=15, expected=3)
        bids = sorted(p.sender for p in result.proposals)
        won = ",".join(p.sender for p in result.awarded)
        print(f"boss contract {','.join(bids)} awarded={won}", flush=True)
    elif topic == "go.tool":
        print(f"boss tool {await ctx.tool('text.upper', {'text': 'tool'})}", flush=True)


agent = Agent(
    "boss", topics=["go.request", "go.gather", "go.contract", "go.tool"], on_event=on_event
)

if __name__ == "__main__":
    agent.run()
"""

AGENTS = {
    "listener": "b",
    "responder": "c",
    "boss": "a",
    "w-a": "a",
    "w-b": "b",
    "w-c": "c",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so that one cluster serves every test of the module.
    return "asyncio"


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Nodes]:
    root = tmp_path_factory.mktemp("e2e")
    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            nats = await stack.enter_async_context(nats_cluster(root))
            nodes = await stack.enter_async_context(nodes_on(root, nats, "a", "b", "c"))
            scripts = {"listener": LISTENER, "responder": RESPONDER, "boss": BOSS}
            for name, node in AGENTS.items():
                if name.startswith("w-"):
                    await nodes.agent(node, name, WORKER, WORKER=name)
                else:
                    await nodes.agent(node, name, scripts[name])
            for node in ("a", "b", "c"):
                await nodes.wait_listed(node, *AGENTS)
            yield nodes


async def test_every_node_lists_every_agent_and_tool_with_its_node(cluster: Nodes) -> None:
    with anyio.fail_after(60):
        for node in ("a", "b", "c"):
            shown = await cluster.loom(node, "agents", "--json")  # one JSON object a line
            rows = [json.loads(line) for line in shown.splitlines() if line]
            where = {row["id"]: row.get("node") for row in rows}
            assert {a: where.get(a) for a in AGENTS} == AGENTS, shown
            tools = await cluster.loom(node, "tools")
            row = next(line.split() for line in tools.splitlines() if "text.upper" in line)
            assert row[:4] == ["text.upper", "agent", "responder", "c"], tools


async def test_tool_calls_cross_nodes(cluster: Nodes) -> None:
    with anyio.fail_after(60):
        # ToolService.Call on node a, served by the agent on node c.
        called = await cluster.loom("a", "call", "text.upper", '{"text": "hi"}')
        assert called.strip() == '"HI"'
        # ctx.tool of the agent on node a.
        await cluster.loom("b", "publish", "go.tool", "x")
        await agent_says(cluster, "boss", "boss tool TOOL")


async def test_forward_tool_call_crosses_nodes_both_ways_of_the_original_wire(
    cluster: Nodes,
) -> None:
    """``Bridge.ForwardToolCall``, the original wire's call, on node a: to a capability of an
    SDK agent on node c, and to a tool an original-wire agent (``RegisterAgent`` tools, pushed
    ``tool_call`` frames answered by ``tool_result``) declared on node b."""
    with anyio.fail_after(60):
        async with channel(cluster.addresses["b"]) as on_b, channel(cluster.addresses["a"]) as on_a:
            legacy = await OldAgent(on_b, "legacy").connect(tools=[descriptor("legacy.echo")])
            try:
                await cluster.wait_listed("a", "legacy")
                bridge = bridge_pb2_grpc.BridgeStub(on_a)
                upper = await bridge.ForwardToolCall(
                    tools_pb2.ToolCall(id="f1", name="text.upper", arguments='{"text": "hi"}')
                )
                assert (upper.status, json.loads(upper.output)) == (tools_pb2.TOOL_OK, "HI")

                async def answer_once() -> None:
                    pushed = (await legacy.next("tool_call", timeout=30)).tool_call
                    assert pushed.name == "legacy.echo"
                    await legacy.answer(pushed.id, {"echo": json.loads(pushed.arguments)})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(answer_once)
                    echoed = await bridge.ForwardToolCall(
                        tools_pb2.ToolCall(id="f2", name="legacy.echo", arguments='{"n": 7}')
                    )
                assert echoed.status == tools_pb2.TOOL_OK, echoed
                assert json.loads(echoed.output) == {"echo": {"n": 7}}
                # An unknown name is TOOL_NOT_FOUND across the cluster too, not a hang.
                missing = await bridge.ForwardToolCall(
                    tools_pb2.ToolCall(id="f3", name="no.such.tool", arguments="{}")
                )
                assert missing.status == tools_pb2.TOOL_NOT_FOUND, missing
            finally:
                await legacy.close()


async def agent_says(cluster: Nodes, agent: str, pattern: str, count: int = 1) -> str:
    running = cluster.agents[agent]
    return (await running.wait_for(pattern, count=count, timeout=30)).group(0)


async def test_pub_sub_per_tier_and_the_trace_context_cross_nodes(cluster: Nodes) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with anyio.fail_after(60):
        # Published on node a, for a subscriber on node b, in each tier.
        for tier in ("realtime", "batched", "background"):
            await cluster.loom("a", "publish", "--qos", tier, f"tier.{tier}", f"hello-{tier}")
            await agent_says(cluster, "listener", rf"listener got tier\.{tier} hello-{tier} ")
        # An event with a trace context, published through node a's bridge: the agent on
        # node b sees the same trace.
        registration = AgentRegistration(agent_id="tracer")
        async with BridgeClient(cluster.addresses["a"], registration, options=FAST) as client:
            event = Event(payload=b"traced", envelope=Envelope(traceparent=traceparent))
            await client.publish("tier.batched", event, wait_accepted=True)
        line = await agent_says(cluster, "listener", r"listener got tier\.batched traced \S+")
        assert line.split()[-1].split("-")[1] == trace_id, line


async def test_request_reply_a_gather_and_a_barrier_span_the_nodes(cluster: Nodes) -> None:
    with anyio.fail_after(60):
        # ctx.request from node a to the responder on node c.
        await cluster.loom("b", "publish", "go.request", "ping")
        await agent_says(cluster, "boss", "boss reply PING")
        # A gather from node a over one worker on each node.
        await cluster.loom("c", "publish", "go.gather", "x")
        line = await agent_says(cluster, "boss", "boss gathered .*")
        assert line == "boss gathered w-a:job,w-b:job,w-c:job satisfied=True", line
        # A barrier with its two parties on nodes a and b, published from node c.
        await cluster.loom("c", "publish", "go.barrier", "x")
        for worker in ("w-a", "w-b"):
            line = await agent_says(cluster, worker, rf"{worker} barrier .*")
            assert line == f"{worker} barrier w-a,w-b complete=True", line


async def test_a_contract_net_over_bidders_on_three_nodes(cluster: Nodes) -> None:
    with anyio.fail_after(60):
        # The manager on node a calls for proposals; a bidder on each node answers; the best
        # (on node b) is awarded, the other two rejected, each told so across the wire.
        await cluster.loom("c", "publish", "go.contract", "x")
        line = await agent_says(cluster, "boss", "boss contract .*")
        assert line == "boss contract w-a,w-b,w-c awarded=w-b", line
        for worker, decision in (("w-a", "REJECTED"), ("w-b", "AWARDED"), ("w-c", "REJECTED")):
            line = await agent_says(cluster, worker, rf"{worker} bid .*")
            assert line == f"{worker} bid {decision}", line
