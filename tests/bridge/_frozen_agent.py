"""An agent of Loom's own client, run as a subprocess by the stale-call tests, to be frozen
with SIGSTOP while a call to it is pending.

Usage: python _frozen_agent.py HOST:PORT AGENT_ID. It offers ``frozen.work``, which never
returns, and pings every 0.1 s. Prints "ready" once connected and "call <id>" when a call of
``frozen.work`` arrives.
"""

from __future__ import annotations

import sys

import anyio

from loom.bridge import (
    AgentRegistration,
    BridgeClient,
    ClientOptions,
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
)


async def work(request: ToolCallRequest) -> ToolCallOutcome:
    print(f"call {request.id}", flush=True)
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def main(target: str, agent_id: str) -> None:
    registration = AgentRegistration(agent_id=agent_id, tools=(ToolDescriptor(name="frozen.work"),))
    options = ClientOptions(heartbeat_interval=0.1, heartbeat_timeout=5.0)
    async with BridgeClient(target, registration, tool_handler=work, options=options):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
