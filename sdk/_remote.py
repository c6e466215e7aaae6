"""Remote mode: the same ``Agent`` run in its own process, connected to a Loom server.

How it is built, and why
------------------------
The agent is hosted by an ordinary :class:`~loom.runtime.AgentRuntime` on **one** local
:class:`~loom.runtime.EventBus` whose :class:`~loom.runtime.lowlevel.Transport` is the agent's
bridge connection (``loom.bridge.ClientTransport``, ``bridge/_client_transport.py``). So the
mailbox, its bound and backpressure, one-handler-at-a-time ordering (or ``max_concurrency``),
the hop budget (TTL) check, supervision (resume/restart/stop, backoff, poison events, a fresh
instance per restart), ``on_start``/``on_stop``, timers, the reply router and the
collaboration primitives are the runtime's own code on the runtime's own bus, not a copy that
could drift from it; only the transport differs from a bus in the server's process.

The stream's reader delivers every delivery the server sends into that bus
(``EventBus.deliver_inbound``), with no task in between; what arrives before the agent has
started is held (up to ``inbound_buffer``) and handed over in order once it has. What the
agent publishes goes through the bus (local subscribers first) and out through the transport.

The runtime hosts the user's instance itself, with a hosting (``_RemoteHosting``, given to
``AgentRuntime.start``): the one :class:`~loom.Context` per instance that its cell builds
sits on :class:`RemoteHost`, which sends through the connection only what is genuinely remote
(tool calls and listing, stream subscriptions, spawning a connected child) and hands the rest
to the cell. So the agent code is unchanged:

* ``ctx.emit``: a publish on the bus, carried to the server's bus. ``qos=QoS.REALTIME``
  never waits: without a connection, publish credit or queue room it returns ``False`` (the
  transport's ``publish_nowait``; counted in the client's ``dropped``). Other tiers wait for
  all of those (the server's pace), which is how backpressure reaches a fast emitter.
* ``ctx.request``: the bus's reply router, as in process: ``reply_to`` is
  ``agent.{id}.replies.rpc``, under the registered ``agent.{id}.replies.>``, and the reply is
  handed to the call by correlation id as it comes off the stream, never through the mailbox.
  Timeout: ``RequestTimeout``. There is no ``NoResponders`` remotely: a publish through the
  server does not report who received it, so a request nobody answers times out.
* ``ctx.reply``: a publish to the request's ``reply_to`` (else its sender's mailbox).
* ``ctx.tool``: ``ForwardToolCall`` (or a ``call`` frame) with ``timeout_ms`` and a
  deadline; cancelling the handler cancels the call, and the server withdraws it from whoever
  serves it. The agent's own capabilities are called through the server as well (it picks the
  least busy provider, as in process).
* ``ctx.subscribe`` / ``ctx.unsubscribe``: on the stream, with QoS, kept across reconnects;
  added to the local mailbox first, so no delivery of a new subscription is missed.
* ``ctx.schedule``: the runtime's timers on the bus; they stay in this process.
* ``ctx.spawn``: the child runs in this process as a remote agent of its own (its own
  connection), linked to the instance that spawned it: it stops first whenever that instance
  ends, as in process (``sdk/_remote_spawn.py``).
* ``ctx.collab``: the runtime's own primitives on the bus. Their inboxes lie under the
  agent's mailbox topic, so every answer arrives on the stream; any other pattern they
  subscribe becomes a subscription on the stream. As on any bus with a transport, a target
  nobody serves is a timeout, not ``unrouted``.

Calls the server pushes to the agent's capabilities run in tasks of their own (never in the
mailbox), through the local runtime's registry: validated, timed out, typed errors. They are
served by ``loom.bridge.run_tool_call``, the very function the server serves its own tool
calls with (``bridge/_calls.py``), so both sides answer a call the same way.

Supervision happens here, in the agent's process; what it decides reaches the server
(``_forward_records``, ``STREAM_FEATURE_SUPERVISION``): its dead letters and its state changes,
in order, so the server's ``loom.lifecycle.{id}`` and ``loom.deadletter.{id}`` show restarts,
poison events and failures as in process. When the agent fails or stops, its final report
releases it on the server (what the server still held for it is dead-lettered there) and
waits until every delivery sent before the release is in hand; what the closed mailbox no
longer takes is handed back as a dead letter (``ClientTransport``); then the stream ends
cleanly. See ``docs/agents.md``, "Remote agents".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import anyio
import msgspec
from anyio.abc import TaskStatus
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from loom.bridge import (
    VALIDATES_KEY,
    AgentRegistration,
    BridgeClient,
    ClientClosed,
    ClientOptions,
    ClientTLS,
    ClientTransport,
    ConnectionStatus,
    ProviderKind,
    RemoteApprovals,
    RemoteBudgets,
    ServerLLM,
    StateListener,
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
    ToolErrorInfo,
    ToolStatus,
    WireDurableLog,
    decode_output,
    run_tool_call,
)
from loom.runtime import (
    DEAD_LETTER_PREFIX,
    LIFECYCLE_PREFIX,
    AgentRuntime,
    AgentSpec,
    AgentStatus,
    Behaviour,
    Context,
    Delivery,
    Event,
    EventBus,
    InvalidArgument,
    LifecycleEvent,
    QoS,
    Subscription,
    Timer,
)
from loom.runtime.lowlevel import (
    IDEMPOTENCY_HEADER,
    ContextHost,
    Handler,
    HasAgentSpec,
    context_from_envelope,
    envelope_with_context,
    mailbox_topic,
    request_event,
    router_for,
)
from loom.runtime.tools import Tool, ToolSpec, validates_itself

from ._agent import Agent
from ._remote_spawn import spawn_linked

__all__ = ["RemoteHost", "serve_agent", "tool_descriptors"]

_PROVIDER_KEY = "loom.agent"  # ToolService.ListTools: the agent that provides a tool

log = logging.getLogger("loom.agent")

_Spawner = Callable[[ContextHost, AgentSpec | HasAgentSpec], Awaitable[str]]

_encoder = msgspec.json.Encoder()
_lifecycle = msgspec.json.Decoder(LifecycleEvent)


def _traced(event: Event) -> Event:
    """``event`` with the current span's trace context, if a span is active (else the one it
    inherited from the event being handled stays)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return event
    return msgspec.structs.replace(event, envelope=envelope_with_context(event.envelope, None))


