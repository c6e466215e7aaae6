"""A durable subscription (``bus.subscribe(pattern, durable="name")``) and dead letters.

It reads its durable name's deliveries from the durable log, never from the bus's memory
routes, so an event reaches it once per delivery and from one path only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import Final

import anyio
import msgspec

from ._durable import DurableConsumer, DurableLog, DurableMessage
from ._errors import BusClosed, SubscriptionClosed
from ._event import Event

__all__ = ["DLQ_PREFIX", "DurableSubscription", "dead_letter_event", "dlq_topic"]

DLQ_PREFIX: Final = "loom.dlq"
"""Dead letters of durable name ``x`` are published on ``loom.dlq.x``."""

# How long one fetch waits on the server before asking again (a wake-up to notice a close).
_POLL_S: Final = 1.0
# At most this many fetched ahead of the one in hand: they wait here, and their ack wait runs.
_AHEAD: Final = 16


def dlq_topic(name: str) -> str:
    """The dead-letter topic of durable name ``name``."""
    return f"{DLQ_PREFIX}.{name}"


def dead_letter_event(msg: DurableMessage, name: str, reason: str, error: str) -> Event:
    """The dead letter of ``msg``: the original event (its id, type, payload, envelope and
    metadata) with why it was given up (``dead_letter.*`` keys, as the runtime's own dead
    letters say it) and where it was stored."""
    event = msg.event
    metadata = {
        **event.metadata,
        "dead_letter.reason": reason,
        "dead_letter.error": error,
        "dead_letter.topic": msg.topic,
        "dead_letter.durable": name,
        "dead_letter.attempts": str(msg.attempt),
        "dead_letter.sequence": str(msg.sequence),
    }
    return msgspec.structs.replace(event, metadata=metadata)


class DurableSubscription:
    """The deliveries of one durable name, as an async iterator of :class:`DurableMessage`.

    Settling: taking the next message acknowledges the previous one unless it was settled
    already (``ack``, ``nak``, ``dead_letter``). A message taken and not settled when the
    subscription closes (or its process dies) is delivered again, marked, after the log's
    ack wait (default 30 s): work on one message that takes longer calls
    ``await msg.in_progress()`` now and then, or it is delivered again meanwhile. After
    ``max_deliver`` deliveries the log stops offering an event; the next
    delivery beyond that (a crash on the last attempt) is dead-lettered here on
    ``loom.dlq.{name}`` instead of being handed out.

    With ``event_types``, an event of another type is acknowledged without being handed
    out (the durable name is done with it). Closing the bus ends the iteration.

    Made by :meth:`EventBus.subscribe`; use it as an async context manager.
    """

    def __init__(
        self,
        log: DurableLog,
        name: str,
        patterns: Collection[str],
        *,
        publish: Callable[[str, Event], Awaitable[int]],
        event_types: frozenset[str] | None,
        max_deliver: int,
        max_ack_pending: int,
        ahead: int = _AHEAD,
    ) -> None:
        self.name = name
        self.patterns = tuple(patterns)
        self.max_deliver = max_deliver
        self._log = log
        self._publish = publish
        self._types = event_types
        self._max_ack_pending = max_ack_pending
        self.max_ack_pending = max_ack_pending
        self._ahead = ahead
        self._consumer: DurableConsumer | None = None
        self._ready: list[DurableMessage] = []
        self._fetched_at = 0.0
        self._last: DurableMessage | None = None
        self._settled = True
        self._closed = False

    async def __aenter__(self) -> DurableSubscription:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Attach to the durable name in the log (made the first time). Idempotent.

        Raises:
            SubscriptionClosed: it was closed.
        """
        if self._closed:
            raise SubscriptionClosed(f"durable subscription {self.name!r} is closed")
        if self._consumer is None:
            self._consumer = await self._log.open_consumer(
                self.name,
                self.patterns,
                max_deliver=self.max_deliver,
                max_ack_pending=self._max_ack_pending,
            )

    async def aclose(self) -> None:
        """Stop receiving. What was fetched and not settled is delivered again later (after
        the log's ack wait); the durable name and its position stay in the log."""
        self._closed = True
        consumer, self._consumer = self._consumer, None
        ready, self._ready = self._ready, []
        with anyio.CancelScope(shield=True):
            # Fetched ahead and never handed out (a fetch that ended as it closed): handed
            # back at once, so the next holder need not wait out the ack wait for them.
            for msg in ready:
                try:
                    await msg.nak()
                except Exception:
                    break  # the log unreachable: they come back after the ack wait
            if consumer is not None:
                await consumer.aclose()

    def close_by_bus(self) -> None:
        """Internal: its bus closes. Iteration ends (within one poll, about a second);
        what it took and did not settle is delivered again later."""
        self._closed = True

    def __aiter__(self) -> DurableSubscription:
        return self

    async def __anext__(self) -> DurableMessage:
        try:
            return await self.receive()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def receive(self) -> DurableMessage:
        """The next delivery, acknowledging the previous one if it is not settled yet.

        Raises:
            SubscriptionClosed: the subscription was closed.
        """
        if not self._settled and self._last is not None:
            await self.ack(self._last)
        return await self.take()

    async def take(self) -> DurableMessage:
        """The next delivery, leaving the ones taken before as they are: for a holder of
        many at a time (a remote durable agent's session), which settles each itself.

        Raises:
            SubscriptionClosed: the subscription was closed.
        """
        if not self._closed:
            await self.open()
        while True:
            if self._closed or self._consumer is None:
                raise SubscriptionClosed(f"durable subscription {self.name!r} is closed")
            consumer = self._consumer
            if not self._ready:
                batch = min(self._max_ack_pending, self._ahead)
                self._ready = await consumer.fetch(batch, _POLL_S)
                self._fetched_at = anyio.current_time()
                continue
            if anyio.current_time() - self._fetched_at > consumer.ack_wait / 2:
                # Those fetched ahead have waited long (a slow consumer): still ours.
                for ahead in self._ready:
                    await ahead.in_progress()
                self._fetched_at = anyio.current_time()
            msg = self._ready.pop(0)
            if msg.attempt > self.max_deliver:
                # Offered once more than allowed: the previous holder died on its last
                # attempt without settling it. It goes where a failing handler's would.
                await self.dead_letter(msg, "max_deliver", "no answer on the last attempt")
                continue
            if self._types is not None and msg.event.type not in self._types:
                await msg.ack()  # not for us: settled without being handed out
                continue
            self._last = msg
            self._settled = False
            return msg

    def peek_ready(self, now: float | None = None) -> DurableMessage | None:
        """The next delivery if it is fetched already and :meth:`take_ready` can hand it out
        without a wait; else ``None`` (then :meth:`take` does what it needs). For a holder
        that batches what is at hand (a remote durable agent's session), which may pass
        ``now`` (``anyio.current_time()``) read once for the whole batch."""
        if self._closed or self._consumer is None or not self._ready:
            return None
        if now is None:
            now = anyio.current_time()
        if now - self._fetched_at > self._consumer.ack_wait / 2:
            return None  # take keeps them alive first
        msg = self._ready[0]
        if msg.attempt > self.max_deliver:
            return None  # take dead-letters it
        if self._types is not None and msg.event.type not in self._types:
            return None  # take settles it
        return msg

    def take_ready(self) -> DurableMessage:
        """Hand out the delivery :meth:`peek_ready` returned (as :meth:`take` would)."""
        msg = self._ready.pop(0)
        self._last = msg
        self._settled = False
        return msg

    def _settle(self, msg: DurableMessage) -> None:
        if msg is self._last:
            self._settled = True

    async def ack(self, msg: DurableMessage) -> None:
        """Done with ``msg``: never delivered to this name again."""
        self._settle(msg)
        await msg.ack()

    async def nak(self, msg: DurableMessage, delay: float = 0.0) -> None:
        """Not done with ``msg``: delivered again after ``delay`` seconds (counts an attempt)."""
        self._settle(msg)
        await msg.nak(delay)

    async def dead_letter(self, msg: DurableMessage, reason: str, error: str) -> None:
        """Give ``msg`` up: publish it on ``loom.dlq.{name}`` with why, then settle it so it
        is never delivered again (the next event proceeds). The dead letter is published
        before the settle: a crash in between delivers it again rather than losing it."""
        self._settle(msg)
        try:
            await self._publish(
                dlq_topic(self.name), dead_letter_event(msg, self.name, reason, error)
            )
        except BusClosed:
            await msg.nak()  # nowhere to put it: offered again when a bus is back
            return
        await msg.term()
