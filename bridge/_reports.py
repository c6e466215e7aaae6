"""A remote agent's supervision on the wire (``STREAM_FEATURE_SUPERVISION``): its state
changes (``AgentReport``) and its dead letters (``DeadLetter``), both ways, pure.

The agent's own runtime supervises it in its process (restarts, poison events, failure); the
server's runtime knows it only as a remote agent. These frames tell the server what the agent's
runtime decided, so the server publishes them as its own lifecycle events and dead letters,
in the agent's name (never in anyone else's: the stream's authenticated agent is the one),
and counts its restarts (``loom agents``).
"""

from __future__ import annotations

import msgspec

from loom.bridge._generated import bridge_pb2
from loom.runtime import AgentStatus, Delivery, Event

from ._convert import event_from_proto, event_to_proto
from ._errors import WireError

__all__ = [
    "DEAD_LETTER_KEYS",
    "FINAL",
    "Report",
    "dead_letter_from_proto",
    "dead_letter_to_proto",
    "report_from_proto",
    "report_to_proto",
]

FINAL = frozenset({AgentStatus.STOPPED, AgentStatus.FAILED})
"""The states after which the agent handles nothing more: the server releases it."""

DEAD_LETTER_KEYS = (
    "dead_letter.reason",
    "dead_letter.error",
    "dead_letter.topic",
    "dead_letter.agent",
    "dead_letter.attempts",
)
"""The metadata keys a runtime adds to a dead letter (``docs/agents.md``)."""

_REPORTED = frozenset({AgentStatus.STARTING, AgentStatus.RUNNING, AgentStatus.STOPPING, *FINAL})


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One ``AgentReport``."""

    status: AgentStatus
    reason: str = ""
    restarts: int = 0


def report_to_proto(report: Report) -> bridge_pb2.ClientEvent:
    msg = bridge_pb2.AgentReport(
        status=report.status.value, reason=report.reason, restarts=max(0, report.restarts)
    )
    return bridge_pb2.ClientEvent(report=msg)


def report_from_proto(msg: bridge_pb2.AgentReport) -> Report:
    """Raises: WireError: a state an agent's runtime does not report."""
    try:
        status = AgentStatus(msg.status)
    except ValueError:
        status = None
    if status not in _REPORTED:
        raise WireError("AgentReport.status", f"{msg.status!r} is not a state an agent reports")
    assert status is not None
    return Report(status=status, reason=msg.reason, restarts=msg.restarts)


def dead_letter_to_proto(
    delivery: Delivery, *, reason: str, error: str, attempts: int
) -> bridge_pb2.ClientEvent:
    """A ``dead_letter`` frame of ``delivery`` (its event without the ``dead_letter.*``
    metadata its runtime may have added: the server adds its own).

    Raises:
        WireError: the event cannot go on the wire.
    """
    event = delivery.event
    if any(key in event.metadata for key in DEAD_LETTER_KEYS):
        metadata = {k: v for k, v in event.metadata.items() if k not in DEAD_LETTER_KEYS}
        event = msgspec.structs.replace(event, metadata=metadata)
    msg = bridge_pb2.DeadLetter(
        topic=delivery.topic,
        event=event_to_proto(event, mirror=False),
        reason=reason,
        error=error,
        attempts=max(0, attempts),
    )
    return bridge_pb2.ClientEvent(dead_letter=msg)


def dead_letter_from_proto(msg: bridge_pb2.DeadLetter) -> tuple[Delivery, str, str, int]:
    """``(delivery, reason, error, attempts)`` of a ``DeadLetter``.

    Raises:
        WireError: no reason, or a malformed event.
    """
    if not msg.reason:
        raise WireError("DeadLetter.reason", "a dead letter needs a reason")
    event: Event = event_from_proto(msg.event)
    return Delivery(msg.topic, event), msg.reason, msg.error, msg.attempts