class RemoteHost:
    """A :class:`~loom.runtime.lowlevel.ContextHost` for an agent connected through the bridge
    (see the module docs): what is genuinely remote goes through the connection, the rest to
    the host the local runtime made for the agent (its cell: the bus, timers, mailbox).

    Args:
        transport: the agent's connection, the transport of ``bus``.
        local: the host the local runtime made for this agent's context.
        agent_id: the agent.
        qos: the tier of new subscriptions made without one (the agent's).
        bus: the agent's bus (``ctx.collab`` and ``ctx.request`` run on it).
        spawn: starts a child connected on its own (``sdk/_remote_spawn.py``).
    """

    __slots__ = (
        "_agent_id",
        "_approvals",
        "_budgets",
        "_client",
        "_llm",
        "_local",
        "_qos",
        "_spawn",
        "_transport",
        "bus",
    )

    def __init__(
        self,
        transport: ClientTransport,
        local: ContextHost,
        agent_id: str,
        qos: QoS,
        bus: EventBus,
        spawn: _Spawner,
    ) -> None:
        self._transport = transport
        self._client = transport.client
        self._local = local
        self._agent_id = agent_id
        self._qos = qos
        self.bus = bus
        self._spawn = spawn
        self._llm: ServerLLM | None = None
        self._approvals: RemoteApprovals | None = None
        self._budgets: RemoteBudgets | None = None

    @property
    def llm(self) -> ServerLLM:
        """The server's model through ``loom.v1.LLM`` (``ctx.llm``): no key in this process."""
        if self._llm is None:
            self._llm = self._client.llm()
        return self._llm

    @property
    def approvals(self) -> RemoteApprovals:
        """The server's approvals store through ``loom.v1.Approvals`` (``ctx.approvals``):
        a turn of this agent waits there, where ``loom approve`` answers it."""
        if self._approvals is None:
            self._approvals = self._client.approvals()
        return self._approvals

    @property
    def budgets(self) -> RemoteBudgets:
        """The server's budget ledger through ``loom.v1.Budgets``: this agent's model calls
        count in the server's windows (``ctx.budget_authority``)."""
        if self._budgets is None:
            self._budgets = self._client.budgets()
        return self._budgets

    async def publish(self, topic: str, event: Event, *, qos: QoS | None) -> bool:
        return await self._local.publish(topic, _traced(event), qos=qos)

    async def request(
        self,
        topic: str,
        payload: bytes,
        *,
        type: str,
        metadata: Mapping[str, str] | None,
        timeout: float,
        parent: Event | None,
    ) -> Event:
        # The reply router of the bus, as in process: the reply comes back on the stream
        # (``agent.{id}.replies.rpc`` lies under the registered ``agent.{id}.replies.>``) and
        # is handed to this call by correlation id; it never reaches the mailbox.
        router = router_for(self.bus)
        event = request_event(
            payload,
            type=type,
            metadata=metadata,
            sender=self._agent_id,
            reply_to=router.inbox(self._agent_id),
            parent=parent,
        )
        return await router.call(topic, _traced(event), timeout=timeout)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        timeout: float | None,
        idempotency_key: str | None = None,
    ) -> Any:
        text = arguments if isinstance(arguments, str) else _encoder.encode(arguments).decode()
        # The key goes along: the server's policy may retry the call, and the tool gets it.
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        output = await self._client.call_tool(name, text, timeout=timeout, headers=headers)
        return decode_output(output)

    async def list_tools(self) -> list[ToolSpec]:
        specs = []
        for desc in await self._client.list_tools():
            if desc.metadata.get(_PROVIDER_KEY) == self._agent_id:
                continue  # this agent's own capabilities
            try:
                schema = json.loads(desc.parameters_schema or "{}")
            except ValueError:
                continue  # a provider's broken schema: not offered, as in process
            if not isinstance(schema, dict):
                continue
            try:
                spec = ToolSpec(
                    name=desc.name, description=desc.description, parameters_schema=schema
                )
            except InvalidArgument:
                continue  # not an object schema: no model could call it; skipped, as above
            specs.append(spec)
        return specs

    async def subscribe(self, pattern: str, *, qos: QoS | None) -> None:
        client = self._client
        if pattern in client.subscriptions() or pattern == mailbox_topic(self._agent_id):
            return  # held already: as in process, nothing changes (the tier neither)
        # Subscribed on the stream here, awaited (a refusal is raised), so the bus's interest
        # in it must ask the transport for nothing.
        self._transport.claim(pattern)
        try:
            # Local first (it validates the pattern, and no delivery can arrive before it).
            await self._local.subscribe(pattern, qos=qos)
            try:
                await client.subscribe(pattern, qos=qos if qos is not None else self._qos)
            except BaseException:
                await self._local.unsubscribe(pattern)
                raise
        except BaseException:
            self._transport.release(pattern)
            raise

    async def unsubscribe(self, pattern: str) -> None:
        if pattern == mailbox_topic(self._agent_id):
            raise InvalidArgument("an agent cannot unsubscribe from its own mailbox topic")
        await self._client.unsubscribe(pattern)
        await self._local.unsubscribe(pattern)
        self._transport.release(pattern)

    async def spawn(self, agent: AgentSpec | HasAgentSpec) -> str:
        return await self._spawn(self._local, agent)

    def schedule(
        self, event: Event, *, delay: float | None, every: float | None, at: float | None
    ) -> Timer:
        # The local runtime's timers: same validation, same end with the instance.
        return self._local.schedule(event, delay=delay, every=every, at=at)


