"""``bus.subscribe(durable=...)``, ``bus.replay`` and the JetStream log, on a real nats-server."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from loom.cluster import JetStreamLog
from loom.cluster._jetstream import consumer_name, subject_of
from loom.runtime import (
    DurabilityUnavailable,
    DurableMessage,
    Event,
    EventBus,
    InvalidArgument,
    QoS,
    WouldBlock,
)
from loom.runtime.lowlevel import validate_pattern

from ._jetstream_support import connect, durable_bus, nats_server

pytestmark = pytest.mark.anyio


async def _take(sub: object, n: int) -> list[DurableMessage]:
    out: list[DurableMessage] = []
    async for msg in sub:  # type: ignore[attr-defined]
        out.append(msg)
        if len(out) == n:
            break
    return out


async def test_durable_needs_a_log_and_a_lossless_tier() -> None:
    async with EventBus() as bus:
        with pytest.raises(DurabilityUnavailable, match="loom serve"):
            bus.subscribe("orders.>", durable="billing")
        with pytest.raises(DurabilityUnavailable):
            bus.replay("orders.>")
        with pytest.raises(InvalidArgument, match="REALTIME"):
            bus.subscribe("orders.>", qos=QoS.REALTIME, durable="billing")
        with pytest.raises(InvalidArgument, match="durable name"):
            bus.subscribe("orders.>", durable="a.b")


async def test_stored_in_order_from_the_log_alone(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, log):
            async with bus.subscribe("orders.>", durable="billing") as sub:
                for i in range(5):
                    await bus.publish(f"orders.eu.{i}", Event(type="o", payload=b"%d" % i))
                await bus.publish("other.topic", Event())  # not durable: never stored
                got = await _take(sub, 5)
            assert [m.event.payload for m in got] == [b"%d" % i for i in range(5)]
            assert [m.topic for m in got] == [f"orders.eu.{i}" for i in range(5)]
            assert all(m.attempt == 1 for m in got)
            assert got[0].event.metadata["delivery.redelivered"] == "false"
            # Read from the log, never from memory: the bus routed nothing to it.
            assert bus.subscription_count() == 0
            stats = await log.statistics()
            assert stats.appended == 5
            assert stats.stored == 5


async def test_unsettled_and_nakked_are_redelivered_marked(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server, durable_bus(server, ack_wait=1.0) as (bus, _):
            async with bus.subscribe("jobs.>", durable="worker") as sub:
                await bus.publish("jobs.a", Event(payload=b"a"))
                await bus.publish("jobs.b", Event(payload=b"b"))
                first = await sub.receive()
                await sub.nak(first)
                again = await sub.receive()
                # Order within the durable: b was waiting behind a's redelivery or came first.
                seen = [again]
                while not any(m.event.payload == b"a" and m.attempt == 2 for m in seen):
                    seen.append(await sub.receive())
                redelivered = next(m for m in seen if m.event.payload == b"a")
                assert redelivered.event.metadata["delivery.attempt"] == "2"
                assert redelivered.event.metadata["delivery.redelivered"] == "true"
                last = seen[-1]
            # Closed with `last` unsettled: it comes back to the next holder of the name.
            async with bus.subscribe("jobs.>", durable="worker") as sub:
                back = await sub.receive()
                assert back.event.id == last.event.id
                assert back.attempt == last.attempt + 1


async def test_same_event_published_twice_is_stored_once(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, log):
            async with bus.subscribe("pay.>", durable="ledger") as sub:
                event = Event(type="pay", payload=b"1")
                await bus.publish("pay.in", event)
                await bus.publish("pay.in", event)  # a retry after a lost answer
                await bus.publish("pay.in", Event(payload=b"2"))
                got = await _take(sub, 2)
            assert [m.event.payload for m in got] == [b"1", b"2"]
            stats = await log.statistics()
            assert (stats.appended, stats.duplicates, stats.stored) == (3, 1, 2)


async def test_kept_while_nobody_consumes_and_learnt_by_a_new_bus(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server:
            async with durable_bus(server) as (bus, _), bus.subscribe("mail.>", durable="inbox"):
                pass  # the name exists now; nobody consumes
            # Another process's bus: it learns the durable pattern from the server and
            # stores what it publishes on it.
            async with durable_bus(server) as (bus, _):
                for i in range(20):
                    await bus.publish("mail.new", Event(payload=b"%d" % i))
            async with (
                durable_bus(server) as (bus, _),
                bus.subscribe("mail.>", durable="inbox") as sub,
            ):
                got = await _take(sub, 20)
            assert [m.event.payload for m in got] == [b"%d" % i for i in range(20)]


async def test_publish_nowait_on_a_durable_topic_would_block(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, log):
            async with bus.subscribe("x.>", durable="d"):
                with pytest.raises(WouldBlock):
                    bus.publish_nowait("x.y", Event())
                assert bus.publish_nowait("z.y", Event()) == 0
            assert (await log.statistics()).appended == 0


async def test_replay_since_until_reads_without_moving_durables(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server) as (bus, log),
            bus.subscribe("audit.>", durable="auditor") as sub,
        ):
            for i in range(10):
                await bus.publish(f"audit.{i % 2}", Event(payload=b"%d" % i))
            everything = [d async for d in bus.replay("audit.>")]
            assert [d.event.payload for d in everything] == [b"%d" % i for i in range(10)]
            assert "delivery.attempt" not in everything[0].event.metadata
            odd = [d.event.payload async for d in bus.replay("audit.1")]
            assert odd == [b"1", b"3", b"5", b"7", b"9"]
            # Sequences: the durable's view gives them.
            first_two = await _take(sub, 2)
            seq = first_two[1].sequence
            window = [
                d.event.payload async for d in bus.replay("audit.>", since=seq, until=seq + 2)
            ]
            assert window == [b"1", b"2", b"3"]
            recent = [d async for d in bus.replay("audit.>", since=timedelta(minutes=5))]
            assert len(recent) == 10
            assert [d async for d in bus.replay("audit.>", since=timedelta(days=-1))] == []
            assert [d async for d in bus.replay("nothing.here")] == []
            # The durable did not move: it goes on after the two it took.
            rest = await _take(sub, 8)
            assert [m.event.payload for m in rest] == [b"%d" % i for i in range(2, 10)]
            assert all(m.attempt == 1 for m in rest)
            # Every replay's consumer is gone: only the durable one is left.
            infos = await log._js.consumers_info("LOOM_EVENTS")
            assert [i.name for i in infos] == ["auditor"]


async def test_publish_waits_through_a_server_restart(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with nats_server(tmp_path) as server:
            async with durable_bus(server, publish_timeout=30.0) as (bus, _):
                async with bus.subscribe("q.>", durable="q"):
                    await bus.publish("q.a", Event(payload=b"before"))
                server.kill()
                done = anyio.Event()

                async def publish() -> None:
                    await bus.publish("q.a", Event(payload=b"during"))
                    done.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish)
                    await anyio.sleep(0.5)  # the outage lasts a while: the publish must wait
                    assert not done.is_set()
                    await server.start()
                async with bus.subscribe("q.>", durable="q") as sub:
                    got = await _take(sub, 2)
            assert [m.event.payload for m in got] == [b"before", b"during"]


async def test_subjects_and_names_map_every_allowed_character(tmp_path: Path) -> None:
    for topic in ("a.b", "ünï.cødé", "$JS.API.x", "a-b_c:d@e+f=g.h/i\\j~k"):
        validate_pattern(topic)
        assert subject_of(topic).startswith("loom.stored.")
    assert consumer_name("agent:1@x+y=z_w") == "agent_3A1_40x_2By_3Dz_5Fw"
    with anyio.fail_after(20):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, _):
            async with bus.subscribe("ünï.>", durable="a:b@c") as sub:
                await bus.publish("ünï.$JS.API.x/y", Event(payload=b"ok"))
                (msg,) = await _take(sub, 1)
            assert msg.topic == "ünï.$JS.API.x/y"
            nc = await connect(server)
            try:
                log = JetStreamLog(nc)
                await log.start()
                assert log.patterns() == frozenset({"ünï.>"})
            finally:
                await nc.close()


async def test_closing_the_bus_ends_a_durable_iteration(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, _):
            sub = bus.subscribe("end.>", durable="ender")
            await sub.open()
            ended = anyio.Event()

            async def iterate() -> None:
                async for _ in sub:
                    pass
                ended.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(iterate)
                await bus.aclose()
                await ended.wait()
            await sub.aclose()


async def test_past_the_limit_the_oldest_go_and_are_counted(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server, max_bytes=4096) as (bus, log),
            bus.subscribe("big.>", durable="slow") as sub,
        ):
            await sub.open()  # the name exists; it takes nothing while 40 are published
            for i in range(40):
                await bus.publish("big.x", Event(payload=b"%03d" % i + b"." * 200))
            stats = await log.statistics()
            (slow,) = stats.consumers
            assert 0 < stats.stored < 40
            assert slow.overflow == 40 - stats.stored
            assert slow.pending == stats.stored
            kept = await _take(sub, stats.stored)
            # What is left is the newest, in order.
            expected = [b"%03d" % i for i in range(40 - stats.stored, 40)]
            assert [m.event.payload[:3] for m in kept] == expected


async def test_stores_started_ahead_whose_answers_died_with_the_server_cost_one_wait(
    tmp_path: Path,
) -> None:
    """A publisher's durable stores are started ahead, many at once (the bridge starts up to
    256). When the server dies after it took them and before it answered, their answers
    never come: each append must not wait its own 5 s for one, one after another (20 of
    them: 100 s, a publisher held for minutes with nothing logged). They are asked again
    at once on the new connection, and stored once (by message id)."""
    n = 20
    with anyio.fail_after(60):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, log):
            async with bus.subscribe("s.>", durable="s"):
                pass  # "s.>" is stored from now on
            events = [Event(payload=b"%d" % i) for i in range(n)]
            assert server.proc is not None
            # The server takes the stores (they leave this client) and answers none.
            os.kill(server.proc.pid, signal.SIGSTOP)
            for event in events:
                await log.store_ahead("s.x", event)
            while log._nc.pending_data_size:  # noqa: ASYNC110  (written to the socket)
                await anyio.sleep(0.01)
            server.kill()  # with what it took; it never answered
            await server.start()
            started = anyio.current_time()
            for event in events:
                await log.append("s.x", event)
            assert anyio.current_time() - started < 10
            async with bus.subscribe("s.>", durable="s") as sub:
                got = await _take(sub, n)
                with anyio.move_on_after(0.5):
                    extra = await sub.receive()
                    raise AssertionError(f"stored twice: {extra}")
            assert [m.event.payload for m in got] == [e.payload for e in events]
