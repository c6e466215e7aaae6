"""Who a caller is, and what that lets it publish and read: the one rule for every entry point.

Every way into the server's bus (a stream's ``publish`` frames, ``EventBus.Publish``, a tool
call by ``ToolService.Call``, ``Bridge.ForwardToolCall`` or a stream's ``call`` frame, the
CLI, which uses ``EventBus``) first works out the caller's :class:`Principal` from what
authenticated it (``bridge/_auth.py``: the stream's agent, the client certificate, the admin
token), then asks this module. Nothing here trusts what a client wrote in an envelope.

* **Sender.** An event's sender is the caller's identity: an empty sender is filled in with
  it, a sender naming anyone else is refused (``WrongAgent``, ``PERMISSION_DENIED``). Refused,
  not rewritten: a client claiming another identity has a bug or is an attacker, and either
  should learn it rather than have its event go out meaning something else (a reply that
  seems to come from B). A caller that is no agent (a shared token, the admin token) publishes
  with an empty sender and may claim none.
* **Server topics.** ``loom.lifecycle.>`` and ``loom.dlq.>`` are published by the server alone
  (its runtime publishes straight on its bus, past every entry point). ``loom.deadletter.X``
  only by agent X itself (a remote agent hands its own dead letters to the server) or the
  server.
* **Mailboxes.** ``agent.B.replies`` and everything under it (``agent.B.replies.rpc``, the
  collaboration inboxes) are read by agent B alone, and by the operator (admin token). A
  subscription naming another agent's mailbox is refused; a wildcard that also matches other
  agents' mailboxes (``>``, ``agent.>``, ``agent.*.replies``) is kept, and what it would
  bring from mailboxes that are not the caller's is withheld, delivery by delivery
  (:func:`may_receive`): a monitor subscribed to ``>`` goes on seeing everything else.
* **Namespaces.** A caller that showed a tenant token (``bridge/_tenants.py``) is confined
  to its namespace: it publishes and reads only topics inside it (a pattern reaching outside
  is refused, not screened: it could only bring what the caller may not see), acts only as
  agents inside it and calls only tools inside it. An agent id or tool name inside a
  configured namespace is taken by that namespace's clients alone (and the operator).

The module imports nothing of gRPC, so an HTTP or A2A entry point calls the same functions
with the principal its own authentication gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from loom.runtime import DEAD_LETTER_PREFIX, LIFECYCLE_PREFIX, Event

from ._errors import OutsideNamespace, WrongAgent
from ._tenants import Tenants, agent_inside, tool_inside, topic_inside

__all__ = [
    "ANONYMOUS",
    "OPERATOR",
    "SERVER_TOPICS",
    "Principal",
    "authorize_agent",
    "authorize_publish",
    "authorize_read",
    "authorize_tool",
    "claimed_sender",
    "mailbox_owner",
    "may_receive",
    "reaches_other_mailboxes",
    "sender_of",
]

SERVER_TOPICS: Final = (LIFECYCLE_PREFIX, "loom.dlq")
"""Topic prefixes only the server publishes on (the prefix itself and everything under it)."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller.

    Attributes:
        name: the agent it is, and so the sender of what it publishes without one; ``""``
            for a caller that is no agent.
        agents: every agent id it may act as (``name`` among them): its stream's agent, or
            the names its client certificate gives under ``bind_agent_ids``.
        operator: it showed the server's admin token: it may read every mailbox and release
            agent ids; it still publishes as nobody.
        namespace: it showed a tenant token: the namespace it is confined to; ``None`` for
            none (the shared token, the admin token, an open server).
    """

    name: str = ""
    agents: frozenset[str] = frozenset()
    operator: bool = False
    namespace: str | None = None

    @classmethod
    def agent(cls, agent_id: str, namespace: str | None = None) -> Principal:
        """The identity of agent ``agent_id``'s stream (opened with a token of ``namespace``)."""
        return cls(name=agent_id, agents=frozenset((agent_id,)), namespace=namespace)

    def describe(self) -> str:
        if self.name:
            who = f"agent {self.name!r}"
        elif self.agents:
            who = "a client whose certificate names " + ", ".join(sorted(self.agents))
        elif self.namespace is not None:
            who = "a client"
        else:
            return "the operator" if self.operator else "a client that is no agent"
        return who if self.namespace is None else f"{who} of namespace {self.namespace!r}"

    def outside(self, what: str) -> str:
        """Why a tenant may not touch ``what`` (for a ``PERMISSION_DENIED`` message)."""
        ns = self.namespace
        return (
            f"{self.describe()} may not {what}: it is outside its namespace (topics "
            f"'{ns}.>', agent ids '{ns}:<name>' and their 'agent.{ns}:<name>.>' topics, "
            f"tools '{ns}.<name>')"
        )


ANONYMOUS: Final = Principal()
"""A caller authenticated by the shared token alone (or by nothing, on an open server)."""

OPERATOR: Final = Principal(operator=True)
"""A caller that showed the admin token."""


def sender_of(principal: Principal, claimed: str) -> str:
    """The sender of what ``principal`` sends, given the sender it ``claimed`` ("" for none).

    Raises:
        WrongAgent: it claimed an identity that is not its own.
    """
    if not claimed:
        return principal.name
    if claimed in principal.agents:
        return claimed
    raise WrongAgent(f"{principal.describe()} cannot act as {claimed!r}")


SENDER_HEADERS: Final = ("loom.sender", "sender")
"""``ToolCall.headers`` keys in which a caller may name itself (both envelope spellings)."""


