"""Request/reply over the bus: a private inbox per call, replies matched by correlation id."""

from __future__ import annotations

import anyio
import msgspec
from anyio.lowlevel import checkpoint

from ._bus import EventBus
from ._collab_base import (
    INBOX_SLACK,
    check_sender,
    check_timeout,
    inbox_topic,
    outgoing,
    type_name,
)
from ._collab_errors import NoResponders, RequestTimeout
from ._errors import BusClosed, InvalidArgument, SubscriptionClosed, WouldBlock
from ._event import Event, reply_envelope, reply_topic
from ._ids import new_id
from ._qos import QoS

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

    The request carries a new correlation id and, as ``reply_to``, an inbox topic private to
    this call (``agent.{sender}.replies.{id}``, or ``_inbox.{id}`` without a sender), which is
    subscribed before the request is published and closed when the call ends, however it ends.
    Only a reply with the request's correlation id is accepted; others that reach the inbox are
    counted and ignored. Responders answer with :func:`reply`.

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
    correlation_id = new_id()
    inbox = inbox_topic(sender, correlation_id)
    event = outgoing(
        payload,
        type=type,
        sender=sender,
        correlation_id=correlation_id,
        reply_to=inbox,
        parent=parent,
    )
    ignored = 0
    async with bus.subscribe(inbox, qos=QoS.BATCHED, buffer_size=INBOX_SLACK) as inbox_sub:
        deadline = anyio.current_time() + timeout
        try:
            reached = bus.publish_nowait(topic, event)
        except WouldBlock:
            published = False  # a full subscriber (or a transport): publish within the deadline
        else:
            if not reached:
                raise NoResponders(topic, correlation_id)
            published = True
            # The fast path: yield once. A local responder that answers without waiting has
            # then answered, and the call needs no cancel scope, which is the largest single
            # cost of a round trip. Otherwise (remote, slow, or scheduled later) wait below.
            await checkpoint()
            while True:
                try:
                    answer = inbox_sub.receive_nowait().event
                except WouldBlock:
                    break
                except SubscriptionClosed:
                    raise BusClosed("the bus closed while waiting for a reply") from None
                if answer.envelope.correlation_id == correlation_id:
                    return answer
                ignored += 1
        with anyio.move_on_at(deadline):
            if not published:
                await bus.publish(topic, event)
            while True:
                try:
                    answer = (await inbox_sub.receive()).event
                except SubscriptionClosed:
                    raise BusClosed("the bus closed while waiting for a reply") from None
                if answer.envelope.correlation_id == correlation_id:
                    return answer
                ignored += 1
    raise RequestTimeout(topic, correlation_id, timeout, ignored)


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
