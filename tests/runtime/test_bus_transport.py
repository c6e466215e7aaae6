"""The transport seam: two EventBus instances linked as two processes would be."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

import anyio
import anyio.lowlevel
import msgspec
import pytest
from anyio.abc import TaskStatus

from loom.runtime import BusClosed, Event, EventBus, QoS, Subscription, WouldBlock, pattern_matches
from loom.runtime.lowlevel import Inbound, InterestGate, Transport

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Event)


class Network:
    """What connects the 'processes': every transport end that joined it."""

    def __init__(self) -> None:
        self.ends: list[MemoryTransport] = []


class MemoryTransport:
    """One process's end of an in-memory network, implementing :class:`Transport`.

    Events cross as bytes (msgpack), as they would between processes, and reach only the ends
    whose local subscriptions hold a matching pattern. Like NATS with ``no_echo``, an end never
    hands its own publishes back to its own bus.
    """

    def __init__(self, network: Network) -> None:
        self.network = network
        network.ends.append(self)
        self.calls: list[tuple[str, str, QoS]] = []
        self.interest: set[tuple[str, QoS]] = set()
        self.sent: list[str] = []
        self.running = False
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, bytes]](16)

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        async with self._send, self._receive:  # closed when the bus cancels us
            self.running = True
            task_status.started()
            try:
                async for topic, data in self._receive:
                    await inbound.deliver_inbound(topic, _decoder.decode(data))
            finally:
                self.running = False

    async def publish(self, topic: str, event: Event) -> None:
        self.sent.append(topic)
        data = _encoder.encode(event)
        for end in self.network.ends:
            if end is self or not any(pattern_matches(p, topic) for p, _ in end.interest):
                continue
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await end._send.send((topic, data))  # unless that process has gone away

    def publish_nowait(self, topic: str, event: Event) -> None:
        # Every end's queue would have to take it at once, or none: simpler to never try.
        raise WouldBlock("an in-memory publish may wait for a slow end")

    def add_interest(self, pattern: str, qos: QoS) -> None:
        assert (pattern, qos) not in self.interest, "interest added twice"
        self.interest.add((pattern, qos))
        self.calls.append(("add", pattern, qos))

    def remove_interest(self, pattern: str, qos: QoS) -> None:
        assert (pattern, qos) in self.interest, "interest removed that was never added"
        self.interest.remove((pattern, qos))
        self.calls.append(("remove", pattern, qos))


def _as_transport(t: MemoryTransport) -> Transport:
    return t  # mypy checks here that MemoryTransport satisfies the protocol


def ev(n: int) -> Event:
    return Event(type="t", payload=str(n).encode())


async def wait_until(cond: Callable[[], bool]) -> None:
    with anyio.fail_after(2):
        while not cond():
            await anyio.lowlevel.checkpoint()


async def receive_until(sub: Subscription, last: bytes) -> list[bytes]:
    """Every payload up to and including ``last``, then proof that nothing else is queued."""
    got: list[bytes] = []
    with anyio.fail_after(2):
        while not got or got[-1] != last:
            got.append((await sub.receive()).event.payload)
    with pytest.raises(WouldBlock):
        sub.receive_nowait()
    return got


async def test_an_event_reaches_the_remote_and_the_local_subscriber_exactly_once() -> None:
    network = Network()
    ta, tb = MemoryTransport(network), MemoryTransport(network)
    async with EventBus(transport=ta) as a, EventBus(transport=tb) as b:
        local = a.subscribe("orders.>")
        remote = b.subscribe("orders.>")
        other = b.subscribe("invoices.>")  # B has no interest in what A publishes below
        published = [ev(i) for i in range(20)]
        for event in published:
            await a.publish("orders.eu", event)
        await a.publish("orders.end", Event(payload=b"end"))
        expected = [e.payload for e in published] + [b"end"]
        assert await receive_until(remote, b"end") == expected
        assert await receive_until(local, b"end") == expected
        # What crossed is equal to what was published, field for field (not the same object).
        assert other.statistics().matched == 0
        assert tb.sent == []  # B delivered inbound events locally and did not send them back
        assert ta.sent == ["orders.eu"] * 20 + ["orders.end"]
        assert b.statistics().published == 21


async def test_events_cross_in_both_directions_without_echo() -> None:
    network = Network()
    ta, tb = MemoryTransport(network), MemoryTransport(network)
    async with EventBus(transport=ta) as a, EventBus(transport=tb) as b:
        on_a = a.subscribe("chat.*")
        on_b = b.subscribe("chat.*")
        sent_a = Event(type="hello", source="a", payload=b"from-a")
        sent_b = Event(type="hello", source="b", payload=b"from-b")
        await a.publish("chat.room", sent_a)
        await b.publish("chat.room", sent_b)
        await a.publish("chat.room", Event(payload=b"end-a"))
        await b.publish("chat.room", Event(payload=b"end-b"))
        got_a: list[Event] = []
        got_b: list[Event] = []
        with anyio.fail_after(2):
            while len(got_a) < 4:
                got_a.append((await on_a.receive()).event)
            while len(got_b) < 4:
                got_b.append((await on_b.receive()).event)
        for got in (got_a, got_b):
            assert sorted(e.payload for e in got) == [b"end-a", b"end-b", b"from-a", b"from-b"]
        assert got_b[[e.payload for e in got_b].index(b"from-a")] == sent_a
        assert got_a[[e.payload for e in got_a].index(b"from-b")] == sent_b
        with pytest.raises(WouldBlock):
            on_a.receive_nowait()
        with pytest.raises(WouldBlock):
            on_b.receive_nowait()


async def test_interest_is_declared_once_per_pattern_and_tier() -> None:
    transport = MemoryTransport(Network())
    async with EventBus(transport=_as_transport(transport)) as bus:
        first = bus.subscribe("a.*")
        second = bus.subscribe("a.*")
        realtime = bus.subscribe("a.*", qos=QoS.REALTIME)
        other = bus.subscribe("b.>", qos=QoS.BACKGROUND)
        assert transport.calls == [
            ("add", "a.*", QoS.BATCHED),
            ("add", "a.*", QoS.REALTIME),
            ("add", "b.>", QoS.BACKGROUND),
        ]
        first.close()
        assert len(transport.calls) == 3  # `second` still holds a.* at BATCHED
        second.close()
        realtime.close()
        other.close()
        assert transport.calls[3:] == [
            ("remove", "a.*", QoS.BATCHED),
            ("remove", "a.*", QoS.REALTIME),
            ("remove", "b.>", QoS.BACKGROUND),
        ]
        again = bus.subscribe("a.*")
        assert transport.calls[-1] == ("add", "a.*", QoS.BATCHED)
        again.close()
        assert transport.interest == set()


async def test_the_transport_task_does_not_outlive_the_bus(anyio_backend: str) -> None:
    from tests.runtime.test_bus_lifecycle import running_tasks

    before = running_tasks(anyio_backend)
    transport = MemoryTransport(Network())
    async with EventBus(transport=transport) as bus:
        assert running_tasks(anyio_backend) != before  # the transport's task
        async with bus.subscribe("a") as sub:
            await bus.publish("a", ev(1))
            await sub.receive()
    assert not transport.running
    assert running_tasks(anyio_backend) == before


class _Unreachable(MemoryTransport):
    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        self._send.close()
        self._receive.close()
        raise ConnectionRefusedError("no server")


async def test_a_transport_that_cannot_start_fails_the_bus_entry() -> None:
    bus = EventBus(transport=_Unreachable(Network()))
    with pytest.raises(ConnectionRefusedError):
        await bus.__aenter__()
    with pytest.raises(BusClosed):
        bus.subscribe("a")
    with pytest.raises(BusClosed):
        await bus.__aenter__()


async def test_inbound_delivery_waits_for_a_full_lossless_subscriber() -> None:
    transport = MemoryTransport(Network())
    async with EventBus(transport=transport) as bus, bus.subscribe("a", buffer_size=1) as sub:
        await bus.deliver_inbound("a", ev(0))
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.deliver_inbound, "a", ev(1))
            await wait_until(lambda: sub.statistics().waiting_publishers == 1)
            assert sub.receive_nowait().event.payload == b"0"
        assert sub.receive_nowait().event.payload == b"1"
        assert transport.sent == []  # inbound events are for local subscribers only
    with pytest.raises(BusClosed):
        await bus.deliver_inbound("a", ev(2))


async def test_publish_nowait_with_a_transport_refuses_and_delivers_to_nobody() -> None:
    transport = MemoryTransport(Network())
    async with EventBus(transport=transport) as bus, bus.subscribe("a") as sub:
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a", ev(0))
        with pytest.raises(WouldBlock):
            sub.receive_nowait()
        assert transport.sent == []
        assert bus.statistics().published == 0


class Gate:
    """A transport whose non-blocking publish takes events while ``open``."""

    def __init__(self) -> None:
        self.open = True
        self.sent: list[str] = []

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def publish(self, topic: str, event: Event) -> None:
        self.sent.append(topic)

    def publish_nowait(self, topic: str, event: Event) -> None:
        if not self.open:
            raise WouldBlock("closed gate")
        self.sent.append(topic)

    def add_interest(self, pattern: str, qos: QoS) -> None:
        pass

    def remove_interest(self, pattern: str, qos: QoS) -> None:
        pass


async def test_publish_nowait_goes_out_and_in_or_nowhere() -> None:
    gate = Gate()
    transport: Transport = gate  # mypy checks that Gate satisfies the protocol
    async with EventBus(transport=transport) as bus, bus.subscribe("a") as sub:
        assert bus.publish_nowait("a", ev(0)) == 1  # the local subscriber, and out
        assert bus.publish_nowait("b", ev(1)) == 0  # nobody here; out all the same
        assert gate.sent == ["a", "b"]
        assert sub.receive_nowait().event.payload == b"0"
        gate.open = False
        with pytest.raises(WouldBlock):
            bus.publish_nowait("a", ev(2))
        with pytest.raises(WouldBlock):
            sub.receive_nowait()  # refused out, so not routed here either
        assert gate.sent == ["a", "b"]
        assert bus.statistics().published == 2


async def test_leaving_on_an_error_stops_the_transport_and_keeps_the_error() -> None:
    transport = MemoryTransport(Network())
    bus = EventBus(transport=transport, drain_grace=60)

    async def fail_inside() -> None:
        async with bus:
            bus.subscribe("a")
            await bus.publish("a", ev(0))
            raise KeyError("boom")

    with anyio.fail_after(5), pytest.raises(KeyError, match="boom"):
        await fail_inside()
    assert not transport.running
    assert bus.statistics().dropped.closed == 1


async def test_leaving_by_cancellation_stops_the_transport() -> None:
    transport = MemoryTransport(Network())
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        async with EventBus(transport=transport, drain_grace=60):
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not transport.running


async def test_a_bus_closed_from_another_task_stops_accepting_at_once() -> None:
    transport = MemoryTransport(Network())
    async with EventBus(transport=transport) as bus:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.aclose)
            await wait_until(lambda: bus.closed)
        with pytest.raises(BusClosed):
            await bus.publish("a", ev(0))
    assert not transport.running


class GatedTransport(MemoryTransport):
    """A transport that also says which topics it would carry (``InterestGate``)."""

    def __init__(self, network: Network) -> None:
        super().__init__(network)
        self.wanted: set[str] = set()
        self.asked: list[str] = []
        self.listeners: list[Callable[[], None]] = []

    def wants(self, topic: str) -> bool:
        self.asked.append(topic)
        return topic in self.wanted

    def on_interest_change(self, changed: Callable[[], None]) -> None:
        self.listeners.append(changed)

    def want(self, topic: str) -> None:
        """Interest in ``topic`` came from elsewhere."""
        self.wanted.add(topic)
        for changed in self.listeners:
            changed()


async def test_a_gated_transport_is_not_called_for_topics_it_would_not_carry() -> None:
    gated = GatedTransport(Network())
    assert isinstance(gated, InterestGate)
    async with EventBus(transport=gated) as bus:
        for _ in range(100):
            await bus.publish("local.x", ev(1))
            bus.publish_nowait("local.x", ev(1))
        assert gated.sent == []
        assert gated.asked == ["local.x"]  # asked once, then cached with the route
        gated.want("local.x")  # interest came elsewhere: asked again, and now it carries
        await bus.publish("local.x", ev(2))
        assert gated.sent == ["local.x"]
        assert gated.asked == ["local.x", "local.x"]


async def test_a_publish_that_waited_for_room_asks_the_gate_afresh() -> None:
    """Interest that came from elsewhere while a publish waited for a full local subscriber
    applies to that publish: the verdict cached with the route before the wait is stale."""
    gated = GatedTransport(Network())
    async with EventBus(transport=gated) as bus, bus.subscribe("local.x", buffer_size=1) as sub:
        await bus.publish("local.x", ev(1))  # the buffer is full now
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus.publish, "local.x", ev(2))
                await wait_until(lambda: sub.statistics().waiting_publishers == 1)
                assert gated.sent == []
                gated.want("local.x")
                await sub.receive()
        assert gated.sent == ["local.x"]


async def test_deliver_inbound_nowait_is_all_or_nothing() -> None:
    """The transport's per-event fast path: delivered at once where nobody here is full;
    refused (delivered to nobody, not even the subscribers with room) where one lossless
    subscriber is, so the awaited deliver_inbound that follows delivers it exactly once."""
    async with (
        EventBus() as bus,
        bus.subscribe("a.>", buffer_size=1) as full,
        bus.subscribe("a.>", buffer_size=8) as roomy,
        bus.subscribe("a.>", qos=QoS.REALTIME, buffer_size=1) as lossy,
    ):
        assert bus.deliver_inbound_nowait("a.x", ev(0)) == 3
        with pytest.raises(WouldBlock):
            bus.deliver_inbound_nowait("a.x", ev(1))
        assert roomy.statistics().queued == 1
        assert lossy.statistics().queued == 1
        assert full.receive_nowait().event.payload == b"0"
        assert bus.deliver_inbound_nowait("a.x", ev(1)) == 3  # the Realtime one drops it
        assert [roomy.receive_nowait().event.payload for _ in range(2)] == [b"0", b"1"]
        assert lossy.statistics().dropped.overflow == 1
        assert bus.deliver_inbound_nowait("b.y", ev(2)) == 0  # nobody here wants it
