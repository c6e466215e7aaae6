"""Remote agents: agents that live in another process and reach the runtime through a bridge.

A remote agent is first-class: it has a directory entry (``remote=True``) with its status,
patterns, capabilities and heartbeat; its subscriptions are ordinary bus subscriptions owned by
it (so ``directory.by_topic`` finds it); and the tools it declares sit in a registry of its own
that :meth:`AgentRuntime.call_tool` reaches like a local agent's, so any caller (an agent's
``ctx.tool``, the LLM loop, the bridge's ``ForwardToolCall``) can call them.

The runtime knows nothing of how the agent is connected: the bridge hands each declared tool an
*invoker* (an async function that asks the agent and returns its answer) and consumes the
subscriptions itself. No ``grpc`` here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._agent_errors import AgentExists
from ._behaviour import validate_agent_id
from ._directory import AgentStatus
from ._errors import BusClosed, InvalidArgument
from ._event import Delivery, mailbox_topic
from ._qos import QoS
from ._subscription import Subscription, depth, drain
from .tools import DEFAULT_TIMEOUT, JSONObject, Tool, ToolRegistry

if TYPE_CHECKING:
    from ._runtime import AgentRuntime, RuntimeServices

__all__ = [
    "RemoteAgent",
    "RemoteTool",
    "ToolInvoker",
    "attach_remote",
]

ToolInvoker = Callable[[str, JSONObject], Awaitable[Any]]
"""``invoke(tool_name, arguments)``: asks the remote agent to run one of its tools.

