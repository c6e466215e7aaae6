"""``Agent(durable=True)`` remote: agent processes (``Agent.run``) connected to a real bridge
server whose bus keeps its durable names in JetStream on a real nats-server; the agent's
durable state is keyed by its id on the server. Processes are killed with real signals."""

from __future__ import annotations

import functools
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc
import pytest

from loom import Agent
from loom._remote import serve_agent
from loom.bridge import (
    Acceptance,
    AgentRegistration,
    BridgeClient,
    BridgeServer,
    ConnectFailed,
    PublishRejected,
)
from loom.bridge._generated import bridge_pb2
from loom.bridge._status import error_from_status
from loom.cluster import JetStreamLog
from loom.runtime import AgentRuntime, Context, DurabilityUnavailable, Event, EventBus

from ..bridge._server_harness import OldAgent, channel, event, serving, wait_until
from ._jetstream_support import NatsServer, durable_bus, nats_server

pytestmark = pytest.mark.anyio


async def _ignore(ctx: Context, topic: str, event: Event) -> None:
    return None


# A remote durable agent: appends "<payload> <attempt>" for each event it handles; hangs on
# the payload ``hang_on`` (killed there), raises on ``poison``.
_AGENT = textwrap.dedent(
    """
    import sys, anyio
    from loom import Agent, SupervisionPolicy

    address, out, hang_on = sys.argv[1], sys.argv[2], sys.argv[3].encode()

    async def handle(ctx, topic, event):
        with open(out, "a") as f:
            f.write(f"{event.payload.decode()} {event.metadata['delivery.attempt']}\\n")
        if event.payload == hang_on:
            await anyio.sleep_forever()  # killed with SIGKILL here
        if event.payload == b"poison":
            raise RuntimeError("cannot digest")

    policy = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.05, jitter=0.0)
    agent = Agent("crashy", topics=["work.>"], on_event=handle, durable=True, max_deliver=3,
                  policy=policy)
    agent.run(address)
    """
)


_SECRET = secrets.token_urlsafe(24)


@asynccontextmanager
async def durable_server(
    nats: NatsServer, *, ack_wait: float = 300.0
) -> AsyncIterator[tuple[EventBus, JetStreamLog, BridgeServer]]:
    """The server side: a bus with a JetStreamLog, its runtime, a bridge on 127.0.0.1:0."""
    async with (
        # By default an ack wait longer than any test: a redelivery within one comes from
        # the server handing back what an ended stream held, not from the log's own timer.
        durable_bus(nats, ack_wait=ack_wait) as (bus, log),
        AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
        BridgeServer(runtime, grace_s=1.0) as server,
    ):
        yield bus, log, server


async def _consumer_exists(log: JetStreamLog, name: str) -> None:
    # The server's durable pump opened the agent's durable name: it is attached (no event
    # to wait on in another process: polled, bounded by the test's fail_after).
    while name not in [c.name for c in (await log.statistics()).consumers]:  # noqa: ASYNC110
        await anyio.sleep(0.02)


class _Agent:
    """One agent process, and the lines it wrote."""

    def __init__(self, address: str, out: Path, hang_on: str) -> None:
        args = [sys.executable, "-c", _AGENT, address, str(out), hang_on]
        # The same secret for each process, as a supervisor gives it: a new process takes
        # the id back at once after a kill -9 (else it waits out the server's hold).
        env = {**os.environ, "LOOM_AGENT_SECRET": _SECRET}
        self.proc = subprocess.Popen(args, env=env)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _lines(out: Path) -> list[list[str]]:
    return [line.split() for line in out.read_text().splitlines()]


async def _wait_for(out: Path, line: str) -> None:
    # Another process writes the file: polled, bounded by the test's fail_after.
    while line.split() not in _lines(out):  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def test_kill_9_of_a_remote_durable_agent_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    out.write_text("")
    with anyio.fail_after(60):
        async with nats_server(tmp_path) as nats, durable_server(nats) as (bus, log, server):
            address = f"127.0.0.1:{server.port}"
            first = _Agent(address, out, hang_on="2")
            try:
                await _consumer_exists(log, "crashy")
                for i in range(1, 4):
                    await bus.publish("work.x", Event(payload=b"%d" % i))
                await _wait_for(out, "2 1")  # in the middle of handling event 2
                first.kill()
                # The server saw the stream end (and handed event 2 back): the agent is away.
                await wait_until(lambda: "crashy" not in server.hub.sessions, timeout=10)
                for i in range(4, 7):  # published while the agent is down: kept
                    await bus.publish("work.x", Event(payload=b"%d" % i))
            finally:
                first.kill()
            second = _Agent(address, out, hang_on="none")
            try:
                await _wait_for(out, "6 1")
                await _wait_for(out, "2 2")  # the event it died on, again, marked
            finally:
                second.kill()
    lines = _lines(out)
    assert lines[:2] == [["1", "1"], ["2", "1"]]
    after = lines[2:]
    assert ["2", "2"] in after
    assert sorted(int(p) for p, _ in after) == [2, 3, 4, 5, 6]
    # What was published while it was down came in publish order, each the first time.
    down = [p for p, a in after if p in ("4", "5", "6")]
    assert down == ["4", "5", "6"]
    assert all(a == "1" for p, a in after if p in ("4", "5", "6"))


