"""What the services of one server share: the :class:`Hub`, and the checked :class:`Registration`.

The servicers (``_server``, ``_services``, ``_directory_service``) and each stream's
``_server_session.Session`` hold the hub; none of them imports another's module for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from loom.bridge._generated import bridge_pb2
from loom.runtime import AgentExists, AgentRuntime, AgentStatus, InvalidArgument
from loom.runtime.lowlevel import RemoteTool, validate_pattern
from loom.runtime.lowlevel import validate_agent_id as _validate_agent_id
from loom.runtime.tools import MAX_SCHEMA_BYTES, JSONObject, ToolRegistry

from ._convert import tool_descriptor_from_proto
from ._errors import LimitExceeded
from ._limits import Limits
from ._wire_types import ToolDescriptor

if TYPE_CHECKING:
    from ._server_session import Session

__all__ = ["Hub", "Registration", "Settle"]

_ANY_OBJECT: JSONObject = {"type": "object"}


async def _noop(_name: str, _arguments: JSONObject) -> None:
    return None


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent declared in ``RegisterAgent``, checked.

    Attributes:
        agent_id: its id.
        topics: its ``subscribed_topics``, without repeats.
        tools: its declared tools.
        schemas: each tool's parsed ``parameters_schema``, by name.
        metadata: its free key/values.
    """

    agent_id: str
    topics: tuple[str, ...]
    tools: tuple[ToolDescriptor, ...]
    schemas: dict[str, dict[str, Any]]
    metadata: dict[str, str]

    @classmethod
    def from_proto(cls, msg: bridge_pb2.AgentRegisterRequest, limits: Limits) -> Registration:
        """Check a ``RegisterAgent`` request.

        Raises:
            InvalidArgument: a malformed id, pattern, tool name or schema, or a tool named
                twice (``WireError`` for a malformed descriptor).
            LimitExceeded: more topics than ``max_topics_per_agent``.
        """
        agent_id = _validate_agent_id(msg.agent_id)
        topics = tuple(dict.fromkeys(msg.subscribed_topics))
        if len(topics) > limits.max_topics_per_agent:
            raise LimitExceeded(
                "max_topics_per_agent",
                limits.max_topics_per_agent,
                f"agent {agent_id} asks for {len(topics)} topics",
            )
        for pattern in topics:
            validate_pattern(pattern)
        tools = tuple(tool_descriptor_from_proto(t) for t in msg.tools)
        schemas: dict[str, dict[str, Any]] = {}
        probe = ToolRegistry()  # the same checks the agent's registry makes on connect
        for tool in tools:
            if tool.name in schemas:
                raise InvalidArgument(f"agent {agent_id} declares tool {tool.name!r} twice")
            schema = _ANY_OBJECT
            if tool.parameters_schema.strip():
                # Bounded before it is decoded; the probe then bounds its depth and references.
                size = len(tool.parameters_schema.encode())
                if size > MAX_SCHEMA_BYTES:
                    raise InvalidArgument(
                        f"tool {tool.name!r}: parameters_schema is {size} bytes, more than "
                        f"the {MAX_SCHEMA_BYTES} allowed"
                    )
                try:
                    schema = msgspec.json.decode(tool.parameters_schema)
                except msgspec.DecodeError as exc:
                    raise InvalidArgument(
                        f"tool {tool.name!r}: parameters_schema is not JSON: {exc}"
                    ) from None
                except RecursionError:
                    # msgspec stops at its own nesting limit, well before the interpreter's.
                    raise InvalidArgument(
                        f"tool {tool.name!r}: parameters_schema is nested too deeply"
                    ) from None
            probe.register(RemoteTool(tool.name, tool.description, schema, _noop))
            schemas[tool.name] = dict(schema)
        return cls(
            agent_id=agent_id,
            topics=topics,
            tools=tools,
            schemas=schemas,
            metadata=dict(msg.metadata),
        )


