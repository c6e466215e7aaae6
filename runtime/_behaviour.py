"""What the runtime hosts: a :class:`Behaviour` built by the factory of an :class:`AgentSpec`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from ._durable import DEFAULT_MAX_DELIVER
from ._errors import InvalidArgument
from ._event import Event
from ._qos import QoS
from ._supervision import SupervisionPolicy
from ._topics import validate_pattern
from .tools._tool import Tool

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["AgentSpec", "Behaviour", "HasAgentSpec", "validate_agent_id"]

_AGENT_ID = re.compile(r"[A-Za-z0-9_\-:@+=]{1,128}")


def validate_agent_id(agent_id: str) -> str:
    """An agent id is one topic segment (it names ``agent.{id}.replies``).

    Raises:
        InvalidArgument: it has dots, wildcards, whitespace, or is empty or over 128 characters.
    """
    if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
        raise InvalidArgument(
            f"invalid agent id {agent_id!r}: use 1-128 letters, digits and _-:@+= (no dots)"
        )
    return agent_id


@runtime_checkable
class Behaviour(Protocol):
    """One instance of an agent. The runtime calls it from the agent's own task only.

    ``on_start`` runs before the first event, ``on_stop`` after the last (also when the agent is
    deleted, restarted, or the runtime shuts down). ``on_event`` handles one event; with the
    default ``max_concurrency=1`` never two at once. ``tools`` lists the capabilities this
    instance offers; they run outside the mailbox, concurrently with handlers.
    """

    async def on_start(self, ctx: Context) -> None: ...

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None: ...

    async def on_stop(self, ctx: Context) -> None: ...

    def tools(self) -> Sequence[Tool]: ...


class AgentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to host one agent.

    Attributes:
        id: unique in the runtime; one topic segment.
        factory: makes a fresh :class:`Behaviour`; called again for every restart.
        topics: patterns the agent subscribes to (it is always subscribed to its mailbox topic
            ``agent.{id}.replies`` too).
        qos: the tier of those subscriptions; the mailbox holds back publishers when full
            unless this is ``REALTIME``.
        mailbox_size: the bound of the mailbox.
        max_concurrency: handlers that may run at once; above 1 events still start in arrival
            order but may finish out of order.
        policy: what to do when a handler raises.
        metadata: free key/values shown in the directory.
        durable: the agent's ``topics`` are a durable subscription named by its id (the bus
            needs a durable log): events published while it is stopped are kept, each is
            acknowledged when the handler returns and delivered again when it raises or the
            process dies (``docs/durability.md``). Its mailbox topic stays in memory.
        max_deliver: (durable) deliveries of one event before it is dead-lettered on
            ``loom.dlq.{id}``.
    """

    id: str
    factory: Callable[[], Behaviour]
    topics: tuple[str, ...] = ()
    qos: QoS = QoS.BATCHED
    mailbox_size: int = 1000
    max_concurrency: int = 1
    policy: SupervisionPolicy = SupervisionPolicy()
    metadata: Mapping[str, str] = msgspec.field(default_factory=dict)
    durable: bool = False
    max_deliver: int = DEFAULT_MAX_DELIVER

    def __post_init__(self) -> None:
        validate_agent_id(self.id)
        for pattern in self.topics:
            validate_pattern(pattern)
        if self.mailbox_size < 1:
            raise InvalidArgument(f"mailbox_size must be >= 1, not {self.mailbox_size}")
        if self.max_concurrency < 1:
            raise InvalidArgument(f"max_concurrency must be >= 1, not {self.max_concurrency}")
        if self.durable and not self.topics:
            raise InvalidArgument("a durable agent needs topics: they are what is stored for it")
        if self.durable and self.qos is QoS.REALTIME:
            raise InvalidArgument("a durable agent is lossless: its qos cannot be REALTIME")
        if self.max_deliver < 1:
            raise InvalidArgument(f"max_deliver must be >= 1, not {self.max_deliver}")


class HasAgentSpec(Protocol):
    """Anything the runtime can start: the SDK's ``Agent`` implements it."""

    def agent_spec(self) -> AgentSpec: ...
