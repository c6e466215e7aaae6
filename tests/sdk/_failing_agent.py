"""A remote agent whose handler raises on every Nth event, run as a subprocess by the tests of
what a failing remote agent holds (issue 17, item 7).

Usage: python _failing_agent.py HOST:PORT AGENT_ID N MAX_RESTARTS. Prints "handled <payload>"
for every event it handled, and "ended <status>" when the agent stopped or failed (then the
process exits). The counter spans restarts, so a retried event is handled the next time.
"""

from __future__ import annotations

import sys

import anyio

from loom import Agent, Context, serve_agent
from loom.runtime import Event, SupervisionPolicy


async def main(address: str, agent_id: str, every: int, max_restarts: int) -> None:
    count = 0

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        nonlocal count
        count += 1
        if count % every == 0:
            raise RuntimeError(f"failing on purpose (event {count})")
        print(f"handled {event.payload.decode()}", flush=True)

    agent = Agent(
        agent_id,
        topics=["flood.>"],
        on_event=on_event,
        mailbox_size=64,
        policy=SupervisionPolicy(
            max_restarts=max_restarts, backoff_initial_s=0.01, backoff_max_s=0.02
        ),
    )
    status = await serve_agent(agent, address)
    print(f"ended {status.value}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
