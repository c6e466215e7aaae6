"""Lossless frames lost on the way are sent again (docs/cluster.md, "What each failure does"):
the receiving node's NATS connection goes through a TCP relay the test cuts, so the frames the
sender publishes meanwhile reach a server with no subscriber for them and are dropped there, a
loss on the wire for certain (a restart of the NATS server loses frames only when the sender
flushes before the receiver has resubscribed, a race either way). A real nats-server
throughout."""

from __future__ import annotations

import contextlib
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
