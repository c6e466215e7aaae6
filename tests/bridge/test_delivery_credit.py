"""Deliveries to a remote agent under end-to-end credit, and the agent's tier on the server.

A real server on 127.0.0.1:0, a real remote ``Agent`` process (``Agent.run``) that handles
slowly, killed with SIGKILL where the test says so, and a fast publisher on the server's bus.
What the agent handled is read from a file it rewrites before each event.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc.aio
import pytest
from anyio.abc import Process

from loom.bridge import AdminClient, ClientOptions, Limits
from loom.bridge._generated import bridge_pb2, bus_pb2, bus_pb2_grpc, event_pb2
from loom.runtime import Event, QoS, Subscription

from ._client_support import Hosting, hosting
from ._server_harness import OldAgent, channel, serving, wait_until

pytestmark = pytest.mark.anyio

MAILBOX = 100  # the agent process's own mailbox

SLOW_AGENT = """
import os
import sys

import anyio

from loom import Agent, QoS

count_file, delay, tier = sys.argv[1], float(sys.argv[2]), QoS[sys.argv[3]]
fd = os.open(count_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
handled = 0


async def on_event(ctx, topic, event) -> None:
    global handled
    handled += 1
    os.pwrite(fd, f"{handled:>12}".encode(), 0)  # survives a SIGKILL: no buffer of ours
    await anyio.sleep(delay)


agent = Agent("slow", topics=["flood.>"], qos=tier, mailbox_size=MAILBOX, on_event=on_event)
agent.run()
""".replace("MAILBOX", str(MAILBOX))


def _handled(count_file: Path) -> int:
    text = count_file.read_text().strip() if count_file.exists() else ""
    return int(text) if text else 0


@asynccontextmanager
async def slow_agent(
    tmp_path: Path, host: Hosting, *, delay: float, qos: QoS
) -> AsyncIterator[tuple[Process, Path, Subscription]]:
    """The slow agent's process, its count file, and its mailbox subscription on the server
    (held on to: a closed subscription leaves the bus's statistics but keeps its counters)."""
    script = tmp_path / "slow_agent.py"
    script.write_text(SLOW_AGENT)
    count_file = tmp_path / "handled"
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    process = await anyio.open_process(
        [sys.executable, str(script), str(count_file), str(delay), qos.name], env=env
    )
    try:
        assert host.server is not None
        sessions = host.server.hub.sessions
        await wait_until(lambda: "slow" in sessions and sessions["slow"]._credited, timeout=20)
        yield process, count_file, sessions["slow"].remote.mailbox
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def test_a_slow_remote_agent_holds_back_a_batched_publisher_and_a_kill_loses_nothing_unseen(
    tmp_path: Path,
) -> None:
    total = 20_000
    published = 0
    async with (
        hosting() as host,
        slow_agent(tmp_path, host, delay=0.005, qos=QoS.BATCHED) as (
            process,
            count_file,
            mailbox,
        ),
    ):
        assert host.server is not None
        window = ClientOptions().inbound_buffer  # the delivery window the SDK asks for
        assert host.server.hub.sessions["slow"]._dwindow == window
        bus = host.bus

        async def publish() -> None:
            nonlocal published
            for i in range(total):
                await bus.publish("flood.x", Event(type="n", payload=b"%d" % i))
                published += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                # Backpressure, as from a slow subscriber in process: the publisher waits on
                # the agent's full subscription; no more than the window is in flight.
                await wait_until(lambda: mailbox.statistics().waiting_publishers > 0, timeout=20)
                held_at = published
                stats = mailbox.statistics()
                assert stats.queued == stats.capacity
                assert 0 < stats.in_flight <= window
                assert held_at < total - stats.capacity - window
                await anyio.sleep(0.5)
                # Still held half a second later: it moves at the agent's pace (~200/s here).
                assert published < held_at + 500
                assert mailbox.statistics().in_flight <= window

                process.kill()  # SIGKILL: no goodbye
                await process.wait()
                sessions = host.server.hub.sessions
                await wait_until(lambda: "slow" not in sessions, timeout=20)
                # Its subscription is gone: the publisher finishes (the rest is unrouted).
        handled = _handled(count_file)
        stats = mailbox.statistics()
        topic = next(t for t in bus.statistics().topics if t.topic == "flood.x")
    assert published == total == topic.published
    assert stats.in_flight == 0
    assert stats.queued == 0
    assert stats.dropped.overflow == 0
    # Every event is accounted for: taken by the agent, dropped when its stream ended (what
    # was queued for it or in flight), or published after it was gone.
    assert stats.matched == stats.delivered + stats.dropped.closed
    accounted = stats.delivered + stats.dropped.closed + topic.unrouted
    # (The one publish that was waiting for room when the subscription closed reached no
    # subscriber and was not unrouted either: the bus counts it in neither.)
    assert total - 1 <= accounted <= total
    assert topic.dropped.closed == stats.dropped.closed
    # ``delivered`` is what the agent's process took in: what it handled, plus at most what
    # its own mailbox held (and the event in its handler). Credit it had not sent yet when it
    # died (a few ms' worth) counts as dropped, never as delivered.
    assert stats.dropped.closed > 0
    assert handled - 50 <= stats.delivered <= handled + MAILBOX + 1, (handled, stats)


async def test_a_flooded_realtime_remote_agent_drops_on_the_server_and_the_statistics_show_it(
    tmp_path: Path,
) -> None:
    total = 5_000
    async with (
        hosting() as host,
        slow_agent(tmp_path, host, delay=0.001, qos=QoS.REALTIME) as (
            _process,
            count_file,
            mailbox,
        ),
    ):
        assert mailbox.qos is QoS.REALTIME  # the tier the agent asked for is the server's
        bus = host.bus
        with anyio.fail_after(10):
            for i in range(total):
                await bus.publish("flood.x", Event(type="n", payload=b"%d" % i))
        # It never held the publisher back; it handles what was not dropped, then is idle.
        await wait_until(
            lambda: (
                (s := mailbox.statistics()).queued == 0
                and s.in_flight == 0
                and _handled(count_file) == s.delivered
            ),
            timeout=30,
        )
        stats = mailbox.statistics()
        handled = _handled(count_file)
        # The drops are the server's, counted there, and nothing is lost unseen: every event
        # the server did not drop was handled by the agent (none dropped in its process).
        assert stats.matched == total
        assert stats.dropped.overflow > 0
        assert handled == stats.delivered == total - stats.dropped.overflow
        # What `loom topics` reads (EventBus.GetStats), with the in-flight figure.
        async with grpc.aio.insecure_channel(host.address) as channel:
            wire = await bus_pb2_grpc.EventBusStub(channel).GetStats(
                bus_pb2.GetStatsRequest(include_subscriptions=True, include_topics=True)
            )
        (sub,) = [s for s in wire.subscriptions if s.id == mailbox.id]
        assert sub.qos == event_pb2.QOS_REALTIME
        assert sub.dropped.overflow == stats.dropped.overflow
        assert sub.in_flight == 0
        (topic,) = [t for t in wire.topics if t.topic == "flood.x"]
        assert topic.dropped.overflow == stats.dropped.overflow


# ------------------------------------------------------------------ the wire rules, raw stubs


async def test_the_server_sends_no_more_than_the_credit_and_counts_in_flight_apart() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "credited")
        await agent.connect(topics=["c.>"])
        hello = bridge_pb2.StreamHello(
            features=[bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT], delivery_window=4
        )
        await agent.send(bridge_pb2.ClientEvent(hello=hello))
        welcome = (await agent.next("welcome")).welcome
        assert list(welcome.features) == [bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT]
        assert welcome.delivery_window == 4
        await agent.ping(2)  # the welcome is written: credit counts from here
        mailbox = s.server.hub.sessions["credited"].remote.mailbox
        for i in range(10):
            await s.bus.publish("c.x", Event(type="n", payload=b"%d" % i))
        got = [(await agent.next("delivery")).delivery.event.payload for _ in range(4)]
        assert got == [b"0", b"1", b"2", b"3"]
        await agent.ping(3)  # nothing more came before the pong: the window is spent
        stats = mailbox.statistics()
        assert (stats.in_flight, stats.delivered, stats.queued) == (4, 0, 6)
        credit = bridge_pb2.ClientEvent(delivery_credit=bridge_pb2.DeliveryCredit(count=3))
        await agent.send(credit)
        got = [(await agent.next("delivery")).delivery.event.payload for _ in range(3)]
        assert got == [b"4", b"5", b"6"]
        await agent.ping(4)
        stats = mailbox.statistics()
        assert (stats.in_flight, stats.delivered, stats.queued) == (4, 3, 3)
        # Credit for more than is in flight is refused, and grants nothing.
        over = bridge_pb2.ClientEvent(delivery_credit=bridge_pb2.DeliveryCredit(count=9))
        await agent.send(over)
        for _ in range(4):  # what the 4 it did settle allow (3 are queued)
            frame = await agent.read()
            if frame.WhichOneof("msg") == "err":
                break
        else:
            frame = await agent.next("err")
        assert frame.err.code == "INVALID_ARGUMENT"
        await wait_until(lambda: mailbox.statistics().in_flight == 3)
        await agent.close()
        await wait_until(lambda: "credited" not in s.server.hub.sessions)
        stats = mailbox.statistics()
        # The stream ended: the 3 in flight are dropped, reason closed, not delivered.
        assert (stats.in_flight, stats.delivered, stats.dropped.closed) == (0, 7, 3)


async def test_an_old_client_has_a_delivery_counted_once_it_is_written() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "old").connect(topics=["o.>"])
        mailbox = s.server.hub.sessions["old"].remote.mailbox
        for i in range(5):
            await s.bus.publish("o.x", Event(type="n", payload=b"%d" % i))
        for _ in range(5):
            await agent.next("delivery")
        await wait_until(lambda: mailbox.statistics().delivered == 5)
        assert mailbox.statistics().in_flight == 0
        await agent.close()


