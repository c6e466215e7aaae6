"""The remote peers of benchmarks/durable.py, one role per process.

Usage: ``python benchmarks/_durable_agents.py ROLE ADDRESS ...``. Each prints words on
stdout, one line each: ``ready`` once connected (the driver waits for it; no sleeps), then
its measurement. ``time.monotonic`` is one clock for every process of the machine, so the
driver subtracts the publisher's ``start`` from the handler's ``end``.

* ``handler ADDRESS AGENT_ID TOPIC N``: ``Agent(durable=True)`` on TOPIC (its durable state
  on the server, in JetStream); its handler counts the events. Prints ``end <monotonic>
  <handled> <redelivered>`` when the N-th distinct event was handled (each handled one is
  acknowledged as its handler returns, by the agent's runtime), then stays until stdin closes.
* ``publisher ADDRESS TOPIC N WINDOW SIZE``: a ``BridgeClient`` (what a remote agent's
  ``ctx.emit`` calls) publishing N distinct events of SIZE payload bytes, WINDOW at a time,
  each waiting for the server's acceptance, which follows the JetStream store. Prints
  ``start <monotonic>`` and ``accepted <seconds>``; stays until stdin closes.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import anyio

from loom import Agent, Context, Event, serve_agent
from loom.bridge import AgentRegistration, BridgeClient, ClientOptions

# Room for a window of publishes and of deliveries in flight.
_OPTIONS = ClientOptions(inbound_buffer=4096, outbound_buffer=4096, connect_timeout=30)


def _say(*words: object) -> None:
    print(*words, flush=True)


async def _until_stdin_closes() -> None:
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return


async def handler(address: str, agent_id: str, topic: str, n: int) -> None:
    seen: set[str] = set()
    redelivered = 0
    handled = 0
    done = anyio.Event()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        nonlocal handled, redelivered
        handled += 1
        if event.metadata.get("delivery.redelivered") == "true":
            redelivered += 1
        seen.add(event.id)
        if len(seen) == n and not done.is_set():
            _say("end", time.monotonic(), handled, redelivered)
            done.set()

    agent = Agent(agent_id, topics=[topic], on_event=handle, durable=True, mailbox_size=1024)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve_agent, agent, address, options=_OPTIONS))
        _say("ready")
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


async def publisher(address: str, topic: str, n: int, window: int, size: int) -> None:
    registration = AgentRegistration(agent_id=f"bench-durable-pub-{os.getpid()}")
    # Built before the clock starts, as the raw baseline's messages are; distinct ids (the
    # same id again on a topic is JetStream's duplicate, stored once).
    events = [Event(type="bench", payload=b"x" * size) for _ in range(n)]
    async with BridgeClient(address, registration, options=_OPTIONS) as client:
        _say("ready")
        start = time.monotonic()
        _say("start", start)

        async def publish_each(first: int) -> None:
            for i in range(first, n, window):
                await client.publish(topic, events[i], wait_accepted=True)

        async with anyio.create_task_group() as tg:
            for k in range(window):
                tg.start_soon(publish_each, k)
        _say("accepted", time.monotonic() - start)
        await _until_stdin_closes()


def main(argv: list[str]) -> None:
    match argv:
        case ["handler", address, agent_id, topic, n]:
            anyio.run(handler, address, agent_id, topic, int(n))
        case ["publisher", address, topic, n, window, size]:
            anyio.run(publisher, address, topic, int(n), int(window), int(size))
        case _:
            raise SystemExit(f"usage: see the module docs; not {argv!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
