"""``Agent(durable=True)`` in process: acked when the handler returns, redelivered when it
raises or its process dies, dead-lettered after ``max_deliver``; on a real nats-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from loom import Agent
from loom.runtime import (
    AgentRuntime,
    Context,
    DurabilityUnavailable,
    Event,
    EventBus,
    InvalidArgument,
    QoS,
    SupervisionPolicy,
)

from ._jetstream_support import durable_bus, nats_server

pytestmark = pytest.mark.anyio

_FAST = SupervisionPolicy(backoff_initial_s=0.01, backoff_max_s=0.05, jitter=0.0)


async def test_a_durable_agent_needs_a_log() -> None:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with pytest.raises(DurabilityUnavailable, match="--nats off"):
            await runtime.start(Agent("a", topics=["x.>"], durable=True))
        assert bus.subscription_count() == 0  # nothing left behind
    with pytest.raises(InvalidArgument, match="REALTIME"):
        Agent("a", topics=["x.>"], durable=True, qos=QoS.REALTIME).agent_spec()
    with pytest.raises(InvalidArgument, match="needs topics"):
        Agent("a", durable=True).agent_spec()


async def test_a_raising_handler_gets_the_event_again_marked(tmp_path: Path) -> None:
    seen: list[tuple[bytes, str, str]] = []
    done = anyio.Event()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        meta = event.metadata
        seen.append((event.payload, meta["delivery.attempt"], meta["delivery.redelivered"]))
        if event.payload == b"flaky":
            if meta["delivery.attempt"] != "3":
                raise RuntimeError("not yet")
            done.set()

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server) as (bus, _),
            AgentRuntime(bus) as runtime,
        ):
            agent = Agent("worker", topics=["jobs.>"], on_event=handle, durable=True, policy=_FAST)
            await runtime.start(agent)
            await bus.publish("jobs.1", Event(payload=b"flaky"))
            await bus.publish("jobs.2", Event(payload=b"last"))
            await done.wait()
            info = runtime.directory.get("worker")
            assert info is not None
    flaky = [s for s in seen if s[0] == b"flaky"]
    assert flaky == [(b"flaky", "1", "false"), (b"flaky", "2", "true"), (b"flaky", "3", "true")]
    assert (b"last", "1", "false") in seen


async def test_poison_goes_to_the_dead_letter_topic_and_the_rest_flows(tmp_path: Path) -> None:
    handled: list[bytes] = []
    attempts: list[str] = []
    all_ok = anyio.Event()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        if event.payload == b"poison":
            attempts.append(event.metadata["delivery.attempt"])
            raise ValueError("cannot digest this")
        handled.append(event.payload)
        if len(handled) == 5:
            all_ok.set()

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server) as (bus, _),
            AgentRuntime(bus) as runtime,
            bus.subscribe("loom.dlq.>") as dlq,
        ):
            agent = Agent(
                "eater",
                topics=["food.>"],
                on_event=handle,
                durable=True,
                max_deliver=3,
                policy=_FAST,
            )
            await runtime.start(agent)
            poison = Event(type="meal", payload=b"poison")
            await bus.publish("food.bad", poison)
            for i in range(5):
                await bus.publish("food.ok", Event(payload=b"%d" % i))
            letter = await dlq.receive()
            await all_ok.wait()
            assert runtime.directory.get("eater") is not None
    assert letter.topic == "loom.dlq.eater"
    assert letter.event.id == poison.id
    assert letter.event.payload == b"poison"
    meta = letter.event.metadata
    assert meta["dead_letter.reason"] == "max_deliver"
    assert meta["dead_letter.attempts"] == "3"
    assert meta["dead_letter.error"] == "ValueError: cannot digest this"
    assert meta["dead_letter.topic"] == "food.bad"
    assert attempts == ["1", "2", "3"]
    assert handled == [b"%d" % i for i in range(5)]


async def test_events_published_while_stopped_arrive_in_order(tmp_path: Path) -> None:
    handled: list[bytes] = []
    counts = {1: anyio.Event(), 51: anyio.Event()}

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        handled.append(event.payload)
        if len(handled) in counts:
            counts[len(handled)].set()

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server) as (bus, _),
            AgentRuntime(bus) as runtime,
        ):
            agent = Agent("reader", topics=["news.>"], on_event=handle, durable=True)
            await runtime.start(agent)
            await bus.publish("news.a", Event(payload=b"first"))
            await counts[1].wait()
            await runtime.stop("reader")
            for i in range(50):
                await bus.publish(f"news.{i % 3}", Event(payload=b"%d" % i))
            await bus.publish("other.x", Event(payload=b"not mine"))
            await runtime.start(agent.fresh())
            await counts[51].wait()
    assert handled == [b"first", *(b"%d" % i for i in range(50))]


_CHILD = textwrap.dedent(
    """
    import sys, anyio, nats
    from loom import Agent
    from loom.cluster import JetStreamLog
    from loom.runtime import AgentRuntime, EventBus

    url, out, hang_on = sys.argv[1], sys.argv[2], sys.argv[3].encode()

    async def handle(ctx, topic, event):
        with open(out, "a") as f:
            f.write(f"{event.payload.decode()} {event.metadata['delivery.attempt']}\\n")
        if event.payload == hang_on:
            await anyio.sleep_forever()  # killed with SIGKILL here

    async def main():
        nc = await nats.connect(url)
        async with JetStreamLog(nc, ack_wait=1.0) as log, EventBus(durable_log=log) as bus:
            async with AgentRuntime(bus) as runtime:
                await runtime.start(Agent("crashy", topics=["work.>"], on_event=handle,
                                          durable=True))
                # Ready once the durable name exists on the server (the agent's first fetch).
                while not (await log.statistics()).consumers:
                    await anyio.sleep(0.01)
                with open(out, "a") as f:
                    f.write("ready\\n")
                await anyio.sleep_forever()

    anyio.run(main)
    """
)


async def test_kill_9_mid_handler_redelivers_to_the_restarted_process(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    out.write_text("")

    async def wait_for(*lines: str) -> None:
        # Another process writes the file: polled, bounded by the test's fail_after. Any one
        # of ``lines`` will do.
        while not set(lines) & set(out.read_text().splitlines()):  # noqa: ASYNC110
            await anyio.sleep(0.02)

    def child(hang_on: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-c", _CHILD, server.url, str(out), hang_on]
        return subprocess.Popen(args)

    with anyio.fail_after(60):
        async with nats_server(tmp_path) as server:
            first = child("2")
            try:
                await wait_for("ready")
                # The publisher's bus starts after the durable name exists: it learns the
                # durable patterns of other processes when it starts (docs/durability.md).
                async with durable_bus(server) as (bus, _):
                    for i in range(1, 4):
                        await bus.publish("work.x", Event(payload=b"%d" % i))
                    await wait_for("2 1")  # in the middle of handling event 2
                    os.kill(first.pid, signal.SIGKILL)
                    first.wait(timeout=10)
                    for i in range(4, 7):  # published while nobody runs: kept
                        await bus.publish("work.x", Event(payload=b"%d" % i))
            finally:
                if first.poll() is None:
                    first.kill()
            second = child("none")
            try:
                await wait_for("6 1")
                await wait_for("2 2")
                # Event 3 was fetched by the first process too: it may come again only after
                # the ack wait, later than everything stored behind it.
                await wait_for("3 1", "3 2")
            finally:
                second.send_signal(signal.SIGKILL)
                second.wait(timeout=10)
    lines = [line for line in out.read_text().splitlines() if line != "ready"]
    assert lines[:2] == ["1 1", "2 1"]
    # The second process: event 2 again, marked as the second attempt, and all the rest,
    # each once. (Event 3 was fetched by the first process too, so it may come marked; and a
    # redelivery may come after events stored later: it waits out the ack wait.)
    after = [line.split() for line in lines[2:]]
    assert ["2", "2"] in after
    assert sorted(int(p) for p, _ in after) == [2, 3, 4, 5, 6]
    assert all(a == "1" for p, a in after if p in ("4", "5", "6"))


async def test_a_handler_slower_than_the_ack_wait_is_not_redelivered(tmp_path: Path) -> None:
    seen: list[tuple[bytes, str]] = []
    done = anyio.Event()

    async def handle(ctx: Context, topic: str, event: Event) -> None:
        seen.append((event.payload, event.metadata["delivery.attempt"]))
        if event.payload == b"slow":
            await anyio.sleep(2.5)  # longer than the ack wait: the cell keeps it alive
        elif event.payload == b"2":
            done.set()

    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server, ack_wait=1.0) as (bus, log),
            AgentRuntime(bus) as runtime,
        ):
            await runtime.start(Agent("slowpoke", topics=["t.>"], on_event=handle, durable=True))
            await bus.publish("t.a", Event(payload=b"slow"))
            # While it is handled, the agent keeps fetching (it has room for one more):
            # the slow event must not come back to it as a redelivery.
            await anyio.sleep(2.0)
            for i in range(3):
                await bus.publish("t.b", Event(payload=b"%d" % i))
            await done.wait()
            await anyio.sleep(1.5)  # past another ack wait: nothing comes again
            (stats,) = (await log.statistics()).consumers
    assert seen == [(b"slow", "1"), (b"0", "1"), (b"1", "1"), (b"2", "1")]
    assert stats.redelivered == 0
