"""``Context``: what a handler gets to act on the world.

A context belongs to one agent instance. Events a handler emits inherit the thread, the trace
context and the hop count of the event being handled (one hop further), so a chain of agents
carries its conversation and its TTL along without anyone copying fields by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.trace import TracerProvider, use_span

from ._envelope_build import child_envelope
from ._errors import LoomError
from ._event import Envelope, Event, mailbox_topic, reply_topic
from ._qos import QoS
from ._tracing import PublishTracer
from .collab._bound import BoundCollab
from .tools import ToolSpec

if TYPE_CHECKING:
    from ._approval_store import ApprovalStore
    from ._behaviour import AgentSpec, HasAgentSpec
    from ._budget import BudgetAuthority
    from ._runtime import AgentRuntime
    from ._timers import Timer
    from .llm import LLM

__all__ = ["Context", "ContextHost", "Handler", "Hosting"]


class ContextHost(Protocol):
    """The operations a :class:`Context` delegates to. The runtime's cell implements them; an
    agent connected through the bridge gets ``sdk/_remote.py``'s ``RemoteHost`` over that same
    cell (chosen with ``AgentRuntime.start(hosting=...)``), which is why the same agent code
    runs in both."""

    async def publish(self, topic: str, event: Event, *, qos: QoS | None) -> bool: ...

    async def request(
        self,
        topic: str,
        payload: bytes,
        *,
        type: str,
        metadata: Mapping[str, str] | None,
        timeout: float,
        parent: Event | None,
    ) -> Event: ...

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        timeout: float | None,
        idempotency_key: str | None = None,
    ) -> Any: ...

    async def subscribe(self, pattern: str, *, qos: QoS | None) -> None: ...

    async def unsubscribe(self, pattern: str) -> None: ...

    async def list_tools(self) -> list[ToolSpec]: ...

    async def spawn(self, agent: AgentSpec | HasAgentSpec) -> str: ...

    def schedule(
        self,
        event: Event,
        *,
        delay: float | None,
        every: float | None,
        at: float | None,
    ) -> Timer: ...


Handler = Callable[["Context", str, Event], Awaitable[None]]
"""A behaviour's ``on_event``: ``await handler(ctx, topic, event)``."""


class Hosting(Protocol):
    """How the contexts of one agent reach the world when the runtime's own host is not the
    whole story (``AgentRuntime.start(agent, hosting=...)``): an agent connected through the
    bridge runs in a runtime of its own process, and only some of its operations are remote.

    The runtime still owns the agent: its mailbox, supervision, timers and the host it gives
    each context. ``host`` receives that host (it implements every operation, on the
    runtime's bus) and returns the one the context is built on, which forwards to it what is
    not its own. One host per context (one per worker with ``max_concurrency > 1``), made
    when the context is. ``handler`` is asked once per worker for the callable it hands each
    event to, so a hosting that must run code around every handler call (make the event's
    trace context current) costs nothing to an agent that has none.
    """

    def host(self, local: ContextHost) -> ContextHost: ...

    def handler(self, on_event: Handler) -> Handler: ...


