"""Issue 17, item 7 on the wire: a remote agent's supervision (``STREAM_FEATURE_SUPERVISION``).

Its reports become the server's own lifecycle events (restarts counted in the directory), its
dead letters the server's dead letters in its name, and a final report releases it: its
subscriptions leave the bus (what they held is dead-lettered) and ``released`` follows."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from loom.bridge._generated import bridge_pb2, event_pb2
from loom.runtime import (
    DEAD_LETTER_PREFIX,
    LIFECYCLE_PREFIX,
    AgentStatus,
    Event,
    LifecycleEvent,
)

from ._server_harness import OldAgent, channel, event, serving

pytestmark = pytest.mark.anyio

SUPERVISION = bridge_pb2.STREAM_FEATURE_SUPERVISION


def report(status: str, reason: str = "", restarts: int = 0) -> bridge_pb2.ClientEvent:
    msg = bridge_pb2.AgentReport(status=status, reason=reason, restarts=restarts)
    return bridge_pb2.ClientEvent(report=msg)


async def test_reports_dead_letters_and_the_release() -> None:
    async with serving() as s, channel(s.target) as ch:
        life = s.bus.subscribe(f"{LIFECYCLE_PREFIX}.a")
        letters = s.bus.subscribe(f"{DEAD_LETTER_PREFIX}.>")
        agent = await OldAgent(ch, "a").connect(topics=["x"])
        hello = bridge_pb2.StreamHello(features=[SUPERVISION])
        await agent.send(bridge_pb2.ClientEvent(hello=hello))
        assert list((await agent.next("welcome")).welcome.features) == [SUPERVISION]
        with anyio.fail_after(5):
            assert (await life.receive()).event.type == "agent.running"  # connected

            # A restart in the agent's process: published as the server's own, counted.
            await agent.send(report("stopping", "boom", restarts=1))
            got = (await life.receive()).event
            assert got.type == "agent.stopping"
            record = msgspec.json.decode(got.payload, type=LifecycleEvent)
            assert (record.reason, record.restarts) == ("boom", 1)
            assert s.runtime.status("a") is AgentStatus.STOPPING
            await agent.send(report("running", restarts=1))
            assert (await life.receive()).event.type == "agent.running"

            # A dead letter: in this agent's name, whoever sent the event.
            forged = event("n", b"7", envelope=event_pb2.Envelope(sender="b"))
            letter = bridge_pb2.DeadLetter(
                topic="x", event=forged, reason="handler_error", error="E: no", attempts=1
            )
            await agent.send(bridge_pb2.ClientEvent(dead_letter=letter))
            dead = await letters.receive()
            assert dead.topic == f"{DEAD_LETTER_PREFIX}.a"
            assert dead.event.payload == b"7"
            assert dead.event.metadata["dead_letter.agent"] == "a"
            assert dead.event.metadata["dead_letter.reason"] == "handler_error"
            assert dead.event.metadata["dead_letter.topic"] == "x"

            # What no agent reports is refused, and changes nothing.
            await agent.send(report("disconnected"))
            assert "not a state" in (await agent.next("err")).err.message
            await agent.send(bridge_pb2.ClientEvent(dead_letter=bridge_pb2.DeadLetter()))
            assert "reason" in (await agent.next("err")).err.message

            # The final report: failed, released, off the bus.
            await agent.send(report("failed", "gave up", restarts=1))
            assert (await life.receive()).event.type == "agent.failed"
            released = await agent.next("released")
            assert released.released.dead_lettered >= 0
            assert s.runtime.status("a") is AgentStatus.FAILED
            assert await s.bus.publish("x", Event(type="late")) == 0
            (info,) = [i for i in s.runtime.agents() if i.id == "a"]
            assert info.restarts == 1
        await agent.close()


async def test_a_release_dead_letters_what_the_servers_side_still_holds() -> None:
    async with serving() as s, channel(s.target) as ch:
        letters = s.bus.subscribe(f"{DEAD_LETTER_PREFIX}.a")
        agent = await OldAgent(ch, "a").connect()
        hello = bridge_pb2.StreamHello(features=[SUPERVISION])
        await agent.send(bridge_pb2.ClientEvent(hello=hello))
        await agent.next("welcome")
        # A subscription of the agent that no pump writes out (the bridge makes one per stream
        # subscription; this one is the runtime's own): what it holds stays on the server.
        remote = s.server.hub.sessions["a"].remote
        extra = remote.subscribe("held.>", buffer_size=8)
        for i in range(3):
            await s.bus.publish("held.x", Event(type="h", payload=str(i).encode()))
        with anyio.fail_after(5):
            await agent.send(report("failed", "gave up"))
            released = await agent.next("released")
            assert released.released.dead_lettered == 3
            got = [(await letters.receive()).event for _ in range(3)]
        assert [e.payload for e in got] == [b"0", b"1", b"2"]
        assert {e.metadata["dead_letter.reason"] for e in got} == {"agent_failed"}
        assert extra.closed
        await agent.close()
