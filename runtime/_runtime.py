"""``AgentRuntime``: hosts agents as actors on an event bus.

Lifecycle states are published as events of type ``agent.<state>`` on
``loom.lifecycle.{agent_id}``; events an agent could not handle go to
``loom.deadletter.{agent_id}`` with the reason in their metadata. ``docs/agents.md`` has the
semantics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from opentelemetry.metrics import Histogram, MeterProvider

from ._agent_errors import AgentExists, AgentNotFound, AgentStartFailed
from ._approvals import Approvals
from ._behaviour import AgentSpec, HasAgentSpec
from ._budget import BudgetLedger
from ._bus import EventBus
from ._cell import Cell, current_cell
from ._context import Hosting
from ._directory import AgentInfo, AgentStatus, Directory
from ._errors import BusClosed, InvalidArgument
from ._event import Delivery, Event
from ._qos import QoS
from ._remote import RemoteAgent, attach_remote
from ._stats import AgentStats
from ._subscription import depth
from .collab._replies import router_for
from .resilience import Policies
from .tools import DEFAULT_TIMEOUT, Tool, ToolNotFound, ToolRegistry, ToolTimeout
from .tools._call_scope import scoped_call

if TYPE_CHECKING:
    from .llm import LLM

__all__ = [
    "DEAD_LETTER_PREFIX",
    "LIFECYCLE_PREFIX",
    "AgentRuntime",
    "IdClaim",
    "LifecycleEvent",
    "ToolProvider",
    "tool_inventory",
]

log = logging.getLogger("loom.runtime")

LIFECYCLE_PREFIX = "loom.lifecycle"
"""Lifecycle events of agent ``x`` are published on ``loom.lifecycle.x``."""
DEAD_LETTER_PREFIX = "loom.deadletter"


def dead_letter_metadata(
    delivery: Delivery, agent_id: str, reason: str, error: str, attempts: int
) -> dict[str, str]:
    """The metadata of a dead letter of ``agent_id``: the event's own, and why, where it came
    from and how often it was tried (``docs/agents.md``). One builder for the runtime and a
    remote agent's client, so both say it the same way."""
    return {
        **delivery.event.metadata,
        "dead_letter.reason": reason,
        "dead_letter.error": error,
        "dead_letter.topic": delivery.topic,
        "dead_letter.agent": agent_id,
        "dead_letter.attempts": str(attempts),
    }


"""Dead letters of agent ``x`` are published on ``loom.deadletter.x``."""


class LifecycleEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The payload (JSON) of a lifecycle event."""

    agent_id: str
    status: str
    reason: str = ""
    restarts: int = 0


_lifecycle_encoder = msgspec.json.Encoder()

IdClaim = Callable[[str], Awaitable[None]]
"""``await claim(agent_id)``: make ``agent_id`` this runtime's beyond its process (a cluster's
shared directory) before an agent of that id is started or attached here.