async def test_a_raising_remote_handler_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    out.write_text("")
    with anyio.fail_after(60):
        async with nats_server(tmp_path) as nats, durable_server(nats) as (bus, log, server):
            address = f"127.0.0.1:{server.port}"
            dlq = bus.subscribe("loom.dlq.crashy")
            agent = _Agent(address, out, hang_on="none")
            try:
                await _consumer_exists(log, "crashy")
                await bus.publish("work.x", Event(payload=b"poison"))
                await bus.publish("work.x", Event(payload=b"after"))
                with anyio.fail_after(30):
                    dead = await dlq.receive()
                await _wait_for(out, "after 1")  # the event behind it flowed
            finally:
                agent.kill()
    assert dead.event.payload == b"poison"
    meta = dead.event.metadata
    assert meta["dead_letter.reason"] == "max_deliver"
    assert meta["dead_letter.attempts"] == "3"
    assert "RuntimeError: cannot digest" in meta["dead_letter.error"]
    assert meta["dead_letter.durable"] == "crashy"
    poison = [a for p, a in _lines(out) if p == "poison"]
    assert poison == ["1", "2", "3"]  # redelivered, marked, then given up: not a 4th time


async def test_a_client_without_the_feature_is_never_durable(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as nats,
            durable_server(nats) as (bus, log, server),
            channel(f"127.0.0.1:{server.port}") as ch,
        ):
            # It asks for durability at registration but its hello does not negotiate it.
            old = OldAgent(ch, "legacy")
            request = bridge_pb2.AgentRegisterRequest(
                agent_id="legacy", subscribed_topics=["work.>"]
            )
            request.durable.max_deliver = 3
            await old.bridge.RegisterAgent(request)
            await old.open()
            hello = bridge_pb2.StreamHello(features=[bridge_pb2.STREAM_FEATURE_BATCH])
            await old.send(bridge_pb2.ClientEvent(hello=hello))
            welcome = await old.next("welcome")
            assert bridge_pb2.STREAM_FEATURE_DURABLE not in welcome.welcome.features
            assert welcome.welcome.durable_ack_wait_ms == 0  # said to durable streams only
            await bus.publish("work.x", Event(payload=b"plain"))
            frame = await old.read()
            delivery = (
                frame.delivery if frame.HasField("delivery") else frame.delivery_batch.deliveries[0]
            )
            assert delivery.event.payload == b"plain"
            assert delivery.delivery_id == 0  # from memory, not from the log
            assert "legacy" not in [c.name for c in (await log.statistics()).consumers]
            # A section-1 client (no hello at all) is plain too.
            plain = OldAgent(ch, "old")
            await plain.connect(["work.>"])
            await plain.publish("work.y", event(payload=b"x"))
            got = await plain.next("delivery")
            assert got.delivery.delivery_id == 0
            await plain.close()
            await old.close()


async def test_durable_deliveries_in_flight_are_bounded_in_bytes_too(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as nats,
            durable_server(nats) as (bus, _log, server),
            channel(f"127.0.0.1:{server.port}") as ch,
        ):
            agent = OldAgent(ch, "weighed")
            request = bridge_pb2.AgentRegisterRequest(
                agent_id="weighed", subscribed_topics=["work.>"]
            )
            request.durable.max_deliver = 3
            await agent.bridge.RegisterAgent(request)
            await agent.open()
            hello = bridge_pb2.StreamHello(
                features=[
                    bridge_pb2.STREAM_FEATURE_DURABLE,
                    bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT,
                ],
                delivery_window=100,
                delivery_window_bytes=10_000,
            )
            await agent.send(bridge_pb2.ClientEvent(hello=hello))
            welcome = (await agent.next("welcome")).welcome
            assert welcome.delivery_window_bytes == 10_000
            for i in range(5):
                await bus.publish("work.x", Event(payload=b"%d" % i + b"x" * 3_000))
            got = [(await agent.next("delivery")).delivery for _ in range(3)]
            assert [d.event.payload[:1] for d in got] == [b"0", b"1", b"2"]
            await agent.ping(1)  # nothing more came before the pong: the byte window is full
            stats = server.hub.sessions["weighed"].statistics()
            assert stats.in_flight == 3
            assert stats.in_flight_bytes <= 10_000
            credit = bridge_pb2.DeliveryCredit(count=1)
            await agent.send(bridge_pb2.ClientEvent(delivery_credit=credit))
            assert (await agent.next("delivery")).delivery.event.payload[:1] == b"3"
            await agent.close()


