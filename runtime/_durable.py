"""The seam between the bus and a durable log (NATS JetStream in ``loom.cluster``).

The bus decides *what* is stored: a publish whose topic matches a durable pattern is appended
to the log, and the publish returns once the log has stored it. The log decides *how*: it keeps
the events, hands each durable name its deliveries with redelivery, and replays what it holds.
The runtime never imports NATS; ``loom.cluster.JetStreamLog`` implements these protocols.
``docs/durability.md`` has the semantics.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from ._errors import DeadlineExceeded, InvalidArgument
from ._event import Delivery, Event

__all__ = [
    "ATTEMPT_KEY",
    "DEFAULT_MAX_DELIVER",
    "REDELIVERED_KEY",
    "SEQUENCE_KEY",
    "ConsumerStats",
    "DurableConsumer",
    "DurableLog",
    "DurableMessage",
    "DurableStats",
    "DurableUnavailable",
    "PipelinedLog",
    "Position",
    "RemoteDurableMessage",
    "mark_delivery",
    "validate_durable_name",
]

DEFAULT_MAX_DELIVER = 5
"""How many times one event is handed to a durable subscriber before it is dead-lettered."""

ATTEMPT_KEY = "delivery.attempt"
"""The metadata key a durable delivery carries: which attempt this is, ``"1"`` the first."""
REDELIVERED_KEY = "delivery.redelivered"
"""The metadata key a durable delivery carries: ``"true"`` when delivered before."""

SEQUENCE_KEY = "log.sequence"
"""The metadata key a replayed event carries: its sequence in the log (what ``since``,
``until`` and ``DurableLog.remove`` take), so a reader can name one stored event."""

Position = int | datetime | timedelta
"""Where a replay starts or stops: a stream sequence, a moment, or that long ago."""


class DurableUnavailable(DeadlineExceeded):
    """The durable log did not store (or answer) in time: its server is down or unreachable,
    or the durable is full. A publish that raises this may or may not have been stored; a
    retry of the same event (same id, same topic) is stored at most once. A replay cut off
    by it says how far it got.

    A :class:`DeadlineExceeded` (and so a ``TimeoutError``): over the bridge it crosses as
    ``DEADLINE_EXCEEDED`` with its message."""


class DurableMessage(Protocol):
    """One delivery of a stored event to a durable name, to be settled exactly once.

    Attributes:
        topic: the topic the event was published on.
        event: the event as stored (``mark_delivery`` adds the attempt to its metadata).
        attempt: 1 for the first delivery, counted up by each redelivery.
        sequence: its sequence in the log (what ``replay(since=...)`` takes).
    """

    topic: str
    event: Event
    attempt: int
    sequence: int

    async def ack(self) -> None:
        """Done with it: it is never delivered to this durable name again."""
        ...

    async def nak(self, delay: float = 0.0) -> None:
        """Not done: deliver it again after ``delay`` seconds."""
        ...

    async def term(self) -> None:
        """Never deliver it again (it was dead-lettered)."""
        ...

    async def in_progress(self) -> None:
        """Still working on it: its ack wait starts over (it is not redelivered yet)."""
        ...


@runtime_checkable
class RemoteDurableMessage(DurableMessage, Protocol):
    """A delivery held for this process by another (a remote agent's, held by its server):
    giving it up is the holder's to do, since only it may publish on ``loom.dlq.>``."""

    async def dead_letter(self, reason: str, error: str) -> None:
        """Have the holder publish it on ``loom.dlq.{name}`` (``dead_letter_event``), then
        never deliver it again."""
        ...


class DurableConsumer(Protocol):
    """A durable name's position in the log: what it has not acknowledged yet survives it."""

    @property
    def ack_wait(self) -> float:
        """Seconds a delivery may stay unsettled (without ``in_progress``) before the log
        delivers it again (read each time: it may change, e.g. a remote agent's server)."""
        ...

    async def fetch(self, batch: int, timeout: float) -> list[DurableMessage]:
        """Up to ``batch`` deliveries, waiting at most ``timeout`` seconds for the first;
        ``[]`` when none came. Unacknowledged ones come back after their ack wait."""
        ...

    async def aclose(self) -> None:
        """Stop fetching; the durable name and its position stay in the log."""
        ...


class ConsumerStats(msgspec.Struct, frozen=True, kw_only=True):
    """One durable name, as the log sees it.

    Attributes:
        name: the durable name.
        patterns: the patterns it stores.
        pending: stored events it has not been handed yet.
        in_flight: handed to it and not acknowledged yet.
        redelivered: of those in flight, handed more than once.
        overflow: events the log dropped (age or size limit) before this name acknowledged
            them: lost to it. An upper bound (see ``docs/durability.md``).
    """

    name: str
    patterns: tuple[str, ...]
    pending: int
    in_flight: int
    redelivered: int
    overflow: int


class DurableStats(msgspec.Struct, frozen=True, kw_only=True):
    """The durable log: what it holds and each durable name's standing.

    Attributes:
        stored: events held now.
        bytes: their size in the log.
        first_sequence: the oldest held; 0 when empty.
        last_sequence: the newest ever stored.
        appended: appends this process made (duplicates included).
        duplicates: of those, the log had already (same event id on the same topic).
        consumers: one record per durable name.
    """

    stored: int
    bytes: int
    first_sequence: int
    last_sequence: int
    appended: int
    duplicates: int
    consumers: tuple[ConsumerStats, ...]


class DurableLog(Protocol):
    """Stores events and hands each durable name its deliveries (implemented in
    ``loom.cluster``). The bus calls it; applications reach it through the bus.

    Attributes:
        ack_wait: seconds a delivery of its consumers may stay unsettled (without
            ``in_progress``) before it is delivered again; a bridge server tells its remote
            durable agents (``StreamWelcome.durable_ack_wait_ms``).
    """

    ack_wait: float

    def patterns(self) -> frozenset[str]:
        """Every durable pattern the log knows now (of live and of stopped durable names):
        a publish matching one of them is appended."""
        ...

    def register(self, name: str, patterns: Collection[str]) -> None:
        """Make ``name`` a durable name storing ``patterns`` from now on; the next append
        already honours it. Never blocks (the log's server learns it on ``open_consumer``)."""
        ...

    async def append(self, topic: str, event: Event) -> int:
        """Store ``event``; return its sequence. Stored once per (event id, topic) within the
        log's duplicate window: a retry after a lost answer stores nothing more.

        Raises:
            DurableUnavailable: not stored in time (server down, durable full).
        """
        ...

    async def open_consumer(
        self, name: str, patterns: Collection[str], *, max_deliver: int, max_ack_pending: int
    ) -> DurableConsumer:
        """The durable name ``name`` (created the first time, from the moment it was
        registered; its position kept after)."""
        ...

    def replay(
        self, pattern: str, *, since: Position | None, until: Position | None
    ) -> AsyncIterator[Delivery]:
        """The stored events matching ``pattern`` from ``since`` to ``until`` (both
        inclusive; ``None``: the oldest held, and the newest when the replay started), in
        log order, each event's metadata carrying its sequence (``log.sequence``).
        Read-only: durable names are not moved."""
        ...

    async def remove(self, sequence: int) -> bool:
        """Delete the stored event at ``sequence`` (a dead letter dropped by an operator);
        ``False`` when the log holds none there. Durable names that had not taken it never
        will."""
        ...

    async def statistics(self) -> DurableStats:
        """What the log holds, and each durable name's standing."""
        ...


_NAME = re.compile(r"[A-Za-z0-9_\-:@+=]{1,128}")


@runtime_checkable
class WatchedLog(Protocol):
    """A durable log that learns durable names made elsewhere (another process sharing its
    server: ``loom.cluster.JetStreamLog``). Optional: a log that only ever knows its own
    names (one reached over the bridge, whose server's bus does the storing) lacks it."""

    def watch(self, listener: Callable[[Iterable[str]], None]) -> None:
        """Call ``listener`` (on the bus's event loop) with the patterns of each durable name
        the log learns from elsewhere from now on."""
        ...


@runtime_checkable
class PipelinedLog(Protocol):
    """A durable log that can start storing an event ahead of its ``append``, so that one
    publisher with several publishes queued (a remote agent's stream on a bridge server)
    has their stores in flight together, in its order, instead of one round trip each.
    Optional (``loom.cluster.JetStreamLog`` has it)."""

    async def store_ahead(self, topic: str, event: Event) -> None:
        """Start storing ``event`` on ``topic`` (in call order); the ``append`` of the same
        event on the same topic then waits for that store instead of making its own (and
        makes its own, stored once by the event's id, if that one failed). Never raises."""
        ...


def validate_durable_name(name: str) -> str:
    """A durable name is what an agent id is: one topic segment (it names
    ``loom.dlq.{name}``).

    Raises:
        InvalidArgument: it has dots, wildcards, whitespace, or is empty or too long.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid durable name {name!r}: use 1-128 letters, digits and _-:@+= (no dots)"
        )
    return name


def mark_delivery(event: Event, attempt: int) -> Event:
    """``event`` as handed to a durable subscriber: its metadata says which attempt this is
    (``delivery.attempt``) and whether it was delivered before (``delivery.redelivered``), so
    a handler can be idempotent."""
    metadata = dict(event.metadata)
    metadata[ATTEMPT_KEY] = str(attempt)
    metadata[REDELIVERED_KEY] = "true" if attempt > 1 else "false"
    return msgspec.structs.replace(event, metadata=metadata)
