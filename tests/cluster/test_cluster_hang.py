"""A NATS server of the three that HANGS under a lossless stream between nodes (issue 13 §2:
"lossless subscriptions lose nothing"): SIGSTOP, so its sockets stay open and nothing answers,
as a stopped process or a host cut off does. The nodes on it notice only by their PINGs (about
8 s), while the other nodes find them silent after three heartbeats: the silent node's link
must be kept, and resumed on the same numbering, when it is heard again in the same life.

Each case on a cluster of its own (``_e2e_support``): the receiving or the publishing node's
server hangs a third of the way through 1,500 ``BATCHED`` (and 1,500 durable) events, stays
stopped until another node has found the node on it silent, and then either comes back
(SIGCONT) or never does (the node fails over by its PINGs; the server is killed at the end).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from loom.bridge._client import AgentRegistration, BridgeClient
from loom.runtime import Event

from ..bridge._client_support import FAST
from ._e2e_support import nats_cluster, nodes_on
from .test_cluster_faults import COUNTER, publish_flow, spread

pytestmark = pytest.mark.anyio

RECONNECTED = "nats: reconnected to"


@pytest.mark.parametrize("then", ["comes-back", "never-answers"])
@pytest.mark.parametrize("whose", ["receiver", "sender"])
async def test_a_nats_server_that_hangs_under_a_lossless_stream_loses_nothing(
    tmp_path: Path, whose: str, then: str
) -> None:
    total = 1500
    with anyio.fail_after(180):
        async with nats_cluster(tmp_path) as nats, nodes_on(tmp_path, nats, "a", "b", "c") as nodes:
            servers = await spread(nodes)
            receiver, sender = next(
                (r, s) for r in servers for s in servers if servers[r] != servers[s]
            )
            third = next(n for n in servers if n not in (receiver, sender))
            hung = receiver if whose == "receiver" else sender
            # The other end of the stream is on a server that keeps answering: it is the one
            # that finds the node on the hung server silent.
            observer = sender if whose == "receiver" else receiver
            victim = next(s for s in nats.servers if s.url == servers[hung])
            counter = await nodes.agent(
                receiver, "counter", COUNTER, AGENT_ID="counter", TOPIC="flow.batched"
            )
            keeper = await nodes.agent(
                third, "keeper", COUNTER, AGENT_ID="keeper", TOPIC="flow.durable", DURABLE="1"
            )
            await nodes.wait_listed(sender, "counter", "keeper")
            silent = rf"cluster: node {hung} silent for"
            silent_before = nodes.servers[observer].count(silent)
            reconnected_before = nodes.servers[hung].count(RECONNECTED)
            expired = anyio.Event()

            async def hang() -> None:
                # Stopped until the other end has dropped the node on it for silence (three
                # heartbeats): the case that lost lossless frames.
                await nodes.servers[observer].wait_for(silent, count=silent_before + 1, timeout=30)
                expired.set()
                if then == "comes-back":
                    await anyio.sleep(1.0)  # the hang itself (the fault, not readiness)
                    victim.resume()

            registration = AgentRegistration(agent_id="pump")
            try:
                async with BridgeClient(
                    nodes.addresses[sender], registration, options=FAST
                ) as pump:
                    async with anyio.create_task_group() as tg:

                        async def fault() -> None:
                            await counter.wait_for(r"flow.batched: seen \d+")
                            await keeper.wait_for(r"flow.durable: seen \d+")
                            victim.pause()
                            tg.start_soon(hang)

                        # The last third is published while the node on the hung server
                        # counts as silent to the other end.
                        part = total // 3
                        await publish_flow(pump, total, {part: fault, 2 * part: expired.wait})
                    if then == "never-answers":
                        # Its PINGs unanswered, the node fails over to another server.
                        await nodes.servers[hung].wait_for(
                            RECONNECTED, count=reconnected_before + 1, timeout=30
                        )
                    await pump.publish("flow.batched", Event(payload=b"end"))
                    await pump.publish("flow.durable", Event(payload=b"end"))
                    done = await counter.wait_for(
                        r"flow.batched: (\d+) distinct, (\d+) duplicates", timeout=60
                    )
                    await keeper.wait_for(rf"flow.durable: {total} distinct", timeout=60)
            finally:
                # Nothing is left stopped, whatever happened.
                if then == "never-answers":
                    victim.kill()
                else:
                    victim.resume()
            said = "\n".join(
                f"--- node {name}:\n{nodes.servers[name].output[-4000:]}"
                for name in (sender, receiver)
            )
            assert (int(done.group(1)), int(done.group(2))) == (total, 0), (
                f"{counter.output[-2000:]}\n{said}"
            )