def claimed_sender(principal: Principal, headers: Mapping[str, str]) -> str:
    """The caller of a tool call: ``principal``, unless its headers claim someone else.

    Raises:
        WrongAgent: a sender header names an identity that is not the caller's.
    """
    if not headers:  # the usual call: nobody is claimed, the caller is who it is
        return principal.name
    for key in SENDER_HEADERS:
        claimed = headers.get(key, "")
        if claimed:
            try:
                return sender_of(principal, claimed)
            except WrongAgent:
                raise WrongAgent(
                    f"{principal.describe()} cannot call a tool as {claimed!r} "
                    f"(ToolCall.headers[{key!r}])"
                ) from None
    return principal.name


def authorize_publish(principal: Principal, topic: str, event: Event) -> Event:
    """``event`` as ``principal`` may publish it on ``topic``: its sender filled in.

    Raises:
        WrongAgent: its sender names another identity, or the topic is the server's
            (``OutsideNamespace``: or outside the caller's namespace).
    """
    claimed = event.envelope.sender
    if principal.namespace is not None and not topic_inside(principal.namespace, topic):
        raise OutsideNamespace(principal.outside(f"publish on {topic!r}") + "; not published")
    # sender_of's rule, inline: this runs once per event published.
    if claimed and claimed not in principal.agents:
        raise WrongAgent(f"{principal.describe()} cannot publish as {claimed!r}; not published")
    if topic.startswith("loom."):
        for prefix in SERVER_TOPICS:
            if topic == prefix or topic.startswith(prefix + "."):
                raise WrongAgent(f"only the server publishes on {prefix}.>; not published")
        if topic.startswith(DEAD_LETTER_PREFIX + ".") and (
            topic.removeprefix(DEAD_LETTER_PREFIX + ".") not in principal.agents
        ):
            raise WrongAgent(
                f"{principal.describe()} may publish dead letters only on "
                f"{DEAD_LETTER_PREFIX}.<its own id>; not published"
            )
    if claimed or not principal.name:
        return event  # its own identity, or none to stamp
    envelope = msgspec.structs.replace(event.envelope, sender=principal.name)
    return msgspec.structs.replace(event, envelope=envelope)


def mailbox_owner(topic: str) -> str | None:
    """The agent whose mailbox ``topic`` is (``agent.B.replies`` or under it), else ``None``."""
    if not topic.startswith("agent."):
        return None
    parts = topic.split(".", 3)
    if len(parts) >= 3 and parts[2] == "replies":
        return parts[1]
    return None


def may_receive(principal: Principal, topic: str) -> bool:
    """Whether an event published on the concrete ``topic`` may reach ``principal``."""
    if principal.namespace is not None and not topic_inside(principal.namespace, topic):
        return False
    owner = mailbox_owner(topic)
    return owner is None or principal.operator or owner in principal.agents


def reaches_other_mailboxes(principal: Principal, pattern: str) -> bool:
    """Whether ``pattern`` matches a mailbox topic of an agent ``principal`` is not (so its
    deliveries must go through :func:`may_receive`)."""
    if principal.operator:
        return False
    segments = pattern.split(".")
    for i, want in enumerate(("agent", "", "replies")):
        if i >= len(segments):
            return False  # shorter than a mailbox topic, and no ">"
        segment = segments[i]
        if segment == ">":
            return True
        if segment == "*":
            continue
        if i == 1:
            if segment in principal.agents:
                return False
        elif segment != want:
            return False
    return True


def authorize_read(principal: Principal, pattern: str) -> None:
    """Refuse a subscription that names another agent's mailbox outright (``agent.B.replies``
    or a pattern under it): it could receive nothing but what it may not read.

    A tenant's pattern must lie inside its namespace.

    Raises:
        WrongAgent: it does (``OutsideNamespace``: it reaches outside the caller's
            namespace).
    """
    if principal.namespace is not None and not topic_inside(principal.namespace, pattern):
        raise OutsideNamespace(principal.outside(f"read {pattern!r}"))
    segments = pattern.split(".", 3)
    if (
        len(segments) >= 3
        and segments[0] == "agent"
        and segments[1] not in ("*", ">")
        and segments[2] == "replies"
        and not principal.operator
        and segments[1] not in principal.agents
    ):
        raise WrongAgent(
            f"{principal.describe()} cannot subscribe to {pattern!r}: the mailbox of agent "
            f"{segments[1]!r} is read by that agent alone"
        )


def authorize_agent(principal: Principal, agent_id: str, tenants: Tenants) -> None:
    """Refuse to let ``principal`` register, or open the stream of, agent ``agent_id`` when
    the id is outside its namespace, or inside a namespace that is not its own.

    Raises:
        OutsideNamespace: it may not act as that agent.
    """
    if principal.namespace is not None:
        if not agent_inside(principal.namespace, agent_id):
            raise OutsideNamespace(principal.outside(f"act as agent {agent_id!r}"))
    elif not principal.operator:
        taken = tenants.claimed(agent_id)
        if taken is not None:
            raise OutsideNamespace(
                f"{principal.describe()} may not act as agent {agent_id!r}: it is in namespace "
                f"{taken!r}, whose tenant token alone (or the admin token) may"
            )


def authorize_tool(
    principal: Principal, tool: str, tenants: Tenants, *, declare: bool = False
) -> None:
    """Refuse a call of (or, with ``declare``, an agent's offer of) the tool named ``tool``
    outside the caller's namespace; an offer inside a namespace not the caller's too.

    Raises:
        OutsideNamespace: it may not.
    """
    if principal.namespace is not None:
        if not tool_inside(principal.namespace, tool):
            what = "offer" if declare else "call"
            raise OutsideNamespace(principal.outside(f"{what} tool {tool!r}"))
    elif declare and not principal.operator:
        taken = tenants.claimed(tool, tool=True)
        if taken is not None:
            raise OutsideNamespace(
                f"{principal.describe()} may not offer tool {tool!r}: it is in namespace "
                f"{taken!r}, whose tenant token alone may"
            )
