"""The reply router: request/reply without a subscription per call.

One callback subscription per bus listens on every requester's reply topic
(``agent.{sender}.replies.rpc``, or ``_inbox.{bus-token}`` without a sender) and hands each
reply to the call waiting on its correlation id, inside the responder's ``publish``. A request
therefore costs one dictionary entry, not a subscribe/close pair and a new topic: the requester
is woken straight from the reply's publish, with no task in between.

A reply for a call that already ended (timed out, cancelled) finds no entry and is counted as
``stray``; nothing is left behind by any call, however it ends.
"""

from __future__ import annotations

from typing import Final

import anyio
from anyio.lowlevel import checkpoint

from .._bus import EventBus
from .._errors import BusClosed, WouldBlock
from .._event import Delivery, Event
from .._ids import new_id
from .._subscription import Subscription
from .._waiter import Waiter
from ..resilience import PolicyRules
from ._errors import NoResponders, RequestTimeout
from ._guard import guarded_request

__all__ = ["RPC_SEGMENT", "ReplyRouter", "router_for"]

RPC_SEGMENT: Final = "rpc"
"""Replies to agent ``x``'s calls go to ``agent.x.replies.rpc``."""


class _Call:
    __slots__ = ("reply", "waiter")

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter
        self.reply: Event | None = None


class ReplyRouter:
    """Matches replies to pending calls by correlation id. One per bus (:func:`router_for`)."""

    __slots__ = ("_bus", "_inbox", "_pending", "_plumbing", "_sub", "policies", "stray")

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        plumbing = self._plumbing = bus.plumbing
        self._pending: dict[str, _Call] = {}
        self._inbox = f"_inbox.{new_id()}"
        self._sub: Subscription = plumbing.subscribe_callback(
            f"agent.*.replies.{RPC_SEGMENT}", self._on_reply
        )
        self._sub.add_pattern(self._inbox)
        plumbing.on_close(self.close)
        self.stray = 0
        """Replies that arrived for no pending call (late, or never asked for)."""
        self.policies: PolicyRules | None = None
        """Which resilience policy guards a request, by topic (set by the runtime, from
        ``AgentRuntime.policies.requests``)."""

    def inbox(self, sender: str) -> str:
        """The reply topic of calls made by ``sender`` ("" for none)."""
        return f"agent.{sender}.replies.{RPC_SEGMENT}" if sender else self._inbox

    @property
    def closed(self) -> bool:
        """Whether it stopped routing (its bus closed): :func:`router_for` makes a new one."""
        return self._sub.closed

    def pending(self) -> int:
        """Calls waiting for their reply now."""
        return len(self._pending)

    def _on_reply(self, delivery: Delivery) -> None:
        event = delivery.event
        call = self._pending.pop(event.envelope.correlation_id, None)
        if call is None:
            self.stray += 1
            return
        call.reply = event
        call.waiter.set()

    async def call(self, topic: str, event: Event, *, timeout: float) -> Event:
        """Publish ``event`` (its envelope already names the correlation id and this router's
        inbox as ``reply_to``) and wait for the reply.

        The common case costs no cancel scope: the request is queued without waiting, the
        caller yields once so the responder runs, and a responder that answered at once has
        already handed over its reply. Only otherwise does the call wait, within ``timeout``.

        A request whose topic a ``policies`` rule matches goes through that policy
        (``_guard.py``): it may be retried, refused by an open breaker (``CircuitOpen``), rate
        limited or capped, all within ``timeout``.

        Raises:
            NoResponders: on a bus without a transport, nobody is subscribed to ``topic``.
            RequestTimeout: no reply within ``timeout`` seconds (publishing included).
            BusClosed: the bus closed first.
            CircuitOpen: the topic's policy's breaker is open; nothing was published.
        """
        rules = self.policies
        if rules:
            policy = rules.match(topic)
            if policy is not None:
                return await guarded_request(policy, self._send, topic, event, timeout)
        return await self._send(topic, event, timeout)

    async def _send(self, topic: str, event: Event, timeout: float) -> Event:
        bus = self._bus
        plumbing = self._plumbing
        correlation_id = event.envelope.correlation_id
        call = _Call(plumbing.new_waiter())
        self._pending[correlation_id] = call
        deadline = anyio.current_time() + timeout
        try:
            try:
                reached = bus.publish_nowait(topic, event)
            except WouldBlock:
                reached = -1  # a full subscriber or a transport: publish within the timeout
            else:
                if not reached and not plumbing.has_transport:
                    raise NoResponders(topic, correlation_id)
                await checkpoint()
                if call.reply is not None:
                    return call.reply
            with anyio.move_on_at(deadline):
                if reached < 0:
                    reached = await bus.publish(topic, event)
                    if not reached and not plumbing.has_transport:
                        raise NoResponders(topic, correlation_id)
                await call.waiter.wait()
                if call.reply is None:  # woken by close(), not by a reply
                    raise BusClosed("the bus closed while waiting for a reply")
                return call.reply
        finally:
            self._pending.pop(correlation_id, None)
        raise RequestTimeout(topic, correlation_id, timeout)

    def close(self) -> None:
        """Stop routing; every pending call ends with :class:`BusClosed`. The bus calls this
        when it closes."""
        self._sub.close()
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call.waiter.set()


def router_for(bus: EventBus) -> ReplyRouter:
    """The bus's reply router, made on first use."""
    plumbing = bus.plumbing
    router = plumbing.reply_router
    if not isinstance(router, ReplyRouter) or router.closed:
        router = plumbing.reply_router = ReplyRouter(bus)
    return router
