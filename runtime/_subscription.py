"""A subscription: one consumer's bounded buffer of deliveries, with its QoS promise.

This module owns the mailbox state: the buffer, its parked receivers and waiting publishers,
the reserved room, the counters and the closed flag. The bus and the agent cell go through the
functions at the end of this module (:func:`fan_out`, :func:`put_waiting`, :func:`park`...),
and the subscription reaches its bus only through the :class:`BusHooks` the bus gave it. One
exception, for speed: the agent loop (``Cell._worker``) takes its events from the buffer itself,
as ``Subscription._take`` does (``tests/runtime/test_ownership.py`` names it).

The bus hands an event to every matching buffer inside ``publish`` (no task per subscriber, no
task per message), so the cost of a delivery is an append and, when the consumer is parked, one
wake-up. :func:`fan_out` is the loop that does it, written here, next to the state it touches:
one call per event, not one per subscriber (a call per delivery would cost the bus a tenth of
its fan-out rate), and it counts on the topic's record it is handed (a :class:`Route`) rather
than returning counts (a tuple per publish shows in the 1:1 rate).

Flow control for lossless tiers works by *reservation*: a consumer that frees room hands it to
the longest-waiting publisher (FIFO) and the slot stays reserved for it until it appends, so a
publisher that arrives later cannot take the room of one that has been waiting.

Every buffer has two bounds: a count of events (``buffer_size``) and a count of bytes
(``max_buffer_bytes``, each event counted by the estimate the bus put in its
``Delivery.size``). The byte bound is kept as ``_room``, the bytes still free (the bound less
what is queued and what is reserved for waiting publishers), so the fast path pays one
comparison and one subtraction for it. An event larger than the whole bound still goes into an
empty buffer (``_room`` goes negative): otherwise it could never be delivered.

Every event is charged, however small (an exact bound: ``docs/bus.md``). The bookkeeping is
paid for on the hot path: a subtraction per delivery in :func:`fan_out` and an addition where
it is taken, each an int allocation in CPython; against that, a subscription's ``matched`` is
no longer counted per delivery (it is derived, see :meth:`Subscription.statistics`), and
``__anext__`` takes its event inline rather than through a call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Final, Protocol

import anyio
from anyio.lowlevel import checkpoint

from ._errors import BusClosed, InvalidArgument, SubscriptionClosed, WouldBlock
from ._event import Delivery
from ._qos import QoS
from ._stats import Drops, SubscriptionStats
from ._waiter import Waiter

__all__ = ["DEFAULT_MAX_BUFFER_BYTES", "Subscription"]

DEFAULT_MAX_BUFFER_BYTES: Final = 16 * 1024 * 1024
"""The byte bound of a subscription's buffer unless its bus or its subscriber asks otherwise:
16 MiB, four of the bridge's largest messages, far above what small events reach with the
tiers' count bounds (2048 events of 1 KiB: 2.5 MiB with the fixed overhead), so by default
the count bound binds first for them and the byte bound for large ones."""


def check_max_buffer_bytes(value: int | None) -> None:
    """Refuse a byte bound that is not a positive int or ``None`` (none).

    Raises:
        InvalidArgument: it is not.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgument(f"max_buffer_bytes must be a positive int or None, not {value!r}")


_UNBOUNDED: Final = 1 << 62  # the room of a subscription without a byte bound

NO_BUFFER: Final[deque[Delivery]] = deque(maxlen=0)
"""The buffer of a subscription that has never held an event: shared, and unable to hold one.
The real deque (760 bytes even when empty) is made by the first event, so 100,000 idle agents
do not pay 76 MB for buffers they never use. Its bound is 0, which sends the first publish off
the fast path to where the buffer is made."""

# A consumer that always finds events waiting would never let the event loop run; every this
# many receives it yields once, which is also where it notices cancellation.
_YIELD_EVERY: Final = 64


