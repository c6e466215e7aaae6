"""A remote durable agent's durable log: the server's, reached over the stream.

A durable agent in its own process runs on the runtime's own cell, as in process
(``runtime/_cell.py``): it fetches its deliveries from a durable log, acknowledges one when its
handler returns, negatively acknowledges it with the agent's backoff when the handler raises,
dead-letters it on ``loom.dlq.{id}`` on the ``max_deliver``-th failure, and tells the log it
still holds what it holds. So the rule is kept in one place, this module gives that cell a
:class:`~loom.runtime.lowlevel.DurableLog` whose messages are the server's durable deliveries
(``Delivery.delivery_id``) and whose settles are ``durable_settle`` frames. The server holds
the real log (JetStream), keyed by the agent id.

What the agent publishes is stored by the server (its bus stores a publish on a durable
topic), so :meth:`WireDurableLog.append` stores nothing here; replay and statistics are the
server's too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from loom.bridge._generated import bridge_pb2
from loom.runtime import (
    ATTEMPT_KEY,
    Delivery,
    DurabilityUnavailable,
    DurableMessage,
    DurableStats,
    Event,
    Position,
)
from loom.runtime.lowlevel import DurableConsumer

__all__ = ["DEFAULT_ACK_WAIT", "DurableSettler", "WireDurableLog"]

DurableSettler = Callable[[bridge_pb2.DurableSettle], Awaitable[None]]
"""Sends one ``durable_settle`` frame on the stream the delivery came on (a no-op once that
stream has ended: the server handed the delivery back then)."""

# The server's log delivers again what is not settled within its ack wait, which the server
# tells in its welcome (StreamWelcome.durable_ack_wait_ms); the cell tells it every third of
# that that it still holds its deliveries. Until told (and from an older server that does
# not say): JetStreamLog's default.
DEFAULT_ACK_WAIT: Final = 30.0


class _WireMessage:
    """One durable delivery from the server, settled by frames on its stream."""

    __slots__ = ("_settle", "attempt", "event", "sequence", "topic")

    def __init__(self, topic: str, event: Event, delivery_id: int, settle: DurableSettler) -> None:
        self.topic = topic
        self.event = event  # marked by the server (delivery.attempt, delivery.redelivered)
        self.sequence = delivery_id
        try:
            self.attempt = int(event.metadata.get(ATTEMPT_KEY, "1"))
        except ValueError:
            self.attempt = 1
        self._settle = settle

    async def ack(self) -> None:
        await self._settle(bridge_pb2.DurableSettle(acks=[self.sequence]))

    async def nak(self, delay: float = 0.0) -> None:
        nak = bridge_pb2.DurableNak(delivery_id=self.sequence, delay_ms=round(delay * 1000))
        await self._settle(bridge_pb2.DurableSettle(naks=[nak]))

    async def term(self) -> None:
        # The cell gives a remote delivery up through dead_letter (the server publishes the
        # dead letter), never by a bare term; this says so if that ever changes.
        await self.dead_letter("terminated", "settled without a reason")

    async def dead_letter(self, reason: str, error: str) -> None:
        given_up = bridge_pb2.DurableDeadLetter(
            delivery_id=self.sequence, reason=reason, error=error
        )
        await self._settle(bridge_pb2.DurableSettle(dead_letters=[given_up]))

    async def in_progress(self) -> None:
        await self._settle(bridge_pb2.DurableSettle(in_progress=[self.sequence]))


class _WireConsumer:
    def __init__(
        self, log: WireDurableLog, inbox: MemoryObjectReceiveStream[DurableMessage]
    ) -> None:
        self._log = log
        self._inbox = inbox

    @property
    def ack_wait(self) -> float:
        return self._log.ack_wait  # the connected server's, as its last welcome said

    async def fetch(self, batch: int, timeout: float) -> list[DurableMessage]:
        msgs: list[DurableMessage] = []
        try:
            # At hand already (a stream of deliveries): no cancel scope for the wait.
            msgs.append(self._inbox.receive_nowait())
        except anyio.WouldBlock:
            with anyio.move_on_after(timeout):
                try:
                    msgs.append(await self._inbox.receive())
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    await anyio.sleep(timeout)  # closed: nothing more will come
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await anyio.sleep(timeout)  # closed: nothing more will come
        while msgs and len(msgs) < batch:
            try:
                msgs.append(self._inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        return msgs

    async def aclose(self) -> None:
        # What was received and not fetched is handed back at once, as the cell does with
        # its mailbox: the next holder gets it without waiting out the ack wait.
        while True:
            try:
                msg = self._inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            await msg.nak()


class WireDurableLog:
    """The durable log of a remote durable agent's local bus (see the module docs).

    :meth:`put` is fed by the client's stream reader; it waits while ``size`` deliveries are
    queued (the stream's backpressure; the server sends at most the agent's
    ``max_ack_pending`` unsettled anyway).
    """

    def __init__(self, size: int) -> None:
        self.ack_wait = DEFAULT_ACK_WAIT
        send, recv = anyio.create_memory_object_stream[DurableMessage](max(1, size))
        self._send: MemoryObjectSendStream[DurableMessage] = send
        self._recv = recv

    async def __aenter__(self) -> WireDurableLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def set_ack_wait(self, seconds: float) -> None:
        """The server's ack wait, from a welcome (``BridgeClient.durable_ack_wait``)."""
        self.ack_wait = seconds

    def close(self) -> None:
        """No more deliveries: a :meth:`put` waiting for room ends (``BusClosed``-like: the
        reader drops it; the server hands it back when the stream ends)."""
        self._send.close()
        self._recv.close()

    async def put(self, topic: str, event: Event, delivery_id: int, settle: DurableSettler) -> None:
        """A durable delivery from the stream, for the agent's cell."""
        try:
            await self._send.send(_WireMessage(topic, event, delivery_id, settle))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the agent is gone: the server hands it back when the stream ends

    def patterns(self) -> frozenset[str]:
        return frozenset()

    def register(self, name: str, patterns: Collection[str]) -> None:
        return None  # the server registered it (RegisterAgent's durable flag)

    async def append(self, topic: str, event: Event) -> int:
        return 0  # stored by the server's bus when the publish reaches it

    async def open_consumer(
        self, name: str, patterns: Collection[str], *, max_deliver: int, max_ack_pending: int
    ) -> DurableConsumer:
        return _WireConsumer(self, self._recv)

    def replay(
        self, pattern: str, *, since: Position | None, until: Position | None
    ) -> AsyncIterator[Delivery]:
        raise DurabilityUnavailable("replay in a remote agent's process (ask the server's bus)")

    async def statistics(self) -> DurableStats:
        raise DurabilityUnavailable("durable statistics in a remote agent's process")

    async def remove(self, sequence: int) -> bool:
        raise DurabilityUnavailable("removing a stored event in a remote agent's process")
