"""What the services of one server share: the :class:`Hub`, and the checked :class:`Registration`.

The servicers (``_server``, ``_services``, ``_directory_service``) and each stream's
``_server_session.Session`` hold the hub; none of them imports another's module for it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import bridge_pb2
from loom.runtime import (
    DEFAULT_MAX_DELIVER,
    AgentCard,
    AgentExists,
    AgentRuntime,
    AgentStatus,
    InvalidArgument,
    QoS,
)
from loom.runtime.lowlevel import RemoteTool, validate_pattern
from loom.runtime.lowlevel import validate_agent_id as _validate_agent_id
from loom.runtime.tools import MAX_SCHEMA_BYTES, JSONObject, ToolRegistry

from ._agent_card import card_from_proto
from ._auth import principal_of, token_weakness
from ._convert import tool_descriptor_from_proto
from ._errors import LimitExceeded, WrongAgent
from ._identity import Principal
from ._limits import Limits
from ._tenants import Tenants
from ._turn_cancels import HeldCancels
from ._wire_types import QOS_KEY, RESTARTS_KEY, SECRET_METADATA, ToolDescriptor

if TYPE_CHECKING:
    from ._server_session import Session

__all__ = ["Holder", "Hub", "Registration", "Settle"]

log = logging.getLogger("loom.bridge")

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
        durable: it asked for durable delivery of its topics (honoured on a stream that
            negotiates ``STREAM_FEATURE_DURABLE``).
        max_deliver: (durable) deliveries of one event before it is dead-lettered.
        a2a: its A2A card (``a2a_card``), for a server that exposes it while it is connected.
    """

    agent_id: str
    topics: tuple[str, ...]
    tools: tuple[ToolDescriptor, ...]
    schemas: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    qos: QoS = QoS.BATCHED
    durable: bool = False
    max_deliver: int = DEFAULT_MAX_DELIVER
    a2a: AgentCard | None = None

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
            durable=msg.HasField("durable"),
            max_deliver=msg.durable.max_deliver or DEFAULT_MAX_DELIVER,
            a2a=card_from_proto(msg.a2a_card) if msg.HasField("a2a_card") else None,
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


