"""``STREAM_FEATURE_PACKED_EVENTS`` on a live server: granted with batching only, packed
publishes numbered and acked as protobuf ones are, packed deliveries in bus order, other
streams unchanged, and a pack that does not read ends its stream."""

from __future__ import annotations

import math

import anyio
import grpc
import grpc.aio
import msgspec
import pytest

from loom.bridge._generated import bridge_pb2
from loom.bridge._packed import checked, pack, pack_event, unpack_events
from loom.runtime import Envelope, Event

from ._server_harness import OldAgent, channel, event, serving
from .test_server_features import ACK, BATCH, acks_until, hello

pytestmark = pytest.mark.anyio

PACKED = bridge_pb2.STREAM_FEATURE_PACKED_EVENTS


def packed_batch(
    entries: list[bytes], *publishes: bridge_pb2.Publish, ack: bool = False
) -> bridge_pb2.ClientEvent:
    frame = bridge_pb2.ClientEvent()
    frame.publish_batch.publishes.extend(publishes)
    frame.publish_batch.packed = pack(entries)
    frame.publish_batch.packed_count = len(entries)
    frame.publish_batch.ack_requested = ack
    return frame


async def test_granted_only_with_batching() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "a").connect()
        assert list((await hello(agent, PACKED, ACK)).features) == [ACK]
        other = await OldAgent(ch, "b").connect()
        assert set((await hello(other, PACKED, BATCH)).features) == {PACKED, BATCH}


async def test_packed_publishes_are_numbered_after_the_protobuf_ones() -> None:
    async with serving() as s, channel(s.target) as ch, s.bus.subscribe("p.>") as seen:
        agent = await OldAgent(ch, "pub").connect()
        await hello(agent, BATCH, PACKED, ACK, window=6)
        entries = [
            pack_event("p.one", Event(type="one")),
            pack_event("bad..topic", Event(type="bad")),
            # A peer may send what our packer refuses: the reader refuses it again.
            msgspec.msgpack.encode(("p.nan", Event(type="nan", confidence=math.nan))),
            pack_event("p.two", Event(type="two", envelope=Envelope(sender="pub"))),
            pack_event("p.three", Event(type="three")),
            pack_event("p.four", Event(type="four")),  # beyond the window of 6
        ]
        await agent.send(
            packed_batch(entries, bridge_pb2.Publish(topic="p.zero", event=event("zero")))
        )
        credit, rejections = await acks_until(agent, 7)
        assert [(r.sequence, r.code) for r in rejections] == [
            (3, "INVALID_ARGUMENT"),
            (4, "INVALID_ARGUMENT"),
            (7, "RESOURCE_EXHAUSTED"),
        ]
        assert credit == 6
        got = []
        with anyio.fail_after(5):
            for _ in range(4):
                got.append(await seen.receive())
        assert [(d.topic, d.event.type) for d in got] == [
            ("p.zero", "zero"),
            ("p.one", "one"),
            ("p.two", "two"),
            ("p.three", "three"),
        ]
        # The server stamps this stream's agent as the sender where the event names none.
        assert {d.event.envelope.sender for d in got} == {"pub"}


async def read_until_it_ends(agent: OldAgent) -> None:
    assert agent.call is not None
    while True:
        await agent.call.read()  # (an ack may come first)


async def test_a_pack_that_does_not_read_ends_the_stream() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "pub").connect()
        await hello(agent, BATCH, PACKED, ACK)
        frame = packed_batch([pack_event("p.x", Event())])
        frame.publish_batch.packed_count = 3  # claims more than it holds
        await agent.send(frame)
        with anyio.fail_after(5), pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_until_it_ends(agent)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "publish_batch" in (caught.value.details() or "")


async def test_deliveries_go_packed_in_bus_order_and_only_when_negotiated() -> None:
    async with serving() as s, channel(s.target) as ch:
        packed = await OldAgent(ch, "packed").connect(topics=["burst.>"])
        batched = await OldAgent(ch, "batched").connect(topics=["burst.>"])
        await hello(packed, BATCH, PACKED, max_batch=10)
        await hello(batched, BATCH, max_batch=10)
        n = 500
        sent = [
            Event(type="b", payload=str(i).encode(), envelope=Envelope(sender="s", hop=i % 3))
            for i in range(n)
        ]
        for e in sent:
            await s.bus.publish("burst.x", e)
        got: list[Event] = []
        sizes: list[int] = []
        while len(got) < n:
            batch = (await packed.next("delivery_batch")).delivery_batch
            assert not batch.deliveries
            entries = unpack_events(batch.packed, batch.packed_count)
            sizes.append(len(entries))
            assert {t for t, _ in entries} == {"burst.x"}
            got.extend(checked(e) for _, e in entries)
        assert got == sent
        assert 1 < max(sizes) <= 10
        plain: list[bytes] = []
        while len(plain) < n:  # a stream without the feature: protobuf entries as before
            frame = await batched.read()
            if frame.WhichOneof("msg") == "delivery":
                plain.append(frame.delivery.event.payload)
            else:
                assert not frame.delivery_batch.packed_count
                plain.extend(d.event.payload for d in frame.delivery_batch.deliveries)
        assert plain == [e.payload for e in sent]