class _RemoteHosting:
    """How the local runtime hosts the agent (``AgentRuntime.start(hosting=...)``): each of
    its contexts on a :class:`RemoteHost` over the one the runtime made, and each event
    handled with its trace context current."""

    __slots__ = ("_agent_id", "_bus", "_qos", "_spawn", "_transport")

    def __init__(
        self, transport: ClientTransport, agent_id: str, qos: QoS, bus: EventBus, spawn: _Spawner
    ) -> None:
        self._transport = transport
        self._agent_id = agent_id
        self._qos = qos
        self._bus = bus
        self._spawn = spawn

    def host(self, local: ContextHost) -> ContextHost:
        return RemoteHost(self._transport, local, self._agent_id, self._qos, self._bus, self._spawn)

    def handler(self, on_event: Handler) -> Handler:
        async def handle(ctx: Context, topic: str, event: Event) -> None:
            # The event's trace context is current while it is handled, so the RPCs the
            # handler makes carry it in their metadata.
            token = None
            if event.envelope.traceparent:
                parent = context_from_envelope(event.envelope)
                if parent is not None:
                    token = otel_context.attach(parent)
            try:
                await on_event(ctx, topic, event)
            finally:
                if token is not None:
                    otel_context.detach(token)

        return handle


def tool_descriptors(tools: Sequence[Tool]) -> tuple[ToolDescriptor, ...]:
    """How ``RegisterAgent`` declares ``tools`` (served by this process over the stream)."""
    return tuple(
        ToolDescriptor(
            name=tool.name,
            description=tool.description,
            parameters_schema=_encoder.encode(dict(tool.parameters_schema)).decode(),
            provider=ProviderKind.GRPC,
            # Its calls are checked here (strictly: see validates_itself); the server need
            # not check them first.
            metadata={VALIDATES_KEY: "true"} if validates_itself(tool) else {},
        )
        for tool in tools
    )