class Holder:
    """Who holds an agent id: the secret of its latest registration, and whether a stream has
    opened with that secret (only then is the id held for the secret's owner)."""

    __slots__ = ("ended_at", "held", "secret")

    def __init__(self, secret: str, *, held: bool) -> None:
        self.secret = secret
        self.held = held
        self.ended_at: float | None = None  # when its last stream ended (anyio time)

    def matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.secret.encode())


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
        self.holders: dict[str, Holder] = {}
        self.process_restarts: dict[str, int] = {}  # RESTARTS_KEY last seen, by agent id
        self.closing = False
        self.bind_agent_ids = False  # TLSConfig.bind_agent_ids
        self.admin_token: str | None = None
        self.tenants = Tenants()  # the tenant tokens and their namespaces
        # Told (in line; must not block) when an agent with an A2A card opens its stream
        # (its card) and when that stream ends (None): BridgeServer.add_presence_listener.
        self.presence: list[Callable[[str, AgentCard | None], None]] = []
        # Cancels of turns no agent confirmed yet, sent again on its next stream.
        self.turn_cancels = HeldCancels()

    def announce(self, agent_id: str, card: AgentCard | None) -> None:
        """Tell the presence listeners that ``agent_id`` (with an A2A card) came or left."""
        for listener in self.presence:
            try:
                listener(agent_id, card)
            except Exception:  # a listener's bug must not end the agent's stream
                log.exception("bridge: presence listener failed for agent %s", agent_id)

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        """Who made a unary call (or an ``EventBus.Subscribe``), as its credentials say
        (``bridge/_auth.py``, ``principal_of``)."""
        return principal_of(
            context,
            admin_token=self.admin_token,
            bind_agent_ids=self.bind_agent_ids,
            tenants=self.tenants,
        )

    def _check_holder(self, agent_id: str, given: str | None) -> None:
        """Refuse to hand a held id to a client without its secret (see :meth:`register`).

        Raises:
            WrongAgent: the id is held, and ``given`` is not its secret.
        """
        holder = self.holders.get(agent_id)
        if holder is None or not holder.held or holder.matches(given):
            return
        window = self.runtime.stale_after_s
        ended = holder.ended_at
        if ended is not None and anyio.current_time() - ended >= window:
            return  # its owner stayed away for the liveness window: the id is free again
        raise WrongAgent(
            f"agent {agent_id!r} is held by the client that registered it: show its "
            f"registration secret ({SECRET_METADATA} metadata), wait until its stream has been "
            f"closed for {window:g} s, or have an operator run 'loom agents release {agent_id}'"
        )

    def register(self, reg: Registration, secret: str | None = None) -> str:
        """Record (or replace) a registration; return its secret.

        An id whose stream once opened with its registration secret is held for the client
        that has the secret: registering it again needs that secret (``secret``) until its
        stream has been closed for the runtime's liveness window (``stale_after_s``), and
        keeps it. Otherwise the secret is the one shown, if strong enough, else a new one.

        Raises:
            AgentExists: the id is a local agent's, or its stream is open.
            WrongAgent: the id is held by another client (see above).
            LimitExceeded: ``max_agents`` are registered and none of them is disconnected.
        """
        agent_id = reg.agent_id
        if agent_id in self.sessions:
            raise AgentExists(agent_id, "its stream is open; end it before registering again")
        self._check_holder(agent_id, secret)
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
        old = self.holders.get(agent_id)
        if old is not None and old.held and old.matches(secret):
            return old.secret  # the holder registering again: it stays the holder
        # Anyone else holds the id once a stream opens with the secret returned here: the one
        # it showed, if strong enough (a supervisor gives each new process of an agent the
        # same, so a restarted process takes the id back), else a new one.
        if secret is None or token_weakness(secret) is not None:
            secret = secrets.token_urlsafe(24)
        self.holders[agent_id] = Holder(secret, held=False)
        return secret

    def count_process_restarts(self, agent_id: str, reg: Registration) -> None:
        """A new process of the agent, as its supervisor numbers them (``RESTARTS_KEY``):
        each restart not seen yet counts among the agent's restarts in the directory (before
        it attaches, which keeps the count). A ``0`` is a new supervisor: it counts afresh."""
        text = reg.metadata.get(RESTARTS_KEY, "0")
        number = int(text) if text.isdigit() else 0
        seen = self.process_restarts.get(agent_id, 0)
        directory = self.runtime.directory
        if number > seen and agent_id in directory:
            for _ in range(number - seen):
                directory.count_restart(agent_id)
        self.process_restarts[agent_id] = number

    def routable(self, topic: str) -> bool:
        """Whether an event published on ``topic`` now would reach a subscription here (an
        invalid topic counts as routable: the bus refuses it, with its own error)."""
        try:
            return bool(self.runtime.bus.plumbing.subscribers(topic))
        except InvalidArgument:
            return True

    def admit_stream(self, agent_id: str, secret: str | None) -> None:
        """Check the registration secret of a stream opening for ``agent_id``: with the
        secret, the id becomes held; without one, only an id nobody holds may open (an old
        client, which never reads the secret, is bound to its open stream alone).

        Raises:
            WrongAgent: a wrong secret, or none for a held id.
        """
        holder = self.holders.get(agent_id)
        if holder is None:
            return
        if secret is not None:
            if not holder.matches(secret):
                raise WrongAgent(
                    f"the registration secret shown for agent {agent_id!r} is not the one its "
                    "latest RegisterAgent returned"
                )
            holder.held = True
        elif holder.held:
            raise WrongAgent(
                f"agent {agent_id!r} is held by the client that registered it: its stream opens "
                f"only with its registration secret ({SECRET_METADATA} metadata)"
            )
        holder.ended_at = None

    def stream_ended(self, agent_id: str, *, final: bool = False) -> None:
        """Start the liveness window of a held id whose stream ended; with ``final`` (its
        agent reported that it stopped or failed for good) free the id at once instead: no
        one is coming back for it, and a process started again should not wait."""
        holder = self.holders.get(agent_id)
        if holder is None:
            return
        if final:
            del self.holders[agent_id]
        else:
            holder.ended_at = anyio.current_time()

    def held_for(self, agent_id: str) -> float | None:
        """Seconds until a held id whose stream ended is free again; ``None`` if it is not
        held that way (free, or its stream is open)."""
        holder = self.holders.get(agent_id)
        if holder is None or not holder.held or holder.ended_at is None:
            return None
        left = holder.ended_at + self.runtime.stale_after_s - anyio.current_time()
        return left if left > 0 else None

    async def release(self, agent_id: str, *, grace_s: float = 5.0) -> tuple[bool, bool]:
        """Forget ``agent_id``'s registration and secret, ending its stream if open (waiting
        up to ``grace_s`` for it to end); return (whether it was registered, whether its
        stream was open)."""
        session = self.sessions.get(agent_id)
        if session is not None:
            session.released_by_operator = True  # the client is told so (RELEASED_METADATA)
            session.end(
                grpc.StatusCode.PERMISSION_DENIED, "the agent id was released by an operator"
            )
            with anyio.move_on_after(grace_s):
                await session.finished.wait()
        known = self.registrations.pop(agent_id, None) is not None
        self.holders.pop(agent_id, None)
        return known, session is not None

    def _forget_one(self) -> None:
        for agent_id in self.registrations:
            if agent_id not in self.sessions:
                del self.registrations[agent_id]
                self.holders.pop(agent_id, None)
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