class BusHooks:
    """What a subscription may ask of the bus that made it: the bus fills one in with its own
    methods and hands it to each of its subscriptions, so neither reaches into the other and
    the bus's public face stays the user's.

    Attributes:
        draining: the bus is closing and waits for its subscriptions to empty; a subscription
            that empties (or parks) then calls ``idle``.
        new_waiter: makes the cheapest one-shot waiter for the bus's event loop.
        link: ``link(sub, pattern, tier)`` routes ``pattern`` into ``sub`` (validates it).
        unlink: ``unlink(sub, pattern, tier)`` stops routing ``pattern`` into ``sub``.
        unsubscribe: ``unsubscribe(sub, patterns)`` takes ``sub`` (holding ``patterns``, each
            with its tier) off the bus; idempotent.
        idle: ``idle(sub)``: ``sub`` holds nothing and nobody waits to add to it.
        count_closed: ``count_closed(topics)`` counts a delivery on each of ``topics`` dropped
            (reason ``closed``) on its topic.
    """

    __slots__ = ("count_closed", "draining", "idle", "link", "new_waiter", "unlink", "unsubscribe")

    def __init__(
        self,
        *,
        link: Callable[[Subscription, str, QoS], None],
        unlink: Callable[[Subscription, str, QoS], None],
        unsubscribe: Callable[[Subscription, Mapping[str, QoS]], None],
        idle: Callable[[Subscription], None],
        count_closed: Callable[[Iterable[str]], None],
    ) -> None:
        self.draining = False
        self.new_waiter: Callable[[], Waiter] = anyio.Event
        self.link = link
        self.unlink = unlink
        self.unsubscribe = unsubscribe
        self.idle = idle
        self.count_closed = count_closed


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
        "_bytes_dropped",
        "_callback",
        "_cap",
        "_closed",
        "_closed_by_bus",
        "_delivered",
        "_dropped_closed",
        "_high",
        "_hooks",
        "_in_flight",
        "_limit",
        "_max_bytes",
        "_overflow",
        "_patterns",
        "_recv_waiters",
        "_reserved",
        "_room",
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
        hooks: BusHooks,
        sub_id: int,
        pattern: str,
        qos: QoS,
        event_types: Collection[str] | None,
        buffer_size: int | None,
        *,
        max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
        callback: Callable[[Delivery], None] | None = None,
    ) -> None:
        try:
            qos = QoS(qos)
        except ValueError:
            raise InvalidArgument(f"qos must be a QoS, not {qos!r}") from None
        cap = qos.default_buffer if buffer_size is None else buffer_size
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidArgument(f"buffer_size must be a positive int, not {buffer_size!r}")
        check_max_buffer_bytes(max_buffer_bytes)
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
        self._hooks = hooks
        # Set for the runtime's internal callback subscriptions (see EventBus._subscribe_callback):
        # their bound is 0, so the bus's fast path never looks at them and hands each event to
        # the callback where a full buffer would be handled.
        self._callback = callback
        if callback is not None:
            cap = 0
        # pattern -> its tier, the pattern given to subscribe() first; the bus holds the routes.
        self._patterns: dict[str, QoS] = {pattern: qos}
        self._types = types
        self._buf: deque[Delivery] = NO_BUFFER
        self._cap = cap
        # The fast-path bound: 0 until the buffer exists, and while publishers wait (so
        # newcomers queue behind them); otherwise the room left.
        self._limit = 0
        self._reserved = 0
        # The byte bound, and the bytes still free under it (see the module docs).
        self._max_bytes = max_buffer_bytes
        self._room = _UNBOUNDED if max_buffer_bytes is None else max_buffer_bytes
        # Lists, not deques: almost always empty or holding one waiter, and an empty deque
        # costs ten times the memory of an empty list, per parked agent.
        self._recv_waiters: list[Waiter] = []
        self._send_waiters: list[tuple[Waiter, int]] = []  # each with its event's size
        self._closed = False
        self._closed_by_bus = False
        self._delivered = 0
        self._overflow = 0
        self._bytes_dropped = 0
        self._dropped_closed = 0
        self._in_flight = 0  # taken, not yet taken in by a remote consumer (lend_in_flight)
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
        # A copy of receive(), and of _take, rather than calls to them: this is the hottest
        # consumer path (the call to _take cost more than the byte bound's bookkeeping).
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
        delivery = buf.popleft()
        self._delivered += 1
        self._room += delivery.size
        if self._send_waiters:
            self._grant()
        elif not buf and self._hooks.draining:
            self._note_idle()
        return delivery

    def _take(self, buf: deque[Delivery]) -> Delivery:
        delivery = buf.popleft()
        self._delivered += 1
        self._room += delivery.size
        if self._send_waiters:
            self._grant()
        elif not buf and self._hooks.draining:
            # Emptied while the bus closes: a consumer that never parks (receive_nowait) must
            # not keep the close waiting for its whole grace.
            self._note_idle()
        return delivery

    def _note_idle(self) -> None:
        if not self._send_waiters and not self._reserved:
            self._hooks.idle(self)

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
        hooks = self._hooks
        if hooks.draining:
            self._note_idle()
        waiter = hooks.new_waiter()
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
        """Hand freed room to waiting publishers, oldest first: a place, and the bytes of the
        event each waits to add (the oldest that does not fit stops the line; into an empty
        buffer any event fits)."""
        waiters = self._send_waiters
        buf = self._buf
        while waiters and len(buf) + self._reserved < self._cap:
            waiter, size = waiters[0]
            if size > self._room and (buf or self._reserved):
                break
            del waiters[0]
            self._reserved += 1
            self._room -= size
            waiter.set()
        self._update_limit()

    def _update_limit(self) -> None:
        if self._buf is NO_BUFFER:
            self._limit = 0
        else:
            self._limit = 0 if self._send_waiters else self._cap - self._reserved

    def _materialize(self, first: Delivery) -> None:
        """Make the buffer, holding its first event (called by the bus's publish)."""
        self._buf = deque((first,))
        self._room -= first.size
        self._limit = self._cap
        if self._high < 1:
            self._high = 1
        if self._recv_waiters:
            self._recv_waiters.pop(0).set()

    async def _put_waiting(self, delivery: Delivery) -> bool:
        """Wait for room, then append. False when the subscription closed meanwhile.

        Raises:
            BusClosed: the bus closed it meanwhile.
        """
        # A publisher blocked on several subscriptions comes here for the later ones only after
        # waiting on the earlier ones; by then this one may have been closed (nobody would wake
        # us) or drained (its consumer is parked and will never grant room): look first.
        if self._closed:
            return self._closed_check()
        size = delivery.size
        if len(self._buf) >= self._limit or (size > self._room and self._buf):
            waiter = self._hooks.new_waiter()
            entry = (waiter, size)
            self._send_waiters.append(entry)
            self._limit = 0
            try:
                await waiter.wait()
            except BaseException:
                try:
                    self._send_waiters.remove(entry)
                except ValueError:
                    # Granted (or woken by a close) already. That can happen after our own
                    # cancellation: the scope cancels the waiter at once, but a consumer may
                    # pop it and reserve room for it before this task runs again. Either way
                    # the room reserved for us goes to the next in line.
                    self._reserved -= 1
                    self._room += size
                    self._grant()
                else:
                    self._update_limit()
                raise
            self._reserved -= 1  # the bytes were taken off _room when the place was granted
            if self._is_closed():  # closed while we waited
                return self._closed_check()
        else:
            self._room -= size
        buf = self._buf
        buf.append(delivery)
        if len(buf) > self._high:
            self._high = len(buf)
        if self._recv_waiters:
            self._recv_waiters.pop(0).set()
        self._update_limit()
        return True

    def _closed_check(self) -> bool:
        if self._closed_by_bus:
            raise BusClosed("bus closed while the publish waited for room")
        return False

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
        self._hooks.link(self, pattern, tier)
        self._patterns[pattern] = tier
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
        self._hooks.unlink(self, pattern, self._patterns.pop(pattern))
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
            self._hooks.unsubscribe(self, self._patterns)
            self._shut(by_bus=False)

    async def aclose(self) -> None:
        """:meth:`close`, as the async resource protocol spells it."""
        self.close()

    def _shut(self, *, by_bus: bool) -> None:
        self._closed = True
        self._closed_by_bus = by_bus
        if self._buf:
            self._dropped_closed += len(self._buf)
            self._hooks.count_closed(d.topic for d in self._buf)
            self._room += sum(d.size for d in self._buf)
            self._buf.clear()
        while self._recv_waiters:
            self._recv_waiters.pop(0).set()
        while self._send_waiters:
            self._reserved += 1
            self._send_waiters.pop(0)[0].set()
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
            # Not counted on the hot path: every event that matched is in exactly one of
            # these, at every moment (an int increment per delivery costs the bus ~2%).
            matched=self._delivered
            + self._overflow
            + self._bytes_dropped
            + self._dropped_closed
            + len(self._buf)
            + self._in_flight,
            delivered=self._delivered,
            dropped=Drops(
                overflow=self._overflow, closed=self._dropped_closed, bytes=self._bytes_dropped
            ),
            queued=len(self._buf),
            high_water=self._high,
            capacity=self._cap,
            waiting_publishers=len(self._send_waiters),
            patterns=tuple(self._patterns),
            in_flight=self._in_flight,
            queued_bytes=sum(d.size for d in self._buf),
            max_bytes=self._max_bytes or 0,
        )


