"""The in-process event bus: wildcard topics, three QoS tiers, exact statistics.

Publishing routes the event through a trie to every matching subscription and appends one
shared :class:`Delivery` to each buffer, inline, in the publisher's task. There is no task per
subscriber and none per message, which is what makes the bus both ordered and fast: events of
one publisher reach every subscriber in publish order because each publish finishes routing
before the next one starts. The semantics are written out for users in ``docs/bus.md``.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Final, overload

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint
from opentelemetry.trace import TracerProvider

from ._durable import (
    DEFAULT_MAX_DELIVER,
    DurableLog,
    PipelinedLog,
    Position,
    WatchedLog,
    validate_durable_name,
)
from ._durable_sub import DLQ_PREFIX, DurableSubscription
from ._errors import BusClosed, DurabilityUnavailable, InvalidArgument, WouldBlock
from ._event import EVENT_OVERHEAD_BYTES, Delivery, Event, event_size
from ._qos import QoS
from ._stats import BusStats, Drops, SubscriptionStats, TierStats, TopicStats
from ._subscription import (
    DEFAULT_MAX_BUFFER_BYTES,
    BusHooks,
    Subscription,
    check_max_buffer_bytes,
    close_by_bus,
    fan_out,
    first_full,
    holds_events,
    put_waiting,
)
from ._topics import TopicTrie, validate_pattern, validate_topic
from ._tracing import NO_CONTEXT, PublishTracer, current_context
from ._transport import InterestGate, Transport
from ._waiter import Waiter, waiter_factory

__all__ = ["BusPlumbing", "EventBus"]

# A publisher that never has to wait would never let its consumers run; every this many
# publishes it yields once (also where it notices cancellation).
_YIELD_EVERY: Final = 128


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Member:
    """One pattern of one subscription, as the trie stores it. Equal to another of the same
    subscription and tier: the subscription keeps only the tier, and removal finds the entry."""

    __slots__ = ("lossless", "qos", "sub")

    def __init__(self, sub: Subscription, qos: QoS) -> None:
        self.sub = sub
        self.qos = qos
        self.lossless = qos.lossless

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Member) and other.sub is self.sub and other.qos is self.qos

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by content


class _Topic:
    """Per-topic counters, and the cached route (valid while ``gen`` is the bus's).

    It is the :class:`~._subscription.Route` that :func:`~._subscription.fan_out` delivers
    along and counts on (published, unrouted, delivered, overflow, over_bytes, reached); the
    bus counts the
    rest (deliveries after a wait for room, drops on close).

    ``soft`` holds the subscriptions that this topic reaches through Realtime patterns only:
    for them a full buffer drops instead of waiting. It is consulted only when a buffer is
    full, so the common path never looks at it.
    """

    __slots__ = (
        "closed",
        "delivered",
        "durable",
        "gen",
        "out",
        "over_bytes",
        "overflow",
        "published",
        "reached",
        "route",
        "soft",
        "topic",
        "unrouted",
    )

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.route: tuple[Subscription, ...] = ()
        self.soft: frozenset[Subscription] = frozenset()
        self.gen = -1
        self.durable = False  # a durable pattern matches: a publish is stored first
        # A publish goes to the transport too: the bus has one and (if the transport is an
        # InterestGate) it would carry this topic. Part of the route: a change of remote
        # interest invalidates it as a local subscription does, so a publish pays no check
        # of its own.
        self.out = False
        self.published = 0
        self.reached = 0  # subscriptions the latest publish reached without waiting
        self.unrouted = 0
        self.delivered = 0
        self.overflow = 0
        self.over_bytes = 0
        self.closed = 0

    def fold_into(self, other: _Topic) -> None:
        other.published += self.published
        other.unrouted += self.unrouted
        other.delivered += self.delivered
        other.overflow += self.overflow
        other.over_bytes += self.over_bytes
        other.closed += self.closed

    def record(self) -> TopicStats:
        return TopicStats(
            topic=self.topic,
            published=self.published,
            unrouted=self.unrouted,
            delivered=self.delivered,
            dropped=Drops(overflow=self.overflow, closed=self.closed, bytes=self.over_bytes),
        )


class BusPlumbing:
    """What the runtime's own parts built on a bus (the reply router, the collaboration
    primitives, the runtime's directory) may ask of it beyond its public API: the bus fills
    one in with its own methods and offers it as ``bus.plumbing``, so its private members stay
    its own. Not for applications.

    Attributes:
        has_transport: the bus has a transport: an event that reached no local subscriber may
            still reach one in another process.
        new_waiter: makes the cheapest one-shot waiter for the bus's event loop (set when the
            bus is entered).
        subscribe_callback: ``subscribe_callback(pattern, callback)``: a subscription whose
            deliveries go to ``callback`` inside the publisher's ``publish`` (see
            ``EventBus._subscribe_callback``).
        on_close: ``on_close(hook)``: call ``hook()`` when the bus closes.
        subscribers: ``subscribers(topic)``: the subscriptions an event published on
            ``topic`` would be routed to (before type filters); validates ``topic``.
        reply_router: the bus's reply router once made (``collab.router_for``), kept here so
            it lives and dies with its bus. (A module-level map from bus to router held every
            bus forever: the router refers to its bus, so a weak key never died.)
        store_ahead: ``await store_ahead(topic, event)``: if a publish of ``event`` on
            ``topic`` would be stored first, start that store now, in call order (a
            :class:`PipelinedLog`); ``publish`` then waits for it. ``None`` when the bus's
            log cannot (or it has none). For a publisher with several publishes queued.
        durable_patterns: ``durable_patterns()``: the durable patterns the bus stores for
            now (a publish on a topic one matches is stored first).
        watch_durable: ``watch_durable(listener)``: call ``listener(patterns)`` (on the bus's
            event loop, synchronously) with each batch of durable patterns the bus learns from
            now on; returns the function that stops it. The bridge tells its streams.
    """

    __slots__ = (
        "durable_log",
        "durable_patterns",
        "has_transport",
        "new_waiter",
        "on_close",
        "reply_router",
        "store_ahead",
        "subscribe_callback",
        "subscribers",
        "watch_durable",
    )

    def __init__(
        self,
        *,
        has_transport: bool,
        subscribe_callback: Callable[[str, Callable[[Delivery], None]], Subscription],
        on_close: Callable[[Callable[[], None]], None],
        subscribers: Callable[[str], list[Subscription]],
        durable_patterns: Callable[[], frozenset[str]],
        watch_durable: Callable[[Callable[[tuple[str, ...]], None]], Callable[[], None]],
    ) -> None:
        self.durable_patterns = durable_patterns
        self.watch_durable = watch_durable
        self.has_transport = has_transport
        self.new_waiter: Callable[[], Waiter] = anyio.Event
        self.subscribe_callback = subscribe_callback
        self.on_close = on_close
        self.subscribers = subscribers
        self.reply_router: object | None = None
        self.durable_log: DurableLog | None = None
        self.store_ahead: Callable[[str, Event], Awaitable[None]] | None = None


class EventBus:
    """Publish/subscribe over dot-separated topics with per-subscription QoS.

    Use it as an async context manager::

        async with EventBus() as bus:
            async with bus.subscribe("orders.>", qos=QoS.BATCHED) as sub:
                await bus.publish("orders.eu.created", Event(type="order", payload=b"42"))
                delivery = await sub.receive()

    Args:
        transport: a cross-process backend; ``None`` keeps the bus in this process.
        tracer_provider: OpenTelemetry tracer provider. ``None`` (the default) means no spans
            and no tracing work at all on the publish path.
        drain_grace: seconds that closing waits for consumers to drain their buffers.
        max_tracked_topics: how many topics keep their own statistics record.
        max_buffer_bytes: the byte bound of every subscription's buffer unless it asks
            otherwise (each event counted by ``loom.runtime.lowlevel.event_size``); ``None``
            for none (the count bound alone). A full one by bytes acts as a full one by count:
            a Realtime subscription drops (reason ``bytes``), a lossless one holds the
            publisher back.
        durable_log: where durable subscriptions live (``loom.cluster.JetStreamLog``);
            ``None`` for none: ``subscribe(durable=...)`` and :meth:`replay` are refused.
            A publish whose topic matches a durable pattern returns once the log stored it;
            other publishes never touch it (see ``docs/durability.md``).
    """

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        durable_log: DurableLog | None = None,
        tracer_provider: TracerProvider | None = None,
        drain_grace: float = 5.0,
        max_tracked_topics: int = 10_000,
        max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
    ) -> None:
        if drain_grace < 0:
            raise InvalidArgument(f"drain_grace must be >= 0, not {drain_grace!r}")
        if max_tracked_topics < 1:
            raise InvalidArgument(f"max_tracked_topics must be >= 1, not {max_tracked_topics!r}")
        self._transport = transport
        # A transport that can say which topics it would carry is skipped for the others.
        gate: object = transport  # (mypy sees no class that is both protocols)
        self._gate = gate if isinstance(gate, InterestGate) else None
        if self._gate is not None:
            # Remote interest changed: every cached verdict is recomputed with its route.
            self._gate.on_interest_change(self._remote_interest_changed)
        self._log = durable_log
        # The durable patterns the log knows: a topic one of them matches is stored first.
        self._durable: TopicTrie[str] = TopicTrie()
        self._durable_patterns: set[str] = set()
        self._durable_subs: weakref.WeakSet[DurableSubscription] = weakref.WeakSet()
        self._durable_watchers: list[Callable[[tuple[str, ...]], None]] = []
        self._tracer = None if tracer_provider is None else PublishTracer(tracer_provider)
        self._drain_grace = drain_grace
        self._max_topics = max_tracked_topics
        check_max_buffer_bytes(max_buffer_bytes)
        self._max_bytes = max_buffer_bytes
        self._state = _State.NEW
        self._accepting = False
        self._trie: TopicTrie[_Member] = TopicTrie()
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._gen = 0  # bumped when a wildcard pattern comes or goes; invalidates cached routes
        self._topics: dict[str, _Topic] = {}
        self._evicted = _Topic("")
        # Each tier's counters of the subscriptions that closed: delivered, then the drops
        # (overflow, closed, bytes).
        self._retired: dict[QoS, list[int]] = {}
        self._tick = 0
        self._interest: dict[tuple[str, QoS], int] = {}
        self._tg: TaskGroup | None = None
        self._transport_scope: anyio.CancelScope | None = None
        # Closing: subscriptions that still hold events, and the signal that none do.
        self._busy: set[Subscription] = set()
        self._drained = anyio.Event()
        self._new_waiter: Callable[[], Waiter] = anyio.Event
        # All a subscription may ask of its bus (the drain flag lives there too).
        self._hooks = BusHooks(
            link=self._add_pattern,
            unlink=self._remove_pattern,
            unsubscribe=self._unsubscribe,
            idle=self._note_idle,
            count_closed=self._count_closed_drops,
        )
        # Internal plumbing built on the bus (the reply router) that must end with it.
        self._close_hooks: list[Callable[[], None]] = []
        self.plumbing = BusPlumbing(
            has_transport=transport is not None,
            subscribe_callback=self._subscribe_callback,
            on_close=self._close_hooks.append,
            subscribers=self._subscribers,
            durable_patterns=lambda: frozenset(self._durable_patterns),
            watch_durable=self._watch_durable,
        )
        self.plumbing.durable_log = durable_log
        """For the runtime's own parts only (see :class:`BusPlumbing`)."""
        log: object = durable_log  # (mypy sees no class that is both protocols)
        self._ahead_log = log if isinstance(log, PipelinedLog) else None
        if self._ahead_log is not None:
            self.plumbing.store_ahead = self._store_ahead

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> EventBus:
        if self._state is not _State.NEW:
            raise BusClosed("an EventBus can be entered once")
        self._new_waiter = self._hooks.new_waiter = self.plumbing.new_waiter = waiter_factory()
        if self._log is not None:
            if isinstance(self._log, WatchedLog):
                self._log.watch(self.add_durable_patterns)
            # Dead letters are always stored, whoever's they are: `loom dlq` reads, retries
            # and drops them from the log (they are not consumed by any durable name).
            self.add_durable_patterns((*self._log.patterns(), f"{DLQ_PREFIX}.>"))
        if self._transport is not None:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            try:
                await self._tg.start(self._run_transport)
            except BaseException:
                # The failed start raised its error here already; handing it to the task group
                # too would come back wrapped in an ExceptionGroup instead of the error itself.
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
                self._tg = None
                self._state = _State.CLOSED
                raise
        self._state = _State.OPEN
        self._accepting = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving on an error or a cancellation: nobody is left to drain, so close at once.
        await self.aclose(grace=self._drain_grace if exc_type is None else 0.0)
        # The transport's task group is exited here and nowhere else: only the task that
        # entered it, at the same depth of cancel scopes, may exit it (aclose may be called
        # from any task, or from inside further scopes).
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)

    async def aclose(self, grace: float | None = None) -> None:
        """Close the bus.

        New publishes and subscriptions are refused with :class:`BusClosed` at once. Consumers
        then get up to ``grace`` seconds (default: the bus's ``drain_grace``) to take what is
        queued; publishers already waiting for room keep waiting in that time. After it every
        subscription is closed: what is still queued is dropped (reason ``closed``), waiting
        publishers get :class:`BusClosed`, and consumers' iteration ends. Shielded from
        cancellation, bounded by the grace. Idempotent.
        """
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._state = _State.CLOSING
        self._accepting = False
        grace = self._drain_grace if grace is None else grace
        with anyio.CancelScope(shield=True):
            if grace > 0:
                self._hooks.draining = True
                self._busy = {s for s in self._subs.values() if holds_events(s)}
                if self._busy:
                    with anyio.move_on_after(grace):
                        await self._drained.wait()
                self._hooks.draining = False
            for sub in list(self._subs.values()):
                close_by_bus(sub)
            for durable in list(self._durable_subs):
                durable.close_by_bus()  # its iteration ends; its messages stay in the log
            for hook in self._close_hooks:
                hook()
            if self._transport_scope is not None:
                self._transport_scope.cancel()  # stop the transport; __aexit__ waits for it
        self._state = _State.CLOSED

    async def _run_transport(self, *, task_status: TaskStatus[None]) -> None:
        # Its own scope, so that closing stops the transport alone: the task group's scope
        # also encloses the body of the caller's ``async with``, which closing must not cancel.
        assert self._transport is not None
        with anyio.CancelScope() as self._transport_scope:
            await self._transport.run(self, task_status=task_status)

    @property
    def closed(self) -> bool:
        """Whether the bus refuses new publishes."""
        return not self._accepting

    def _note_idle(self, sub: Subscription) -> None:
        """A subscription has emptied, and nobody waits to add to it, while closing: maybe the
        drain is done."""
        self._busy.discard(sub)
        if not self._busy:
            self._drained.set()

    # ------------------------------------------------------------------ subscribing

    @overload
    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = ...,
        event_types: Collection[str] | None = ...,
        buffer_size: int | None = ...,
        max_buffer_bytes: int | None = ...,
        durable: None = ...,
    ) -> Subscription: ...

    @overload
    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = ...,
        event_types: Collection[str] | None = ...,
        buffer_size: int | None = ...,
        max_buffer_bytes: int | None = ...,
        durable: str,
        max_deliver: int = ...,
    ) -> DurableSubscription: ...

    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        buffer_size: int | None = None,
        max_buffer_bytes: int | None = None,
        durable: str | None = None,
        max_deliver: int = DEFAULT_MAX_DELIVER,
    ) -> Subscription | DurableSubscription:
        """Subscribe to the topics ``pattern`` matches (``*`` one segment, ``>`` the rest).

        The subscription is live as soon as this returns: events published afterwards are
        routed to it. Use it as an async context manager so it is closed when you are done.

        With ``durable="name"`` the subscription lives in the bus's durable log instead of
        memory (see ``docs/durability.md``): from this call on, events published on matching
        topics are stored before their publish returns, kept while nobody consumes them, and
        handed to whoever iterates a subscription of that name, at least once, with
        redelivery and dead letters. It yields :class:`DurableMessage` records; one is
        acknowledged when the next is taken (or by ``sub.ack(msg)``); one still unsettled
        when the subscription closes is delivered again.

        Args:
            pattern: a topic pattern.
            qos: the tier: ``REALTIME`` drops on overflow, ``BATCHED`` and ``BACKGROUND``
                hold the publisher back instead. A durable subscription is lossless: not
                ``REALTIME``.
            event_types: only events whose ``type`` is one of these; ``None`` for all.
            buffer_size: the buffer bound; ``None`` for the tier's default (for a durable
                one: the deliveries fetched and not yet acknowledged, ``max_ack_pending``).
            max_buffer_bytes: the buffer's byte bound (see :class:`EventBus`); ``None`` for
                the bus's.
            durable: the durable name; ``None`` for an in-memory subscription.
            max_deliver: (durable) deliveries of one event before it is dead-lettered on
                ``loom.dlq.{durable}``.

        Raises:
            InvalidTopic: the pattern is malformed.
            InvalidArgument: a bad ``buffer_size`` or ``event_types``; ``durable`` with
                ``REALTIME``.
            DurabilityUnavailable: ``durable`` on a bus with no durable log.
            BusClosed: the bus is not open.
        """
        if durable is not None:
            return self._subscribe_durable(
                pattern, qos, event_types, buffer_size, durable, max_deliver
            )
        max_bytes = self._max_bytes if max_buffer_bytes is None else max_buffer_bytes
        return self._open(pattern, qos, event_types, buffer_size, None, max_bytes)

    def _subscribe_durable(
        self,
        pattern: str,
        qos: QoS,
        event_types: Collection[str] | None,
        buffer_size: int | None,
        name: str,
        max_deliver: int,
    ) -> DurableSubscription:
        if qos is QoS.REALTIME:
            raise InvalidArgument(
                "a durable subscription is lossless: use QoS.BATCHED or QoS.BACKGROUND, "
                "not REALTIME (which drops by design)"
            )
        if not self._accepting:
            raise BusClosed("the bus is not open" if self._state is _State.NEW else "bus closed")
        validate_pattern(pattern)
        validate_durable_name(name)
        if max_deliver < 1:
            raise InvalidArgument(f"max_deliver must be >= 1, not {max_deliver!r}")
        max_ack_pending = qos.default_buffer if buffer_size is None else buffer_size
        if max_ack_pending < 1:
            raise InvalidArgument(f"buffer_size must be >= 1, not {buffer_size!r}")
        return self.subscribe_durable(
            name,
            (pattern,),
            event_types=event_types,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        )

    def subscribe_durable(
        self,
        name: str,
        patterns: Collection[str],
        *,
        event_types: Collection[str] | None = None,
        max_deliver: int,
        max_ack_pending: int,
        ahead: int = 16,
    ) -> DurableSubscription:
        """Internal (the bridge's remote durable agents): the durable name ``name`` over
        several ``patterns`` (an agent's topics), as :meth:`subscribe` makes it for one,
        fetching up to ``ahead`` at a time.

        Raises:
            DurabilityUnavailable: the bus has no durable log.
        """
        for pattern in patterns:
            validate_pattern(pattern)
        validate_durable_name(name)
        log = self.register_durable(name, patterns)
        sub = DurableSubscription(
            log,
            name,
            tuple(patterns),
            publish=self.publish,
            event_types=None if event_types is None else frozenset(event_types),
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
            ahead=ahead,
        )
        self._durable_subs.add(sub)
        return sub

    def register_durable(self, name: str, patterns: Collection[str]) -> DurableLog:
        """Internal (the runtime's durable agents, :meth:`subscribe`): make ``name`` a durable
        name storing ``patterns`` from now on; return the log.

        Raises:
            DurabilityUnavailable: the bus has no durable log.
        """
        if self._log is None:
            raise DurabilityUnavailable(f"durable subscription {name!r}")
        self._log.register(name, patterns)
        self.add_durable_patterns(patterns)
        return self._log

    def add_durable_patterns(self, patterns: Iterable[str]) -> None:
        """Internal: publishes on topics ``patterns`` match are stored in the durable log
        from now on (patterns the log learnt elsewhere, e.g. at start from its server)."""
        added: list[str] = []
        for pattern in patterns:
            if pattern not in self._durable_patterns:
                self._durable.insert(validate_pattern(pattern), pattern)
                self._durable_patterns.add(pattern)
                added.append(pattern)
        if added:
            self._gen += 1  # every cached route recomputes its durable flag
            for listener in list(self._durable_watchers):
                listener(tuple(added))

    def _watch_durable(self, listener: Callable[[tuple[str, ...]], None]) -> Callable[[], None]:
        # BusPlumbing.watch_durable.
        self._durable_watchers.append(listener)

        def unwatch() -> None:
            with contextlib.suppress(ValueError):
                self._durable_watchers.remove(listener)

        return unwatch

    def _open(
        self,
        pattern: str,
        qos: QoS,
        event_types: Collection[str] | None,
        buffer_size: int | None,
        callback: Callable[[Delivery], None] | None,
        max_bytes: int | None = None,
    ) -> Subscription:
        if not self._accepting:
            raise BusClosed("the bus is not open" if self._state is _State.NEW else "bus closed")
        parts = validate_pattern(pattern)
        sub = Subscription(
            self._hooks,
            next(self._ids),
            pattern,
            qos,
            event_types,
            buffer_size,
            max_buffer_bytes=max_bytes,
            callback=callback,
        )
        self._subs[sub.id] = sub
        self._link(sub, pattern, parts, sub.qos)
        return sub

    def _subscribe_callback(
        self, pattern: str, callback: Callable[[Delivery], None]
    ) -> Subscription:
        """Internal: a subscription whose deliveries are handed to ``callback`` inside the
        publisher's ``publish`` call, for the runtime's own plumbing (the reply router).

        The callback must be quick, must not block and must not raise. Its buffer bound is 0,
        so the fast path of ``publish`` never looks at it: it is reached only where a full
        buffer would be, and it never holds a publisher back.
        """
        return self._open(pattern, QoS.REALTIME, None, None, callback)

    def _add_pattern(self, sub: Subscription, pattern: str, qos: QoS) -> None:
        if not self._accepting:
            raise BusClosed("bus closed")
        self._link(sub, pattern, validate_pattern(pattern), qos)

    def _remove_pattern(self, sub: Subscription, pattern: str, qos: QoS) -> None:
        self._unlink(pattern, _Member(sub, qos))

    def _link(self, sub: Subscription, pattern: str, parts: list[str], qos: QoS) -> None:
        member = _Member(sub, qos)
        self._trie.insert(parts, member)
        self._invalidate(pattern)
        if self._transport is not None:
            key = (pattern, qos)
            count = self._interest.get(key, 0)
            self._interest[key] = count + 1
            if count == 0:
                self._transport.add_interest(pattern, qos)

    def _unlink(self, pattern: str, member: _Member) -> None:
        # Segments are split again rather than kept: removal is rare, memory per pattern is not.
        self._trie.remove(pattern.split("."), member)
        self._invalidate(pattern)
        if self._transport is not None:
            key = (pattern, member.qos)
            count = self._interest[key] - 1
            if count:
                self._interest[key] = count
            else:
                del self._interest[key]
                if self._state is _State.OPEN:
                    self._transport.remove_interest(pattern, member.qos)

    def _invalidate(self, pattern: str) -> None:
        """Make cached routes that ``pattern`` may affect be recomputed on their next publish.

        A literal pattern can only change its own topic's route, so per-call inboxes and agent
        mailboxes coming and going leave every other cached route alone; a wildcard pattern
        invalidates them all.
        """
        if "*" in pattern or ">" in pattern:
            self._gen += 1
        else:
            entry = self._topics.get(pattern)
            if entry is not None:
                entry.gen = -1

    def _unsubscribe(self, sub: Subscription, patterns: Mapping[str, QoS]) -> None:
        if self._subs.pop(sub.id, None) is None:
            return
        # What it counted stays in its tier's totals (statistics().tiers); what it still
        # queues is about to be dropped as ``closed`` (Subscription.close shuts it next).
        self._retire(sub.statistics(), closing=True)
        for pattern, qos in patterns.items():
            self._unlink(pattern, _Member(sub, qos))
        if self._hooks.draining:
            self._busy.discard(sub)
            if not self._busy:
                self._drained.set()

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, event: Event) -> int:
        """Publish ``event`` on ``topic``; return how many subscriptions it reached.

        Returns once every matching subscription has the event queued (or, for a full Realtime
        one, has counted it dropped); the count includes those drops, so 0 means nobody here
        was subscribed (a transport may still carry the event to other processes).

        Waits while a matching Batched or Background subscription is full, without delaying
        the subscribers that have room: they get the event at once. Events of one publisher
        reach each subscriber in publish order.

        Not a checkpoint unless it waits (and once every 128 calls, so a publishing loop
        cannot starve its consumers). Cancelled while waiting, the event has reached the
        subscriptions that had room and not the rest; use :meth:`publish_nowait` for
        all-or-nothing.

        On a topic a durable pattern matches, it first waits until the durable log has
        stored the event (``docs/durability.md``).

        Raises:
            InvalidTopic: ``topic`` is not a valid concrete topic.
            BusClosed: the bus is not open (or closed while this waited).
            DurableUnavailable: a durable topic's event was not stored in time; it reached
                nobody.
        """
        self._tick += 1
        if self._tick >= _YIELD_EVERY:
            self._tick = 0
            await checkpoint()
        if not self._accepting:
            raise BusClosed("the bus is not open" if self._state is _State.NEW else "bus closed")
        if not isinstance(event, Event):
            raise InvalidArgument(f"publish takes an Event, not {type(event).__name__}")
        entry = self._topics.get(topic)
        if entry is None or entry.gen != self._gen:
            entry = self._refresh(topic, entry)
        tracer = self._tracer
        if tracer is not None:  # after validation: a refused publish makes no span
            if (
                tracer.left > 0
                and current_context() is NO_CONTEXT
                and not event.envelope.traceparent
            ):
                # A root that head sampling leaves out: the whole of its cost, inline
                # (``runtime/_tracing.py``; the event stays bare: not kept). No
                # OpenTelemetry context attached, the usual case, is one identity test;
                # any other context (a span current, or none) goes to ``inject``.
                tracer.left -= 1
            else:
                event = tracer.inject(topic, event)
        if entry.durable:
            # Stored first: a publish that cannot be stored (DurableUnavailable) has reached
            # nobody, and once stored it reaches the durable names whatever happens here.
            assert self._log is not None
            await self._log.append(topic, event)
            if entry.gen != self._gen:  # subscriptions or remote interest changed meanwhile
                entry = self._refresh(topic, self._topics.get(topic))
        # event_size, inlined for the common event without metadata (a call costs the 1:1
        # rate 5%).
        size = event_size(event) if event.metadata else len(event.payload) + EVENT_OVERHEAD_BYTES
        delivery = Delivery(topic, event, size)
        blocked = fan_out(entry, delivery)
        reached = entry.reached  # read before any await: the next publish overwrites it
        if blocked:
            reached += await self._finish_blocked(entry, blocked, delivery)
            if entry.gen != self._gen:  # remote interest may have changed while it waited
                entry = self._refresh(topic, self._topics.get(topic))
        if entry.out:  # with no interest elsewhere, this is all a publish pays
            if self._tracer is not None:  # leaving the process: an unsampled one is stamped
                event = self._tracer.outbound(event)
            assert self._transport is not None
            await self._transport.publish(topic, event)
        return reached

    async def _store_ahead(self, topic: str, event: Event) -> None:
        # BusPlumbing.store_ahead. Not with a tracer: publish stores the event with its
        # trace context injected, a different event from the one stored ahead.
        try:
            entry = self._topics.get(topic)
            if entry is None or entry.gen != self._gen:
                entry = self._refresh(topic, entry)
        except InvalidArgument:
            return  # publish says so
        if entry.durable and self._tracer is None and self._ahead_log is not None:
            await self._ahead_log.store_ahead(topic, event)

    def _remote_interest_changed(self) -> None:
        # InterestGate.on_interest_change: the transport may now carry topics it did not,
        # or not those it did. Rare (a node's subscriptions change, a node comes or goes).
        self._gen += 1

    def publish_nowait(self, topic: str, event: Event) -> int:
        """Publish ``event`` on ``topic`` if no lossless subscriber would make it wait; return
        how many subscriptions it reached (as :meth:`publish` counts them).

        All or nothing: either every matching subscription gets the event (Realtime ones may
        drop it on overflow, as always) or none does and :class:`WouldBlock` is raised, so a
        retry never duplicates. On a bus with a transport the transport must also take it
        without waiting (``Transport.publish_nowait``), before anything is routed here; the
        count is then of local subscriptions only, so 0 does not mean that nobody got it.

        Raises:
            WouldBlock: a matching Batched or Background subscription is full, or the
                transport cannot send without waiting.
            InvalidTopic: ``topic`` is not a valid concrete topic.
            BusClosed: the bus is not open.
        """
        if not self._accepting:
            raise BusClosed("the bus is not open" if self._state is _State.NEW else "bus closed")
        if not isinstance(event, Event):
            raise InvalidArgument(f"publish takes an Event, not {type(event).__name__}")
        entry = self._topics.get(topic)
        if entry is None or entry.gen != self._gen:
            entry = self._refresh(topic, entry)
        if entry.durable:
            raise WouldBlock(f"topic {topic!r} is durable: storing it needs a wait")
        # event_size inlined, as in publish; a topic nobody here holds (what a node relaying
        # to others publishes) has no subscriber to be full.
        size = event_size(event) if event.metadata else len(event.payload) + EVENT_OVERHEAD_BYTES
        if entry.route and (full := first_full(entry, event.type, size)) is not None:
            raise WouldBlock(f"subscription {full.pattern!r} is full")
        if self._tracer is not None:  # only once no local subscriber can refuse it
            event = self._tracer.inject(topic, event)
        if entry.out:
            assert self._transport is not None
            # Out first: it is the one step that can still refuse (WouldBlock), and nothing
            # has been routed here yet, so a refusal leaves no trace.
            outbound = event if self._tracer is None else self._tracer.outbound(event)
            self._transport.publish_nowait(topic, outbound)
        fan_out(entry, Delivery(topic, event, size))
        return entry.reached

    async def deliver_inbound(self, topic: str, event: Event, *, admitted: bool = False) -> int:
        """Route an event that a transport brought from another process, to local
        subscriptions only; return how many took it (as :meth:`publish` counts). Part of the
        :class:`Inbound` contract; not for applications.

        ``admitted``: the far end applied the tier already and sent the event under credit
        (the bridge's delivery credit), so a full Realtime subscription here waits for room
        like a lossless one instead of dropping: the drop, if any, is the far end's, counted
        where its subscription lives, and waiting here withholds the credit that lets it
        happen there."""
        if not self._accepting:
            raise BusClosed("bus closed")
        entry = self._topics.get(topic)
        if entry is None or entry.gen != self._gen:
            entry = self._refresh(topic, entry)
        delivery = Delivery(topic, event, event_size(event))
        blocked = fan_out(entry, delivery, admitted)
        reached = entry.reached
        if blocked:
            reached += await self._finish_blocked(entry, blocked, delivery)
        return reached

    def deliver_inbound_nowait(self, topic: str, event: Event) -> int:
        """:meth:`deliver_inbound` (not ``admitted``) when no local subscriber would make it
        wait, without a coroutine: a transport taking a frame of events calls this per
        event, and awaits :meth:`deliver_inbound` only for one it refuses. All or nothing,
        as :meth:`publish_nowait`. Not for applications.

        Raises:
            WouldBlock: a matching lossless subscription is full; nobody here got it.
            InvalidTopic: ``topic`` is not a valid concrete topic.
            BusClosed: the bus is closed.
        """
        if not self._accepting:
            raise BusClosed("bus closed")
        entry = self._topics.get(topic)
        if entry is None or entry.gen != self._gen:
            entry = self._refresh(topic, entry)
        size = event_size(event) if event.metadata else len(event.payload) + EVENT_OVERHEAD_BYTES
        if entry.route and first_full(entry, event.type, size) is not None:
            raise WouldBlock(f"a subscription on {topic!r} is full")
        fan_out(entry, Delivery(topic, event, size))
        return entry.reached

    async def _finish_blocked(
        self, entry: _Topic, blocked: list[Subscription], delivery: Delivery
    ) -> int:
        """Wait for room in each full subscription in turn; return how many took the event."""
        reached = 0
        for sub in blocked:
            if await put_waiting(sub, delivery):  # BusClosed if the bus closed it meanwhile
                reached += 1
                # The topic's record may have been evicted while we waited; its counters were
                # folded into the totals then, so count on there rather than into a lost record.
                if self._topics.get(entry.topic) is not entry:
                    entry = self._evicted
                entry.delivered += 1
                if self._hooks.draining:
                    self._busy.add(sub)
        return reached

    def _refresh(self, topic: str, entry: _Topic | None) -> _Topic:
        """Validate a new topic or recompute a stale route."""
        if entry is None:
            parts = validate_topic(topic)
            entry = _Topic(topic)
            topics = self._topics
            if len(topics) >= self._max_topics:
                oldest = next(iter(topics))
                topics.pop(oldest).fold_into(self._evicted)
            topics[topic] = entry
        else:
            parts = topic.split(".")
        # A subscription matched through several of its patterns is routed once; it waits for
        # room if any of those patterns is lossless, and drops (is "soft") if none is.
        hard: dict[Subscription, bool] = {}
        for member in self._trie.match(parts):
            hard[member.sub] = hard.get(member.sub, False) or member.lossless
        entry.route = tuple(hard)
        entry.soft = frozenset(sub for sub, h in hard.items() if not h)
        entry.durable = bool(self._durable_patterns) and bool(self._durable.match(parts))
        entry.out = self._transport is not None and (self._gate is None or self._gate.wants(topic))
        entry.gen = self._gen
        return entry

    def _count_closed_drops(self, topics: Iterable[str]) -> None:
        for topic in topics:
            entry = self._topics.get(topic, self._evicted)
            entry.closed += 1

    # ------------------------------------------------------------------ history

    def replay(
        self,
        pattern: str,
        *,
        since: Position | None = None,
        until: Position | None = None,
    ) -> AsyncIterator[Delivery]:
        """The stored events on topics ``pattern`` matches, oldest first, as deliveries.

        Read-only: it reads the durable log through a consumer of its own, so no durable
        name moves. ``since`` / ``until`` (both inclusive) take a log sequence
        (``DurableMessage.sequence``), a ``datetime`` or a ``timedelta`` (that long ago);
        ``None`` means the oldest event held, and the newest when the replay started (it
        ends there: events stored meanwhile are not waited for). Only events published on
        a durable topic are stored, and only as long as the log's limits keep them.

        Raises:
            InvalidTopic: the pattern is malformed.
            DurabilityUnavailable: the bus has no durable log.
        """
        validate_pattern(pattern)
        if self._log is None:
            raise DurabilityUnavailable("replay")
        return self._log.replay(pattern, since=since, until=until)

    # ------------------------------------------------------------------ introspection

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """Where this bus's spans go (``None``: tracing is off), and those of the agents on it
        and of the bridge calls served on it."""
        return None if self._tracer is None else self._tracer.provider

    def _retire(self, stats: SubscriptionStats, *, closing: bool) -> None:
        row = self._retired.setdefault(stats.qos, [0, 0, 0, 0])
        row[0] += stats.delivered
        row[1] += stats.dropped.overflow
        row[2] += stats.dropped.closed + (stats.queued if closing else 0)
        row[3] += stats.dropped.bytes

    def statistics(self) -> BusStats:
        """Totals, and a record per subscription, per tracked topic and per tier (O(n) in
        those)."""
        total = _Topic("")
        self._evicted.fold_into(total)
        for entry in self._topics.values():
            entry.fold_into(total)
        subscriptions = tuple(s.statistics() for s in self._subs.values())
        tiers = {qos: list(row) for qos, row in self._retired.items()}
        for sub in subscriptions:
            row = tiers.setdefault(sub.qos, [0, 0, 0, 0])
            row[0] += sub.delivered
            row[1] += sub.dropped.overflow
            row[2] += sub.dropped.closed
            row[3] += sub.dropped.bytes
        return BusStats(
            published=total.published,
            unrouted=total.unrouted,
            delivered=total.delivered,
            dropped=Drops(overflow=total.overflow, closed=total.closed, bytes=total.over_bytes),
            subscriptions=subscriptions,
            topics=tuple(e.record() for e in self._topics.values()),
            closed=not self._accepting,
            tiers=tuple(
                TierStats(
                    qos=qos,
                    delivered=row[0],
                    dropped=Drops(overflow=row[1], closed=row[2], bytes=row[3]),
                )
                for qos, row in sorted(tiers.items(), key=lambda item: item[0].value)
            ),
        )

    def subscription_count(self) -> int:
        """Open subscriptions (O(1))."""
        return len(self._subs)

    def _subscribers(self, topic: str) -> list[Subscription]:
        """Internal: the subscriptions an event published on ``topic`` would be routed to
        (before type filters). Validates ``topic``."""
        hard: dict[Subscription, None] = {}
        for member in self._trie.match(validate_topic(topic)):
            hard[member.sub] = None
        return list(hard)

    def trie_node_count(self) -> int:
        """Nodes in the routing trie, the root included: 1 when nothing is subscribed."""
        return self._trie.node_count()