async def test_durable_without_a_log_is_refused_with_the_reason() -> None:
    with anyio.fail_after(30):
        async with serving() as served, channel(served.target) as ch:  # a bus like --nats off
            old = OldAgent(ch, "wants-durable")
            request = bridge_pb2.AgentRegisterRequest(
                agent_id="wants-durable", subscribed_topics=["work.>"]
            )
            request.durable.max_deliver = 3
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await old.bridge.RegisterAgent(request)
            # The SDK's agent stops at once with that reason rather than run non-durable.
            agent = Agent("wants-durable", topics=["work.>"], on_event=_ignore, durable=True)
            with pytest.raises(ConnectFailed, match=r"UNIMPLEMENTED: durable agent .*--nats off"):
                await serve_agent(agent, served.target)
    code, details = refused.value.code(), refused.value.details() or ""
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "durable agent 'wants-durable' needs durability" in details
    assert "--nats off" in details
    assert isinstance(error_from_status(code, details), DurabilityUnavailable)


async def test_a_slow_handler_is_kept_alive_within_the_servers_ack_wait(tmp_path: Path) -> None:
    # The server's log redelivers what is unsettled after 1 s; the handler takes 3 s. The
    # agent learns that ack wait from the welcome and sends its keep-alive every third of
    # it (assuming the default 30 s, it would say nothing for 10 s: redelivered meanwhile).
    attempts: list[str] = []
    done = anyio.Event()

    async def slow(ctx: Context, topic: str, event: Event) -> None:
        attempts.append(event.metadata["delivery.attempt"])
        await anyio.sleep(3.0)  # three ack waits
        done.set()

    agent = Agent("slow", topics=["work.>"], on_event=slow, durable=True)
    with anyio.fail_after(60):
        async with (
            nats_server(tmp_path) as nats,
            durable_server(nats, ack_wait=1.0) as (bus, log, server),
            anyio.create_task_group() as tg,
        ):
            address = f"127.0.0.1:{server.port}"
            await tg.start(functools.partial(serve_agent, agent, address))
            await _consumer_exists(log, "slow")
            await bus.publish("work.x", Event(payload=b"slow"))
            await done.wait()
            stats = {c.name: c for c in (await log.statistics()).consumers}
            tg.cancel_scope.cancel()
    assert attempts == ["1"]
    assert stats["slow"].redelivered == 0


async def test_a_remote_publish_not_stored_in_time_is_refused_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    # The nats-server is down for longer than the log's publish timeout (1 s here): the
    # remote publisher's durable publish is refused with DEADLINE_EXCEEDED (the server's
    # DurableUnavailable), not the end of its stream; once the server is back, it goes on.
    registration = AgentRegistration(agent_id="publisher")
    with anyio.fail_after(60):
        async with (
            nats_server(tmp_path) as nats,
            durable_bus(nats, publish_timeout=1.0) as (bus, _log),
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            BridgeServer(runtime, grace_s=1.0) as server,
            BridgeClient(f"127.0.0.1:{server.port}", registration) as client,
        ):
            bus.register_durable("keeper", ("kept.>",))
            assert await client.publish("kept.x", Event(), wait_accepted=True)
            nats.kill()
            with pytest.raises(PublishRejected) as refused:
                await client.publish("kept.x", Event(), wait_accepted=True)
            await nats.start()
            outcome = await client.publish("kept.x", Event(), wait_accepted=True)
            connects = client.statistics().connects
    assert refused.value.code == "DEADLINE_EXCEEDED"
    assert "not stored within 1s" in refused.value.reason
    assert outcome in (Acceptance.ACCEPTED, Acceptance.UNROUTED)
    assert connects == 1  # the same stream throughout


async def test_a_burst_of_remote_durable_publishes_is_stored_once_each_in_order(
    tmp_path: Path,
) -> None:
    # A remote stream's queued durable publishes have their stores started ahead, several
    # in flight at a time (bus.plumbing.store_ahead): each is still stored once, and in the
    # stream's order. A publish on a durable topic waits for its store
    # (STREAM_FEATURE_DURABLE_TOPICS), so the burst comes from 32 publishers at once, each
    # publishing its share one after the other: each one's events are stored in its order.
    registration = AgentRegistration(agent_id="burst")
    publishers = 32
    events = [Event(payload=b"%d" % i) for i in range(2000)]
    with anyio.fail_after(60):
        async with (
            nats_server(tmp_path) as nats,
            durable_bus(nats) as (bus, log),
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            BridgeServer(runtime, grace_s=1.0) as server,
            BridgeClient(f"127.0.0.1:{server.port}", registration) as client,
        ):
            assert bus.plumbing.store_ahead is not None  # JetStreamLog pipelines
            bus.register_durable("keeper", ("kept.>",))
            while not client.durable_topics.matches("kept.x"):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # told by a frame of the server: polled, bounded

            async def publish_share(first: int) -> None:
                for event in events[first::publishers]:
                    await client.publish("kept.x", event)  # returns once stored

            async with anyio.create_task_group() as tg:
                for first in range(publishers):
                    tg.start_soon(publish_share, first)
            stats = await log.statistics()
            stored = [d.event.id async for d in bus.replay("kept.>")]
    assert stats.appended == len(events)
    assert stats.duplicates == 0  # each stored once: the append took the store made ahead
    assert sorted(stored) == sorted(e.id for e in events)
    position = {event_id: i for i, event_id in enumerate(stored)}
    for first in range(publishers):  # each publisher's order
        share = [position[e.id] for e in events[first::publishers]]
        assert share == sorted(share)
