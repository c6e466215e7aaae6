"""Request/reply: routing by correlation id and reply_to, timeouts, NoResponders, bad input."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus

from loom.runtime import (
    BusClosed,
    DeadlineExceeded,
    Envelope,
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    QoS,
    TTLExpired,
)
from loom.runtime.collab import NoResponders, RequestTimeout, _replies, reply, request
from tests.runtime._collab_support import idle

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

Handler = Callable[[Event], Awaitable[None]]


@asynccontextmanager
async def serving(bus: EventBus, topic: str, handler: Handler) -> AsyncIterator[None]:
    """Run ``handler`` for every event on ``topic``; subscribed before this yields."""
    sub = bus.subscribe(topic)
    async with anyio.create_task_group() as tg:

        async def loop() -> None:
            async with sub:
                async for delivery in sub:
                    await handler(delivery.event)

        tg.start_soon(loop)
        yield
        tg.cancel_scope.cancel()


async def test_round_trip_and_envelopes() -> None:
    seen: list[Event] = []

    async def echo(ev: Event) -> None:
        seen.append(ev)
        await reply(bus, ev, ev.payload.upper(), sender="echo", type="echoed")

    async with EventBus() as bus, serving(bus, "svc.echo", echo):
        answer = await request(bus, "svc.echo", b"hi", timeout=5, sender="me")
        assert answer.payload == b"HI"
        assert answer.type == "echoed"
        (req,) = seen
        env = req.envelope
        assert req.type == "request"
        assert req.source == "me"
        assert env.sender == "me"
        assert env.correlation_id
        assert env.reply_to == "agent.me.replies.rpc"  # the router demultiplexes by correlation
        assert env.thread_id  # a new thread
        assert env.hop == 0
        assert answer.envelope.correlation_id == env.correlation_id
        assert answer.envelope.thread_id == env.thread_id
        assert answer.envelope.sender == "echo"

        # Without a sender the inbox is the bus's anonymous one; each call gets new ids.
        await request(bus, "svc.echo", b"x", timeout=5)
        anon = seen[1].envelope
        assert anon.reply_to == _replies.router_for(bus).inbox("")
        assert anon.reply_to.startswith("_inbox.")
        assert anon.sender == ""
        assert anon.correlation_id != env.correlation_id
        assert anon.thread_id != env.thread_id
    assert idle(bus) == (0, 1)


async def test_parent_carries_thread_trace_and_hops() -> None:
    seen: list[Event] = []

    async def echo(ev: Event) -> None:
        seen.append(ev)
        await reply(bus, ev, sender="echo")

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parent = Event(
        type="task",
        envelope=Envelope(thread_id="t-1", ttl=5, hop=2, traceparent=traceparent, tracestate="a=1"),
    )
    async with EventBus() as bus, serving(bus, "svc.echo", echo):
        await request(bus, "svc.echo", b"", timeout=5, sender="me", parent=parent)
        env = seen[0].envelope
        assert (env.thread_id, env.ttl, env.hop) == ("t-1", 5, 3)
        assert (env.traceparent, env.tracestate) == (traceparent, "a=1")

        # An Event payload keeps its fields and its own thread, even with a parent.
        mine = Event(
            type="ask", metadata={"k": "v"}, payload=b"p", envelope=Envelope(thread_id="own")
        )
        await request(bus, "svc.echo", mine, timeout=5, sender="me", parent=parent)
        sent = seen[1]
        assert (sent.id, sent.type, sent.metadata, sent.payload) == (
            mine.id,
            "ask",
            {"k": "v"},
            b"p",
        )
        assert sent.envelope.thread_id == "own"
        assert sent.envelope.hop == 3

        spent = Event(envelope=Envelope(ttl=2, hop=2))
        with pytest.raises(TTLExpired):
            await request(bus, "svc.echo", b"", timeout=5, parent=spent)
        assert len(seen) == 2
    assert idle(bus) == (0, 1)


async def test_concurrent_requests_get_their_own_replies() -> None:
    pending: list[Event] = []
    all_in = anyio.Event()

    async def collect(ev: Event) -> None:
        pending.append(ev)
        if len(pending) == 40:
            all_in.set()

    async with EventBus() as bus, serving(bus, "svc.slow", collect):
        results: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            answer = await request(bus, "svc.slow", str(i).encode(), timeout=5, sender=f"a{i % 3}")
            results[i] = answer.payload

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(ask, i)
            await all_in.wait()
            # Answer in reverse order: routing must not depend on order.
            for ev in reversed(pending):
                await reply(bus, ev, ev.payload + b"!", sender="slow")
        assert results == {i: f"{i}!".encode() for i in range(40)}
    assert idle(bus) == (0, 1)


async def test_replies_with_another_correlation_id_are_ignored() -> None:
    async def confused(ev: Event) -> None:
        env = ev.envelope
        wrong = Event(payload=b"wrong", envelope=Envelope(correlation_id="not-yours"))
        await bus.publish(env.reply_to, wrong)
        await bus.publish(env.reply_to, Event(payload=b"no id"))
        if ev.payload == b"answer":
            await reply(bus, ev, b"right", sender="c")

    async with EventBus() as bus, serving(bus, "svc.confused", confused):
        answer = await request(bus, "svc.confused", b"answer", timeout=5)
        assert answer.payload == b"right"
        router = _replies.router_for(bus)
        stray = router.stray
        with pytest.raises(RequestTimeout):
            await request(bus, "svc.confused", b"silence", timeout=0.05)
        # The shared router cannot tell whose call a wrong reply was meant for: it counts them.
        assert router.stray == stray + 2
    assert idle(bus) == (0, 1)


async def test_timeout_is_typed_and_a_late_reply_goes_unrouted() -> None:
    held: list[Event] = []

    async def hold(ev: Event) -> None:
        held.append(ev)

    async with EventBus() as bus, serving(bus, "svc.mute", hold):
        with pytest.raises(RequestTimeout) as info:
            await request(bus, "svc.mute", b"", timeout=0.02, sender="me")
        err = info.value
        assert isinstance(err, DeadlineExceeded)
        assert isinstance(err, TimeoutError)
        (req,) = held
        assert (err.topic, err.correlation_id, err.timeout) == (
            "svc.mute",
            req.envelope.correlation_id,
            0.02,
        )
        assert idle(bus) == (1, 3)  # only the responder's subscription

        # A late reply reaches the router, finds no pending call, and is dropped as stray.
        router = _replies.router_for(bus)
        before = router.stray
        await reply(bus, req, b"too late", sender="mute")
        assert router.stray == before + 1
        assert router.pending() == 0


async def test_no_responders_fails_fast() -> None:
    async with EventBus() as bus:
        with anyio.fail_after(2):
            with pytest.raises(NoResponders) as info:
                await request(bus, "svc.nobody", b"", timeout=60)
        assert info.value.topic == "svc.nobody"
        assert info.value.correlation_id
        # A subscriber that filters the request's type out is no responder either.
        async with bus.subscribe("svc.typed", event_types=["other"]):
            with anyio.fail_after(2), pytest.raises(NoResponders):
                await request(bus, "svc.typed", b"", timeout=60)
        assert idle(bus) == (0, 1)


async def test_with_a_transport_a_remote_responder_may_answer() -> None:
    class Wire:
        """A transport to a network where nobody listens: publishes are accepted, never answered."""

        def __init__(self) -> None:
            self.published: list[str] = []

        async def run(self, inbound: object, *, task_status: TaskStatus[None]) -> None:
            task_status.started()
            await anyio.sleep_forever()

        async def publish(self, topic: str, event: Event) -> None:
            self.published.append(topic)

        def publish_nowait(self, topic: str, event: Event) -> None:
            self.published.append(topic)

        def add_interest(self, pattern: str, qos: QoS) -> None:
            pass

        def remove_interest(self, pattern: str, qos: QoS) -> None:
            pass

    wire = Wire()
    async with EventBus(transport=wire) as bus:
        with pytest.raises(RequestTimeout):
            await request(bus, "svc.remote", b"", timeout=0.02)
        assert wire.published == ["svc.remote"]
        assert idle(bus) == (0, 1)


async def test_backpressure_counts_against_the_timeout() -> None:
    async with EventBus() as bus:
        async with bus.subscribe("svc.full", buffer_size=1) as full:
            await bus.publish("svc.full", Event())  # full, and nobody reads it
            with pytest.raises(RequestTimeout):
                await request(bus, "svc.full", b"", timeout=0.02)
            assert full.statistics().waiting_publishers == 0
        assert idle(bus) == (0, 1)


async def test_cancelled_request_leaves_nothing() -> None:
    async def hold(ev: Event) -> None:
        pass

    async with EventBus() as bus, serving(bus, "svc.mute", hold):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await request(bus, "svc.mute", b"", timeout=5)
        assert scope.cancelled_caught
        with anyio.move_on_after(0.01) as outer:
            await request(bus, "svc.mute", b"", timeout=60)
        assert outer.cancelled_caught
        assert idle(bus) == (1, 3)


async def test_bus_closing_ends_the_wait() -> None:
    async def hold(ev: Event) -> None:
        pass

    bus = EventBus(drain_grace=0)
    async with bus:
        sub = bus.subscribe("svc.mute")
        failure: list[BaseException] = []

        async def ask() -> None:
            try:
                await request(bus, "svc.mute", b"", timeout=60)
            except BusClosed as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            while sub.statistics().queued == 0:
                await anyio.lowlevel.checkpoint()
            await bus.aclose()
    assert len(failure) == 1


@pytest.mark.parametrize("timeout", [0, -1, math.nan, True, "1"])
async def test_bad_timeout(timeout: object) -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="timeout"):
            await request(bus, "svc.x", b"", timeout=timeout)  # type: ignore[arg-type]
        assert idle(bus) == (0, 1)


@pytest.mark.parametrize("sender", ["a.b", "*", ">", 3])
async def test_bad_sender(sender: object) -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="sender"):
            await request(bus, "svc.x", b"", timeout=1, sender=sender)  # type: ignore[arg-type]
        assert idle(bus) == (0, 1)


async def test_bad_payload_and_topic() -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="payload"):
            await request(bus, "svc.x", "text", timeout=1)  # type: ignore[arg-type]
        with pytest.raises(InvalidTopic):
            await request(bus, "svc.*", b"", timeout=1)
        with pytest.raises(InvalidArgument, match="payload"):
            await reply(bus, Event(envelope=Envelope(sender="x")), 42, sender="me")  # type: ignore[arg-type]
        assert idle(bus) == (0, 1)


async def test_reply_helper() -> None:
    async with EventBus() as bus:
        with pytest.raises(InvalidArgument, match="nowhere to reply"):
            await reply(bus, Event(), b"", sender="me")
        # Without reply_to the answer goes to the sender's mailbox; an Event keeps its fields.
        request_event = Event(id="r-1", envelope=Envelope(sender="asker", thread_id="t"))
        async with bus.subscribe("agent.asker.replies") as mailbox:
            sent = await reply(
                bus, request_event, Event(type="result", metadata={"k": "v"}), sender="me"
            )
            got = mailbox.receive_nowait().event
        assert got == sent
        assert (got.type, got.metadata) == ("result", {"k": "v"})
        assert got.envelope.correlation_id == "r-1"
        assert (got.envelope.thread_id, got.envelope.sender) == ("t", "me")
