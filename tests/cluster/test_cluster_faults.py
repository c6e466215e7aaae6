"""Faults of the end-to-end cluster (``_e2e_support``), each on a cluster of its own: a NATS
server of the three killed under a lossless stream between nodes, and everything (nodes and
NATS servers) stopped and started again with a durable backlog waiting."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import pytest

from loom.bridge._client import AgentRegistration, BridgeClient
from loom.runtime import Event

from ..bridge._client_support import FAST
from ..sdk._cli_support import running
from ._e2e_support import HEARTBEAT, Nodes, nats_cluster, nodes_on

pytestmark = pytest.mark.anyio

COUNTER = """\
import os
from loom import Agent, QoS

seen = set()
duplicates = 0
ended = False


async def on_event(ctx, topic, event):
    global duplicates, ended
    text = event.payload.decode()
    if text == "end":
        ended = True
        print(f"{topic}: {len(seen)} distinct, {duplicates} duplicates", flush=True)
        return
    n = int(text)
    duplicates += n in seen
    seen.add(n)
    if ended:  # a redelivery after the end: say the count again
        print(f"{topic}: {len(seen)} distinct, {duplicates} duplicates", flush=True)
    elif len(seen) % 100 == 0:
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
import asyncio
import sys

from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


@capability("work.slow")
async def slow(tag: str) -> str:
    \"\"\"Take a minute.\"\"\"
    print(f"slow {tag} started", file=sys.stderr, flush=True)
    await asyncio.sleep(60)
    return tag


agent = Agent("upperer", capabilities=[upper, slow])

if __name__ == "__main__":
    agent.run()
