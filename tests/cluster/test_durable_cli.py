"""Replay and dead letters over the wire: ``EventBus.Replay`` / ``RetryDeadLetter`` /
``DropDeadLetter`` on a real gRPC server whose bus stores in JetStream on a real nats-server,
driven by the real ``loom`` CLI in subprocesses (``loom tail --since``, ``loom replay``,
``loom dlq``, ``loom topics``); and a real ``loom serve --nats off`` saying it has no
durability."""

from __future__ import annotations

import gc
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from loom.bridge import AdminClient, BridgeServer, LimitExceeded, Limits, WrongAgent
from loom.cluster import JetStreamLog
from loom.runtime import (
    AgentRuntime,
    DeadlineExceeded,
    DurabilityUnavailable,
    DurableUnavailable,
    Event,
    EventBus,
    QoS,
)
from tests.cluster._jetstream_support import durable_bus, nats_server
from tests.sdk._cli_support import loom, loom_serve, running

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-the-dlq-tests-0123456789"


@dataclass
class Served:
    bus: EventBus
    log: JetStreamLog
    address: str


@asynccontextmanager
async def served(
    tmp_path: Path, *, max_bytes: int = 1 << 30, limits: Limits | None = None
) -> AsyncIterator[Served]:
    """A real nats-server, a bus storing in it, and a real gRPC server over that bus (with an
    admin token)."""
    try:
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server, max_bytes=max_bytes) as (bus, log),
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            BridgeServer(runtime, grace_s=1.0, admin_token=ADMIN, limits=limits) as bridge,
        ):
            yield Served(bus, log, f"127.0.0.1:{bridge.port}")
    finally:
        gc.collect()  # gRPC's asyncio objects let go of this loop (see _server_harness)


def _lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


