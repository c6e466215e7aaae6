"""A subscription: one consumer's bounded buffer of deliveries, with its QoS promise.

The bus writes into a subscription's buffer directly from ``publish`` (no task per subscriber,
no task per message), so the cost of a delivery is an append and, when the consumer is parked,
one wake-up. The fields the publisher touches are plain attributes for that reason; they are
private to ``loom.runtime``.

Flow control for lossless tiers works by *reservation*: a consumer that frees room hands it to
the longest-waiting publisher (FIFO) and the slot stays reserved for it until it appends, so a
publisher that arrives later cannot take the room of one that has been waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from types import TracebackType
from typing import TYPE_CHECKING, Final

from anyio.lowlevel import checkpoint

from ._errors import InvalidArgument, SubscriptionClosed, WouldBlock
from ._event import Delivery
from ._qos import QoS
from ._stats import Drops, SubscriptionStats
from ._waiter import Waiter

if TYPE_CHECKING:
    from ._bus import EventBus, _Member

__all__ = ["Subscription"]

NO_BUFFER: Final[deque[Delivery]] = deque(maxlen=0)
"""The buffer of a subscription that has never held an event: shared, and unable to hold one.
The real deque (760 bytes even when empty) is made by the first event, so 100,000 idle agents
do not pay 76 MB for buffers they never use. Its bound is 0, which sends the first publish off
the fast path to where the buffer is made."""

# A consumer that always finds events waiting would never let the event loop run; every this
# many receives it yields once, which is also where it notices cancellation.
_YIELD_EVERY: Final = 64


class Subscription:
    """A live subscription: an async iterator of :class:`Delivery` and an async context manager.

    Made by :meth:`EventBus.subscribe`. Leaving its ``async with`` block (or :meth:`close`)
    removes it from the bus at once; events still queued in it are discarded and counted as
    dropped with reason ``closed``. Iteration ends when the subscription is closed, by its owner
    or by the bus closing, once the buffer is empty.

    Several tasks may receive from one subscription; each event goes to exactly one of them.
    """

    __slots__ = (
        "_buf",
        "_bus",
        "_callback",
        "_cap",
        "_closed",
        "_closed_by_bus",
        "_delivered",
        "_dropped_closed",
        "_high",
        "_limit",
        "_lossless",
        "_matched",
        "_overflow",
        "_patterns",
        "_recv_waiters",
        "_reserved",
        "_send_waiters",
        "_tick",
        "_types",
        "event_types",
        "id",
        "pattern",
        "qos",
    )

    def __init__(
        self,
        bus: EventBus,
        sub_id: int,
        pattern: str,
        qos: QoS,
        event_types: Collection[str] | None,
        buffer_size: int | None,
    ) -> None:
        try:
            qos = QoS(qos)
        except ValueError:
            raise InvalidArgument(f"qos must be a QoS, not {qos!r}") from None
        cap = qos.default_buffer if buffer_size is None else buffer_size
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidArgument(f"buffer_size must be a positive int, not {buffer_size!r}")
        types: frozenset[str] | None = None
        if event_types is not None:
            if isinstance(event_types, str):
                raise InvalidArgument("event_types must be a collection of str, not one str")
            types = frozenset(event_types)
            if not types:
                raise InvalidArgument("event_types is empty: it would match nothing")
        self.id: Final = sub_id
        self.pattern: Final = pattern
        self.qos: Final = qos
        self.event_types: Final = types
        self._bus = bus
        # Set for the runtime's internal callback subscriptions (see EventBus._subscribe_callback).
        self._callback: Callable[[Delivery], None] | None = None
        # pattern -> its trie membership (which carries its tier); the bus fills it in, the
        # pattern given to subscribe() first.
        self._patterns: dict[str, _Member] = {}
        self._types = types
        self._lossless = qos.lossless  # True when any pattern's tier is lossless
        self._buf: deque[Delivery] = NO_BUFFER
        self._cap = cap
        # The fast-path bound: 0 until the buffer exists, and while publishers wait (so
        # newcomers queue behind them); otherwise the room left.
        self._limit = 0
        self._reserved = 0
        # Lists, not deques: almost always empty or holding one waiter, and an empty deque
        # costs ten times the memory of an empty list, per parked agent.
        self._recv_waiters: list[Waiter] = []
        self._send_waiters: list[Waiter] = []
        self._closed = False
        self._closed_by_bus = False
        self._matched = 0
        self._delivered = 0
        self._overflow = 0
        self._dropped_closed = 0
        self._high = 0
        self._tick = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._buf)}/{self._cap} queued"
        return f"<Subscription #{self.id} {self.pattern!r} {self.qos.name} {state}>"

    # ------------------------------------------------------------------ consuming

    async def receive(self) -> Delivery:
        """Wait for the next delivery and take it.

        A checkpoint when it has to wait, and at least every 64 calls otherwise; cancelled
        before taking an event, it leaves the event queued.

        Raises:
            SubscriptionClosed: the subscription is closed and its buffer is empty.
        """
        self._tick += 1
        if self._tick >= _YIELD_EVERY:
            self._tick = 0
            await checkpoint()
        while not self._buf:  # read again after each wait: the first event makes the buffer
            await self._wait_nonempty()
        return self._take(self._buf)

    def receive_nowait(self) -> Delivery:
        """Take the next delivery if one is queued.

        Raises:
            WouldBlock: nothing is queued.
            SubscriptionClosed: the subscription is closed and its buffer is empty.
        """
        if not self._buf:
            if self._closed:
                raise SubscriptionClosed(f"subscription {self.pattern!r} is closed")
            raise WouldBlock(f"nothing queued on {self.pattern!r}")
        return self._take(self._buf)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        # A copy of receive() rather than a call to it: this is the hottest consumer path.
        self._tick += 1
        if self._tick >= _YIELD_EVERY:
            self._tick = 0
            await checkpoint()
        buf = self._buf
        while not buf:
            try:
                await self._wait_nonempty()
            except SubscriptionClosed:
                raise StopAsyncIteration from None
            buf = self._buf  # the first event makes the buffer
        return self._take(buf)

    def _take(self, buf: deque[Delivery]) -> Delivery:
        delivery = buf.popleft()
        self._delivered += 1
        if self._send_waiters:
            self._grant()
        elif not buf and self._bus._draining:
            # Emptied while the bus closes: a consumer that never parks (receive_nowait) must
            # not keep the close waiting for its whole grace.
            self._bus._note_idle(self)
        return delivery

    async def _wait_nonempty(self) -> None:
        waiter = self._park()
        try:
            await waiter.wait()
        except BaseException:
            self._unpark(waiter)
            raise

    def _park(self) -> Waiter:
        """Register a waiter for the next event (or a kick); the caller awaits ``wait()`` and
        calls :meth:`_unpark` if that is cancelled. Split from :meth:`_wait_nonempty` so the
        agent loop can park without a coroutine frame of its own per idle agent."""
        if self._closed:
            raise SubscriptionClosed(f"subscription {self.pattern!r} is closed")
        bus = self._bus
        if bus._draining:
            bus._note_idle(self)
        waiter = bus._new_waiter()
        self._recv_waiters.append(waiter)
        return waiter

    def _unpark(self, waiter: Waiter) -> None:
        try:
            self._recv_waiters.remove(waiter)
        except ValueError:
            # We were woken for an event we will now not take: wake someone else for it.
            if self._buf and self._recv_waiters:
                self._recv_waiters.pop(0).set()

    # ------------------------------------------------------------------ publisher side

    def _wake_receiver(self) -> None:
        self._recv_waiters.pop(0).set()

    def _grant(self) -> None:
        """Hand freed room to waiting publishers, oldest first."""
        waiters = self._send_waiters
        while waiters and len(self._buf) + self._reserved < self._cap:
            self._reserved += 1
            waiters.pop(0).set()
        self._update_limit()

    def _update_limit(self) -> None:
        if self._buf is NO_BUFFER:
            self._limit = 0
        else:
            self._limit = 0 if self._send_waiters else self._cap - self._reserved

    def _materialize(self, first: Delivery) -> None:
        """Make the buffer, holding its first event (called by the bus's publish)."""
        self._buf = deque((first,))
        self._limit = self._cap
        if self._high < 1:
            self._high = 1
        if self._recv_waiters:
            self._recv_waiters.pop(0).set()

    async def _put_waiting(self, delivery: Delivery) -> bool:
        """Wait for room, then append. False when the subscription closed meanwhile."""
        # A publisher blocked on several subscriptions comes here for the later ones only after
        # waiting on the earlier ones; by then this one may have been closed (nobody would wake
        # us) or drained (its consumer is parked and will never grant room): look first.
        if self._closed:
            return False
        if len(self._buf) >= self._limit:
            waiter = self._bus._new_waiter()
            self._send_waiters.append(waiter)
            self._limit = 0
            try:
                await waiter.wait()
            except BaseException:
                if waiter.is_set():
                    self._reserved -= 1  # the room we were given goes to the next in line
                    self._grant()
                else:
                    self._send_waiters.remove(waiter)
                    self._update_limit()
                raise
            self._reserved -= 1
            if self._is_closed():  # closed while we waited
                return False
        buf = self._buf
        buf.append(delivery)
        self._matched += 1
        if len(buf) > self._high:
            self._high = len(buf)
        if self._recv_waiters:
            self._recv_waiters.pop(0).set()
        self._update_limit()
        return True

    # ------------------------------------------------------------------ patterns

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every pattern this subscription holds, the first one first."""
        return tuple(self._patterns)

    def add_pattern(self, pattern: str, *, qos: QoS | None = None) -> bool:
        """Also route the topics ``pattern`` matches into this subscription's buffer.

        An event that several patterns of one subscription match is queued once. Each pattern
        keeps its own tier (default: the subscription's): when the buffer is full, an event
        that only Realtime patterns matched is dropped (``overflow``), one that any lossless
        pattern matched holds the publisher back. This is how an agent's single mailbox is
        fed by all of its subscriptions.

        Returns:
            False if the subscription already held this pattern (its tier is left as it was).

        Raises:
            InvalidTopic: the pattern is malformed.
            SubscriptionClosed: the subscription is closed.
        """
        if self._closed:
            raise SubscriptionClosed(f"subscription {self.pattern!r} is closed")
        if pattern in self._patterns:
            return False
        try:
            tier = self.qos if qos is None else QoS(qos)
        except ValueError:
            raise InvalidArgument(f"qos must be a QoS, not {qos!r}") from None
        self._bus._add_pattern(self, pattern, tier)
        return True

    def remove_pattern(self, pattern: str) -> bool:
        """Stop routing ``pattern`` here; False if it was not held.

        Raises:
            InvalidArgument: it is the subscription's last pattern (close it instead).
        """
        if pattern not in self._patterns or self._closed:
            return False
        if len(self._patterns) == 1:
            raise InvalidArgument("cannot remove the last pattern; close the subscription")
        self._bus._remove_pattern(self, pattern)
        return True

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """Whether the subscription has been closed."""
        return self._closed

    def _is_closed(self) -> bool:
        # A method, so type checkers do not carry a narrowed ``_closed`` across an await.
        return self._closed

    def _kick(self) -> None:
        """Wake every parked receiver without an event (they look again and park again)."""
        while self._recv_waiters:
            self._recv_waiters.pop(0).set()

    def close(self) -> None:
        """Remove the subscription from the bus; discard what is queued. Idempotent."""
        if not self._closed:
            self._bus._unsubscribe(self)
            self._shut(by_bus=False)

    async def aclose(self) -> None:
        """:meth:`close`, as the async resource protocol spells it."""
        self.close()

    def _shut(self, *, by_bus: bool) -> None:
        self._closed = True
        self._closed_by_bus = by_bus
        if self._buf:
            self._dropped_closed += len(self._buf)
            self._bus._count_closed_drops(self._buf)
            self._buf.clear()
        while self._recv_waiters:
            self._recv_waiters.pop(0).set()
        while self._send_waiters:
            self._reserved += 1
            self._send_waiters.pop(0).set()
        self._limit = 0

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> SubscriptionStats:
        """This subscription's counters, as a frozen record."""
        return SubscriptionStats(
            id=self.id,
            pattern=self.pattern,
            qos=self.qos,
            matched=self._matched,
            delivered=self._delivered,
            dropped=Drops(overflow=self._overflow, closed=self._dropped_closed),
            queued=len(self._buf),
            high_water=self._high,
            capacity=self._cap,
            waiting_publishers=len(self._send_waiters),
        )
