"""Lossless frames lost on the way are sent again (docs/cluster.md, "What each failure does"):
the receiving node's NATS connection goes through a TCP relay the test cuts, so the frames the
sender publishes meanwhile reach a server with no subscriber for them and are dropped there, a
loss on the wire for certain (a restart of the NATS server loses frames only when the sender
flushes before the receiver has resubscribed, a race either way). A real nats-server
throughout."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import nats.errors
import pytest

from loom.runtime import Event, QoS

from ._jetstream_support import NatsServer, nats_server
from .test_cluster_transport import Node, knows, node, take, wait_until

pytestmark = pytest.mark.anyio


class NatsRelay:
    """A TCP relay to a NATS server. :meth:`cut` closes every connection through it and its
    listening socket (a client's reconnect is refused, as by a server that is down, so
    nats-py leaves nothing half-open behind); :meth:`restore` listens again on the same
    port."""

    def __init__(self, port: int) -> None:
        self.port = port  # the server's
        self.server = NatsServer(Path())  # only its url is used: the relay's own address
        self._open: set[anyio.CancelScope] = set()
        self._tg: anyio.abc.TaskGroup | None = None

    def cut(self) -> None:
        for scope in list(self._open):
            scope.cancel()

    async def restore(self) -> None:
        assert self._tg is not None
        await self._tg.start(self._listen)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[NatsRelay]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._listen)
            yield self
            tg.cancel_scope.cancel()

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        port = self.server.port if self.server.port > 0 else 0
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
        self.server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.CancelScope() as scope:
            self._open.add(scope)  # cut() closes the listener too
            task_status.started()
            try:
                async with listener:
                    await listener.serve(self._relay)
            finally:
                self._open.discard(scope)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        with anyio.CancelScope() as scope:
            self._open.add(scope)
            try:
                async with (
                    client,
                    await anyio.connect_tcp("127.0.0.1", self.port) as server,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(self._pump, client, server)
                    tg.start_soon(self._pump, server, client)
            finally:
                self._open.discard(scope)

    @staticmethod
    async def _pump(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                await dst.send(await src.receive())


async def no_subscriber(sender: Node, subject: str) -> None:
    """Until the server has no subscription on ``subject`` (a request there gets its "no
    responders" answer at once; while one is left, it times out and is asked again)."""
    with anyio.fail_after(10):
        while True:
            try:
                await sender.nc.request(subject, b"", timeout=0.5)
            except nats.errors.NoRespondersError:
                return
            except nats.errors.TimeoutError:
                continue


async def test_frames_lost_while_the_receiver_is_away_are_sent_again_in_order(
    tmp_path: Path,
) -> None:
    # Neither node expires the other while one is away (a node dropped as silent loses
    # what was unacknowledged to it: docs/cluster.md); this test is about retransmission.
    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            NatsRelay(server.port).serving() as relay,
            node(server, "a", expire_after_s=30.0) as a,
            node(relay.server, "b", expire_after_s=30.0) as b,
            b.bus.subscribe("r.>", qos=QoS.BATCHED) as far,
        ):
            await wait_until(knows(a, "b", "r.>"))
            first = [Event(type="t", payload=b"%d" % i) for i in range(10)]
            for event in first:
                await a.bus.publish("r.x", event)
            assert [e.id for e in await take(far, 10)] == [e.id for e in first]

            relay.cut()
            await no_subscriber(a, "_loom.node.b.ll")
            # Node a's frames to b now reach a server that has nobody to give them to.
            frames = a.transport.statistics().sent_frames
            rest = [Event(type="t", payload=b"%d" % i) for i in range(10, 30)]
            for event in rest:
                await a.bus.publish("r.x", event)
            await wait_until(lambda: a.transport.statistics().sent_frames > frames)
            await relay.restore()  # b reconnects and subscribes again

            assert [e.id for e in await take(far, len(rest))] == [e.id for e in rest]
            stats = a.transport.statistics()
            assert stats.retransmitted_frames > 0, stats
            await wait_until(lambda: a.transport.statistics().unacked_frames == 0)
            assert b.transport.statistics().reconnects >= 1