# ---------------------------------------------------------------------- the owner's fast paths
#
# What the bus and the agent cell do to a subscription's buffer, done here, by the module that
# owns it. Functions rather than methods so that ``Subscription``'s public face stays the user's.


class Route(Protocol):
    """A topic's cached route as :func:`fan_out` reads it, and the topic counters it keeps.

    Attributes:
        route: the subscriptions the topic's events go to, each once.
        soft: those of them the topic reaches through Realtime patterns only: full, they drop
            the event (``overflow``) rather than hold the publisher back.
        published: events routed along it.
        unrouted: events that reached no subscription (none matched, or none took the type).
        delivered: events queued (or handed to a callback) summed over subscriptions.
        overflow: events dropped by full Realtime subscriptions.
        over_bytes: events dropped by Realtime subscriptions whose byte bound they would pass.
        reached: subscriptions the latest event reached without waiting.
    """

    route: tuple[Subscription, ...]
    soft: frozenset[Subscription]
    published: int
    unrouted: int
    delivered: int
    overflow: int
    over_bytes: int
    reached: int


def fan_out(entry: Route, delivery: Delivery, hold: bool = False) -> list[Subscription] | None:
    """Queue ``delivery`` on every subscription of ``entry``'s route that has room, counting on
    ``entry`` (the bus's publish: one call per event, however many subscribers). ``hold``:
    full Realtime subscriptions are waited on too (an event its sender already admitted).

    A subscription has room when it has a place (the count bound) and the event's bytes
    (``delivery.size``) fit under its byte bound, or its buffer is empty. A full Realtime one
    drops the event: ``bytes`` when it had a place but not the bytes, else ``overflow``.

    Returns:
        The full subscriptions that do not drop the event, for the publisher to wait on
        (:func:`put_waiting`); ``None`` for none.
    """
    entry.published += 1
    route = entry.route
    if not route:
        entry.unrouted += 1
        entry.reached = 0
        return None
    blocked: list[Subscription] | None = None
    size = delivery.size
    delivered = 0
    overflow = 0
    for sub in route:
        types = sub._types
        if types is not None and delivery.event.type not in types:  # read only when filtering
            continue
        buf = sub._buf
        n = len(buf)
        if n < sub._limit and (size <= sub._room or not n):
            buf.append(delivery)
            sub._room -= size
            delivered += 1
            if n >= sub._high:
                sub._high = n + 1
            if sub._recv_waiters:
                sub._recv_waiters.pop(0).set()
        elif buf is NO_BUFFER:
            # Not a full buffer but none yet: made on the first event (an idle agent never
            # pays for one), or a callback subscription, handed the event right here.
            delivered += 1
            if sub._callback is not None:
                sub._delivered += 1
                sub._callback(delivery)
            elif not sub._closed:
                sub._materialize(delivery)
        elif hold or sub not in entry.soft:
            if blocked is None:
                blocked = [sub]
            else:
                blocked.append(sub)
        else:
            overflow += 1
            if n < sub._limit:  # a place, but not the bytes
                sub._bytes_dropped += 1
                entry.over_bytes += 1
            else:
                sub._overflow += 1
                entry.overflow += 1
    entry.delivered += delivered
    entry.reached = delivered + overflow
    if not overflow and not delivered and blocked is None:
        # Every subscription on the route filtered the event out by type.
        entry.unrouted += 1
    return blocked