async def test_tail_since_replay_and_the_dead_letter_cycle(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with served(tmp_path) as s:
            a = ("-a", s.address)
            async with s.bus.subscribe("orders.>", durable="billing") as sub:
                for i in range(3):
                    await s.bus.publish(f"orders.eu.{i}", Event(type="order", payload=b"%d" % i))
                got = []
                for i in range(3):  # taking the next acknowledges the one before: settle now
                    got.append(await sub.receive())
                    if i == 1:
                        await sub.dead_letter(got[1], "max_deliver", "ValueError: bad order")
                    else:
                        await sub.ack(got[i])

                # tail --since: the stored events, then the command ends.
                tail = _lines(await loom("tail", "orders.>", "--since", "10m", *a, cwd=tmp_path))
                assert [line.split()[0] for line in tail] == [f"orders.eu.{i}" for i in range(3)]
                assert _lines(await loom("tail", "orders.>", "--since", "1d", *a, cwd=tmp_path))
                assert _lines(
                    await loom("tail", "orders.eu.1", "--since", "1", *a, cwd=tmp_path)
                ) == [tail[1]]

                # dlq list / show: the dead letter, its original event and why.
                listed = _lines(await loom("dlq", "list", "--json", *a, cwd=tmp_path))
                assert len(listed) == 1
                letter = json.loads(listed[0])
                assert letter["durable"] == "billing"
                assert letter["topic"] == "orders.eu.1"
                assert letter["reason"] == "max_deliver"
                assert letter["error"] == "ValueError: bad order"
                assert letter["event"]["id"] == got[1].event.id
                dlq_id = str(letter["sequence"])
                table = _lines(await loom("dlq", "list", *a, cwd=tmp_path))
                assert table[0].split()[:3] == ["ID", "DURABLE", "TOPIC"]
                assert table[1].split()[:3] == [dlq_id, "billing", "orders.eu.1"]
                shown = "\n".join(_lines(await loom("dlq", "show", dlq_id, *a, cwd=tmp_path)))
                assert "reason:     max_deliver" in shown
                assert "attempts:   1" in shown
                assert "last error: ValueError: bad order" in shown
                assert f"event id:   {got[1].event.id}" in shown
                assert "payload:    1" in shown

                # retry needs the admin token (the server has one).
                refused = await loom("dlq", "retry", dlq_id, *a, cwd=tmp_path)
                assert refused.returncode == 1
                assert b"admin token" in refused.stderr
                assert refused.stderr.count(b"\n") == 1
                retried = await loom("dlq", "retry", dlq_id, "--token", ADMIN, *a, cwd=tmp_path)
                done = _lines(retried)
                assert done[0].startswith(f"dead letter {dlq_id} retried: event ")
                # The original event comes to the durable name again, marked as a retry.
                again = await sub.receive()
                assert again.topic == "orders.eu.1"
                assert again.event.payload == b"1"
                assert again.event.metadata["loom.retry_of"] == got[1].event.id
                assert not any(k.startswith("dead_letter.") for k in again.event.metadata)
                assert again.event.id != got[1].event.id
                await sub.dead_letter(again, "max_deliver", "ValueError: still bad")
                assert _lines(await loom("dlq", "list", "billing", *a, cwd=tmp_path))[0] != (
                    "no dead letters"
                )

                # drop: gone, and a second drop says there is none.
                listed = _lines(await loom("dlq", "list", "--json", *a, cwd=tmp_path))
                assert len(listed) == 1  # the retried one was removed
                second = str(json.loads(listed[0])["sequence"])
                assert second != dlq_id
                dropped = await loom("dlq", "drop", second, "--token", ADMIN, *a, cwd=tmp_path)
                assert _lines(dropped) == [f"dead letter {second} dropped"]
                assert _lines(await loom("dlq", "list", *a, cwd=tmp_path)) == ["no dead letters"]
                gone = await loom("dlq", "show", second, *a, cwd=tmp_path)
                assert gone.returncode == 1
                assert gone.stderr.decode() == (
                    f"loom dlq: no dead letter with ID {second} (see `loom dlq list`)\n"
                )
                again_gone = await loom("dlq", "drop", second, "--token", ADMIN, *a, cwd=tmp_path)
                assert again_gone.returncode == 1
                assert b"no dead letter at sequence" in again_gone.stderr

                # replay --to: every stored order again on another topic, marked.
                async with s.bus.subscribe("redo.orders", qos=QoS.BATCHED) as redo:
                    result = await loom(
                        "replay", "orders.eu.*", "--since", "1", "--to", "redo.orders", *a,
                        cwd=tmp_path,
                    )  # fmt: skip
                    assert _lines(result) == ["replayed 4 events from orders.eu.* to redo.orders"]
                    copies = [await redo.receive() for _ in range(4)]
                assert [c.event.payload for c in copies] == [b"0", b"1", b"2", b"1"]
                assert [c.event.metadata["loom.replayed_from"] for c in copies] == [
                    "orders.eu.0",
                    "orders.eu.1",
                    "orders.eu.2",
                    "orders.eu.1",
                ]
                assert copies[0].event.metadata["loom.replay_of"] == got[0].event.id
                assert copies[0].event.id != got[0].event.id
                assert "log.sequence" not in copies[0].event.metadata

                # topics: the durable log and each durable name's overflow.
                topics = "\n".join(_lines(await loom("topics", *a, cwd=tmp_path)))
                assert "durable log: " in topics
                assert "OVERFLOW" in topics
                stats = json.loads(_lines(await loom("topics", "--json", *a, cwd=tmp_path))[0])
                (billing,) = [c for c in stats["durable"]["consumers"] if c["name"] == "billing"]
                assert billing["overflow"] == 0


async def test_tail_since_follow_goes_on_live_without_repeats(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(tmp_path) as s, s.bus.subscribe("feed.>", durable="reader"):
            for i in range(2):
                await s.bus.publish(f"feed.{i}", Event(type="old", payload=b"old%d" % i))
            argv = ("tail", "feed.>", "--since", "10m", "--follow", "-a", s.address)
            async with running(*argv, cwd=tmp_path) as tail:
                await tail.wait_for("stored events shown; tailing feed.>")
                await s.bus.publish("feed.live", Event(type="new", payload=b"fresh"))
                await s.bus.publish("other.topic", Event())  # not on the pattern
                await tail.wait_for("feed.live new")
                assert await tail.stop() == 0
            out = tail.output
            assert out.index("feed.0 old") < out.index("feed.1 old") < out.index("feed.live new")
            assert out.count("feed.live new") == 1  # stored and live, shown once
            assert out.count("feed.0 old") == 1
            assert await s.log.remove(10_000) is False  # a sequence never stored
            assert await s.log.remove(1) is True
            assert await s.log.remove(1) is False  # removed already


async def test_overflow_is_counted_and_shown_in_topics(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with (
            served(tmp_path, max_bytes=4096) as s,
            s.bus.subscribe("logs.>", durable="slow"),
        ):
            for i in range(40):  # far over 4 KiB: the oldest go before "slow" takes them
                await s.bus.publish(f"logs.{i}", Event(payload=b"x" * 200))
            result = await loom("topics", "--json", "-a", s.address, cwd=tmp_path)
            stats = json.loads(_lines(result)[0])
            (slow,) = [c for c in stats["durable"]["consumers"] if c["name"] == "slow"]
            assert slow["overflow"] > 0
            table = _lines(await loom("topics", "-a", s.address, cwd=tmp_path))
            row = next(line.split() for line in table if line.startswith("slow "))
            assert row[-1] == str(slow["overflow"])


async def test_replay_keeps_other_agents_mailboxes_closed(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        # A mailbox topic stored in the log (a durable pattern over it).
        async with served(tmp_path) as s, s.bus.subscribe("agent.>", durable="audit") as sub:
            await s.bus.publish("agent.bob.replies", Event(payload=b"for bob"))
            await s.bus.publish("agent.news", Event(payload=b"for all"))
            # bob's event given up: its dead letter is bob's too.
            await sub.dead_letter(await sub.receive(), "max_deliver", "Boom: x")
            async with AdminClient(s.address) as anyone:
                with pytest.raises(WrongAgent, match="bob"):
                    [d async for d in anyone.replay("agent.bob.replies")]
                seen = [d.event.payload async for d in anyone.replay("agent.>")]
                assert seen == [b"for all"]  # bob's withheld
                assert [d async for d in anyone.replay("loom.dlq.>")] == []
            async with AdminClient(s.address, token=ADMIN) as operator:
                seen = [d.event.payload async for d in operator.replay("agent.>")]
                assert seen == [b"for bob", b"for all"]
                letters = [d.event.payload async for d in operator.replay("loom.dlq.>")]
                assert letters == [b"for bob"]
            listed = await loom("dlq", "list", "-a", s.address, cwd=tmp_path)
            assert _lines(listed) == ["no dead letters"]  # not for an anonymous caller


async def test_without_durability_the_commands_say_so_in_one_line(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with loom_serve(tmp_path, "--nats", "off") as (_server, address):
            for argv in (
                ("tail", "orders.>", "--since", "10m"),
                ("replay", "orders.>", "--to", "redo"),
                ("dlq", "list"),
                ("dlq", "drop", "3"),
            ):
                result = await loom(*argv, "-a", address, cwd=tmp_path)
                assert result.returncode == 1, argv
                err = result.stderr.decode()
                assert err.count("\n") == 1, err
                assert err.startswith(f"loom {argv[0]}: ")
                assert "needs durability" in err, err
            async with AdminClient(address) as admin:
                with pytest.raises(DurabilityUnavailable):
                    [d async for d in admin.replay(">")]
                assert await admin.durable_statistics() is None
            topics = await loom("topics", "-a", address, cwd=tmp_path)
            assert b"durable log" not in topics.stdout


async def test_loom_serve_stores_dead_letters_and_lists_none(tmp_path: Path) -> None:
    # The embedded NATS of `loom serve`: its log answers, with no dead letters yet.
    with anyio.fail_after(90):
        async with loom_serve(tmp_path) as (_server, address):
            listed = await loom("dlq", "list", "-a", address, cwd=tmp_path)
            assert _lines(listed) == ["no dead letters"]
            topics = _lines(await loom("topics", "-a", address, cwd=tmp_path))
            assert any(line.startswith("durable log: ") for line in topics)


async def test_a_replay_counts_against_max_bus_subscribers(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with (
            served(tmp_path, limits=Limits(max_bus_subscribers=1)) as s,
            AdminClient(s.address) as admin,
            admin.subscribe("x.>"),
        ):
            with pytest.raises(LimitExceeded, match="max_bus_subscribers"):
                [d async for d in admin.replay("x.>")]


async def test_a_replay_cut_by_the_loss_of_its_nats_server_says_so(tmp_path: Path) -> None:
    # The nats-server SIGKILLed while a replay streams: the caller gets a typed error that
    # says how far the replay got, not a silent end (it would take a cut replay for the
    # whole) and not grpc's UNKNOWN for an unexpected exception.
    got = 0
    with anyio.fail_after(90):
        async with (
            nats_server(tmp_path) as server,
            durable_bus(server, publish_timeout=5.0) as (bus, _log),
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            BridgeServer(runtime, grace_s=1.0) as bridge,
        ):
            bus.register_durable("keeper", ("kept.>",))  # so kept.> is stored
            payload = b"x" * 4096  # more than gRPC's windows hold: the replay is mid-way
            for _ in range(2000):
                await bus.publish("kept.x", Event(payload=payload))
            async with AdminClient(f"127.0.0.1:{bridge.port}", timeout=30) as admin:

                async def read_all() -> None:
                    nonlocal got
                    async for _ in admin.replay("kept.>"):
                        got += 1
                        if got == 10:
                            server.kill()

                with pytest.raises(DurableUnavailable) as cut:
                    await read_all()
            # Back (as loom serve's supervisor does it), and reconnected (a store goes
            # through): nats-py's close on a connection in the middle of reconnecting fails.
            await server.start()
            await bus.publish("kept.x", Event())
    assert 10 <= got < 2000
    message = str(cut.value)
    assert message.startswith("EventBus.Replay: replay of 'kept.>' interrupted after ")
    assert "the durable log's server did not answer" in message
    assert isinstance(cut.value, DeadlineExceeded)  # DurableUnavailable's wire class
