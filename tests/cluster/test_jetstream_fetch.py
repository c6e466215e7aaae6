"""What the durable path's shortcuts around nats-py keep: a fetch that takes queued messages
without a task each still hands out the whole batch, in order, with nats-py's accounting; a
stored event carries only its ``Nats-Msg-Id`` header."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from loom.cluster._jetstream import STREAM, consumer_name, subject_of
from loom.runtime import DurableMessage, Event

from ._jetstream_support import durable_bus, nats_server

pytestmark = pytest.mark.anyio


async def test_a_fetch_takes_a_queued_batch_in_order_and_keeps_the_accounting(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server, durable_bus(server) as (_bus, log):
            log.register("fetcher", ("batch.>",))
            consumer = await log.open_consumer(
                "fetcher", ("batch.>",), max_deliver=5, max_ack_pending=1000
            )
            try:
                for i in range(200):
                    await log.append(f"batch.{i}", Event(type="b", payload=b"%d" % i))
                got: list[DurableMessage] = []
                while len(got) < 200:
                    got.extend(await consumer.fetch(64, 1.0))
                assert [m.event.payload for m in got] == [b"%d" % i for i in range(200)]
                assert all(m.attempt == 1 for m in got)
                for msg in got:
                    await msg.ack()
                # Every queued message was accounted as taken, as nats-py's next_msg does:
                # a pending count that only grew would end in slow-consumer drops.
                inner = consumer._sub._sub  # type: ignore[attr-defined]
                assert inner.pending_bytes == 0
                assert inner._pending_queue.empty()
                assert await consumer.fetch(64, 0.2) == []  # nothing more, no stray message
            finally:
                await consumer.aclose()


async def test_a_stored_event_carries_only_its_message_id(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server, durable_bus(server) as (_bus, log):
            log.register("headers", ("hdr.>",))
            event = Event(type="h")
            await log.store_ahead("hdr.a", event)  # the pipelined store
            await log.append("hdr.a", event)
            await log.append("hdr.b", event)  # a store of its own (nothing started ahead)
            js = log._nc.jetstream()
            sub = await js.pull_subscribe(
                subject_of("hdr.>"), durable=consumer_name("raw-reader"), stream=STREAM
            )
            msgs = await sub.fetch(2, timeout=5)
            assert [m.headers for m in msgs] == [
                {"Nats-Msg-Id": f"hdr.a {event.id}"},
                {"Nats-Msg-Id": f"hdr.b {event.id}"},
            ]
            await sub.unsubscribe()
