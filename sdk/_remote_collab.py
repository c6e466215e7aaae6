"""``ctx.collab`` for an agent connected through the bridge.

The collaboration primitives (``gather``, ``contract_net``, ``propose``, ``arrive``) are the
runtime's own, run on an :class:`~loom.runtime.EventBus`: they subscribe a private inbox,
publish, and collect what answers. In remote mode they run on a small *collaboration bus* of
the agent's process whose :class:`~loom.runtime.Transport` is the agent's bridge connection:

* what they publish goes to the server's bus (``BridgeClient.publish``);
* their inboxes are ``agent.{id}.replies.{token}`` (``collab`` puts every inbox under the
  agent's mailbox topic), and the agent registers ``agent.{id}.replies.>`` with the server, so
  every answer is on the agent's stream already: such an interest needs no subscription, and
  nothing can arrive before it exists;
* any other pattern a primitive asks for becomes a dynamic subscription on the stream, made
  in order by the transport's task;
* the stream's deliveries on inbox topics go into the collaboration bus (those on other
  topics only when such a subscription exists), besides the agent's mailbox bus.

So a remote agent collaborates exactly as an in-process one, with the transport's caveat of
``docs/collab.md``: a publish through the server does not say who received it, so a target
nobody serves is a timeout, not ``unrouted``.
"""

from __future__ import annotations

import logging
from typing import Literal

from anyio.abc import TaskStatus

from loom.bridge._client import BridgeClient
from loom.bridge._lane import Lane
from loom.runtime import Event, LoomError, QoS
from loom.runtime.lowlevel import Inbound, mailbox_topic

__all__ = ["BridgeTransport", "reply_interest"]

log = logging.getLogger("loom.agent")

_Op = tuple[Literal["add", "remove"], str, QoS]


def reply_interest(agent_id: str) -> str:
    """The pattern an agent registers so that every collaboration inbox of its reaches it."""
    return f"{mailbox_topic(agent_id)}.>"


class BridgeTransport:
    """The collaboration bus's :class:`~loom.runtime.Transport` (see the module docs)."""

    def __init__(self, client: BridgeClient, agent_id: str) -> None:
        self._client = client
        self._prefix = mailbox_topic(agent_id) + "."
        self._ops = Lane[_Op](1 << 20)  # add_interest must never block; collab asks for few
        self._inbound: Inbound | None = None
        self._other = 0  # interests beyond the inboxes: then every delivery is offered

    # ------------------------------------------------------------------ the stream's side

    def wants(self, topic: str) -> bool:
        """Whether a delivery on ``topic`` is for the collaboration bus."""
        return self._inbound is not None and (self._other > 0 or topic.startswith(self._prefix))

    def waits_for(self, topic: str) -> bool:
        """Whether ``topic`` is one of the agent's inboxes (replies, collaboration answers)."""
        return self._inbound is not None and topic.startswith(self._prefix)

    async def deliver(self, topic: str, event: Event) -> None:
        """Hand a delivery of the stream to the collaboration bus (see :meth:`wants`)."""
        if self._inbound is not None:
            await self._inbound.deliver_inbound(topic, event)

    # ------------------------------------------------------------------ Transport

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        self._inbound = inbound
        try:
            task_status.started()
            async for kind, pattern, qos in self._ops:
                try:
                    if kind == "add":
                        await self._client.subscribe(pattern, qos=qos)
                    else:
                        await self._client.unsubscribe(pattern)
                except LoomError as exc:  # refused (a limit), or the client closed
                    log.warning("collaboration interest %s %r failed: %s", kind, pattern, exc)
        finally:
            self._inbound = None

    async def publish(self, topic: str, event: Event) -> None:
        await self._client.publish(topic, event)

    def publish_nowait(self, topic: str, event: Event) -> None:
        self._client.publish_nowait(topic, event)

    def _local(self, pattern: str) -> bool:
        # The agent's inboxes are registered already; other ``agent.`` patterns and the
        # ``_inbox.`` one are the reply router's (``agent.*.replies.rpc``: this agent's own
        # replies lie under its prefix, and asking the server for everyone's would be wrong).
        return pattern.startswith((self._prefix, "agent.", "_inbox."))

    def add_interest(self, pattern: str, qos: QoS) -> None:
        if not self._local(pattern):
            self._other += 1
            self._ops.send_nowait(("add", pattern, qos))

    def remove_interest(self, pattern: str, qos: QoS) -> None:
        if not self._local(pattern):
            self._other -= 1
            self._ops.send_nowait(("remove", pattern, qos))
