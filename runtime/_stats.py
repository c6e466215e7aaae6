"""Small frozen statistics records returned by ``statistics()`` methods."""

from __future__ import annotations

import enum

import msgspec

from ._qos import QoS

__all__ = [
    "AgentStats",
    "BusStats",
    "DropReason",
    "Drops",
    "SubscriptionStats",
    "TierStats",
    "TopicStats",
]


class DropReason(enum.Enum):
    """Why an event did not reach a subscriber."""

    OVERFLOW = "overflow"
    """A Realtime subscription's buffer was full."""
    CLOSED = "closed"
    """It was still queued when its subscription (or the bus) closed."""
    BYTES = "bytes"
    """A Realtime subscription's buffer held its ``max_buffer_bytes``: the event did not fit."""


class Drops(msgspec.Struct, frozen=True, kw_only=True):
    """Dropped events, by :class:`DropReason`."""

    overflow: int = 0
    closed: int = 0
    bytes: int = 0

    @property
    def total(self) -> int:
        return self.overflow + self.closed + self.bytes


class SubscriptionStats(msgspec.Struct, frozen=True, kw_only=True):
    """One subscription's counters.

    ``matched == delivered + dropped.total + queued + in_flight`` holds at every moment.

    Attributes:
        id: the subscription's id.
        pattern: its pattern.
        qos: its tier.
        matched: events routed to it (queued, or dropped on overflow).
        delivered: events its consumer has taken. For a remote agent's subscription: events
            the agent's process has taken in (it credited them back); until then they are
            ``in_flight``.
        dropped: events it lost, by reason.
        queued: events waiting in its buffer now.
        high_water: the most events its buffer ever held at once.
        capacity: its buffer size.
        waiting_publishers: publishers held back by its full buffer right now.
        patterns: every pattern it listens on now (an agent's mailbox is one
            subscription on all of the agent's topics).
        in_flight: events taken from its buffer and on their way to a consumer in another
            process (a remote agent's stream), not yet taken in there. When that stream ends
            they are counted in ``dropped.closed``. Always 0 in process.
        queued_bytes: the size of the events waiting now, as ``event_size`` counts it.
        max_bytes: its byte bound (``max_buffer_bytes``); 0 for none.
    """

    id: int
    pattern: str
    qos: QoS
    matched: int
    delivered: int
    dropped: Drops
    queued: int
    high_water: int
    capacity: int
    waiting_publishers: int
    patterns: tuple[str, ...] = ()
    in_flight: int = 0
    queued_bytes: int = 0
    max_bytes: int = 0


class TopicStats(msgspec.Struct, frozen=True, kw_only=True):
    """One concrete topic's counters.

    Attributes:
        topic: the topic.
        published: events published on it.
        unrouted: of those, events that matched no subscription.
        delivered: deliveries put into subscription buffers (one per matching subscriber).
        dropped: deliveries lost, by reason.
    """

    topic: str
    published: int
    unrouted: int
    delivered: int
    dropped: Drops


class TierStats(msgspec.Struct, frozen=True, kw_only=True):
    """One QoS tier's counters over every subscription it has had, open and closed: unlike
    the per-subscription records, they never go back when a subscription closes.

    Attributes:
        qos: the tier.
        delivered: events its subscribers have taken.
        dropped: deliveries its subscriptions lost, by reason.
    """

    qos: QoS
    delivered: int
    dropped: Drops


class BusStats(msgspec.Struct, frozen=True, kw_only=True):
    """The bus's counters: totals, and the per-subscription and per-topic records.

    Per-topic records are kept for the ``max_tracked_topics`` most recently first-seen topics;
    the counters of topics evicted beyond that are folded into the totals only.

    Attributes:
        published: events published.
        unrouted: events that matched no subscription.
        delivered: deliveries put into subscription buffers.
        dropped: deliveries lost, by reason.
        subscriptions: one record per open subscription.
        topics: one record per tracked topic.
        closed: whether the bus refuses new publishes.
        tiers: one record per QoS tier that has had a subscription (closed ones included);
            this process's own (what its metrics read), not carried by the bridge.
    """

    published: int
    unrouted: int
    delivered: int
    dropped: Drops
    subscriptions: tuple[SubscriptionStats, ...]
    topics: tuple[TopicStats, ...]
    closed: bool
    tiers: tuple[TierStats, ...] = ()


class AgentStats(msgspec.Struct, frozen=True, kw_only=True):
    """One hosted agent's counters (:meth:`AgentRuntime.statistics_of`).

    Attributes:
        handled: events its handler finished.
        failed: events its handler raised on.
        queued: events waiting in its mailbox now.
        high_water: the most events its mailbox ever held at once.
        capacity: its mailbox's size.
    """

    handled: int
    failed: int
    queued: int
    high_water: int
    capacity: int
