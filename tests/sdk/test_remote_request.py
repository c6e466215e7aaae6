"""``ctx.request`` from an agent connected through the bridge: it waits in its bus's reply
router, as in process, against a real server on 127.0.0.1:0."""

from __future__ import annotations

import functools

import anyio
import pytest

from loom import Agent, Context
from loom._remote import serve_agent
from loom.bridge import ClientOptions, ConnectFailed
from loom.runtime import Event, RequestTimeout

from ..bridge._client_support import FAST, hosting, next_of

pytestmark = pytest.mark.anyio

GOES = 20


async def echo(ctx: Context, topic: str, event: Event) -> None:
    await ctx.reply(event, event.payload.upper())


class Asker(Agent):
    """Requests in ``on_start`` (before its mailbox is open to the stream) and per event."""

    def __init__(self) -> None:
        super().__init__("asker", topics=["go"])

    async def on_start(self, ctx: Context) -> None:
        reply = await ctx.request("svc.echo", b"start", timeout=5)
        await ctx.emit("out.start", reply.payload, type="start")

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        reply = await ctx.request("svc.echo", event.payload, timeout=5)
        await ctx.emit("out.reply", reply.payload, type="reply")
        if event.payload == b"last":
            start = anyio.current_time()
            try:
                await ctx.request("svc.nobody", b"", timeout=0.2)
            except RequestTimeout:
                elapsed = anyio.current_time() - start
                await ctx.emit("out.timeout", f"{elapsed:.3f}", type="timeout")


async def test_remote_requests_get_their_replies_past_queued_events_or_time_out() -> None:
    async with hosting() as host, anyio.create_task_group() as tg:
        bus = host.bus
        await host.runtime.start(Agent("echo", topics=["svc.echo"], on_event=echo))
        async with bus.subscribe("out.*") as out:
            await tg.start(
                functools.partial(serve_agent, address=host.address, options=FAST), Asker()
            )
            assert (await next_of(out, "start")).payload == b"START"
            # Queued in the mailbox behind the first one: no reply waits behind them.
            for i in range(GOES - 1):
                await bus.publish("go", Event(payload=f"g{i}".encode()))
            await bus.publish("go", Event(payload=b"last"))
            replies = [(await next_of(out, "reply")).payload for _ in range(GOES)]
            assert replies == [f"G{i}".encode() for i in range(GOES - 1)] + [b"LAST"]
            elapsed = float((await next_of(out, "timeout")).payload)
            assert 0.2 <= elapsed < 2
        tg.cancel_scope.cancel()


async def test_a_failed_first_connection_is_raised_as_itself() -> None:
    # The bus's transport connects when the bus is entered: its error comes out unwrapped.
    quick = ClientOptions(connect_timeout=0.5)
    async with hosting() as host:
        await host.runtime.start(Agent("taken", topics=["x"], on_event=echo))
        with pytest.raises(ConnectFailed) as refused:
            await serve_agent(Agent("taken", on_event=echo), host.address, options=quick)
        assert refused.value.code == "ALREADY_EXISTS"
        address = host.address
    with pytest.raises(ConnectFailed):
        await serve_agent(Agent("nobody", on_event=echo), address, options=quick)
