"""Envelopes of events that agents send while handling another event."""

from __future__ import annotations

from collections.abc import Mapping

from ._event import DEFAULT_TTL, Envelope, Event
from ._ids import new_id

__all__ = ["child_envelope", "request_event"]


def child_envelope(parent: Event | None, *, sender: str) -> Envelope:
    """The envelope of an event sent while handling ``parent`` (``None``: outside a handler).

    It keeps the parent's thread, hop budget and trace context and is one hop further, so
    a chain of agents cannot loop forever: the runtime dead-letters an event whose ``hop`` has
    reached its ``ttl`` instead of handling it.
    """
    if parent is None:
        return Envelope(sender=sender)
    env = parent.envelope
    return Envelope(
        thread_id=env.thread_id,
        sender=sender,
        ttl=env.ttl,
        hop=env.hop + 1,
        traceparent=env.traceparent,
        tracestate=env.tracestate,
    )


def request_event(
    payload: bytes,
    *,
    type: str,
    metadata: Mapping[str, str] | None,
    sender: str,
    reply_to: str,
    parent: Event | None,
) -> Event:
    """A request sent while handling ``parent`` (``None``: outside a handler).

    Its own id is its correlation id; it continues the parent's thread (or starts one named
    after itself), hop budget and trace context, one hop further; replies go to ``reply_to``.
    """
    request_id = new_id()
    penv = None if parent is None else parent.envelope
    envelope = Envelope(
        thread_id=(penv.thread_id if penv is not None and penv.thread_id else request_id),
        correlation_id=request_id,
        sender=sender,
        reply_to=reply_to,
        ttl=DEFAULT_TTL if penv is None else penv.ttl,
        hop=0 if penv is None else penv.hop + 1,
        traceparent="" if penv is None else penv.traceparent,
        tracestate="" if penv is None else penv.tracestate,
    )
    return Event(
        id=request_id,
        type=type or "request",
        source=sender,
        payload=payload,
        metadata=dict(metadata) if metadata else {},
        envelope=envelope,
    )
