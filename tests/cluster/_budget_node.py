"""A cluster node in a process of its own for ``test_cluster_budget_nodes.py``; not a test
module: its own scopes, so a turn's scope from another node is rebuilt here from the call's
headers, as between ``loom serve --nats`` nodes.

Usage: python _budget_node.py NATS_URL NODE: agents ``fanner`` (``fan.b(n)``, which calls
``leaf.x`` ``n`` times) and ``leafer`` (``leaf.x``); prints ``ready`` once both are started,
then ``leaf.x N`` after each call of ``leaf.x``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loom import Agent
from loom.cluster import ClusterDirectory
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.tools import FunctionTool
from tests.sdk._budget_agents import OBJECT, Calls, fan


async def main(url: str, name: str) -> None:
    calls = Calls()

    async def leaf() -> str:
        calls.count["leaf.x"] += 1
        print("leaf.x", calls.count["leaf.x"], flush=True)
        return "leaf"

    tool = FunctionTool(leaf, name="leaf.x", description="A leaf.", parameters_schema=OBJECT)
    client = await nats.connect(url, name=name)
    try:
        async with (
            EventBus() as bus,
            AgentRuntime(bus, node=name) as runtime,
            ClusterDirectory(runtime, client, name, heartbeat_s=0.4),
        ):
            await runtime.start(Agent("leafer", capabilities=[tool]))
            await runtime.start(fan("fanner", "fan.b", "leaf.x", calls))
            print("ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await client.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