def first_full(entry: Route, event_type: str, size: int) -> Subscription | None:
    """The first subscription of ``entry``'s route that :func:`fan_out` would make a publisher
    of an event of ``event_type`` and ``size`` wait for, if any (the bus's all-or-nothing
    ``publish_nowait``)."""
    soft = entry.soft
    for sub in entry.route:
        buf = sub._buf
        if (
            (len(buf) >= sub._limit or (size > sub._room and buf))
            and buf is not NO_BUFFER
            and (sub._types is None or event_type in sub._types)
            and sub not in soft
        ):
            return sub
    return None


async def put_waiting(sub: Subscription, delivery: Delivery) -> bool:
    """Wait for room in ``sub``, then queue ``delivery``; False if ``sub`` was closed by its
    owner first. Waiting publishers are served oldest first, each holding the room it was given.

    Raises:
        BusClosed: the bus closed ``sub`` first.
    """
    return await sub._put_waiting(delivery)


async def put(sub: Subscription, delivery: Delivery) -> bool:
    """Queue ``delivery``, which came from outside the bus's routes (a durable agent's, from
    the durable log), waiting for room; False if ``sub`` was closed by its owner first.

    Raises:
        BusClosed: the bus closed ``sub`` first.
    """
    if sub._buf is NO_BUFFER:  # none yet (made on the first event), as the bus's fan-out does
        if sub._closed:
            return sub._closed_check()
        sub._materialize(delivery)
        return True
    return await sub._put_waiting(delivery)