async def _forward_records(
    client: BridgeClient, records: Subscription, ending: anyio.Event, final: list[AgentStatus]
) -> None:
    """Tell the server what the agent's runtime here decided, in the order it decided it:
    its dead letters (``BridgeClient.dead_letter``) and its state changes after it first ran
    (``BridgeClient.report``: restarts, a failure, a stop), so the server publishes them as its
    own and ``loom agents`` counts the restarts. A final state (stopped, failed) comes after
    the dead letters of what its mailbox held, and its report waits for the server's release:
    every delivery sent to the agent until then is in hand (a late one is handed back as a
    dead letter by the transport). Then ``ending`` is set."""
    running = False
    async with records:
        with contextlib.suppress(ClientClosed):
            async for delivery in records:
                event = delivery.event
                if delivery.topic.startswith(DEAD_LETTER_PREFIX):
                    meta = event.metadata
                    attempts = meta.get("dead_letter.attempts", "0")
                    await client.dead_letter(
                        Delivery(meta.get("dead_letter.topic", delivery.topic), event),
                        reason=meta.get("dead_letter.reason", "handler_error"),
                        error=meta.get("dead_letter.error", ""),
                        attempts=int(attempts) if attempts.isdigit() else 0,
                    )
                    continue
                try:
                    status = AgentStatus(event.type.removeprefix("agent."))
                    record = _lifecycle.decode(event.payload)
                except (ValueError, msgspec.DecodeError):
                    continue
                final_status = status in (AgentStatus.STOPPED, AgentStatus.FAILED)
                if not running and not final_status:
                    # Its first start: the server published "running" when it connected.
                    running = status is AgentStatus.RUNNING
                    continue
                await client.report(status, record.reason, restarts=record.restarts)
                if final_status:
                    final[0] = status
                    break
    ending.set()


async def _set_when(trigger: anyio.Event, event: anyio.Event) -> None:
    await trigger.wait()
    event.set()


class _DrainingCalls:
    """The agent's ``tool_handler``: serves pushed calls, counts those in progress, and once
    draining refuses new ones, so that a stop lets the calls it found running finish."""

    __slots__ = ("_agent_id", "_deadline", "_idle", "_running", "_serve", "started")

    def __init__(
        self, agent_id: str, serve: Callable[[ToolCallRequest], Awaitable[ToolCallOutcome]]
    ) -> None:
        self._agent_id = agent_id
        self._serve = serve
        self._running = 0
        # Made only when a drain waits for the running calls, not for every call that starts
        # with none running (that was an Event per call of an agent called one at a time).
        self._idle: anyio.Event | None = None
        self._deadline: float | None = None
        # Set once the agent runs: the server may push a call as soon as the agent is
        # registered, before its capabilities are in the local registry (after on_start).
        self.started = anyio.Event()

    async def __call__(self, request: ToolCallRequest) -> ToolCallOutcome:
        if not self.started.is_set():  # (waiting on a set anyio.Event still yields a loop pass)
            await self.started.wait()  # the caller's deadline (a cancel_tool_call) bounds it
        if self._deadline is not None:
            message = f"agent {self._agent_id} is stopping: it takes no new calls"
            return ToolCallOutcome(
                id=request.id,
                status=ToolStatus.ERROR,
                error=ToolErrorInfo(code="AGENT_STOPPING", message=message),
            )
        self._running += 1
        try:
            return await self._serve(request)
        finally:
            self._running -= 1
            if not self._running and self._idle is not None:
                self._idle.set()
                self._idle = None

    def drain(self, grace: float) -> None:
        """Refuse new calls from now on; :meth:`wait_idle` waits up to ``grace`` from now."""
        if self._deadline is None:
            self._deadline = anyio.current_time() + grace

    async def wait_idle(self) -> None:
        """Wait (shielded) until no call runs, or the drain's grace is over."""
        if self._deadline is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(max(0.0, self._deadline - anyio.current_time())):
                if self._running:
                    if self._idle is None:
                        self._idle = anyio.Event()
                    await self._idle.wait()
            if self._running:
                log.warning(
                    "agent %s: %d capability call(s) still running after the grace: cancelled",
                    self._agent_id,
                    self._running,
                )