class Settle:
    """The settle window of a fresh server: publishes that no subscription matches are held
    while agents reattach.

    A server has no memory of the agents connected to the process before it (a restart, a
    crash), so it cannot know who is coming back. When it restarts, every client reconnects
    after its own backoff, and a publisher that comes back before its subscribers would
    publish into the void (the bus counts such events ``unrouted``). So for at most
    ``settle_s`` after the server starts, a stream's publish that would reach no subscription
    waits for one to appear (an agent attaching or subscribing). The window closes early once
    ``settle_s / 2`` pass with no registration, attach or subscription (nobody, or nobody
    more, is reconnecting; a first start with no agents holds at most that long). Held
    publishes keep their stream's order and hold its publisher (its credit runs out); when
    the window closes, each is published as it is, and a client that negotiated
    ``STREAM_FEATURE_UNROUTED`` is told of those that still reached nobody.

    Attributes:
        settle_s: the longest the window lasts (0: no window).
        active: the window is open.
        held: publishes that waited in it.
    """

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.quiet_s = settle_s / 2
        self.active = False
        self.held = 0
        self._until = 0.0
        self._last = 0.0
        self._changed = anyio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Open the window now (the server has started listening)."""
        if self.settle_s <= 0:
            return
        now = asyncio.get_running_loop().time()
        self.active = True
        self._until = now + self.settle_s
        self._last = now
        self._arm()

    def remaining(self) -> float:
        """Seconds the window may still last (0 when closed)."""
        if not self.active:
            return 0.0
        return max(0.0, self._until - asyncio.get_running_loop().time())

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        end = min(self._until, self._last + self.quiet_s)
        self._timer = loop.call_at(end, self._check)

    def _check(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        if now >= self._until or now >= self._last + self.quiet_s:
            self.close()
        else:
            self._arm()

    def close(self) -> None:
        """Close the window: held publishes go ahead. Idempotent."""
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._changed.set()

    def activity(self) -> None:
        """An agent registered, attached or subscribed: held publishes look again, and the
        window stays open at least ``quiet_s`` more (within ``settle_s``)."""
        if not self.active:
            return
        self._last = asyncio.get_running_loop().time()
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def hold(self, routable: Callable[[], bool]) -> None:
        """Wait while the window is open and ``routable()`` is false."""
        if not self.active or routable():
            return
        self.held += 1
        while self.active and not routable():
            await self._changed.wait()


class Hub:
    """What the services of one server share: the runtime, the limits, who is registered
    and connected, and which session each pushed tool call belongs to."""

    def __init__(self, runtime: AgentRuntime, limits: Limits, *, settle_s: float = 0.0) -> None:
        self.runtime = runtime
        self.limits = limits
        # A bus with a transport may route an event to other nodes, which this server cannot
        # see: it neither holds publishes nor reports them unrouted.
        self.local_routing = not runtime.bus.plumbing.has_transport
        self.settle = Settle(settle_s if self.local_routing else 0.0)
        self.registrations: dict[str, Registration] = {}
        self.sessions: dict[str, Session] = {}
        self.calls: dict[str, Session] = {}
        self.streams: set[anyio.CancelScope] = set()  # EventBus.Subscribe calls
        self.closing = False
        self.bind_agent_ids = False  # TLSConfig.bind_agent_ids

    def register(self, reg: Registration) -> None:
        """Record (or replace) a registration.

        Raises:
            AgentExists: the id is a local agent's, or its stream is open.
            LimitExceeded: ``max_agents`` are registered and none of them is disconnected.
        """
        agent_id = reg.agent_id
        if agent_id in self.sessions:
            raise AgentExists(agent_id, "its stream is open; end it before registering again")
        known = self.runtime.directory.get(agent_id)
        if (
            known is not None
            and not known.remote
            and known.status not in (AgentStatus.STOPPED, AgentStatus.FAILED)
        ):
            raise AgentExists(agent_id, "a local agent runs under that id")
        if agent_id not in self.registrations and len(self.registrations) >= self.limits.max_agents:
            self._forget_one()
        self.registrations.pop(agent_id, None)
        self.registrations[agent_id] = reg  # newest last: eviction takes the oldest
        self.settle.activity()

    def routable(self, topic: str) -> bool:
        """Whether an event published on ``topic`` now would reach a subscription here (an
        invalid topic counts as routable: the bus refuses it, with its own error)."""
        try:
            return bool(self.runtime.bus.plumbing.subscribers(topic))
        except InvalidArgument:
            return True

    def _forget_one(self) -> None:
        for agent_id in self.registrations:
            if agent_id not in self.sessions:
                del self.registrations[agent_id]
                info = self.runtime.directory.get(agent_id)
                if info is not None and info.remote and info.status is not AgentStatus.RUNNING:
                    self.runtime.directory.remove(agent_id)
                return
        limit = self.limits.max_agents
        raise LimitExceeded("max_agents", limit, f"{limit} agents are registered and connected")

    def descriptor(self, agent_id: str, name: str) -> ToolDescriptor | None:
        reg = self.registrations.get(agent_id)
        if reg is None:
            return None
        return next((t for t in reg.tools if t.name == name), None)
