"""The remote peers of the ``loom serve`` durability tests, one role per process.

Usage: ``python -m tests.cluster._durable_peers ROLE ADDRESS ...``. Each prints JSON lines on
stdout (``{"ready": true}`` once connected; the test waits for it, never sleeps).

* ``publisher ADDRESS TOPIC FIRST N WINDOW OUT``: a ``BridgeClient`` publishing N distinct
  events (payloads ``b"<FIRST>"`` to ``b"<FIRST + N - 1>"``), ``WINDOW`` at a time, each
  waiting for the server's acceptance (which follows the JetStream store). An event counts
  as accepted when its publish returned; one whose connection dropped first is published
  again (the same event: same id, same topic, so JetStream stores it once) until accepted.
  Prints ``{"accepted": n}`` every 1000, writes the accepted numbers to OUT (one a line) and
  prints ``{"done": n, "retries": r}``, then stays connected until its stdin closes.
* ``handler ADDRESS AGENT_ID TOPIC OUT HANG_ON``: ``Agent(durable=True)`` on TOPIC whose
  handler appends ``"<payload> <delivery.attempt> <delivery.redelivered>"`` to OUT, flushed
  (the line is there even if the process is SIGKILLed the next moment); it sleeps forever on
  the payload HANG_ON (to be killed in the middle of a handler).
* ``emitter ADDRESS AGENT_ID TOPIC N``: an SDK ``Agent`` whose ``on_start`` emits N events
  (payloads ``b"0"`` to ``b"<N - 1>"``) with ``ctx.emit``, one after the other, and prints
  ``{"emitted": N}`` once the last emit returned (on a durable topic: once stored), then
  stays connected until its stdin closes.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import anyio
import msgspec

from loom import Agent, Context, Event, serve_agent
from loom.bridge import (
    Acceptance,
    AgentRegistration,
    Backoff,
    BridgeClient,
    ClientOptions,
    ConnectionLost,
    PublishRejected,
)


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def _until_stdin_closes() -> None:
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return


# Reconnect quickly: the test restarts the server and waits for these peers to come back.
_OPTIONS = ClientOptions(connect_timeout=60, backoff=Backoff(initial=0.05, maximum=0.5), id_wait=60)


async def publisher(address: str, topic: str, first: int, n: int, window: int, out: str) -> None:
    accepted: list[int] = []
    retries = 0
    registration = AgentRegistration(agent_id=f"durable-pub-{os.getpid()}")
    async with BridgeClient(address, registration, options=_OPTIONS) as client:
        _say(ready=True)

        async def publish_each(start: int) -> None:
            nonlocal retries
            for i in range(start, first + n, window):
                event = Event(type="load", payload=b"%d" % i)  # one id, kept across retries
                while True:
                    try:
                        outcome = await client.publish(topic, event, wait_accepted=True)
                    except (ConnectionLost, PublishRejected):
                        # Not known to be stored (the server died, or its log was not up
                        # yet): the same event again; JetStream keeps one copy.
                        retries += 1
                        await anyio.sleep(0.05)
                        continue
                    # UNROUTED too: the bus took it (and stored it) while the durable agent
                    # was away; it is kept for the agent.
                    assert outcome in (Acceptance.ACCEPTED, Acceptance.UNROUTED), outcome
                    break
                accepted.append(i)
                if len(accepted) % 1000 == 0:
                    _say(accepted=len(accepted))

        async with anyio.create_task_group() as tg:
            for k in range(window):
                tg.start_soon(publish_each, first + k)
        await anyio.Path(out).write_text("".join(f"{i}\n" for i in accepted))
        _say(done=len(accepted), retries=retries)
        await _until_stdin_closes()


async def handler(address: str, agent_id: str, topic: str, out: str, hang_on: str) -> None:
    hang = hang_on.encode()
    # Line-buffered: each line is written at once (a blocking write of a few bytes, on
    # purpose: the record must be on file before the handler returns and acks).
    with open(out, "a", buffering=1) as f:  # noqa: ASYNC230

        async def handle(ctx: Context, topic: str, event: Event) -> None:
            meta = event.metadata
            f.write(
                f"{event.payload.decode()} {meta['delivery.attempt']} "
                f"{meta['delivery.redelivered']}\n"
            )
            if event.payload == hang:
                await anyio.sleep_forever()  # SIGKILLed here

        agent = Agent(agent_id, topics=[topic], on_event=handle, durable=True, mailbox_size=1024)
        # The same secret in each process of this agent (as `loom run` gives it): a process
        # started after a kill -9 takes the id back at once.
        secret = os.environ.get("LOOM_AGENT_SECRET") or None
        options = msgspec.structs.replace(_OPTIONS, registration_secret=secret)
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(serve_agent, agent, address, options=options))
            _say(ready=True)
            await _until_stdin_closes()
            tg.cancel_scope.cancel()


async def emitter(address: str, agent_id: str, topic: str, n: int) -> None:
    async def emit_all(ctx: Context) -> None:
        for i in range(n):
            await ctx.emit(topic, b"%d" % i)
        _say(emitted=n)

    agent = Agent(agent_id, on_start=emit_all)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(serve_agent, agent, address, options=_OPTIONS))
        _say(ready=True)
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    match argv:
        case ["publisher", address, topic, first, n, window, out]:
            anyio.run(publisher, address, topic, int(first), int(n), int(window), out)
        case ["handler", address, agent_id, topic, out, hang_on]:
            anyio.run(handler, address, agent_id, topic, out, hang_on)
        case ["emitter", address, agent_id, topic, n]:
            anyio.run(emitter, address, agent_id, topic, int(n))
        case _:
            raise SystemExit(f"usage: see the module docs; not {argv!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