@runtime_checkable
class _RunsTurns(Protocol):
    """An agent whose turns can be cancelled by thread (a ``CognitiveAgent``)."""

    def cancel(self, thread_id: str | None = None) -> int: ...


def _cancel_turn(current: list[Behaviour], thread_id: str, reason: str) -> int:
    """The server's ``cancel_turn``: cancel the running instance's turn in ``thread_id``
    (never every turn: an empty thread id cancels nothing)."""
    agent = current[0]
    if not thread_id or not isinstance(agent, _RunsTurns):
        return 0
    log.info("agent cancels its turn in thread %s: %s", thread_id, reason or "asked by the server")
    return agent.cancel(thread_id)


async def serve_agent(
    agent: AgentSpec | HasAgentSpec,
    address: str,
    *,
    token: str | None = None,
    tls: ClientTLS | bool | None = None,
    options: ClientOptions | None = None,
    on_state_change: StateListener | None = None,
    stop_timeout_s: float = 5.0,
    stop: anyio.Event | None = None,
    tracer_provider: TracerProvider | None = None,
    task_status: TaskStatus[BridgeClient] = anyio.TASK_STATUS_IGNORED,
) -> AgentStatus:
    """Run ``agent`` connected to the server at ``address`` until it stops, fails, ``stop``
    is set, or the caller cancels; return how it ended (``STOPPED`` or ``FAILED``).

    Reports readiness with ``task_status.started(client)`` once connected and the agent has
    started (its ``on_start`` returned). When ``stop`` is set it drains: calls pushed from
    then on are refused (``AGENT_STOPPING``), the handler in progress and the capability
    calls running get ``stop_timeout_s`` to finish (then they are cancelled), ``on_stop``
    runs (it may still emit), and then it disconnects cleanly. Cancelled instead, it does the
    same at once: what is running is cancelled, not waited for.

    Raises:
        ConnectFailed, RegistrationRefused: the first connection failed.
        AgentStartFailed: the agent never started.
        Exception: the fatal error that closed the connection later (refused credentials).
    """
    spec = agent if isinstance(agent, AgentSpec) else agent.agent_spec()
    first = spec.factory()  # the user's own instance first, as in process
    pending: list[Behaviour] = [first]

    transport = ClientTransport(
        address,
        AgentRegistration(
            agent_id=spec.id,
            topics=spec.topics,  # and agent.{id}.replies.>, added by the transport
            tools=tool_descriptors(first.tools()),
            metadata=dict(spec.metadata),
            qos=spec.qos,  # the tier of its subscriptions on the server, where drops count
            durable=spec.durable,
            max_deliver=spec.max_deliver,
            # Carried in the registration: the server exposes the agent over A2A meanwhile.
            a2a=agent.a2a_card() if isinstance(agent, Agent) else None,
        ),
        token=token,
        tls=tls,
        options=options,
        on_state_change=on_state_change,
    )
    client = transport.client
    # Its mailbox, timers, replies and collab: one bus, whose buffers have the client's byte
    # bound (ClientOptions.max_buffer_bytes), as the client's own buffers do.
    # A durable agent's cell reads its deliveries from the server's durable log, over the
    # stream (bridge/_client_durable.py): the same ack / nak / dead-letter code as in process.
    durable_log = WireDurableLog(spec.mailbox_size) if spec.durable else None
    if durable_log is not None:
        client.durable_sink = durable_log.put
        client.durable_ack_wait = durable_log.set_ack_wait
    bus = EventBus(
        transport=transport,
        # Its spans (publish, process, tool calls; its turns') and so the trace context its
        # events and calls carry to the server.
        tracer_provider=tracer_provider,
        max_buffer_bytes=client.options.max_buffer_bytes,
        durable_log=durable_log,
    )
    runtime = AgentRuntime(bus, stop_timeout_s=stop_timeout_s)
    # Pushed calls of its capabilities: the server's own serving path, on this runtime.
    calls = _DrainingCalls(
        spec.id,
        # Calls made here for a capped turn reserve from the server (its call scopes).
        functools.partial(
            run_tool_call, runtime, deadline_s=None, side="agent", scopes=client.scopes()
        ),
    )
    client.tool_handler = calls
    # The instance running now (a restart makes a new one), whose turns the server may
    # cancel (A2A tasks/cancel): only an agent that runs turns asks for that feature.
    current: list[Behaviour] = [first]
    if isinstance(first, _RunsTurns):
        client.turn_canceller = functools.partial(_cancel_turn, current)

    def factory() -> Behaviour:
        made = pending.pop() if pending else spec.factory()
        current[0] = made
        return made

    hosted = msgspec.structs.replace(spec, factory=factory)
    ending = anyio.Event()
    final = [AgentStatus.STOPPED]

    async def watch_client() -> None:
        # A fatal error (refused credentials) closes the client: stop the agent; the
        # error itself is raised below, once everything has stopped.
        with contextlib.suppress(Exception):
            await client.wait_closed()
        ending.set()

    connect = functools.partial(serve_agent, address=address, token=token, tls=tls, options=options)

    async def spawn(local: ContextHost, child: AgentSpec | HasAgentSpec) -> str:
        return await spawn_linked(local, child, tg, connect)

    # Entering the bus connects (its transport's run enters the client); leaving it, after
    # the runtime has stopped the agent (on_stop may still emit) and the capability calls in
    # progress have ended, reports how it ended and disconnects cleanly.
    async with (
        durable_log if durable_log is not None else contextlib.nullcontext(),
        bus,
        anyio.create_task_group() as relay,
    ):
        # The agent's records (state changes, dead letters) on one subscription, so the
        # server learns them in the order they happened; relayed from outside the
        # runtime's block, so the final report of a stop still goes out.
        records = bus.subscribe(f"{LIFECYCLE_PREFIX}.{spec.id}")
        records.add_pattern(f"{DEAD_LETTER_PREFIX}.{spec.id}")
        reported = anyio.Event()

        async def relay_records() -> None:
            try:
                await _forward_records(client, records, ending, final)
            finally:
                reported.set()

        relay.start_soon(relay_records)
        try:
            async with runtime, anyio.create_task_group() as tg:
                await runtime.start(
                    hosted, hosting=_RemoteHosting(transport, spec.id, spec.qos, bus, spawn)
                )
                await transport.open()  # what arrived before the mailbox existed, in order
                calls.started.set()
                tg.start_soon(watch_client)
                if stop is not None:
                    tg.start_soon(_set_when, stop, ending)
                task_status.started(client)
                try:
                    await ending.wait()
                finally:
                    calls.drain(stop_timeout_s)  # no new calls; the runtime stops the agent
                    calls.started.set()  # a call still waiting for the start is refused
                    tg.cancel_scope.cancel()
        finally:
            await calls.wait_idle()
        # The agent has ended and its final record is on the bus: let the relay report it
        # (the server then releases the agent), then end the stream here, while the
        # client's tasks still run, so what is queued (dead letters, deliveries handed
        # back) goes out. (Left to the bus's close, the transport's tasks would be
        # cancelled first.)
        if client.status is ConnectionStatus.CONNECTED:
            with anyio.move_on_after(stop_timeout_s):
                await reported.wait()
        # Else (reconnecting) there is nobody to tell: the server detached the agent when its
        # connection dropped. A stop then does not wait out the grace for a server that is not
        # there (a Ctrl-C while the server is down ends the process at once).
        await client.close_stream()
        relay.cancel_scope.cancel()
    await client.wait_closed()  # re-raises a fatal error that closed the connection
    return final[0]
