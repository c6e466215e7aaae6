"""The hop budget (TTL) and the dead-letter topic."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime import DEFAULT_TTL, Context, Envelope, Event, Strategy, SupervisionPolicy

from ._agents_support import Seen, hosted, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def test_an_event_that_used_its_budget_is_dead_lettered_not_handled() -> None:
    seen = Seen[int]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        seen.add(ev.envelope.hop)

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"]))
        expired = Event(
            type="t", payload=b"late", metadata={"k": "v"}, envelope=Envelope(ttl=2, hop=2)
        )
        over = Event(type="t", envelope=Envelope(ttl=2, hop=5))
        fine = Event(type="t", envelope=Envelope(ttl=2, hop=1))
        for ev in (expired, over, fine):
            await h.bus.publish("in", ev)
        await seen.wait_for(1)
        letters = [await h.dead.wait("a", "ttl_expired") for _ in range(2)]
        assert h.rt.statistics_of("a").handled == 1
    assert seen.items == [1]
    first = letters[0]
    assert first.id == expired.id
    assert first.payload == b"late"
    assert first.envelope == expired.envelope
    assert first.metadata == {
        "k": "v",
        "dead_letter.reason": "ttl_expired",
        "dead_letter.error": "hop 2 reached ttl 2",
        "dead_letter.topic": "in",
        "dead_letter.agent": "a",
        "dead_letter.attempts": "0",
    }
    assert letters[1].id == over.id


async def test_a_chain_of_agents_stops_at_the_hop_budget() -> None:
    """a0 -> a1 -> ... each re-emitting one hop further: with ttl=3, a0, a1 and a2 handle the
    event (hops 0, 1, 2) and a3 dead-letters it (hop 3)."""
    handled = Seen[tuple[str, int, str, str]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        env = ev.envelope
        handled.add((ctx.agent_id, env.hop, env.thread_id, env.sender))
        nxt = int(topic.split(".")[1]) + 1
        await ctx.emit(f"chain.{nxt}", ev.payload)

    async with hosted() as h:
        for i in range(6):
            await h.rt.start(spec(f"a{i}", on_event, topics=[f"chain.{i}"]))
        start = Event(type="t", payload=b"go", envelope=Envelope(thread_id="th", ttl=3))
        await h.bus.publish("chain.0", start)
        letter = await h.dead.wait("a3", "ttl_expired")
        await anyio.wait_all_tasks_blocked()
        for i in range(6):
            if i != 3:
                assert h.dead.of(f"a{i}") == []
    # Emits inherit the thread and one more hop; the sender is the emitting agent.
    assert handled.items == [("a0", 0, "th", ""), ("a1", 1, "th", "a0"), ("a2", 2, "th", "a1")]
    assert letter.envelope.hop == 3
    assert letter.envelope.sender == "a2"
    assert letter.envelope.thread_id == "th"
    assert letter.metadata["dead_letter.topic"] == "chain.3"


async def test_a_loop_between_two_agents_ends_at_the_default_budget() -> None:
    hops = Seen[int]()

    async def ping(ctx: Context, topic: str, ev: Event) -> None:
        hops.add(ev.envelope.hop)
        await ctx.emit("pong" if topic == "ping" else "ping")

    async with hosted() as h:
        await h.rt.start(spec("p", ping, topics=["ping"]))
        await h.rt.start(spec("q", ping, topics=["pong"]))
        await h.bus.publish("ping", Event(type="t"))
        # The event that has used the budget lands on whichever agent it reaches.
        letter = await h.dead.next(lambda d: True)
    assert hops.items == list(range(DEFAULT_TTL))
    assert letter.event.envelope.hop == DEFAULT_TTL
    assert letter.event.metadata["dead_letter.reason"] == "ttl_expired"


async def test_dead_letters_go_to_the_agents_own_dead_letter_topic() -> None:
    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        raise ValueError("no")

    resume = SupervisionPolicy(strategy=Strategy.RESUME)
    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["shared"], policy=resume))
        await h.rt.start(spec("b", on_event, topics=["shared"], policy=resume))
        async with h.bus.subscribe("loom.deadletter.b") as only_b:
            await h.bus.publish("shared", Event(type="t"))
            with anyio.fail_after(5):
                delivery = await only_b.receive()
        await h.dead.wait("a")
    assert delivery.topic == "loom.deadletter.b"
    assert delivery.event.metadata["dead_letter.agent"] == "b"
