"""The operator's two actions on a stored dead letter (``loom.dlq.*`` in the durable log):
publish it again, or drop it. One implementation for every face that offers them: the
bridge's ``EventBus.RetryDeadLetter`` / ``DropDeadLetter`` (``loom dlq retry|drop``) and
the dashboard's buttons. Who may act is the caller's to decide; this only acts.
"""

from __future__ import annotations

import anyio
import msgspec

from ._bus import EventBus
from ._durable import ATTEMPT_KEY, REDELIVERED_KEY, SEQUENCE_KEY, DurableLog
from ._durable_sub import DLQ_PREFIX
from ._errors import DurabilityUnavailable, InvalidArgument
from ._event import Delivery, Event
from ._ids import new_id

__all__ = [
    "RETRY_OF_KEY",
    "drop_dead_letter",
    "find_dead_letter",
    "retried_event",
    "retry_dead_letter",
]

RETRY_OF_KEY = "loom.retry_of"
"""The metadata key of an event a dead letter's retry published: the original's id (the
retry has an id of its own, or the log would take it for the original and store nothing)."""
_DEAD_LETTER_PREFIX = "dead_letter."


async def find_dead_letter(bus: EventBus, sequence: int) -> Delivery:
    """The dead letter stored at ``sequence`` in ``bus``'s durable log.

    Raises:
        InvalidArgument: the log holds none there (never stored, dropped, or not a dead
            letter).
        DurabilityUnavailable: the bus has no durable log.
    """
    if sequence < 1:
        raise InvalidArgument(f"no dead letter at sequence {sequence}: sequences start at 1")
    stored = bus.replay(f"{DLQ_PREFIX}.>", since=sequence, until=sequence)
    try:
        async for delivery in stored:
            if delivery.event.metadata.get(SEQUENCE_KEY) == str(sequence):
                if _DEAD_LETTER_PREFIX + "topic" in delivery.event.metadata:
                    return delivery
                break
    finally:
        with anyio.CancelScope(shield=True):
            await stored.aclose()  # type: ignore[attr-defined]
    raise InvalidArgument(f"no dead letter at sequence {sequence} (see `loom dlq list`)")


def retried_event(letter: Event) -> Event:
    """The event a dead letter holds, as it was published, under a new id marked as a retry
    of the original (:data:`RETRY_OF_KEY`)."""
    dropped = (ATTEMPT_KEY, REDELIVERED_KEY, SEQUENCE_KEY)
    metadata = {
        k: v
        for k, v in letter.metadata.items()
        if not k.startswith(_DEAD_LETTER_PREFIX) and k not in dropped
    }
    metadata[RETRY_OF_KEY] = letter.id
    return msgspec.structs.replace(letter, id=new_id(), metadata=metadata)


async def retry_dead_letter(bus: EventBus, sequence: int) -> tuple[str, Event]:
    """Publish the dead letter at ``sequence`` again on its original topic, then remove it
    from the log. Returns the topic and the event published.

    Published first: a retry that fails before the removal leaves the dead letter stored
    (retrying it again publishes a second copy, under another new id).

    Raises:
        InvalidArgument: the log holds no dead letter at ``sequence``.
        DurabilityUnavailable: the bus has no durable log.
        BusClosed: the bus is closing.
    """
    log = _log(bus, "retrying a dead letter")
    letter = await find_dead_letter(bus, sequence)
    topic = letter.event.metadata[_DEAD_LETTER_PREFIX + "topic"]
    event = retried_event(letter.event)
    await bus.publish(topic, event)
    await log.remove(sequence)
    return topic, event


async def drop_dead_letter(bus: EventBus, sequence: int) -> None:
    """Remove the dead letter at ``sequence`` from the log.

    Raises:
        InvalidArgument: the log holds no dead letter at ``sequence``.
        DurabilityUnavailable: the bus has no durable log.
    """
    log = _log(bus, "dropping a dead letter")
    await find_dead_letter(bus, sequence)
    await log.remove(sequence)


def _log(bus: EventBus, what: str) -> DurableLog:
    log = bus.plumbing.durable_log
    if log is None:
        raise DurabilityUnavailable(what)
    return log