# ------------------------------------------------------------------ the byte window


async def test_the_byte_window_bounds_what_is_in_flight_and_an_oversize_delivery_goes_alone() -> (
    None
):
    async with serving(limits=Limits(delivery_window_bytes=50_000)) as s, channel(s.target) as ch:
        agent = OldAgent(ch, "bytes")
        await agent.connect(topics=["b.>"])
        hello = bridge_pb2.StreamHello(
            features=[bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT],
            delivery_window=100,
            delivery_window_bytes=10_000,
        )
        await agent.send(bridge_pb2.ClientEvent(hello=hello))
        welcome = (await agent.next("welcome")).welcome
        assert (welcome.delivery_window, welcome.delivery_window_bytes) == (100, 10_000)
        await agent.ping(2)  # the welcome is written: credit counts from here
        session = s.server.hub.sessions["bytes"]
        mailbox = session.remote.mailbox
        payload = b"x" * 3_000
        for i in range(6):
            await s.bus.publish("b.x", Event(type="n", payload=payload, metadata={"i": str(i)}))
        # Three fit in 10,000 bytes (each a little over 3,000 encoded); the count window
        # (100) would let all six go.
        got = [(await agent.next("delivery")).delivery for _ in range(3)]
        size = got[0].ByteSize()
        assert 3 * size <= 10_000 < 4 * size
        await agent.ping(3)  # nothing more came before the pong: the byte window is full
        stats = session.statistics()
        assert (stats.in_flight, stats.in_flight_bytes) == (3, 3 * size)
        assert stats.delivery_window_bytes == 10_000
        server = s.server.statistics()
        assert (server.in_flight, server.in_flight_bytes) == (3, 3 * size)
        async with AdminClient(s.target) as admin:  # what `loom status` shows
            status = await admin.status()
        assert (status.in_flight, status.in_flight_bytes) == (3, 3 * size)
        # The subscription counts one more in flight: the next, taken by its pump, which
        # waits with it for room (in memory, not on the wire).
        assert mailbox.statistics().in_flight == 4
        credit = bridge_pb2.ClientEvent(delivery_credit=bridge_pb2.DeliveryCredit(count=1))
        await agent.send(credit)  # frees the oldest one's bytes: one more goes
        assert (await agent.next("delivery")).delivery.event.metadata["i"] == "3"
        await agent.ping(4)
        assert session.statistics().in_flight_bytes == 3 * size
        # A delivery larger than the whole window waits until nothing is in flight, then
        # goes alone.
        await s.bus.publish("b.x", Event(type="n", payload=b"y" * 20_000))
        credit = bridge_pb2.ClientEvent(delivery_credit=bridge_pb2.DeliveryCredit(count=3))
        await agent.send(credit)  # 1, 2 and 3: then 4 and 5 go (6,000 bytes in flight)
        for expected in ("4", "5"):
            assert (await agent.next("delivery")).delivery.event.metadata["i"] == expected
        await agent.ping(5)
        assert session.statistics().in_flight == 2  # the big one waits behind them
        credit = bridge_pb2.ClientEvent(delivery_credit=bridge_pb2.DeliveryCredit(count=2))
        await agent.send(credit)
        big = (await agent.next("delivery")).delivery
        assert len(big.event.payload) == 20_000
        await agent.ping(6)
        stats = session.statistics()
        assert (stats.in_flight, stats.in_flight_bytes) == (1, big.ByteSize())
        assert stats.max_in_flight_bytes == big.ByteSize()
        await agent.close()


