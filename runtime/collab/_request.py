"""Request/reply over the bus: a private inbox per call, replies matched by correlation id."""

from __future__ import annotations

import msgspec

from .._bus import EventBus
from .._errors import InvalidArgument
from .._event import Event, reply_envelope, reply_topic
from .._ids import new_id
from ._base import (
    check_sender,
    check_timeout,
    outgoing,
    type_name,
)
from ._replies import router_for

__all__ = ["reply", "request"]


async def request(
    bus: EventBus,
    topic: str,
    payload: bytes | Event = b"",
    *,
    timeout: float,
    sender: str = "",
    parent: Event | None = None,
    type: str = "request",
) -> Event:
    """Publish a request on ``topic`` and wait for its reply.

    The request carries a new correlation id and, as ``reply_to``, the sender's reply topic
    (``agent.{sender}.replies.rpc``, or the bus's ``_inbox.{token}`` without a sender). The
    bus's reply router (one subscription for every call, see ``_replies.py``) hands the reply
    with the request's correlation id to this call; replies for calls that already ended are
    counted as stray and dropped. Responders answer with :func:`reply`.

    Args:
        bus: the bus to use.
        topic: where to publish the request.
        payload: the body, or a whole :class:`Event` to send (its envelope gets the call's
            correlation id and reply_to; its thread is kept).
        timeout: seconds the whole call may take, publishing included.
        sender: the requesting agent's id (one topic segment); names the inbox.
        parent: the event being handled, when called from a handler: the request continues
            its thread and trace, one hop further.
        type: the event type of a request built from bytes.

    Returns:
        The reply event.

    Raises:
        RequestTimeout: no matching reply within ``timeout`` (a ``TimeoutError``).
        NoResponders: the request reached no subscriber (raised at once; not detected on a bus
            with a transport, where a remote process may answer).
        BusClosed: the bus closed before a reply came.
        TTLExpired: ``parent`` has used its hop budget.
        InvalidArgument: a bad ``timeout``, ``sender`` or payload.
        InvalidTopic: ``topic`` is malformed.
    """
    check_timeout(timeout)
    check_sender(sender)
    router = router_for(bus)
    correlation_id = new_id()
    event = outgoing(
        payload,
        type=type,
        sender=sender,
        correlation_id=correlation_id,
        reply_to=router.inbox(sender),
        parent=parent,
    )
    return await router.call(topic, event, timeout=timeout)


async def reply(
    bus: EventBus,
    request: Event,
    payload: bytes | Event = b"",
    *,
    sender: str,
    type: str = "reply",
) -> Event:
    """Answer ``request``: publish a reply on ``reply_topic(request)`` with
    ``reply_envelope(request, sender=sender)`` (same thread and correlation id, trace context
    carried on).

    If the requester has gone (timed out, cancelled) the reply reaches no subscriber and the
    bus counts it as ``unrouted``; that is not an error here.

    Args:
        bus: the bus to use.
        request: the request being answered.
        payload: the body, or a whole :class:`Event` whose envelope is replaced by the reply's.
        sender: the replying agent's id.
        type: the event type of a reply built from bytes.

    Returns:
        The reply as published.

    Raises:
        InvalidArgument: the request names no ``reply_to`` and no sender, or a bad payload.
    """
    try:
        topic = reply_topic(request)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    envelope = reply_envelope(request, sender=sender)
    if isinstance(payload, Event):
        event = msgspec.structs.replace(payload, envelope=envelope)
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        event = Event(type=type, source=sender, payload=bytes(payload), envelope=envelope)
    else:
        raise InvalidArgument(f"payload must be bytes or an Event, not {type_name(payload)}")
    await bus.publish(topic, event)
    return event
