"""``ClientTransport``, a remote agent's connection as the transport of its bus: what it
carries, what it keeps local, the echoes it drops, and what the stream delivers before the
agent's mailbox exists (held, in order, not lost)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from loom.bridge import AgentRegistration, ClientTransport, ConnectionStatus
from loom.bridge._client_transport import _HeldInbound
from loom.runtime import Event, EventBus, QoS, WouldBlock
from loom.runtime.lowlevel import event_size, router_for

from ._client_support import FAST, Hosting, hosting
from ._server_harness import wait_until

pytestmark = pytest.mark.anyio


def _transport(host: Hosting, agent_id: str, *topics: str) -> ClientTransport:
    registration = AgentRegistration(agent_id=agent_id, topics=topics)
    return ClientTransport(host.address, registration, options=FAST)


def _patterns(host: Hosting, agent_id: str) -> tuple[str, ...]:
    info = host.runtime.directory.get(agent_id)
    return () if info is None else info.patterns


async def test_publishes_reach_both_sides_once_and_records_stay_local() -> None:
    async with hosting() as host:
        transport = _transport(host, "t1", "chat.*")
        async with (
            host.bus.subscribe("chat.*") as far,
            host.bus.subscribe("loom.lifecycle.t1") as records,
            EventBus(transport=transport) as bus,
            bus.subscribe("chat.*") as near,
        ):
            await transport.open()
            assert "agent.t1.replies.>" in _patterns(host, "t1")  # every inbox of the agent
            # Stays in this process: the runtime's records and the agent's own mailbox.
            await bus.publish("loom.lifecycle.t1", Event(type="local.only"))
            await bus.publish("agent.t1.replies", Event(type="local.only"))
            await bus.publish("chat.a", Event(payload=b"mine"))
            with anyio.fail_after(5):
                assert (await far.receive()).event.payload == b"mine"
            # The server hands "mine" back (t1 subscribes chat.*), ahead of "theirs": dropped.
            await host.bus.publish("chat.b", Event(payload=b"theirs"))
            with anyio.fail_after(5):
                got = [(await near.receive()).event.payload for _ in range(2)]
            assert got == [b"mine", b"theirs"]
            while True:  # what the server's records got: never our local ones
                try:
                    assert records.receive_nowait().event.type != "local.only"
                except WouldBlock:
                    break


async def test_local_interest_becomes_a_stream_subscription_unless_covered() -> None:
    async with hosting() as host:
        transport = _transport(host, "t2")
        async with EventBus(transport=transport) as bus:
            await transport.open()
            router_for(bus)  # agent.*.replies.rpc: everyone's replies, never asked for
            async with bus.subscribe("loom.deadletter.t2"), bus.subscribe("agent.t2.replies.x"):
                async with bus.subscribe("other.*", qos=QoS.BACKGROUND) as other:
                    await wait_until(lambda: "other.*" in _patterns(host, "t2"))
                    await host.bus.publish("other.x", Event(payload=b"in"))
                    with anyio.fail_after(5):
                        assert (await other.receive()).event.payload == b"in"
                await wait_until(lambda: "other.*" not in _patterns(host, "t2"))
                assert set(_patterns(host, "t2")) == {"agent.t2.replies", "agent.t2.replies.>"}


async def test_a_realtime_publish_without_a_connection_is_refused_everywhere_and_counted() -> None:
    async with hosting() as host:
        transport = _transport(host, "t3")
        async with EventBus(transport=transport) as bus, bus.subscribe("x.*") as near:
            await transport.open()
            assert bus.publish_nowait("x.a", Event()) == 1
            await host.stop()
            await wait_until(lambda: transport.client.status is not ConnectionStatus.CONNECTED)
            with pytest.raises(WouldBlock):
                bus.publish_nowait("x.b", Event())
            assert transport.client.statistics().dropped == 1
            assert near.receive_nowait().topic == "x.a"
            with pytest.raises(WouldBlock):
                near.receive_nowait()  # refused out, so not routed here either


class _Credits:
    """What ``BridgeClient.hold_credit`` does, counted: a credit owed per held delivery,
    given back when the holder calls it."""

    def __init__(self) -> None:
        self.held = 0
        self.given = 0

    def hold(self) -> Callable[[], None]:
        self.held += 1

        def give() -> None:
            self.given += 1

        return give


async def test_deliveries_before_the_mailbox_are_held_in_order_then_handed_over() -> None:
    credits = _Credits()
    async with EventBus() as bus:
        held = _HeldInbound(bus, 3, 1 << 20, credits.hold)
        for i in range(3):  # nobody subscribes yet: a bus would route these to nobody
            await held.deliver_inbound("in.x", Event(payload=str(i).encode()))
        late: list[bytes] = []

        async def reader_beyond_the_limit() -> None:
            # The stream's reader: the fourth waits for the opening, then follows the three;
            # the fifth goes straight through.
            await held.deliver_inbound("in.x", Event(payload=b"3"))
            late.append(b"3")
            await held.deliver_inbound("in.x", Event(payload=b"4"))

        async with bus.subscribe("in.*") as mailbox, anyio.create_task_group() as tg:
            tg.start_soon(reader_beyond_the_limit)
            await anyio.wait_all_tasks_blocked()
            assert late == []  # waiting: nothing is dropped or reordered past the limit
            # Held is not taken: nothing is credited to the server until the hand-over.
            assert (credits.held, credits.given) == (3, 0)
            assert held.queued() == (3, 3 * event_size(Event(payload=b"0")))
            await held.open()
            assert (credits.held, credits.given) == (3, 3)
            with anyio.fail_after(5):
                got = [(await mailbox.receive()).event.payload for _ in range(5)]
        assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_deliveries_before_the_mailbox_are_held_up_to_the_byte_bound() -> None:
    credits = _Credits()
    size = event_size(Event(payload=b"x" * 1000))
    async with EventBus() as bus:
        held = _HeldInbound(bus, 100, 3 * size, credits.hold)
        for _ in range(3):
            await held.deliver_inbound("in.x", Event(payload=b"x" * 1000))
        assert held.queued() == (3, 3 * size)
        async with bus.subscribe("in.*") as mailbox, anyio.create_task_group() as tg:
            # The fourth does not fit in bytes (there are places): the reader waits.
            tg.start_soon(held.deliver_inbound, "in.x", Event(payload=b"y" * 1000))
            await anyio.wait_all_tasks_blocked()
            assert held.queued() == (3, 3 * size)
            await held.open()
            with anyio.fail_after(5):
                got = [(await mailbox.receive()).event.payload[:1] for _ in range(4)]
        assert got == [b"x", b"x", b"x", b"y"]
        assert (credits.held, credits.given) == (3, 3)


async def test_a_held_delivery_the_bus_refuses_is_dropped_alone() -> None:
    async with EventBus() as bus, bus.subscribe(">") as mailbox:
        held = _HeldInbound(bus, 8, 1 << 20, _Credits().hold)
        await held.deliver_inbound("bad..topic", Event(type="refused"))
        await held.deliver_inbound("fine", Event(type="kept"))
        await held.open()
        with anyio.fail_after(5):
            assert (await mailbox.receive()).event.type == "kept"
