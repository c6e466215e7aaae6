"""The two agents of the server-restart test, run as subprocesses of Loom's own client.

Usage:
  python _restart_agents.py subscribe HOST:PORT   prints "ready", then "got <n>" per event
  python _restart_agents.py publish HOST:PORT     prints "ready"; on each stdin line "go N"
      publishes the next N events on restart.events (32 at a time, each waiting for its
      acceptance) and prints "<outcome> <n>" per event (accepted, unrouted, lost, rejected,
      sent), then "phase <total> lost=<stats.lost> unrouted=<stats.unrouted>"

The subscriber reconnects more slowly than the publisher (its backoff starts at 0.5 s), so
after a server restart the publisher is reliably back first: the case the settle window is
for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import anyio

from loom.bridge import (
    AgentRegistration,
    Backoff,
    BridgeClient,
    ClientOptions,
    ConnectionLost,
    PublishRejected,
)
from loom.runtime import Event

_CONCURRENCY = 32


async def subscribe(target: str) -> None:
    options = ClientOptions(backoff=Backoff(initial=0.5, maximum=1.0), connect_timeout=30)
    registration = AgentRegistration(agent_id="restart-sub", topics=("restart.>",))
    async with BridgeClient(target, registration, options=options) as client:
        print("ready", flush=True)
        async for delivery in client:
            print(f"got {delivery.event.payload.decode()}", flush=True)


async def publish(target: str) -> None:
    options = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.2), connect_timeout=30)
    registration = AgentRegistration(agent_id="restart-pub")
    async with BridgeClient(target, registration, options=options) as client:
        print("ready", flush=True)
        sent = 0
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            count = int(line.split()[1])
            numbers = iter(range(sent, sent + count))
            sent += count
            async with anyio.create_task_group() as tg:
                for _ in range(_CONCURRENCY):
                    tg.start_soon(_publisher, client, numbers)
            stats = client.statistics()
            print(f"phase {sent} lost={stats.lost} unrouted={stats.unrouted}", flush=True)


async def _publisher(client: BridgeClient, numbers: Iterator[int]) -> None:
    for n in numbers:
        event = Event(type="restart.n", payload=str(n).encode())
        try:
            outcome = (await client.publish("restart.events", event, wait_accepted=True)).value
        except ConnectionLost:
            outcome = "lost"
        except PublishRejected:
            outcome = "rejected"
        print(f"{outcome} {n}", flush=True)


if __name__ == "__main__":
    anyio.run(subscribe if sys.argv[1] == "subscribe" else publish, sys.argv[2])
