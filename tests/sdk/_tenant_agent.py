"""An SDK agent of one tenant, run as a subprocess by the tenant tests (issue 13, section 3).

Usage: python _tenant_agent.py HOST:PORT NAMESPACE OTHER_NAMESPACE [durable|asker], with its
tenant token in ``$TENANT_TOKEN`` (``durable``: a durable agent, so its topic is stored;
``asker``: see :func:`_asker`).
Runs agent ``NAMESPACE:worker`` on ``NAMESPACE.jobs`` offering the
capability ``NAMESPACE.upper``; it answers a request on its topic with the payload upper-cased
and prints ``got <topic> <payload>`` for each event. Once connected it prints ``ready``, then
tries to reach the other namespace and prints one ``probe <what>: <outcome>`` line each,
then uses its own (``own <what>: <outcome>``), then prints ``probed`` and serves on.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Awaitable, Callable

import anyio

from loom import Agent, Context, capability, serve_agent
from loom.bridge import BridgeClient, PublishRejected, SubscribeRefused
from loom.runtime import Envelope, Event, LoomError


async def main(address: str, ns: str, other: str, mode: str) -> None:
    if mode == "asker":
        await _asker(address, ns, other)
        return
    durable = mode == "durable"

    @capability(f"{ns}.upper")
    async def upper(text: str) -> str:
        return text.upper()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        print(f"got {topic} {event.payload.decode()}", flush=True)
        if event.envelope.reply_to:
            await ctx.reply(event, event.payload.upper())

    agent = Agent(
        f"{ns}:worker",
        topics=[f"{ns}.jobs"],
        on_event=on_event,
        capabilities=[upper],
        durable=durable,
    )
    token = os.environ["TENANT_TOKEN"]
    async with anyio.create_task_group() as tg:
        client: BridgeClient = await tg.start(functools.partial(_serve, agent, address, token))
        print("ready", flush=True)
        await _probe(client, ns, other)
        print("probed", flush=True)


async def _serve(
    agent: Agent,
    address: str,
    token: str,
    *,
    task_status: anyio.abc.TaskStatus[BridgeClient] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_agent(agent, address, token=token, task_status=task_status)


async def _asker(address: str, ns: str, other: str) -> None:
    """Agent ``NAMESPACE:asker``: through its context, asks ``NAMESPACE:worker`` (a request on
    ``NAMESPACE.jobs`` and a call of ``NAMESPACE.upper``) and tries the same on the other
    namespace; prints ``own``/``probe`` lines, then ``probed``."""
    started: list[Context] = []

    async def on_start(ctx: Context) -> None:
        started.append(ctx)

    agent = Agent(f"{ns}:asker", topics=[f"{ns}.asker"], on_start=on_start)
    token = os.environ["TENANT_TOKEN"]
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(_serve, agent, address, token))
        ctx = started[0]
        reply = await ctx.request(f"{ns}.jobs", "ping", timeout=20)
        print(f"own request: {reply.payload.decode()} from {reply.envelope.sender}", flush=True)
        print(f"own tool: {await ctx.tool(f'{ns}.upper', {'text': 'mine'})}", flush=True)
        try:
            # Refused at the server, so nobody answers: it times out, having reached no one.
            await ctx.request(f"{other}.jobs", "ping", timeout=3)
        except LoomError as exc:
            print(f"probe request-other: {type(exc).__name__}", flush=True)
        try:
            await ctx.tool(f"{other}.upper", {"text": "x"})
        except LoomError as exc:
            print(f"probe ctx-tool-other: {_outcome(exc)}", flush=True)
        print("probed", flush=True)
        tg.cancel_scope.cancel()


def _outcome(exc: Exception) -> str:
    code = getattr(exc, "code", "")
    return f"refused {code} {type(exc).__name__}: {exc}"


async def _probe(client: BridgeClient, ns: str, other: str) -> None:
    me = f"{ns}:worker"
    attempts: dict[str, Callable[[], Awaitable[object]]] = {
        # Read the other's topics, its agent's mailbox, everything.
        "subscribe-other": lambda: client.subscribe(f"{other}.>"),
        "subscribe-mailbox": lambda: client.subscribe(f"agent.{other}:worker.replies.>"),
        "subscribe-all": lambda: client.subscribe(">"),
        # Publish into the other's namespace, and as the other's agent.
        "publish-other": lambda: client.publish(
            f"{other}.jobs", Event(type="x", payload=b"intrude"), wait_accepted=True
        ),
        "publish-as-other": lambda: client.publish(
            f"{ns}.jobs",
            Event(type="x", payload=b"forged", envelope=Envelope(sender=f"{other}:worker")),
            wait_accepted=True,
        ),
        # Call the other's tool on the stream.
        "tool-other": lambda: client.call_tool(f"{other}.upper", '{"text": "x"}', timeout=10),
    }
    for what, attempt in attempts.items():
        try:
            result = await attempt()
        except (PublishRejected, SubscribeRefused, LoomError) as exc:
            print(f"probe {what}: {_outcome(exc)}", flush=True)
        else:
            print(f"probe {what}: allowed {result!r}", flush=True)
    tools = sorted(t.name for t in await client.list_tools())
    print(f"own tools: {' '.join(tools)}", flush=True)
    out = await client.call_tool(f"{ns}.upper", '{"text": "mine"}', timeout=10)
    print(f"own tool: {out}", flush=True)
    accepted = await client.publish(
        f"{ns}.jobs",
        Event(type="x", payload=b"own", envelope=Envelope(sender=me)),
        wait_accepted=True,
    )
    print(f"own publish: {accepted.name}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], (sys.argv[4:] or [""])[0])
