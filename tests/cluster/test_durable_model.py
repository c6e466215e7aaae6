"""Hypothesis: random interleavings of publish, take, ack, nak and crash on one durable name,
against the promised semantics, on a real nats-server.

The promises checked (docs/durability.md): no event whose publish returned is lost (every one
is eventually acknowledged); the first deliveries of one publisher's events come in publish
order; every delivery of an event counts its attempt up (never repeats or goes back).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from tempfile import TemporaryDirectory

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loom.runtime import DurableMessage, DurableSubscription, Event

from ._jetstream_support import durable_bus, nats_server

pytestmark = pytest.mark.anyio

_names = itertools.count()

_op = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 1)),
    st.tuples(st.sampled_from(["take", "ack", "nak", "crash"]), st.just(0)),
)


class _Model:
    """What was promised, and what was seen."""

    def __init__(self) -> None:
        self.published: dict[int, list[str]] = {0: [], 1: []}
        self.publisher_of: dict[str, int] = {}
        self.acked: set[str] = set()
        self.attempts: dict[str, list[int]] = {}
        self.first_order: dict[int, list[str]] = {0: [], 1: []}

    def seen(self, msg: DurableMessage) -> None:
        eid = msg.event.id
        self.attempts.setdefault(eid, []).append(msg.attempt)
        if msg.attempt == 1:
            self.first_order[self.publisher_of[eid]].append(eid)


async def _run(ops: list[tuple[str, int]], root: Path) -> None:
    model = _Model()
    name = f"model{next(_names)}"
    async with nats_server(root) as server, durable_bus(server, ack_wait=0.5) as (bus, _):

        def open_sub() -> DurableSubscription:
            return bus.subscribe("m.>", durable=name, buffer_size=4)

        sub = open_sub()
        await sub.open()
        held: DurableMessage | None = None

        async def take(s: DurableSubscription) -> DurableMessage:
            nonlocal held
            if held is not None:
                model.acked.add(held.event.id)  # taking the next acknowledges it
            msg = await s.receive()
            model.seen(msg)
            held = msg
            return msg

        async def publish(publisher: int) -> None:
            event = Event(payload=b"%d" % publisher)
            await bus.publish(f"m.p{publisher}", event)
            model.published[publisher].append(event.id)
            model.publisher_of[event.id] = publisher

        for op, arg in ops:
            match op:
                case "publish":
                    await publish(arg)
                case "take" if len(model.acked) + (held is not None) < len(model.publisher_of):
                    await take(sub)
                case "ack" if held is not None:
                    await sub.ack(held)
                    model.acked.add(held.event.id)
                    held = None
                case "nak" if held is not None:
                    await sub.nak(held)
                    held = None
                case "crash":
                    # The consumer dies: what it held, and what it had fetched, unsettled.
                    await sub.aclose()
                    held = None
                    sub = open_sub()
                    await sub.open()
                case _:
                    pass
        # Drain: a consumer takes until everything accepted is acknowledged. What it holds is
        # acknowledged first: were it the last one, taking "the next" would wait forever.
        accepted = set(model.publisher_of)
        if held is not None:
            await sub.ack(held)
            model.acked.add(held.event.id)
            held = None
        while model.acked != accepted:
            msg = await take(sub)
            if model.acked | {msg.event.id} == accepted:
                await sub.ack(msg)
                model.acked.add(msg.event.id)
                held = None
        await sub.aclose()
    assert model.acked == accepted  # nothing lost
    for publisher in (0, 1):
        firsts = model.first_order[publisher]
        order = model.published[publisher]
        assert firsts == sorted(firsts, key=order.index)  # first deliveries in publish order
    for eid, attempts in model.attempts.items():
        assert attempts == sorted(set(attempts)), (eid, attempts)  # counted up, never repeated


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_op, min_size=1, max_size=25))
@example(ops=[("publish", 0), ("take", 0)])  # the drain holds the last event: ack it, not wait
async def test_publish_take_ack_crash_interleavings(ops: list[tuple[str, int]]) -> None:
    with anyio.fail_after(60), TemporaryDirectory() as tmp:
        await _run(ops, Path(tmp))