async def test_a_stream_that_names_no_byte_window_gets_the_servers() -> None:
    async with serving(limits=Limits(delivery_window_bytes=12_345)) as s, channel(s.target) as ch:
        agent = OldAgent(ch, "older")
        await agent.connect(topics=["o.>"])
        hello = bridge_pb2.StreamHello(features=[bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT])
        await agent.send(bridge_pb2.ClientEvent(hello=hello))
        welcome = (await agent.next("welcome")).welcome
        assert welcome.delivery_window_bytes == 12_345
        await agent.close()


async def test_a_slow_remote_agent_with_large_events_keeps_in_flight_bytes_under_the_bound(
    tmp_path: Path,
) -> None:
    window = 256 * 1024
    payload = b"z" * (16 * 1024)
    async with (
        hosting(limits=Limits(delivery_window_bytes=window)) as host,
        slow_agent(tmp_path, host, delay=0.01, qos=QoS.BATCHED) as (_process, count_file, mailbox),
    ):
        assert host.server is not None
        session = host.server.hub.sessions["slow"]
        assert session.statistics().delivery_window_bytes == window
        bus = host.bus
        most = 0  # the most bytes the subscription had in flight, sampled

        async def publish() -> None:
            for _ in range(2_000):
                await bus.publish("flood.x", Event(type="n", payload=payload))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                await wait_until(lambda: mailbox.statistics().waiting_publishers > 0, timeout=20)
                end = anyio.current_time() + 1.0
                while anyio.current_time() < end:
                    most = max(most, mailbox.statistics().in_flight * len(payload))
                    await anyio.sleep(0.005)
                stats = session.statistics()
                tg.cancel_scope.cancel()
        assert _handled(count_file) > 0
    # The count window (1000 deliveries, 16 MB of these) never came into play: the bytes did.
    assert 0 < stats.max_in_flight_bytes <= window, stats
    assert 0 < most <= window
    assert stats.in_flight_bytes <= window