"""


async def publish_flow(
    pump: BridgeClient, total: int, steps: Mapping[int, Callable[[], Awaitable[None]]]
) -> None:
    """Publish ``0 .. total-1`` to ``flow.batched`` and ``flow.durable``, each step of
    ``steps`` run after its number: a stream over time (a pause every 50), but for a burst of
    100 right after the first step (into the fault it makes)."""
    first = min(steps)
    for n in range(total):
        payload = str(n).encode()
        await pump.publish("flow.batched", Event(payload=payload))
        await pump.publish("flow.durable", Event(payload=payload))
        if n in steps:
            await steps[n]()
        if n % 50 == 0 and not first < n < first + 100:
            await anyio.sleep(0.01)


async def connected_url(nodes: Nodes, node: str) -> str:
    status = await nodes.loom(node, "status")
    match = re.search(r"nats:\s+external at (\S+) \(connected\)", status)
    assert match is not None, status
    return match.group(1)


async def spread(nodes: Nodes) -> dict[str, str]:
    """Each node's NATS server, once not all three nodes share one (nats-py picks a server
    at random: a node is restarted until they differ)."""
    while True:
        servers = {n: await connected_url(nodes, n) for n in nodes.servers}
        if len(set(servers.values())) > 1:
            return servers
        await nodes.servers["c"].stop()
        await nodes.start("c")


@pytest.mark.parametrize("whose", ["receiver", "sender"])
async def test_a_nats_server_killed_under_a_lossless_stream_loses_nothing(
    tmp_path: Path, whose: str
) -> None:
    total = 1500
    with anyio.fail_after(180):
        async with nats_cluster(tmp_path) as nats, nodes_on(tmp_path, nats, "a", "b", "c") as nodes:
            # The server of the receiving node dies, or that of the publishing node; the
            # other one is on a server that stays.
            servers = await spread(nodes)
            receiver, sender = next(
                (r, s) for r in servers for s in servers if servers[r] != servers[s]
            )
            third = next(n for n in servers if n not in (receiver, sender))
            dying = receiver if whose == "receiver" else sender
            victim = next(s for s in nats.servers if s.url == servers[dying])
            counter = await nodes.agent(
                receiver, "counter", COUNTER, AGENT_ID="counter", TOPIC="flow.batched"
            )
            keeper = await nodes.agent(
                third, "keeper", COUNTER, AGENT_ID="keeper", TOPIC="flow.durable", DURABLE="1"
            )
            await nodes.agent(third, "upperer", PROVIDER)
            await nodes.wait_listed(sender, "counter", "keeper", "upperer")
            # Every stream the nodes use is replicated on the three servers, so any of them
            # may die. The receiver fails over to another server, resubscribes, and its
            # watch of the directory (a JetStream consumer) is made again.
            for stream in ("LOOM_EVENTS", "KV_loom_directory"):
                assert await nats.replicas(stream) == 3, stream
            registration = AgentRegistration(agent_id="pump")
            async with BridgeClient(nodes.addresses[sender], registration, options=FAST) as pump:

                async def hang_then_die() -> None:
                    await anyio.sleep(0.5)  # the hang itself (the fault, not readiness)
                    victim.kill()

                async with anyio.create_task_group() as tg:

                    async def fault() -> None:
                        await counter.wait_for(r"flow.batched: seen \d+")
                        await keeper.wait_for(r"flow.durable: seen \d+")
                        # The server hangs, then dies: what it took meanwhile (lossless frames,
                        # the sender's durable stores, started ahead many at once) is never
                        # answered, and the publishes here go on into the hang.
                        victim.pause()
                        tg.start_soon(hang_then_die)

                    await publish_flow(pump, total, {total // 3: fault})
                await nodes.servers[dying].wait_for("nats: reconnected to", timeout=30)
                await pump.publish("flow.batched", Event(payload=b"end"))
                await pump.publish("flow.durable", Event(payload=b"end"))
                done = await counter.wait_for(
                    r"flow.batched: (\d+) distinct, (\d+) duplicates", timeout=60
                )
                # A durable delivery in flight to the keeper's node when its server died is
                # lost on the way and delivered again once its ack_wait (30 s) ran out: it
                # may come after the end.
                await keeper.wait_for(rf"flow.durable: {total} distinct", timeout=60)
            # Lossless across the kill: not one event lost, none twice (a durable
            # subscription is at least once: redeliveries are allowed, losses are not).
            # On failure, the nodes' own lines say which link dropped what.
            said = "\n".join(
                f"--- node {name}:\n{nodes.servers[name].output[-4000:]}"
                for name in (sender, receiver)
            )
            assert (int(done.group(1)), int(done.group(2))) == (total, 0), (
                f"{counter.output}\n{said}"
            )
            # The directory and calls across nodes work on the two servers left.
            await nodes.wait_listed(dying, "counter", "keeper", "upperer")
            called = await nodes.loom(dying, "call", "text.upper", '{"text": "after"}')
            assert called.strip() == '"AFTER"'


async def test_a_durable_backlog_survives_stopping_every_node_and_nats_server(
    tmp_path: Path,
) -> None:
    total = 200
    with anyio.fail_after(150):
        async with nats_cluster(tmp_path) as nats, nodes_on(tmp_path, nats, "a", "b", "c") as nodes:
            keeper = await nodes.agent(
                "c", "keeper", COUNTER, AGENT_ID="keeper", TOPIC="flow.kept", DURABLE="1"
            )
            await nodes.wait_listed("a", "keeper")
            assert await keeper.stop() == 0  # its durable name stays: the backlog builds up
            registration = AgentRegistration(agent_id="pump")
            async with BridgeClient(nodes.addresses["a"], registration, options=FAST) as pump:
                for n in range(total):
                    await pump.publish("flow.kept", Event(payload=str(n).encode()))
                await pump.publish("flow.kept", Event(payload=b"end"), wait_accepted=True)
            # Everything stops: the nodes cleanly, the NATS servers with SIGKILL.
            for server in nodes.servers.values():
                # A node leaves the cluster cleanly on SIGINT: status 0, no traceback.
                assert await server.stop() == 0
            nats.kill_all()
            # And starts again, on the same ports and stores.
            await nats.start_all()
            await nats.wait_streams("LOOM_EVENTS", "KV_loom_directory")
            for name in ("a", "b", "c"):
                await nodes.start(name)
            await nodes.wait_joined()
            # The durable name's backlog is all there, on another node than before.
            keeper = await nodes.agent(
                "b", "keeper-again", COUNTER, ready="keeper",
                AGENT_ID="keeper", TOPIC="flow.kept", DURABLE="1",
            )  # fmt: skip
            stored = await keeper.wait_for(r"flow.kept: (\d+) distinct", timeout=60)
            assert int(stored.group(1)) == total, keeper.output


async def test_a_node_killed_leaves_every_directory_and_its_calls_fail(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with nats_cluster(tmp_path) as nats, nodes_on(tmp_path, nats, "a", "b", "c") as nodes:
            provider = await nodes.agent("b", "upperer", PROVIDER)
            await nodes.wait_listed("a", "upperer")
            await nodes.wait_listed("c", "upperer")
            caller = await nodes.stack.enter_async_context(
                running(
                    "call", "-a", nodes.addresses["a"], "--timeout", "60", "work.slow",
                    '{"tag": "k"}', cwd=tmp_path,
                )
            )  # fmt: skip
            await provider.wait_for("slow k started")
            nodes.servers["b"].signal(signal.SIGKILL)
            killed = time.monotonic()
            gone = r"cluster: node b is gone .*: 1 agents left"
            await nodes.servers["a"].wait_for(gone + ", 1 calls failed", timeout=10)
            await nodes.servers["c"].wait_for(gone, timeout=10)
            # Within two heartbeat intervals (read a little later than it happened).
            assert time.monotonic() - killed <= 2 * HEARTBEAT + 0.75
            assert await caller.wait(timeout=5) == 1
            assert "AGENT_DISCONNECTED" in caller.output
            for node in ("a", "c"):
                assert "upperer" not in await nodes.loom(node, "agents")
