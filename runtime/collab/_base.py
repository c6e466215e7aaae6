"""What every collaboration primitive shares: argument checks, the per-call inbox, building an
outgoing event from a payload and a parent, and a publish that knows when it reached nobody.

The inbox QoS. Every call subscribes a private inbox topic, ``BATCHED`` with a small bound:
the inbox is read continuously by the call and closed the moment the call ends, so holding a
replying publisher back is bounded by one scheduling round of the caller, while a lost reply
(what ``REALTIME`` would do on overflow) would turn into a silent timeout. Closing the inbox
releases any publisher still waiting on it (the bus's close semantics), so no responder can be
stuck on a call that has finished.
"""

from __future__ import annotations

import math
from typing import Final

from .._bus import EventBus
from .._errors import InvalidArgument, TTLExpired, WouldBlock
from .._event import Envelope, Event
from .._ids import new_id

__all__ = [
    "INBOX_SLACK",
    "check_name",
    "check_sender",
    "check_timeout",
    "inbox_topic",
    "outgoing",
    "publish_routed",
    "type_name",
]

INBOX_SLACK: Final = 16
"""Room in an inbox beyond the replies a call expects: strays and duplicates."""


def check_sender(sender: str) -> None:
    """A sender names an agent: one topic segment (it becomes part of the inbox topic)."""
    if not isinstance(sender, str):
        raise InvalidArgument(f"sender must be a str, not {type(sender).__name__}")
    if "." in sender or sender in ("*", ">"):
        raise InvalidArgument(
            f"sender {sender!r} must be one topic segment (no '.', not a wildcard)"
        )


def check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty str, not {value!r}")


def check_timeout(value: float, what: str = "timeout") -> float:
    """Seconds: a positive number (``math.inf`` waits forever); bools and NaN are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidArgument(f"{what} must be a number of seconds, not {value!r}")
    if value <= 0:
        raise InvalidArgument(f"{what} must be > 0, not {value!r}")
    return float(value)


def inbox_topic(sender: str, token: str) -> str:
    """The private reply topic of one call: ``agent.{sender}.replies.{token}``, else
    ``_inbox.{token}``. It lies under the sender's mailbox so that a bridge forwarding an
    agent's ``agent.{id}.replies.>`` interest carries call replies too."""
    return f"agent.{sender}.replies.{token}" if sender else f"_inbox.{token}"


def outgoing(
    payload: bytes | Event,
    *,
    type: str,
    sender: str,
    correlation_id: str,
    reply_to: str,
    parent: Event | None,
    new_thread: bool = True,
) -> Event:
    """The event a call publishes.

    ``payload`` is the body, or a whole event whose fields are kept and whose envelope gets the
    call's routing: correlation id, reply_to, and the sender when one is given. The thread is
    the event's own, else the parent's, else a new one (``new_thread``). With a ``parent`` (the
    event being handled) the trace context carries on and the hop count goes up by one, within
    the parent's budget.

    Raises:
        TTLExpired: the parent has used its hop budget.
        InvalidArgument: the payload is neither bytes nor an Event.
    """
    if isinstance(payload, Event):
        base: Envelope = payload.envelope
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        base = Envelope()
    else:
        raise InvalidArgument(f"payload must be bytes or an Event, not {type_name(payload)}")
    if parent is not None:
        penv = parent.envelope
        if penv.hop >= penv.ttl:
            raise TTLExpired(parent.id, penv.ttl, penv.hop)
        thread = base.thread_id or penv.thread_id
        ttl, hop = penv.ttl, penv.hop + 1
        traceparent, tracestate = penv.traceparent, penv.tracestate
    else:
        thread = base.thread_id
        ttl, hop = base.ttl, base.hop
        traceparent, tracestate = base.traceparent, base.tracestate
    if not thread and new_thread:
        thread = new_id()
    envelope = Envelope(
        thread_id=thread,
        correlation_id=correlation_id,
        sender=sender or base.sender,
        reply_to=reply_to,
        ttl=ttl,
        hop=hop,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    if isinstance(payload, Event):
        return Event(
            id=payload.id,
            type=payload.type or type,
            timestamp_ms=payload.timestamp_ms,
            source=payload.source or sender,
            metadata=payload.metadata,
            payload=payload.payload,
            confidence=payload.confidence,
            tags=payload.tags,
            priority=payload.priority,
            envelope=envelope,
        )
    return Event(type=type, source=sender, payload=bytes(payload), envelope=envelope)


def type_name(value: object) -> str:
    return type(value).__name__


async def publish_routed(bus: EventBus, topic: str, event: Event) -> bool:
    """Publish ``event``; False only when it certainly reached no subscriber.

    ``publish_nowait`` says how many local subscriptions it reached; 0 is certain on a bus
    without a transport (one with a transport may reach a subscriber in another process).
    When it would block (a full lossless subscriber, which is a subscriber, or a transport
    that cannot send now) the event goes through ``publish`` and counts as routed.
    """
    try:
        return bus.publish_nowait(topic, event) > 0 or bus.plumbing.has_transport
    except WouldBlock:
        await bus.publish(topic, event)
        return True
