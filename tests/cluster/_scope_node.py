"""A cluster node in a process of its own for ``test_cluster_scope_exact.py``; not a test
module: its own scopes, as between ``loom serve --nats`` nodes.

Usage: python _scope_node.py NATS_URL NODE DIR: agents offering ``fan.NODE(n)`` (calls
``leaf.NODE`` ``n`` times at once) and ``leaf.NODE`` (1 s), each counted in the shared
``tests/sdk/_scope_counter.Running`` of ``DIR``; prints ``ready`` once both are started.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loom import Agent, Context
from loom.cluster import ClusterDirectory
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.tools import FunctionTool, ToolCallRefused
from tests.sdk._scope_counter import Running

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def agents(name: str, running: Running) -> list[Agent]:
    async def leaf() -> str:
        async with running.call(f"leaf.{name}"):
            await anyio.sleep(1.0)
        return "leaf"

    holder: dict[str, Context] = {}

    async def on_start(ctx: Context) -> None:
        holder["ctx"] = ctx

    async def fan(n: int) -> dict[str, int]:
        seen = {"ok": 0, "refused": 0}

        async def one() -> None:
            try:
                await holder["ctx"].tool(f"leaf.{name}", {})
            except ToolCallRefused:
                seen["refused"] += 1
            else:
                seen["ok"] += 1

        async with running.call(f"fan.{name}"), anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        return seen

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    return [
        Agent(
            f"leafer-{name}",
            capabilities=[
                FunctionTool(leaf, name=f"leaf.{name}", description="-", parameters_schema=OBJECT)
            ],
        ),
        Agent(
            f"fanner-{name}",
            capabilities=[
                FunctionTool(fan, name=f"fan.{name}", description="-", parameters_schema=schema)
            ],
            on_start=on_start,
        ),
    ]


async def main(url: str, name: str, root: str) -> None:
    client = await nats.connect(url, name=name)
    try:
        async with (
            EventBus() as bus,
            AgentRuntime(bus, node=name) as runtime,
            ClusterDirectory(runtime, client, name, heartbeat_s=0.4),
        ):
            for agent in agents(name, Running(Path(root))):
                await runtime.start(agent)
            print("ready", flush=True)
            await anyio.sleep_forever()
    finally:
        await client.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
