"""The event model: :class:`Event`, its typed :class:`Envelope`, and :class:`Delivery`.

Events are frozen msgspec Structs, so they are cheap to build, safe to share between every
subscriber of a publish, and encode to JSON or MessagePack without glue. ``gc=False``: an event
holds only strings, bytes and numbers, so it can never be part of a reference cycle and the
cycle collector need not track the millions of them a busy bus creates.
"""

from __future__ import annotations

import msgspec

from ._errors import TTLExpired
from ._ids import new_id, now_ms

__all__ = [
    "DEFAULT_TTL",
    "EVENT_OVERHEAD_BYTES",
    "Delivery",
    "Envelope",
    "Event",
    "event_size",
    "mailbox_topic",
    "reply_envelope",
    "reply_topic",
    "step_hop",
]

DEFAULT_TTL = 16
"""The default hop budget of an envelope (the original Loom core's default)."""


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Routing and tracing facts that travel with an event.

    Attributes:
        thread_id: the conversation this event belongs to; replies keep it.
        correlation_id: ties a reply to its request; replies keep it.
        sender: the agent id that sent the event.
        reply_to: the topic a reply should go to; empty means the sender's mailbox topic.
        ttl: the hop budget: how many agent-to-agent hops the event may still take in all.
        hop: how many hops it has taken.
        traceparent: W3C trace context of the span that sent the event.
        tracestate: W3C vendor trace state that goes with ``traceparent``.
    """

    thread_id: str = ""
    correlation_id: str = ""
    sender: str = ""
    reply_to: str = ""
    ttl: int = DEFAULT_TTL
    hop: int = 0
    traceparent: str = ""
    tracestate: str = ""


_NO_ENVELOPE = Envelope()


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One event: what the bus carries and the bridge puts on the wire (``loom.v1.Event``).

    Attributes:
        id: unique and time-sortable (UUIDv7); made for you.
        type: what kind of event this is, e.g. ``"task.created"``; subscriptions may filter on it.
        timestamp_ms: creation time in Unix milliseconds; made for you.
        source: who or what produced the event.
        metadata: free string key/values. Do not mutate it once the event is published.
        payload: the body, as bytes; its encoding is the producer's choice.
        confidence: how sure the producer is, 0.0 to 1.0.
        tags: free labels.
        priority: larger is more urgent; the bus itself does not reorder by it.
        envelope: routing and trace context.
    """

    id: str = msgspec.field(default_factory=new_id)
    type: str = ""
    timestamp_ms: int = msgspec.field(default_factory=now_ms)
    source: str = ""
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    payload: bytes = b""
    confidence: float = 1.0
    tags: tuple[str, ...] = ()
    priority: int = 0
    envelope: Envelope = _NO_ENVELOPE


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """An event as a subscriber receives it, with the concrete topic it was published on.

    One ``Delivery`` is made per publish and shared by every subscriber of it.

    Attributes:
        topic: the concrete topic.
        event: the event.
        size: what the event counts against a buffer's byte bound (:func:`event_size`),
            computed once by the bus when it makes the delivery; 0 for one made elsewhere.
    """

    topic: str
    event: Event
    size: int = 0


EVENT_OVERHEAD_BYTES = 256
"""The fixed part of :func:`event_size`: about what an event's id, type, timestamp, envelope
and the Python objects around them take, whatever its payload."""


def event_size(event: Event) -> int:
    """The bytes an event counts against a buffer's ``max_buffer_bytes``: a cheap estimate,
    not a measurement. Its payload's length and the lengths of its metadata keys and values,
    plus :data:`EVENT_OVERHEAD_BYTES`; its source, tags and the envelope's strings are in the
    fixed part. Every event is charged, however small. Computed once per publish (not per
    subscriber); close enough that the payloads that fill memory are what it counts.
    """
    size = len(event.payload) + EVENT_OVERHEAD_BYTES
    metadata = event.metadata
    if metadata:
        for key, value in metadata.items():
            size += len(key) + len(value)
    return size


def mailbox_topic(agent_id: str) -> str:
    """The mailbox topic every agent is subscribed to: ``agent.{agent_id}.replies``."""
    return f"agent.{agent_id}.replies"


def reply_topic(request: Event) -> str:
    """Where a reply to ``request`` goes: its ``reply_to``, else the sender's mailbox topic.

    Raises:
        ValueError: the request names neither a ``reply_to`` nor a sender.
    """
    env = request.envelope
    if env.reply_to:
        return env.reply_to
    if env.sender:
        return mailbox_topic(env.sender)
    raise ValueError(f"event {request.id} names no reply_to and no sender; nowhere to reply")


def reply_envelope(request: Event, *, sender: str) -> Envelope:
    """The envelope of a reply to ``request``.

    The reply keeps the request's thread and correlation id (the request's own id when it had
    no correlation id, which is what a requester waiting on that id expects), carries the
    request's trace context on, and restarts the hop count with the request's budget.
    """
    env = request.envelope
    return Envelope(
        thread_id=env.thread_id,
        correlation_id=env.correlation_id or request.id,
        sender=sender,
        ttl=env.ttl,
        traceparent=env.traceparent,
        tracestate=env.tracestate,
    )


def step_hop(event: Event) -> Event:
    """The event as it continues one more hop, its ``hop`` counted up.

    Raises:
        TTLExpired: the event has already taken ``ttl`` hops; it must not be handled further.
            Callers route it to a dead-letter topic with this error as the reason.
    """
    env = event.envelope
    if env.hop >= env.ttl:
        raise TTLExpired(event.id, env.ttl, env.hop)
    return msgspec.structs.replace(event, envelope=msgspec.structs.replace(env, hop=env.hop + 1))