It runs inside the registry's timeout scope (``anyio.current_effective_deadline()`` is the
call's deadline), must honour cancellation, and raises a ``ToolError`` for a failure of a
known kind."""


class RemoteTool:
    """A tool a remote agent declared: its description, and an invoker that asks the agent.

    It satisfies the ``Tool`` protocol, so the registry validates arguments against
    ``parameters_schema`` and applies the timeout before the agent is asked; unless the agent
    declared that it checks them itself (``validates_arguments``, as Loom's SDK does for its
    ``@capability`` tools): then the agent's own check is the one, and invalid arguments come
    back from it as ``InvalidToolArguments`` all the same. A false declaration harms only the
    agent that makes it: its tool is handed what it said it would check.
    """

    __slots__ = ("_description", "_invoke", "_name", "_schema", "validates_arguments")

    def __init__(
        self,
        name: str,
        description: str,
        parameters_schema: JSONObject,
        invoke: ToolInvoker,
        *,
        validates_arguments: bool = False,
    ) -> None:
        self._name = name
        self._description = description
        self._schema = parameters_schema
        self._invoke = invoke
        self.validates_arguments = validates_arguments

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters_schema(self) -> JSONObject:
        return self._schema

    async def call(self, arguments: JSONObject) -> Any:
        return await self._invoke(self._name, arguments)


class RemoteAgent:
    """The runtime's handle on one connected remote agent (made by ``attach_remote``).

    Subscriptions: :attr:`mailbox` is one bus subscription holding the agent's mailbox topic
    and every pattern added with :meth:`add_pattern` (one ordered stream, each pattern with its
    own tier); :meth:`subscribe` makes further subscriptions of their own (an event-type filter
    or buffer size of their own). All of them are owned by the agent in the directory. The
    owner consumes them; closing one ends its iteration.

    Not reusable: after :meth:`detach` every subscription is closed, and a reconnecting agent
    is attached anew.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        services: RuntimeServices,
        agent_id: str,
        mailbox: Subscription,
        tool_timeout_s: float,
    ) -> None:
        self.runtime = runtime
        self._services = services
        self.id = agent_id
        self.mailbox = mailbox
        self.registry: ToolRegistry | None = None
        self._tool_timeout = tool_timeout_s
        self._subs: dict[int, Subscription] = {}
        self._pattern_refs: dict[str, int] = {}  # directory patterns, counted over subscriptions
        self.detached = False
        self.released = False
        # Another node's agent (a cluster directory shows it here): that node publishes its
        # lifecycle events, which the cluster carries; publishing them here too would say
        # each twice.
        self.node: str | None = None
        # Restarts the directory counted before this connection; the agent reports its own.
        info = runtime.directory.get(agent_id)
        self._restarts_before = 0 if info is None else info.restarts

    # ------------------------------------------------------------------ subscriptions

    def add_pattern(self, pattern: str, *, qos: QoS | None = None) -> bool:
        """Route ``pattern`` into :attr:`mailbox` too, with its own tier (default: the
        mailbox's). False if the mailbox already held it.

        Raises:
            InvalidTopic: a malformed pattern.
            SubscriptionClosed: the agent is detached.
        """
        added = self.mailbox.add_pattern(pattern, qos=qos)
        if added:
            self._ref_pattern(pattern)
        return added

    def remove_pattern(self, pattern: str) -> bool:
        """Stop routing ``pattern`` into :attr:`mailbox`; False if it was not held there.

        Raises:
            InvalidArgument: it is the mailbox topic, which stays while the agent is attached.
        """
        if pattern == mailbox_topic(self.id):
            raise InvalidArgument("the mailbox topic cannot be unsubscribed")
        removed = self.mailbox.remove_pattern(pattern)
        if removed:
            self._unref_pattern(pattern)
        return removed

    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        buffer_size: int | None = None,
    ) -> Subscription:
        """A further bus subscription of this agent (see ``EventBus.subscribe``).

        Raises:
            InvalidTopic, InvalidArgument, BusClosed: as ``EventBus.subscribe``.
            SubscriptionClosed: the agent is detached.
        """
        if self.detached:
            raise BusClosed(f"agent {self.id} is detached")
        sub = self.runtime.bus.subscribe(
            pattern, qos=qos, event_types=event_types, buffer_size=buffer_size
        )
        self._subs[sub.id] = sub
        self._services.owners[sub.id] = self.id
        self._ref_pattern(pattern)
        return sub

    def unsubscribe(self, subscription_id: int) -> bool:
        """Close a subscription :meth:`subscribe` made; False if there is none by that id."""
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        self._services.owners.pop(sub.id, None)
        sub.close()
        self._unref_pattern(sub.pattern)
        return True

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions :meth:`subscribe` made, oldest first (the mailbox not included)."""
        return list(self._subs.values())

    def pattern_count(self) -> int:
        """Patterns held over all subscriptions, the mailbox topic not counted."""
        return len(self.mailbox.patterns) - 1 + len(self._subs)

    def _ref_pattern(self, pattern: str) -> None:
        count = self._pattern_refs.get(pattern, 0)
        self._pattern_refs[pattern] = count + 1
        if count == 0:
            self.runtime.directory.add_pattern(self.id, pattern)

    def _unref_pattern(self, pattern: str) -> None:
        count = self._pattern_refs.get(pattern, 0) - 1
        if count > 0:
            self._pattern_refs[pattern] = count
            return
        self._pattern_refs.pop(pattern, None)
        if self.id in self.runtime.directory:
            self.runtime.directory.remove_pattern(self.id, pattern)

    # ------------------------------------------------------------------ tools

    def declare_tools(self, tools: Iterable[Tool]) -> None:
        """Make ``tools`` this agent's capabilities, replacing any declared before.

        Each goes into the agent's own registry (default timeout: the one given to
        ``attach_remote``), so calls are validated and timed out before the agent is asked.

        Raises:
            InvalidToolSchema, InvalidArgument: a tool the registry refuses; nothing changes.
        """
        registry = ToolRegistry(default_timeout=self._tool_timeout)
        for tool in tools:
            registry.register(tool)
        self.registry = registry if len(registry) else None
        self.runtime.directory.set_capabilities(self.id, [t.name for t in registry.list()])

    # ------------------------------------------------------------------ liveness

    def heartbeat(self) -> None:
        """The agent is alive: refresh its heartbeat (a ``stale`` agent becomes ``running``)."""
        if not self.detached:
            self.runtime.directory.heartbeat(self.id)

    # ------------------------------------------------------------------ its own supervision

    async def report(self, status: AgentStatus, reason: str = "", restarts: int = 0) -> None:
        """The agent's own runtime (in its process) changed its state: record it and publish
        the lifecycle event, as this runtime does for its own agents. ``restarts`` is how often
        that runtime has restarted the agent since it connected; the directory counts them on
        top of those of earlier connections. A final state (``stopped``, ``failed``) is
        followed by :meth:`release`.

        Raises:
            InvalidArgument: a state an agent's runtime does not report.
        """
        if status not in _REPORTED:
            raise InvalidArgument(f"an agent reports none of its states as {status.value!r}")
        directory = self.runtime.directory
        if not self.detached and self.id in directory:
            target = self._restarts_before + max(0, restarts)
            while (info := directory.get(self.id)) is not None and info.restarts < target:
                directory.count_restart(self.id)
            directory.set_status(self.id, status)
        with contextlib.suppress(BusClosed):
            await self._services.publish_lifecycle(self.id, status, reason)

    async def dead_letter(self, delivery: Delivery, reason: str, error: str, attempts: int) -> None:
        """Publish an event the agent could not handle on its dead-letter topic, as this
        runtime does for its own agents (in the agent's name: it names no other)."""
        await self._services.dead_letter(self.id, delivery, reason, error, attempts)

    async def release(self, status: AgentStatus, reason: str) -> int:
        """The agent ended in its process (``status``: stopped or failed): take its
        subscriptions off the bus, dead-letter what they hold and what publishers waiting for
        room were promised (reason ``agent_stopped`` / ``agent_failed``, as in process), and
        withdraw its tools. Its stream's pumps end with the subscriptions. Returns how many
        events were dead-lettered. Idempotent (0 the second time)."""
        if self.released or self.detached:
            return 0
        self.released = True
        self.registry = None
        if self.id in self.runtime.directory:
            self.runtime.directory.set_capabilities(self.id, ())
        why = "agent_failed" if status is AgentStatus.FAILED else "agent_stopped"
        count = 0
        for sub in [self.mailbox, *self._subs.values()]:
            leftovers = await drain(sub)
            sub.close()
            for delivery in leftovers:
                await self._services.dead_letter(self.id, delivery, why, reason or why, 0)
                count += 1
        return count

    def queued(self) -> int:
        """Events waiting in the agent's subscriptions, the mailbox included (its load)."""
        return depth(self.mailbox) + sum(depth(s) for s in self._subs.values())

    async def detach(self, reason: str = "") -> None:
        """The agent's connection ended: close its subscriptions (what they still hold is
        dropped, reason ``closed``), withdraw its tools, mark it ``disconnected`` and publish
        that lifecycle event. It stays in the directory, so a reconnect finds its history.
        Idempotent; shielded from cancellation.
        """
        if self.detached:
            return
        self.detached = True
        services = self._services
        if services.remotes.get(self.id) is self:
            del services.remotes[self.id]
        self.registry = None
        for sub in [self.mailbox, *self._subs.values()]:
            services.owners.pop(sub.id, None)
            sub.close()
        self._subs.clear()
        directory = self.runtime.directory
        if self.id in directory:
            for pattern in [*self._pattern_refs, mailbox_topic(self.id)]:
                directory.remove_pattern(self.id, pattern)
            directory.withdraw_capabilities(self.id)  # expected back: calls wait for it
            directory.set_status(self.id, AgentStatus.DISCONNECTED)
            directory.set_depth_probe(self.id, _zero)
        self._pattern_refs.clear()
        if self.node is not None:
            return
        with anyio.CancelScope(shield=True), contextlib.suppress(BusClosed):
            await services.publish_lifecycle(self.id, AgentStatus.DISCONNECTED, reason)


def _zero() -> int:
    return 0


_REPORTED = frozenset(
    {
        AgentStatus.STARTING,
        AgentStatus.RUNNING,
        AgentStatus.STOPPING,
        AgentStatus.STOPPED,
        AgentStatus.FAILED,
    }
)


async def attach_remote(
    runtime: AgentRuntime,
    services: RuntimeServices,
    agent_id: str,
    *,
    metadata: Mapping[str, str] = {},
    qos: QoS = QoS.BATCHED,
    buffer_size: int | None = None,
    tool_timeout_s: float = DEFAULT_TIMEOUT,
    node: str | None = None,
) -> RemoteAgent:
    """The body of :meth:`AgentRuntime.attach_remote` (see there)."""
    validate_agent_id(agent_id)
    if not (tool_timeout_s > 0 or math.isinf(tool_timeout_s)):
        raise InvalidArgument(f"tool_timeout_s must be positive, not {tool_timeout_s!r}")
    if not services.running():
        raise BusClosed("the runtime is not running")
    if services.hosts(agent_id):
        raise AgentExists(agent_id, "a local agent runs under that id")
    if agent_id in services.remotes:
        held = runtime.directory.get(agent_id)
        where = (
            "" if held is None or held.node == runtime.directory.node else f" on node {held.node}"
        )
        raise AgentExists(agent_id, f"a remote agent with that id is connected{where}")
    if node is None and runtime.id_claim is not None:
        # The id must be this node's across the cluster first (AgentExists if it is live on
        # another); the claim waits on NATS, so the local checks are made again after it.
        await runtime.id_claim(agent_id)
        if services.hosts(agent_id) or agent_id in services.remotes:
            raise AgentExists(agent_id, "another agent took that id meanwhile")
    directory = runtime.directory
    known = directory.get(agent_id)
    if known is not None:
        if not known.remote and known.status not in (AgentStatus.STOPPED, AgentStatus.FAILED):
            raise AgentExists(agent_id, "a local agent is known under that id")
        # A disconnected remote (or a finished local) one returns.
        directory.remove(agent_id, returning=True)
    mailbox = runtime.bus.subscribe(mailbox_topic(agent_id), qos=qos, buffer_size=buffer_size)
    directory.add(agent_id, remote=True, metadata=metadata, node=node)
    if known is not None and known.remote:
        # Its restarts so far stay counted (``loom agents``): a remote agent whose process
        # failed and was started again by its supervisor is the same agent, restarted.
        for _ in range(known.restarts):
            directory.count_restart(agent_id)
    remote = RemoteAgent(runtime, services, agent_id, mailbox, tool_timeout_s)
    remote.node = node
    directory.add_pattern(agent_id, mailbox_topic(agent_id))
    directory.set_depth_probe(agent_id, remote.queued)
    directory.set_status(agent_id, AgentStatus.RUNNING)
    services.owners[mailbox.id] = agent_id
    services.remotes[agent_id] = remote
    if node is None:
        await services.publish_lifecycle(agent_id, AgentStatus.RUNNING, "connected")
    return remote