class _AgentLog(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("agent_id", self.extra["agent_id"] if self.extra else "")
        kwargs["extra"] = extra
        return f"[{extra['agent_id']}] {msg}", kwargs


_LOG = logging.getLogger("loom.agent")


class Context:
    """A handler's view of the runtime.

    Attributes:
        agent_id: the agent this context belongs to.
        state: the instance's state; a restart starts with a fresh one.
        event: the event being handled, or ``None`` (in ``on_start``, ``on_stop``, timers).
    """

    __slots__ = ("_host", "_log", "_tracer", "agent_id", "event", "state")

    def __init__(
        self,
        agent_id: str,
        host: ContextHost,
        state: MutableMapping[str, Any],
        *,
        tracer: PublishTracer | None = None,
    ) -> None:
        self.agent_id = agent_id
        self._host = host
        self._tracer = tracer
        self.state = state
        self.event: Event | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that prefixes every line with the agent id (made on first use)."""
        if self._log is None:
            self._log = _AgentLog(_LOG, {"agent_id": self.agent_id})
        return self._log

    @property
    def mailbox(self) -> str:
        """This agent's mailbox topic, ``agent.{id}.replies``."""
        return mailbox_topic(self.agent_id)

    def _event(
        self,
        payload: bytes | str,
        *,
        type: str,
        metadata: Mapping[str, str] | None,
        tags: Sequence[str],
        priority: int,
        envelope: Envelope | None = None,
    ) -> Event:
        if isinstance(payload, str):
            payload = payload.encode()
        return Event(
            type=type,
            source=self.agent_id,
            payload=payload,
            metadata=dict(metadata) if metadata else {},
            tags=tuple(tags),
            priority=priority,
            envelope=envelope or child_envelope(self.event, sender=self.agent_id),
        )

    async def emit(
        self,
        topic: str,
        payload: bytes | str = b"",
        *,
        type: str = "",
        qos: QoS | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        priority: int = 0,
    ) -> bool:
        """Publish an event on ``topic`` from this agent.

        ``qos=QoS.REALTIME`` never waits: if a lossless subscriber is full the event is not
        published at all and ``False`` is returned. Any other value (the default) waits for
        room, as the bus's lossless tiers promise.

        Returns:
            Whether the event was published.
        """
        event = self._event(payload, type=type, metadata=metadata, tags=tags, priority=priority)
        return await self._host.publish(topic, event, qos=qos)

    async def request(
        self,
        topic: str,
        payload: bytes | str = b"",
        *,
        timeout: float = 30.0,
        type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> Event:
        """Publish a request on ``topic`` and wait for its reply.

        Raises:
            RequestTimeout: no reply within ``timeout`` seconds (a ``DeadlineExceeded``).
            NoResponders: nobody is subscribed to ``topic`` (on a bus without a transport;
                through a transport nobody can tell, and the request times out instead).
        """
        if isinstance(payload, str):
            payload = payload.encode()
        return await self._host.request(
            topic, payload, type=type, metadata=metadata, timeout=timeout, parent=self.event
        )

    async def reply(
        self,
        original: Event,
        payload: bytes | str = b"",
        *,
        type: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Reply to ``original``: to its ``reply_to`` (else its sender's mailbox), keeping its
        thread and correlation id."""
        env = original.envelope
        reply_env = Envelope(
            thread_id=env.thread_id,
            correlation_id=env.correlation_id or original.id,
            sender=self.agent_id,
            ttl=env.ttl,
            hop=0 if self.event is None else self.event.envelope.hop + 1,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
        )
        event = self._event(
            payload, type=type, metadata=metadata, tags=(), priority=0, envelope=reply_env
        )
        await self._host.publish(reply_topic(original), event, qos=None)

    async def tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call a tool by name: a capability of any agent (the least busy one offering it) or a
        tool of the runtime.

        ``idempotency_key`` says the call may be made again with the same effect: its
        resilience policy may retry it (a call without one is retried only if the tool is
        marked ``idempotent``), and the tool receives the key
        (``loom.runtime.resilience.current_idempotency_key()``; an MCP server as
        ``_meta.idempotencyKey``), the same for every attempt, so it can do its effect once
        per key. It travels with the call to the server and to the agent that serves it
        (``loom-idempotency-key`` header, ``docs/guardrails.md``).

        Raises:
            ToolNotFound, InvalidToolArguments, ToolTimeout, ToolPermissionDenied, ToolFailed.
        """
        host = self._host
        if self._tracer is None:
            return await host.call_tool(
                name, arguments or {}, timeout=timeout, idempotency_key=idempotency_key
            )
        # Current while the call runs: through the bridge its context travels with the call,
        # so the server's and the provider's ``execute_tool`` spans are its children.
        with use_span(self._tracer.tool_span(name, self.agent_id), end_on_exit=True):
            return await host.call_tool(
                name, arguments or {}, timeout=timeout, idempotency_key=idempotency_key
            )

    async def list_tools(self) -> list[ToolSpec]:
        """Every tool ``ctx.tool`` can call now, but this agent's own capabilities: other
        agents' capabilities (local and remote), then the runtime's tools (native, MCP). In
        process it reads the runtime; through the bridge it asks the server
        (``ToolService.ListTools``)."""
        return await self._host.list_tools()

    async def subscribe(self, pattern: str, *, qos: QoS | None = None) -> None:
        """Also receive events on ``pattern`` in this agent's mailbox."""
        await self._host.subscribe(pattern, qos=qos)

    async def unsubscribe(self, pattern: str) -> None:
        """Stop receiving events on ``pattern`` (the mailbox topic cannot be dropped)."""
        await self._host.unsubscribe(pattern)

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """Where this agent's spans go: its bus's tracer provider (``None``: tracing is off).
        A cognitive agent given none uses it for its turns."""
        return None if self._tracer is None else self._tracer.provider

    @property
    def runtime(self) -> AgentRuntime | None:
        """The runtime hosting this agent, or ``None`` for an agent connected through the
        bridge (it reaches the server's runtime only through this context's calls)."""
        runtime = getattr(self._host, "runtime", None)
        from ._runtime import AgentRuntime

        return runtime if isinstance(runtime, AgentRuntime) else None

    @property
    def llm(self) -> LLM | None:
        """The model the agent's host offers, or ``None`` when it has none: in process the
        runtime's (``AgentRuntime(llm=...)``; ``loom serve`` gives it the router of its
        ``[llm]`` tables); for an agent connected through the bridge, the server's, called
        through ``loom.v1.LLM`` (whether the server has one shows at the first call:
        ``NoModelConfigured``). ``CognitiveAgent(llm="server")`` uses it."""
        runtime = self.runtime
        if runtime is not None:
            return runtime.llm
        return getattr(self._host, "llm", None)

    @property
    def approvals(self) -> ApprovalStore | None:
        """Where this agent's turns wait for a human, or ``None``: in process the runtime's
        store (``runtime.approvals``); for an agent connected through the bridge, the
        server's, through ``loom.v1.Approvals`` (a server without one answers its first
        call with ``UNIMPLEMENTED``). ``docs/guardrails.md``, "Human approval"."""
        runtime = self.runtime
        if runtime is not None:
            return runtime.approvals
        store: ApprovalStore | None = getattr(self._host, "approvals", None)
        return store

    @property
    def budget_authority(self) -> BudgetAuthority | None:
        """Where this agent's model calls hold and settle their spend when another process
        keeps it: for an agent connected through the bridge, the server's ledger
        (``loom.v1.Budgets``); ``None`` in process (the runtime's ``budgets``)."""
        if self.runtime is not None:
            return None
        authority: BudgetAuthority | None = getattr(self._host, "budgets", None)
        return authority

    @property
    def collab(self) -> BoundCollab:
        """Fan-out/fan-in, contract-net and barriers on behalf of this agent, continuing the
        event being handled (see ``docs/collab.md``).

        An agent connected through the bridge gets the same primitives, on the bus of its
        process whose transport is its connection (``bridge/_client_transport.py``).

        Raises:
            LoomError: the host offers no bus to collaborate on.
        """
        bus = getattr(self._host, "bus", None)
        if bus is None:
            raise LoomError(f"agent {self.agent_id}: collaboration needs a host with a bus")
        return BoundCollab(bus, self.agent_id, self.event)

    async def spawn(self, agent: AgentSpec | HasAgentSpec) -> str:
        """Start a child agent, supervised by its own policy and stopped with this agent.

        Returns:
            The child's id.
        """
        return await self._host.spawn(agent)

    def schedule(
        self,
        type: str = "timer",
        payload: bytes | str = b"",
        *,
        delay: float | None = None,
        every: float | None = None,
        at: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Timer:
        """Deliver an event of ``type`` to this agent's own mailbox later: once after ``delay``
        seconds or at Unix time ``at``, and/or every ``every`` seconds. Timer events go through
        the mailbox like any other, so the handler sees them in order and one at a time. Timers
        end with the instance that set them (stop, restart, delete).

        Returns:
            A handle whose ``cancel()`` stops the timer.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        event = Event(
            type=type,
            source=self.agent_id,
            payload=payload,
            metadata=dict(metadata) if metadata else {},
            envelope=Envelope(sender=self.agent_id),
        )
        return self._host.schedule(event, delay=delay, every=every, at=at)
