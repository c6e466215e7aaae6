"""What the services of one server share: the :class:`Hub`, and the checked :class:`Registration`.

The servicers (``_server``, ``_services``, ``_directory_service``) and each stream's
``_server_session.Session`` hold the hub; none of them imports another's module for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from loom.bridge._generated import bridge_pb2
from loom.runtime import AgentExists, AgentRuntime, AgentStatus, InvalidArgument, QoS
from loom.runtime.lowlevel import RemoteTool, validate_pattern
from loom.runtime.lowlevel import validate_agent_id as _validate_agent_id
from loom.runtime.tools import MAX_SCHEMA_BYTES, JSONObject, ToolRegistry

from ._convert import tool_descriptor_from_proto
from ._errors import LimitExceeded
from ._limits import Limits
from ._wire_types import QOS_KEY, ToolDescriptor

if TYPE_CHECKING:
    from ._server_session import Session

__all__ = ["Hub", "Registration"]

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
        qos: the tier of its mailbox and topics (``loom.qos`` in its metadata; else batched).
    """

    agent_id: str
    topics: tuple[str, ...]
    tools: tuple[ToolDescriptor, ...]
    schemas: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    qos: QoS = QoS.BATCHED

    @classmethod
    def from_proto(cls, msg: bridge_pb2.AgentRegisterRequest, limits: Limits) -> Registration:
        """Check a ``RegisterAgent`` request.

        Raises:
            InvalidArgument: a malformed id, pattern, tool name or schema, or a tool named
                twice (``WireError`` for a malformed descriptor).
            LimitExceeded: more topics than ``max_topics_per_agent``.
        """
        agent_id = _validate_agent_id(msg.agent_id)
        tier = msg.metadata.get(QOS_KEY, "batched")
        try:
            qos = QoS[tier.upper()]
        except KeyError:
            raise InvalidArgument(
                f"metadata {QOS_KEY}={tier!r} names no tier: realtime, batched or background"
            ) from None
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
            qos=qos,
        )


class Hub:
    """What the services of one server share: the runtime, the limits, who is registered
    and connected, and which session each pushed tool call belongs to."""

    def __init__(self, runtime: AgentRuntime, limits: Limits) -> None:
        self.runtime = runtime
        self.limits = limits
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
