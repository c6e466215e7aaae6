"""``ClientTransport``: a remote agent's bridge connection as the ``Transport`` of its bus.

A remote agent process hosts its agent on one ordinary :class:`~loom.runtime.EventBus`; the
bus's :class:`~loom.runtime.lowlevel.Transport` is this class, so the mailbox, timers,
``ctx.request``'s reply router and ``ctx.collab`` all live on that one bus and reach the
server the way any bus reaches other processes (``docs/bus.md``, the transport seam):

* **Out.** ``publish`` is ``BridgeClient.publish`` (waits for a connection, publish credit
  and queue room: the server's backpressure; on a topic the server stores durably, also for
  the server's acceptance, which follows the store); ``publish_nowait`` is
  ``BridgeClient.publish_nowait`` (``WouldBlock`` otherwise, counted as ``dropped``), which
  keeps ``ctx.emit(qos=REALTIME)`` non-blocking. The runtime's records of this process
  (``loom.lifecycle.*``, ``loom.deadletter.*``) and publishes to the agent's own mailbox (its
  timers) stay local: the agent is their only consumer here, and the server keeps records of
  its own.
* **In.** The client's stream reader delivers into :meth:`deliver_inbound`, which hands each
  delivery to the bus (``EventBus.deliver_inbound``, waiting for room: backpressure up the
  stream). It waits for room in a full Realtime subscription too (``admitted``): the server
  sends under delivery credit, which goes back only as the bus takes deliveries in, so the
  agent's tier (registered with it, ``AgentRegistration.qos``) drops on the server, where
  ``loom topics`` counts it, not unseen in this process. The server does not know
  ``no_echo``, so what this agent published comes back on every topic it subscribes; the bus
  delivered it locally already, so a delivery whose sender is this agent (the server takes
  publishes only in its name) is dropped here.
* **Interest.** The agent registers its topics, its mailbox and ``agent.{id}.replies.>``
  (every reply-router and collaboration inbox of the agent lies under it), so the bus's
  interest in those needs nothing. Patterns a host subscribes itself (``ctx.subscribe``,
  awaited, errors raised) are :meth:`claim`-ed first and left alone; any other pattern a
  local subscription asks for (a barrier's prefix, say) becomes a dynamic subscription on the
  stream, made in order by the transport's task, refcounted per pattern. The runtime's own
  watchers (``loom.``), other agents' mailboxes (the links of spawned children) and the reply
  router's wildcard (``agent.*.replies.rpc``: everyone's replies) never go to the server.
* **After the agent's mailbox closed.** A delivery that no local subscription takes (the bus
  says it reached none, or the bus is closing) would be lost here: it is handed back to the
  server as a dead letter (reason ``agent_gone``; ``BridgeClient.dead_letter``). That happens
  between an agent's failure or stop and the server's ``released`` (see ``serve_agent``).
* **Before the agent starts.** The client registers (and the server starts delivering) before
  the agent's mailbox exists, so deliveries are held, in order, up to ``inbound_buffer`` and
  ``max_buffer_bytes``, and handed over by :meth:`open`; beyond that the reader waits. A held
  delivery is credited back to the server only when it is handed over: until then the server
  counts it in flight, not ``delivered`` (which means the agent's bus took it), and drops it
  ``closed`` if the stream ends first. Deliveries to the agent's inboxes go through at once:
  they reach no mailbox, and ``on_start`` may be waiting for a reply.

``run`` enters the client: the bus connects when it is entered (``ConnectFailed`` and
``RegistrationRefused`` come out of ``async with bus``) and disconnects cleanly when it closes.

A NATS transport (``loom.cluster``) plugs into the same seam, the bus's ``transport=``: it
implements these five methods over a NATS connection (``no_echo`` instead of the sender check,
a subscription per interest instead of registered topics), and the runtime above it does not
change. This class shows what a transport whose far end is a router, not a peer, adds.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from loom.runtime import (
    DEAD_LETTER_PREFIX,
    LIFECYCLE_PREFIX,
    BusClosed,
    Delivery,
    Event,
    EventBus,
    InvalidArgument,
    LoomError,
    QoS,
)
from loom.runtime.lowlevel import Inbound, event_size, mailbox_topic

from ._client import BridgeClient, ToolHandler
from ._client_config import AgentRegistration, ClientOptions, ClientTLS
from ._errors import ClientClosed
from ._lane import Lane
from ._reconnect import StateListener

__all__ = ["ClientTransport", "reply_interest"]

log = logging.getLogger("loom.bridge.client")

_Op = tuple[Literal["add", "remove"], str, QoS]

# Topics the runtime of this process publishes about itself: local records only.
_RECORDS = (f"{LIFECYCLE_PREFIX}.", f"{DEAD_LETTER_PREFIX}.")


def reply_interest(agent_id: str) -> str:
    """The pattern an agent registers so that every inbox of its reaches it."""
    return f"{mailbox_topic(agent_id)}.>"


class _HeldInbound:
    """Deliveries into ``bus``, held until :meth:`open` (see the module docs).

    Up to ``limit`` are held, in order, and up to ``max_bytes`` (each counted by
    ``event_size``; one larger than that is held alone); beyond that the caller (the stream's
    reader) waits for the opening (backpressure, as for a full mailbox). A held delivery is
    not credited back to the server (``BridgeClient.hold_credit``) until :meth:`open` hands it
    to the bus: ``delivered`` there means the agent's bus took it. Topics starting with
    ``passing`` go through at once. Once open, each delivery goes straight into the bus.
    """

    def __init__(
        self,
        bus: Inbound,
        limit: int,
        max_bytes: int,
        hold: Callable[[], Callable[[], None]],
        *,
        passing: str = "",
    ) -> None:
        # A bus takes what the server admitted: a full Realtime mailbox waits (module docs).
        self._put = (
            functools.partial(bus.deliver_inbound, admitted=True)
            if isinstance(bus, EventBus)
            else bus.deliver_inbound
        )
        self._bus = bus
        self._limit = limit
        self._max_bytes = max_bytes
        self._hold = hold
        self._passing = passing
        # topic, event, its size, and what credits it back once handed over.
        self._held: deque[tuple[str, Event, int, Callable[[], None]]] = deque()
        self._bytes = 0
        self._open = False
        self._opened = anyio.Event()

    async def deliver_inbound(self, topic: str, event: Event) -> int | None:
        if not self._open:
            if self._passing and topic.startswith(self._passing):
                return await self._put(topic, event)
            held = self._held
            size = event_size(event)
            if len(held) < self._limit and (self._bytes + size <= self._max_bytes or not held):
                held.append((topic, event, size, self._hold()))
                self._bytes += size
                return None  # held: handed over (and credited) by open()
            await self._opened.wait()
        return await self._put(topic, event)

    async def open(self) -> None:
        """Hand over what is held, in order (waiting for room), then let deliveries through."""
        held = self._held
        while held:
            topic, event, size, credit = held[0]
            try:
                await self._put(topic, event)
            except InvalidArgument as exc:  # a topic the local bus refuses: that one only
                log.warning("dropped a delivery on %r: %s", topic, exc)
            held.popleft()
            self._bytes -= size
            credit()
        self._open = True  # no wait between the last hand-over and this: the order holds
        self._opened.set()

    def queued(self) -> tuple[int, int]:
        """What is held, and what the bus's subscriptions hold (the agent's mailbox among
        them): deliveries and their bytes."""
        count, size = len(self._held), self._bytes
        if isinstance(self._bus, EventBus):
            for sub in self._bus.statistics().subscriptions:
                count += sub.queued
                size += sub.queued_bytes
        return count, size


class ClientTransport:
    """A remote agent's :class:`BridgeClient` as the transport of its bus (module docs).

    Args:
        address, token, tls, tool_handler, options, on_state_change: as for
            :class:`BridgeClient`, which this builds (:attr:`client`).
        registration: the agent's; ``agent.{id}.replies.>`` is added to its topics.
    """

    def __init__(
        self,
        address: str,
        registration: AgentRegistration,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        tool_handler: ToolHandler | None = None,
        options: ClientOptions | None = None,
        on_state_change: StateListener | None = None,
    ) -> None:
        agent_id = registration.agent_id
        replies = reply_interest(agent_id)
        if replies not in registration.topics:
            registration = msgspec.structs.replace(
                registration, topics=(*registration.topics, replies)
            )
        self.agent_id = agent_id
        self._mailbox = mailbox_topic(agent_id)
        self._inboxes = self._mailbox + "."
        self._options = options if options is not None else ClientOptions()
        self.client = BridgeClient(
            address,
            registration,
            token=token,
            tls=tls,
            tool_handler=tool_handler,
            options=self._options,
            on_state_change=on_state_change,
            inbound=self,
        )
        self._held: _HeldInbound | None = None
        self._ops = Lane[_Op](1 << 20)  # add_interest must never block; few patterns come
        self._auto: dict[str, int] = {}  # pattern -> tiers of local interest we subscribed for
        self._claimed: set[str] = set()

    # ------------------------------------------------------------------ the stream's side

    async def deliver_inbound(self, topic: str, event: Event) -> int | None:
        """The client's sink: every delivery of the stream, in stream order."""
        if event.envelope.sender == self.agent_id:
            return None  # our own publish, back from the server: delivered here already
        held = self._held
        if held is None:
            raise InvalidArgument("the transport is not running")  # counted as malformed
        try:
            reached = await held.deliver_inbound(topic, event)
        except BusClosed:
            reached = 0
        if reached == 0 and not topic.startswith(self._inboxes):
            # Nobody here takes it any more (the agent's mailbox closed: it failed or
            # stopped): back to the server as a dead letter rather than lost here. (A late
            # reply to an inbox that closed is not the agent's loss: counted unrouted.)
            try:
                await self.client.dead_letter(
                    Delivery(topic, event),
                    reason="agent_gone",
                    error=f"no subscription in agent {self.agent_id}'s process took it "
                    "(its mailbox had closed)",
                )
            except ClientClosed:
                log.warning("dropped a delivery on %r: the agent and its client are gone", topic)
        return reached

    async def open(self) -> None:
        """Hand what arrived before the agent started to the bus, in order; then let every
        delivery through as it comes."""
        if self._held is not None:
            await self._held.open()

    def queued(self) -> tuple[int, int]:
        """Deliveries in this process that the agent has not taken, and their bytes: those
        held before it started, and those its bus's subscriptions hold (``BridgeClient``
        reports them in ``statistics().inbound_queued``)."""
        return (0, 0) if self._held is None else self._held.queued()

    # ------------------------------------------------------------------ Transport

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        self._held = _HeldInbound(
            inbound,
            self._options.inbound_buffer,
            self._options.max_buffer_bytes,
            self.client.hold_credit,
            passing=self._inboxes,
        )
        async with self.client:
            task_status.started()
            async for kind, pattern, qos in self._ops:
                try:
                    if kind == "add":
                        await self.client.subscribe(pattern, qos=qos)
                    else:
                        await self.client.unsubscribe(pattern)
                except LoomError as exc:  # refused (a limit), or the client closed
                    log.warning("interest %s %r failed: %s", kind, pattern, exc)

    def _local(self, topic: str) -> bool:
        return topic == self._mailbox or topic.startswith(_RECORDS)

    async def publish(self, topic: str, event: Event) -> None:
        if not self._local(topic):
            await self.client.publish(topic, event)

    def publish_nowait(self, topic: str, event: Event) -> None:
        if not self._local(topic):
            self.client.publish_nowait(topic, event)

    def claim(self, pattern: str) -> None:
        """``pattern`` is subscribed on the stream by the caller itself (and awaited there):
        the bus's interest in it asks for nothing until :meth:`release`."""
        self._claimed.add(pattern)

    def release(self, pattern: str) -> None:
        self._claimed.discard(pattern)

    def _needs_server(self, pattern: str) -> bool:
        return not (
            pattern in self._claimed
            or pattern.startswith(("loom.", "agent.", "_inbox."))
            or pattern in self.client.subscriptions()
        )

    def add_interest(self, pattern: str, qos: QoS) -> None:
        count = self._auto.get(pattern)
        if count is not None:
            self._auto[pattern] = count + 1
        elif self._needs_server(pattern):
            self._auto[pattern] = 1
            self._ops.send_nowait(("add", pattern, qos))

    def remove_interest(self, pattern: str, qos: QoS) -> None:
        count = self._auto.get(pattern)
        if count is None:
            return
        if count > 1:
            self._auto[pattern] = count - 1
        else:
            del self._auto[pattern]
            if pattern not in self._claimed:
                self._ops.send_nowait(("remove", pattern, qos))
