"""Faults of the end-to-end cluster (``_e2e_support``), each on a cluster of its own: a NATS
server of the three killed under a lossless stream between nodes, and everything (nodes and
NATS servers) stopped and started again with a durable backlog waiting."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from loom.bridge._client import AgentRegistration, BridgeClient
from loom.runtime import Event

from ..bridge._client_support import FAST
from ._e2e_support import Nodes, nats_cluster, nodes_on

pytestmark = pytest.mark.anyio

COUNTER = """\
import os
from loom import Agent, QoS

seen = set()
duplicates = 0


async def on_event(ctx, topic, event):
    global duplicates
    text = event.payload.decode()
    if text == "end":
        print(f"{topic}: {len(seen)} distinct, {duplicates} duplicates", flush=True)
        return
    n = int(text)
    duplicates += n in seen
    seen.add(n)
    if len(seen) % 100 == 0:
        print(f"{topic}: seen {len(seen)}", flush=True)


agent = Agent(
    os.environ["AGENT_ID"],
    topics=[os.environ["TOPIC"]],
    on_event=on_event,
    qos=QoS[os.environ.get("QOS", "BATCHED")],
    durable=bool(os.environ.get("DURABLE")),
)

if __name__ == "__main__":
    agent.run()
"""

PROVIDER = """\
from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


agent = Agent("upperer", capabilities=[upper])

if __name__ == "__main__":
    agent.run()
"""


async def connected_url(nodes: Nodes, node: str) -> str:
    status = await nodes.loom(node, "status")
    match = re.search(r"nats:\s+external at (\S+) \(connected\)", status)
    assert match is not None, status
    return match.group(1)


async def test_a_nats_server_killed_under_a_lossless_stream_loses_nothing(
    tmp_path: Path,
) -> None:
    total = 1500
    with anyio.fail_after(150):
        async with nats_cluster(tmp_path) as nats, nodes_on(tmp_path, nats, "a", "b", "c") as nodes:
            counter = await nodes.agent(
                "b", "counter", COUNTER, AGENT_ID="counter", TOPIC="flow.batched"
            )
            keeper = await nodes.agent(
                "c", "keeper", COUNTER, AGENT_ID="keeper", TOPIC="flow.durable", DURABLE="1"
            )
            await nodes.agent("c", "upperer", PROVIDER)
            await nodes.wait_listed("a", "counter", "keeper", "upperer")
            # Every stream the nodes use is replicated on the three servers, so any of them
            # may die. The one that dies is node b's: b fails over to another, resubscribes,
            # and its watch of the directory, a JetStream consumer, is made again.
            for stream in ("LOOM_EVENTS", "KV_loom_directory"):
                assert await nats.replicas(stream) == 3, stream
            url = await connected_url(nodes, "b")
            victim = next(s for s in nats.servers if s.url == url)
            registration = AgentRegistration(agent_id="pump")
            async with BridgeClient(nodes.addresses["a"], registration, options=FAST) as pump:
                for n in range(total):
                    payload = str(n).encode()
                    await pump.publish("flow.batched", Event(payload=payload))
                    await pump.publish("flow.durable", Event(payload=payload))
                    if n == total // 3:
                        await counter.wait_for(r"flow.batched: seen \d+")
                        await keeper.wait_for(r"flow.durable: seen \d+")
                        victim.kill()
                    if n % 50 == 0:
                        await anyio.sleep(0.01)  # a stream over time, not one burst
                await pump.publish("flow.batched", Event(payload=b"end"))
                await pump.publish("flow.durable", Event(payload=b"end"))
                done = await counter.wait_for(
                    r"flow.batched: (\d+) distinct, (\d+) duplicates", timeout=60
                )
                stored = await keeper.wait_for(r"flow.durable: (\d+) distinct", timeout=60)
            # Lossless across the kill: not one event lost, none twice (a durable
            # subscription is at least once: redeliveries are allowed, losses are not).
            assert (int(done.group(1)), int(done.group(2))) == (total, 0), counter.output
            assert int(stored.group(1)) == total, keeper.output
            # The directory and calls across nodes work on the two servers left.
            table = await nodes.wait_listed("b", "counter", "upperer")
            assert "upperer" in table
            called = await nodes.loom("a", "call", "text.upper", '{"text": "after"}')
            assert called.strip() == '"AFTER"'