async def test_a_silent_node_heard_again_in_the_same_life_resumes_its_link_losing_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As a node whose NATS server hangs: b is cut off long enough for a to find it silent
    # (three heartbeats, 0.6 s), while a goes on publishing to it; then b is back in the same
    # life. The frames in flight when b went away are sent again, what a published while b
    # was silent was held and follows, on the same link: every event once, in order.
    caplog.set_level(logging.INFO, "loom.cluster")
    with anyio.fail_after(30):
        async with (
            nats_server(tmp_path) as server,
            NatsRelay(server.port).serving() as relay,
            node(server, "a") as a,
            node(relay.server, "b") as b,
            b.bus.subscribe("h.>", qos=QoS.BATCHED, buffer_size=4096) as far,
        ):
            await wait_until(knows(a, "b", "h.>"))
            sent = [Event(type="t", payload=b"%d" % i) for i in range(1000)]
            for event in sent[:10]:
                await a.bus.publish("h.x", event)
            assert [e.id for e in await take(far, 10)] == [e.id for e in sent[:10]]

            relay.cut()
            await no_subscriber(a, "_loom.node.b.ll")
            for event in sent[10:30]:  # in flight into the silence: lost on the way
                await a.bus.publish("h.x", event)
            await wait_until(lambda: "b" in a.transport.statistics().silent)
            assert "b" not in a.transport.remote_interest()
            for event in sent[30:]:  # published while b is silent: held, nobody waits
                await a.bus.publish("h.x", event)
            assert a.transport.statistics().held_events > 0
            await relay.restore()  # b reconnects, in the same life

            assert [e.id for e in await take(far, len(sent) - 10)] == [e.id for e in sent[10:]]
            await wait_until(lambda: a.transport.statistics().unacked_frames == 0)
            stats = a.transport.statistics()
            assert (stats.silent, stats.held_events, stats.lossless_dropped) == ((), 0, 0)
            assert stats.retransmitted_frames > 0, stats
            assert "node b heard again; its link resumed" in caplog.text
            assert "interest dropped" not in caplog.text


@pytest.mark.parametrize("limit", ["time", "bytes"])
async def test_a_node_silent_past_its_hold_is_dropped_and_what_was_held_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, limit: str
) -> None:
    # c is killed (its connection closed, no goodbye): a holds what it publishes for c for
    # hold_silent_s, or up to hold_silent_bytes, and then gives it up, counted and said.
    caplog.set_level(logging.INFO, "loom.cluster")
    hold = {"hold_silent_s": 0.5} if limit == "time" else {"hold_silent_bytes": 20_000}
    with anyio.fail_after(30):
        async with nats_server(tmp_path) as server, node(server, "a", **hold) as a:
            async with node(server, "c") as c, c.bus.subscribe("k.>", qos=QoS.BATCHED):
                await wait_until(knows(a, "c", "k.>"))
                await c.nc.close()
                await wait_until(lambda: "c" in a.transport.statistics().silent)
                for i in range(600):  # two full frames and more; the publisher never waits
                    await a.bus.publish("k.x", Event(type="t", payload=b"%d" % i))
                await wait_until(lambda: "c" not in a.transport.statistics().silent)
            stats = a.transport.statistics()
            assert stats.peers == ()
            assert stats.held_events == 0
            # Past the time: all 600. Past the bytes: the first full frame held (256 events
            # of about 99 bytes each, over 20,000); c's interest is gone from then on.
            assert stats.lossless_dropped == (600 if limit == "time" else 256)
            said = "past its hold" if limit == "time" else "bytes held for it (the limit)"
            assert said in caplog.text
            assert "lossless events to it not delivered" in caplog.text
