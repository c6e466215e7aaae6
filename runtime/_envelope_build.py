"""Envelopes of events that agents send while handling another event."""

from __future__ import annotations

from ._event import Envelope, Event

__all__ = ["child_envelope"]


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