Raises ``AgentExists`` when the id is live elsewhere; must be atomic across claimants."""


class RuntimeServices:
    """What the runtime lends the agents it hosts (each ``Cell``, each ``RemoteAgent``) beyond
    its public API, and the one way they reach into it. The runtime fills it in with its own
    methods, so its private members stay its own.

    It also holds the two maps the runtime shares with its agents: which agent owns each bus
    subscription (``owners``: subscription id -> agent id; the directory's ``by_topic`` answers
    from it) and the remote agents attached now (``remotes``: agent id -> handle).

    Attributes:
        running: ``running()``: whether the runtime takes new agents.
        hosts: ``hosts(agent_id)``: whether a local agent of that id is hosted (running or
            stopping).
        set_status: ``await set_status(cell, status, reason)``: record an agent's new state
            and publish its lifecycle event.
        publish_lifecycle: ``await publish_lifecycle(agent_id, status, reason)``: publish a
            lifecycle event only (remote agents keep their state in the directory).
        agent_ended: ``await agent_ended(cell, status, reason)``: an agent's task is ending:
            drop it from the runtime's books, record ``status``.
        stop_children: ``await stop_children(cell)``: stop the agents ``cell`` spawned.
        dead_letter: ``await dead_letter(agent_id, delivery, reason, error, attempts)``:
            publish an event the agent could not handle on its dead-letter topic.
        task_group: ``task_group()``: the runtime's task group (timers run in it).
        provider_registry: ``provider_registry(agent_id)``: the registry of the tools agent
            ``agent_id`` offers, local or remote; ``None`` for none.
    """

    __slots__ = (
        "agent_ended",
        "dead_letter",
        "hosts",
        "owners",
        "provider_registry",
        "publish_lifecycle",
        "remotes",
        "running",
        "set_status",
        "stop_children",
        "task_group",
    )

    def __init__(
        self,
        *,
        running: Callable[[], bool],
        hosts: Callable[[str], bool],
        set_status: Callable[[Cell, AgentStatus, str], Awaitable[None]],
        publish_lifecycle: Callable[[str, AgentStatus, str], Awaitable[None]],
        agent_ended: Callable[[Cell, AgentStatus, str], Awaitable[None]],
        stop_children: Callable[[Cell], Awaitable[None]],
        dead_letter: Callable[[str, Delivery, str, str, int], Awaitable[None]],
        task_group: Callable[[], TaskGroup],
        provider_registry: Callable[[str], ToolRegistry | None],
    ) -> None:
        self.owners: dict[int, str] = {}
        self.remotes: dict[str, RemoteAgent] = {}
        self.running = running
        self.hosts = hosts
        self.set_status = set_status
        self.publish_lifecycle = publish_lifecycle
        self.agent_ended = agent_ended
        self.stop_children = stop_children
        self.dead_letter = dead_letter
        self.task_group = task_group
        self.provider_registry = provider_registry


class AgentRuntime:
    """Hosts agents on a bus: start, stop, delete, supervise, and find them.

    Use it as an async context manager inside the bus's::

        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            await runtime.start(agent)

    Leaving it stops every agent (``on_stop`` is called for each) before it returns.

    Args:
        bus: the bus the agents live on.
        tools: the runtime's own tools (native, MCP), callable by every agent.
        stop_timeout_s: how long a stop waits for the handler in progress and for ``on_stop``.
        stale_after_s: a remote agent with no heartbeat for this long is marked ``stale``.
        sweep_interval_s: how often the liveness sweep runs.
        llm: the host's model (a :class:`~loom.runtime.llm.ModelRouter`, as ``loom serve``
            builds from ``[llm]``), for agents that ask for it (``ctx.llm``,
            ``CognitiveAgent(llm="server")``) and for the bridge's ``loom.v1.LLM`` service.
            Not closed by the runtime.
        node: the name of the node it runs on, among several sharing one directory
            (``AgentInfo.node`` of its agents; ``""`` outside a cluster).
        meter_provider: where the tool calls it routes are timed (``loom.tool.duration``, by
            tool and outcome: its own registry's and its agents' capabilities); none: not
            timed. Their counts need none (``ToolRegistry.statistics``).
        policies: the resilience policies of the process (``loom.runtime.resilience``): its
            ``tools`` rules guard every tool call the runtime routes, to its own registry's
            tools and to its agents' capabilities, local or remote (``docs/guardrails.md``).

    Attributes:
        id_claim: set by whatever shares this runtime's agent ids beyond its process (the
            cluster directory): asked before an agent is started or a remote one attached.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        tools: ToolRegistry | None = None,
        stop_timeout_s: float = 5.0,
        stale_after_s: float = 15.0,
        sweep_interval_s: float = 5.0,
        llm: LLM | None = None,
        node: str = "",
        meter_provider: MeterProvider | None = None,
        policies: Policies | None = None,
    ) -> None:
        if stop_timeout_s <= 0 or stale_after_s <= 0 or sweep_interval_s <= 0:
            raise InvalidArgument("stop_timeout_s, stale_after_s and sweep_interval_s must be > 0")
        self.bus = bus
        self.tools = tools if tools is not None else ToolRegistry()
        self._tool_duration: Histogram | None = None
        if meter_provider is not None:
            self._tool_duration = meter_provider.get_meter("loom.runtime").create_histogram(
                "loom.tool.duration", unit="s", description="Tool calls, by how they ended"
            )
            self.tools.duration = self._tool_duration
        self.policies = policies if policies is not None else Policies()
        self.tools.policies = self.policies.tools
        self.directory = Directory(self._receivers, node=node)
        self.id_claim: IdClaim | None = None
        self.stop_timeout_s = stop_timeout_s
        self.stale_after_s = stale_after_s
        self.sweep_interval_s = sweep_interval_s
        self.llm = llm
        self.approvals: Approvals | None = None
        """Where tool calls wait for a human (``loom serve`` opens it in its data directory;
        ``None``: no agent of this runtime may ask for approval). ``docs/guardrails.md``."""
        self.budgets = BudgetLedger()
        """The spend of its agents' turns by thread, agent and tenant, and the default limits
        (``docs/guardrails.md``); ``loom serve`` configures it from ``[budget]``."""
        self._cells: dict[str, Cell] = {}
        self._tg: TaskGroup | None = None
        self._closing = False
        # All its agents may ask of it; it also holds which agent owns each subscription and
        # the connected remote agents.
        self._services = RuntimeServices(
            running=self._running,
            hosts=self._cells.__contains__,
            set_status=self._set_status,
            publish_lifecycle=self._publish_lifecycle,
            agent_ended=self._agent_ended,
            stop_children=self._stop_children,
            dead_letter=self._dead_letter,
            task_group=self._task_group,
            provider_registry=self._provider_registry,
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AgentRuntime:
        if self.policies.requests:
            # ctx.request's policies, by topic, on its one road: the bus's reply router
            # (made only when there are rules: it subscribes on the bus).
            router_for(self.bus).policies = self.policies.requests
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._sweeper)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        assert self._tg is not None
        tg, self._tg = self._tg, None
        # The body's own exception propagates as itself: the task group only ever holds the
        # runtime's tasks, which aclose() has ended.
        await tg.__aexit__(None, None, None)
        return None

    async def aclose(self) -> None:
        """Stop every agent (children before parents), then the sweeper. Idempotent."""
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            for agent_id in reversed(list(self._cells)):
                cell = self._cells.get(agent_id)
                if cell is not None:
                    await self._stop_cell(cell)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _receivers(self, topic: str) -> list[str]:
        owners = self._services.owners
        return [owners[s.id] for s in self.bus.plumbing.subscribers(topic) if s.id in owners]

    def _running(self) -> bool:
        return self._tg is not None and not self._closing

    def _task_group(self) -> TaskGroup:
        if self._tg is None:
            raise BusClosed("the runtime is not running")
        return self._tg

    async def _sweeper(self) -> None:
        while True:
            await anyio.sleep(self.sweep_interval_s)
            for agent_id in self.directory.sweep(stale_after_s=self.stale_after_s):
                log.warning("agent %s is stale: no heartbeat for %ss", agent_id, self.stale_after_s)
                await self._publish_lifecycle(agent_id, AgentStatus.STALE, "no heartbeat")

    # ------------------------------------------------------------------ agents

    async def start(
        self,
        agent: AgentSpec | HasAgentSpec,
        *,
        parent: str | None = None,
        hosting: Hosting | None = None,
    ) -> str:
        """Start an agent and return its id once it runs (its ``on_start`` has returned).

        ``hosting`` (``loom.runtime.lowlevel.Hosting``) is for hosts, not agents: it makes the
        host the agent's contexts are built on from the runtime's own, so some operations can
        go elsewhere (an agent connected through the bridge calls tools through the server);
        everything else stays the runtime's. ``None``: the runtime hosts the contexts alone.

        Raises:
            InvalidArgument: the id is taken.
            AgentStartFailed: it stopped or failed before running.
            BusClosed: the runtime is shutting down.
        """
        if self._tg is None or self._closing:
            raise BusClosed("the runtime is not running")
        spec = agent if isinstance(agent, AgentSpec) else agent.agent_spec()
        if spec.id in self._cells:
            raise InvalidArgument(f"an agent with id {spec.id!r} already exists (it is running)")
        known = self.directory.get(spec.id)
        if known is not None and known.node != self.directory.node:
            raise AgentExists(spec.id, f"it is live on node {known.node}")
        if known is not None and (
            known.remote or known.status not in (AgentStatus.STOPPED, AgentStatus.FAILED)
        ):
            raise InvalidArgument(f"an agent with id {spec.id!r} already exists")
        if self.id_claim is not None:
            await self.id_claim(spec.id)  # AgentExists: live on another node
            if spec.id in self._cells:  # started here while the claim waited
                raise InvalidArgument(
                    f"an agent with id {spec.id!r} already exists (it is running)"
                )
        if known is not None and spec.id in self.directory:
            self.directory.remove(spec.id)  # a stopped or failed agent may be started again
        cell = Cell(self, self._services, spec, parent, hosting)
        self._cells[spec.id] = cell
        directory = self.directory
        directory.add(spec.id, metadata=spec.metadata)
        for pattern in cell.mailbox.patterns:
            directory.add_pattern(spec.id, pattern)
        mailbox = cell.mailbox
        self._services.owners[mailbox.id] = spec.id
        directory.set_depth_probe(spec.id, lambda: depth(mailbox))
        if parent is not None and parent in self._cells:
            self._cells[parent].children.append(spec.id)
        await self._publish_lifecycle(spec.id, AgentStatus.CREATED)
        cell.handle = self._tg.start_soon(cell.main)
        started = cell.started
        assert started is not None
        await started.wait()
        cell.started = None  # an idle agent keeps no event it no longer needs
        if cell.done and cell.status is not AgentStatus.RUNNING:
            detail = f": {cell.last_error}" if cell.last_error else ""
            raise AgentStartFailed(spec.id, f"{cell.status.value}{detail}")
        return spec.id

    async def stop(self, agent_id: str) -> None:
        """Stop an agent: it finishes the event in hand (within ``stop_timeout_s``, else that
        handler is cancelled), ``on_stop`` runs, what its mailbox still holds goes to the
        dead-letter topic. Its children stop first. It stays in the directory as ``stopped``.

        Raises:
            AgentNotFound: no such agent is hosted here.
        """
        cell = self._cells.get(agent_id)
        if cell is None:
            if agent_id in self.directory:
                return  # already stopped
            raise AgentNotFound(agent_id)
        if self._stops_caller(cell):
            self._request_stop_tree(cell)
            return
        await self._stop_cell(cell)

    def _stops_caller(self, cell: Cell) -> bool:
        """Whether ``cell`` is the agent this call runs in, or one of its ancestors: then the
        stop cannot wait for it (the caller would wait for itself)."""
        caller = current_cell.get()
        while caller is not None:
            if caller is cell:
                return True
            caller = self._cells.get(caller.parent) if caller.parent is not None else None
        return False

    def _request_stop_tree(self, cell: Cell) -> None:
        for child in cell.children:
            child_cell = self._cells.get(child)
            if child_cell is not None:
                self._request_stop_tree(child_cell)
        cell.request_stop()

    async def _stop_children(self, cell: Cell) -> None:
        for child in list(cell.children):
            child_cell = self._cells.get(child)
            if child_cell is None:
                continue
            if self._stops_caller(child_cell):
                self._request_stop_tree(child_cell)
            else:
                await self._stop_cell(child_cell)

    async def delete(self, agent_id: str) -> None:
        """Stop an agent if it runs and remove it from the directory.

        Raises:
            AgentNotFound: no such agent is known here.
        """
        if agent_id not in self._cells and agent_id not in self.directory:
            raise AgentNotFound(agent_id)
        cell = self._cells.get(agent_id)
        if cell is not None:
            if self._stops_caller(cell):
                # From inside itself: the entry goes once the agent has stopped.
                cell.delete_when_done = True
                self._request_stop_tree(cell)
                return
            await self._stop_cell(cell)
        self.directory.remove(agent_id)

    async def _stop_cell(self, cell: Cell) -> None:
        await self._stop_children(cell)
        cell.request_stop()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.stop_timeout_s):
                await cell.wait_done()
            if not cell.done:
                log.warning(
                    "agent %s did not stop in %ss: cancelling it", cell.id, self.stop_timeout_s
                )
                if cell.handle is not None:
                    cell.handle.cancel()
                await cell.wait_done()

    def status(self, agent_id: str) -> AgentStatus:
        """The agent's current state.

        Raises:
            AgentNotFound: no such agent is known here.
        """
        info = self.directory.get(agent_id)
        if info is None:
            raise AgentNotFound(agent_id)
        return info.status

    def agents(self) -> list[AgentInfo]:
        """Every agent the directory knows."""
        return self.directory.all()

    def statistics_of(self, agent_id: str) -> AgentStats:
        """Counters of a hosted agent: handled, failed, mailbox depth and high-water."""
        cell = self._cells.get(agent_id)
        if cell is None:
            raise AgentNotFound(agent_id)
        stats = cell.mailbox.statistics()
        return AgentStats(
            handled=cell.handled,
            failed=cell.failed_events,
            queued=stats.queued,
            high_water=stats.high_water,
            capacity=stats.capacity,
        )

    # ------------------------------------------------------------------ tools

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        timeout: float | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call a tool: a capability of the least busy running agent offering it, else a tool of
        the runtime's registry; with ``provider``, that agent's capability only (another
        node, having chosen this node's agent, asks for it by id: no second choice is made).

        A capability whose every provider is known but not running (a remote agent that
        disconnected and is expected back, a local one its supervisor is restarting:
        ``Directory.has_provider``) is waited for, within
        the call's timeout (``None``: the registry's default), rather than refused at once: a
        provider's restart is not a missing tool. What is left of the timeout then bounds the
        call itself.

        The tool's resilience policy applies here (``policies.tools``, or the one its
        registration gave), once: not again for a call another node sent with ``provider``.
        ``idempotency_key`` makes the call retryable and reaches the tool
        (``ToolRegistry.call``).

        Raises:
            ToolNotFound, InvalidToolArguments, ToolTimeout, ToolPermissionDenied, ToolFailed.
            AgentNotFound: ``provider`` is not an agent of this runtime offering ``name``.
        """
        if provider is not None:
            return await self._call_provider(provider, name, arguments, timeout, idempotency_key)
        info = self.directory.least_busy(name)
        if info is None and name not in self.tools and self.directory.has_provider(name):
            limit = DEFAULT_TIMEOUT if timeout is None else timeout
            log.debug("tool %s: no provider running; waiting up to %g s for one", name, limit)
            start = anyio.current_time()
            with anyio.move_on_after(limit):
                while (info := self.directory.least_busy(name)) is None:
                    if not self.directory.has_provider(name):
                        break  # every provider ended for good: no need to wait on
                    await self.directory.wait_changed()
            if info is None and self.directory.has_provider(name):
                raise ToolTimeout(limit, tool=name)
            timeout = max(limit - (anyio.current_time() - start), 0.001)
            if info is not None:
                log.debug("tool %s: a provider is back (%s)", name, info.id)
        if info is not None:
            registry = self._provider_registry(info.id)
            if registry is not None:
                self.directory.add_in_flight(info.id, 1)
                try:
                    async with scoped_call(name, to_agent=True):
                        return await registry.call(
                            name, arguments, timeout=timeout, idempotency_key=idempotency_key
                        )
                finally:
                    self.directory.add_in_flight(info.id, -1)
        if name in self.tools:
            async with scoped_call(name, to_agent=False):
                return await self.tools.call(
                    name, arguments, timeout=timeout, idempotency_key=idempotency_key
                )
        # Also when every agent offering it stopped or failed for good (while the call waited).
        raise ToolNotFound(name)

    async def _call_provider(
        self,
        agent_id: str,
        name: str,
        arguments: Mapping[str, Any] | str,
        timeout: float | None,
        key: str | None,
    ) -> Any:
        registry = self._provider_registry(agent_id)
        if registry is None or name not in registry:
            raise AgentNotFound(agent_id)
        self.directory.add_in_flight(agent_id, 1)
        try:
            # The calling node's policy guarded this call already (retried, broke, limited):
            # doing it again here would multiply its retries.
            async with scoped_call(name, to_agent=True):
                return await registry.call(
                    name, arguments, timeout=timeout, idempotency_key=key, guard=False
                )
        finally:
            self.directory.add_in_flight(agent_id, -1)

    def describe_tool(
        self, name: str, *, exclude: str | None = None, include_runtime_tools: bool = True
    ) -> Tool | None:
        """The tool an agent would get calling ``name``: a capability of a running agent (not
        ``exclude``), local or remote, else (if ``include_runtime_tools``) a tool of the
        runtime's registry; ``None`` if nobody offers it. For describing tools to a model;
        call them through :meth:`call_tool`."""
        for info in self.directory.by_capability(name):
            if info.id == exclude or info.status is not AgentStatus.RUNNING:
                continue
            registry = self._provider_registry(info.id)
            if registry is not None and name in registry:
                return registry.get(name)
        if include_runtime_tools and name in self.tools:
            return self.tools.get(name)
        return None

    def capabilities_of(self, agent_id: str) -> list[Tool]:
        """The tools agent ``agent_id`` offers now, local or remote (empty for none, for an
        agent not running, and for an unknown id)."""
        registry = self._provider_registry(agent_id)
        return [] if registry is None else registry.list()

    def _provider_registry(self, agent_id: str) -> ToolRegistry | None:
        """The registry of the capabilities agent ``agent_id`` offers, local or remote."""
        cell = self._cells.get(agent_id)
        if cell is not None:
            registry = cell.registry
        else:
            remote = self._services.remotes.get(agent_id)
            registry = None if remote is None else remote.registry
        if registry is not None:
            # An agent's registry is made by its cell or replaced when a remote agent declares
            # its tools again: timed and guarded from the first call the runtime routes to it.
            registry.policies = self.policies.tools
            if self._tool_duration is not None:
                registry.duration = self._tool_duration
        return registry

    # ------------------------------------------------------------------ remote agents

    async def attach_remote(
        self,
        agent_id: str,
        *,
        metadata: Mapping[str, str] = {},
        qos: QoS = QoS.BATCHED,
        buffer_size: int | None = None,
        tool_timeout_s: float = DEFAULT_TIMEOUT,
        node: str | None = None,
    ) -> RemoteAgent:
        """Host an agent that lives in another process (the bridge calls this on connect).

        ``node``: it lives on that other node of the cluster (the cluster directory attaches
        those); its id is not claimed again here, and its lifecycle events are its own node's
        to publish (none are published here). ``None``: it is this node's own, and the
        runtime's ``id_claim`` (if set) is asked first.

        The agent gets a directory entry (``remote``, ``running``), a mailbox subscription on
        ``agent.{agent_id}.replies`` of tier ``qos``, and may then add patterns, subscriptions
        and tools through the returned handle; ``handle.detach(reason)`` ends it.

        Raises:
            InvalidArgument: a malformed id (``AgentExists``: the id is taken).
            BusClosed: the runtime is not running.
        """
        return await attach_remote(
            self,
            self._services,
            agent_id,
            metadata=metadata,
            qos=qos,
            buffer_size=buffer_size,
            tool_timeout_s=tool_timeout_s,
            node=node,
        )

    # ------------------------------------------------------------------ internal, for cells

    async def _set_status(self, cell: Cell, status: AgentStatus, reason: str = "") -> None:
        cell.status = status
        if cell.id in self.directory:
            self.directory.set_status(cell.id, status)
        await self._publish_lifecycle(cell.id, status, reason)

    async def _agent_ended(self, cell: Cell, status: AgentStatus, reason: str) -> None:
        self._cells.pop(cell.id, None)
        self._services.owners.pop(cell.mailbox.id, None)
        if cell.parent is not None and cell.parent in self._cells:
            siblings = self._cells[cell.parent].children
            if cell.id in siblings:
                siblings.remove(cell.id)
        for pattern in list(cell.mailbox.patterns):
            if cell.id in self.directory:
                self.directory.remove_pattern(cell.id, pattern)
        await self._set_status(cell, status, reason)
        if cell.delete_when_done:
            self.directory.remove(cell.id)
        if status is AgentStatus.FAILED:
            log.error("agent %s failed: %s", cell.id, reason)

    async def _publish_lifecycle(
        self, agent_id: str, status: AgentStatus, reason: str = ""
    ) -> None:
        info = self.directory.get(agent_id)
        payload = LifecycleEvent(
            agent_id=agent_id,
            status=status.value,
            reason=reason,
            restarts=0 if info is None else info.restarts,
        )
        event = Event(
            type=f"agent.{status.value}",
            source="loom.runtime",
            payload=_lifecycle_encoder.encode(payload),
        )
        # A closed bus is going away with the runtime: nobody is left to tell.
        with contextlib.suppress(BusClosed):
            await self.bus.publish(f"{LIFECYCLE_PREFIX}.{agent_id}", event)

    async def _dead_letter(
        self, agent_id: str, delivery: Delivery, reason: str, error: str, attempts: int
    ) -> None:
        event = delivery.event
        metadata = dead_letter_metadata(delivery, agent_id, reason, error, attempts)
        try:
            await self.bus.publish(
                f"{DEAD_LETTER_PREFIX}.{agent_id}",
                msgspec.structs.replace(event, metadata=metadata),
            )
        except BusClosed:
            log.warning(
                "dead letter of agent %s lost, the bus is closed: %s (%s)", agent_id, reason, error
            )


class ToolProvider(msgspec.Struct, frozen=True, kw_only=True):
    """One callable tool and who provides it (see :func:`tool_inventory`).

    Attributes:
        tool: the tool.
        agent_id: the agent offering it; ``None`` for a tool of the runtime's own registry.
        remote: whether that agent is a remote one.
        node: the node that agent lives on (``""`` outside a cluster or for none).
    """

    tool: Tool
    agent_id: str | None = None
    remote: bool = False
    node: str = ""


def tool_inventory(runtime: AgentRuntime) -> list[ToolProvider]:
    """Every tool callable through ``runtime.call_tool`` now: the running agents'
    capabilities (local and remote), then the runtime's own tools."""
    out: list[ToolProvider] = []
    for info in runtime.directory.all():
        if info.status is not AgentStatus.RUNNING or not info.capabilities:
            continue
        out.extend(
            ToolProvider(tool=t, agent_id=info.id, remote=info.remote, node=info.node)
            for t in runtime.capabilities_of(info.id)
        )
    out.extend(ToolProvider(tool=t) for t in runtime.tools.list())
    return out