def holds_events(sub: Subscription) -> bool:
    """Whether ``sub`` holds events, or publishers wait (or hold room) to add some."""
    return bool(sub._buf or sub._send_waiters or sub._reserved)


def close_by_bus(sub: Subscription) -> None:
    """Close ``sub`` because its bus closes: what it holds is dropped (``closed``), waiting
    publishers get :class:`BusClosed`, its consumers' iteration ends."""
    if not sub._closed:
        sub._hooks.unsubscribe(sub, sub._patterns)
        sub._shut(by_bus=True)


def take(sub: Subscription) -> Delivery | None:
    """Take the next delivery queued on ``sub``, or ``None`` when none is (the agent loop's
    fast path: no exception and no checkpoint; what :meth:`Subscription.receive_nowait` does,
    counted the same, letting waiting publishers in)."""
    buf = sub._buf
    if not buf:
        return None
    delivery = buf.popleft()
    sub._delivered += 1
    sub._room += delivery.size
    if sub._send_waiters:
        sub._grant()
    return delivery


def park(sub: Subscription) -> Waiter:
    """A waiter that is set when an event arrives in ``sub`` or :func:`kick` is called; await
    its ``wait()``, and on any exception from that call :func:`unpark`. (No coroutine of its
    own: an idle agent parks on the bare waiter.)

    Raises:
        SubscriptionClosed: ``sub`` is closed.
    """
    return sub._park()


def unpark(sub: Subscription, waiter: Waiter) -> None:
    """Withdraw a waiter :func:`park` gave (its wait was cancelled), passing on a wake-up it
    may have carried."""
    sub._unpark(waiter)


def kick(sub: Subscription) -> None:
    """Wake every receiver parked on ``sub`` without an event: each looks again."""
    sub._kick()


def depth(sub: Subscription) -> int:
    """How many deliveries ``sub`` holds now (O(1))."""
    return len(sub._buf)


async def drain(sub: Subscription) -> list[Delivery]:
    """Take ``sub`` off the bus and everything it holds, letting in the publishers already
    waiting for room (they were promised delivery), so none of their events vanishes. ``sub``
    stays open (its owner closes it after); a checkpoint while publishers are let in."""
    sub._hooks.unsubscribe(sub, sub._patterns)
    taken: list[Delivery] = []
    while True:
        buf = sub._buf
        while buf:
            taken.append(sub._take(buf))
        if not (sub._send_waiters or sub._reserved):
            return taken
        await checkpoint()


# ---------------------------------------------------------------------- deliveries in flight
#
# A consumer that forwards what it takes to another process (the bridge's stream to a remote
# agent) has not delivered an event when it takes it: the event is in flight until the far end
# says it took it. These move the count between ``delivered`` and ``in_flight``, so that
# ``matched == delivered + dropped + queued + in_flight`` holds at every moment.


def lend_in_flight(sub: Subscription, count: int) -> None:
    """The last ``count`` events taken from ``sub`` are in flight, not delivered yet."""
    sub._delivered -= count
    sub._in_flight += count


def settle_in_flight(sub: Subscription, count: int) -> None:
    """``count`` events in flight from ``sub`` (the oldest) reached their consumer."""
    sub._in_flight -= count
    sub._delivered += count


def lose_in_flight(sub: Subscription, topics: Collection[str]) -> None:
    """Deliveries in flight from ``sub`` on ``topics`` (one each) will never arrive (the
    consumer's stream ended): counted dropped, reason ``closed``, on ``sub`` and on their
    topics. (Topics, not deliveries: what is in flight need not keep its events alive.)"""
    sub._in_flight -= len(topics)
    sub._dropped_closed += len(topics)
    sub._hooks.count_closed(topics)
