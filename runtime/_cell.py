"""One hosted agent: its mailbox, its instance, its supervision. Internal to the runtime.

An idle agent costs one task, parked on its mailbox. The mailbox is a single bus
subscription holding every pattern the agent listens to (its topics, its mailbox topic and
what it subscribes to later), so events reach the handler straight from the publisher's
``publish`` in arrival order, with the bus's backpressure, and without a forwarding task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry.trace import use_span

from ._behaviour import AgentSpec, Behaviour, HasAgentSpec
from ._bus import EventBus
from ._context import Context, ContextHost, Handler, Hosting
from ._directory import AgentStatus
from ._durable import DurableConsumer, DurableLog, DurableMessage, RemoteDurableMessage
from ._durable_sub import dead_letter_event, dlq_topic
from ._envelope_build import request_event
from ._errors import BusClosed, InvalidArgument, WouldBlock
from ._event import Delivery, Event, event_size, mailbox_topic
from ._failure import log_user_failure
from ._qos import QoS
from ._subscription import Subscription, drain, kick, park, put, take, unpark
from ._supervision import Strategy
from ._timers import Timer, TimerSet
from ._tracing import UNSAMPLED, UNSAMPLED_SPAN, PublishTracer
from .collab._replies import router_for
from .tools import ToolRegistry, ToolSpec

if TYPE_CHECKING:
    from ._runtime import AgentRuntime, RuntimeServices

__all__: list[str] = []

log = logging.getLogger("loom.runtime")

current_cell: ContextVar[Cell | None] = ContextVar("loom_current_cell", default=None)
"""The agent whose task is running (tasks it starts inherit it): lets the runtime see that a
stop comes from inside the agent it would have to wait for."""

_YIELD_EVERY = 64

# How long a stopped durable agent's fetch in progress may take to end (it polls every 1 s).
_PUMP_GRACE_S = 2.0


class _Halt(Exception):
    """Internal: a handler failure decided to leave the consume loop."""


class Cell:
    """The runtime's record of one agent."""

    __slots__ = (
        "_attempts",
        "_backoff",
        "_consecutive",
        "_done",
        "_done_event",
        "_failing",
        "_halt",
        "_inflight",
        "_log",
        "_restart_times",
        "_retry",
        "_room",
        "_tracer",
        "children",
        "ctx",
        "delete_when_done",
        "failed_events",
        "handle",
        "handled",
        "hosting",
        "id",
        "instance",
        "last_error",
        "mailbox",
        "parent",
        "registry",
        "runtime",
        "services",
        "spec",
        "started",
        "status",
        "stopping",
        "timers",
    )

    def __init__(
        self,
        runtime: AgentRuntime,
        services: RuntimeServices,
        spec: AgentSpec,
        parent: str | None,
        hosting: Hosting | None = None,
    ) -> None:
        self.runtime = runtime  # what the agent may use of it publicly (``ctx.runtime``)
        self.services = services  # and the rest, which only the runtime's own parts may use
        self.spec = spec
        self.id = spec.id
        self.parent = parent
        self.hosting = hosting  # None: the cell is the host of the agent's contexts
        provider = runtime.bus.tracer_provider
        self._tracer = None if provider is None else PublishTracer(provider)
        self.children: list[str] = []
        self.status = AgentStatus.CREATED
        self.mailbox: Subscription = runtime.bus.subscribe(
            mailbox_topic(spec.id), qos=spec.qos, buffer_size=spec.mailbox_size
        )
        # A durable agent's topics are read from the durable log, never from memory routes
        # (one path per event: no duplicates); its deliveries in hand, by delivery identity.
        self._log: DurableLog | None = None
        self._inflight: dict[int, DurableMessage] | None = None
        self._room: anyio.Event | None = None  # set when a durable delivery leaves our hands
        try:
            if spec.durable:
                self._log = runtime.bus.register_durable(spec.id, spec.topics)
                self._inflight = {}
            else:
                for pattern in spec.topics:
                    self.mailbox.add_pattern(pattern)
        except BaseException:
            self.mailbox.close()  # a refused topic leaves nothing on the bus
            raise
        self.instance: Behaviour | None = None
        self.ctx: Context | None = None
        self.registry: ToolRegistry | None = None
        self.timers: TimerSet | None = None
        # The agent's task; cancelled only to force a stuck agent down.
        self.handle: anyio.TaskHandle[None] | None = None
        # Set when the agent first runs or ends before that; dropped once start() has seen it.
        self.started: anyio.Event | None = anyio.Event()
        self._done = False
        self._done_event: anyio.Event | None = None  # made only when someone waits
        self._backoff: anyio.Event | None = None  # set by a stop to cut a restart delay short
        self.stopping = False
        self.handled = 0
        self.failed_events = 0
        self._halt: Strategy | None = None
        self._retry: Delivery | None = None
        self._attempts = 0
        self._consecutive = 0
        self._failing = False  # _attempts or _consecutive is not 0 (one test per event)
        self._restart_times: list[float] | None = None
        self.delete_when_done = False
        self.last_error = ""  # the latest failure, in words, for errors and lifecycle events

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Finish the event in hand, then stop; an idle agent stops at once."""
        self.stopping = True
        if self._halt is None:
            self._halt = Strategy.STOP
        kick(self.mailbox)
        if self._backoff is not None:
            self._backoff.set()

    @property
    def done(self) -> bool:
        return self._done

    async def wait_done(self) -> None:
        if not self._done:
            if self._done_event is None:
                self._done_event = anyio.Event()
            await self._done_event.wait()

    def _set_started(self) -> None:
        if self.started is not None:
            self.started.set()

    async def main(self) -> None:
        """The agent's task: (re)start instances until stopped or failed; a durable agent's
        deliveries are fetched by a second task into its mailbox meanwhile."""
        if self._log is None:
            await self._main()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, self._log)
            try:
                await self._main()
            finally:
                # The pump ends after its fetch in progress, handing back (nak) what that
                # brings: cancelled mid-fetch, its pull request would linger on the server
                # and take events nobody reads until the ack wait. Bounded all the same.
                tg.cancel_scope.deadline = anyio.current_time() + _PUMP_GRACE_S

    async def _main(self) -> None:
        rt = self.runtime
        policy = self.spec.policy
        final = AgentStatus.STOPPED
        reason = ""
        current_cell.set(self)
        try:
            while not self.stopping:
                decision, reason = await self._run_instance()
                if decision is not Strategy.RESTART or self.stopping:
                    break
                if not self._may_restart():
                    final = AgentStatus.FAILED
                    reason = (
                        f"{reason}; gave up after {policy.max_restarts} restarts in "
                        f"{policy.window_s:g}s"
                    )
                    break
                self._consecutive += 1
                self._failing = True
                rt.directory.count_restart(self.id)
                delay = policy.backoff(self._consecutive)
                log.warning("agent %s restarting in %.3fs: %s", self.id, delay, reason)
                self._backoff = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._backoff.wait()  # a stop cuts the delay short
                self._backoff = None
        finally:
            with anyio.CancelScope(shield=True):
                # Not restarted again: a call waiting for its capabilities learns at once.
                rt.directory.forget_capabilities(self.id)
                await self._close_mailbox(final, reason)
                await self.services.agent_ended(self, final, reason)
                self._done = True
                self._set_started()
                if self._done_event is not None:
                    self._done_event.set()

    def _may_restart(self) -> bool:
        policy = self.spec.policy
        now = time.monotonic()
        if self._restart_times is None:
            self._restart_times = []
        times = self._restart_times
        while times and now - times[0] > policy.window_s:
            del times[0]
        if len(times) >= policy.max_restarts:
            return False
        times.append(now)
        return True

    # ------------------------------------------------------------------ one instance

    async def _run_instance(self) -> tuple[Strategy, str]:
        services = self.services
        instance = self.spec.factory()
        state = getattr(instance, "state", None)
        if not isinstance(state, MutableMapping):
            state = {}
        self.instance = instance
        self._halt = Strategy.STOP if self.stopping else None
        await services.set_status(self, AgentStatus.STARTING, "")
        ctx = self.ctx = self._context(state)
        outcome: tuple[Strategy, str] = (Strategy.STOP, "")
        try:
            await instance.on_start(ctx)
        except Exception as exc:
            outcome = self._decide(exc)
            self.last_error = f"on_start raised {type(exc).__name__}: {exc}"
            log_user_failure(log, f"agent {self.id}: {self.last_error}", exc)
        else:
            self._register_tools(instance)
            await services.set_status(self, AgentStatus.RUNNING, "")
            self._set_started()
            if self.spec.max_concurrency == 1:
                outcome = await self._worker(*self._handlers(instance), ctx)
            else:
                outcome = await self._consume(instance, ctx)
        finally:
            if self.timers is not None:
                self.timers.cancel_all()
                self.timers = None
            self._unregister_tools()
            with anyio.CancelScope(shield=True):
                await services.set_status(self, AgentStatus.STOPPING, "")
                # Children belong to the instance that spawned them: they go with it, first.
                await services.stop_children(self)
                await self._call_on_stop(instance, ctx)
        self.instance = None
        return outcome

    def _context(self, state: MutableMapping[str, Any]) -> Context:
        """A context of this agent: on the cell itself, or on the host its hosting makes of it."""
        host: ContextHost = self if self.hosting is None else self.hosting.host(self)
        return Context(self.id, host, state, tracer=self._tracer)

    def _handlers(self, instance: Behaviour) -> tuple[Handler, Handler | None]:
        """The handler the loop calls, and the one it calls instead for an event that
        carries trace context (``None``: the first for every event).

        Decided once per instance, not per event: untraced, the loop calls the handler
        itself. Under head sampling an event without trace context is not kept (the
        usual one), so the loop calls the handler itself for it too, with the unsampled
        decision current for the whole loop (:meth:`_worker`); only an event with context
        goes through the ``process`` span. The span's wrapper is innermost, so a hosting's
        own wrapper cannot hide it.
        """
        handler: Handler = instance.on_event
        traced: Handler | None = None
        if self._tracer is not None:
            traced = _traced_handler(handler, self._tracer, self.id)
            if not self._tracer.bare_unsampled:
                handler, traced = traced, None  # the SDK decides for every event
        if self.hosting is not None:
            handler = self.hosting.handler(handler)
            traced = None if traced is None else self.hosting.handler(traced)
        return handler, traced

    async def _call_on_stop(self, instance: Behaviour, ctx: Context) -> None:
        ctx.event = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.runtime.stop_timeout_s):
            try:
                await instance.on_stop(ctx)
            except Exception as exc:
                log.error("agent %s: on_stop failed: %r", self.id, exc)

    def _register_tools(self, instance: Behaviour) -> None:
        tools = list(instance.tools())
        if not tools:
            return
        registry = ToolRegistry()
        for tool in tools:
            registry.register(
                tool,
                timeout=getattr(tool, "timeout", None),
                max_concurrency=getattr(tool, "max_concurrency", None),
            )
        self.registry = registry
        self.runtime.directory.set_capabilities(self.id, [t.name for t in tools])

    def _unregister_tools(self) -> None:
        if self.registry is not None:
            self.registry = None
            # Withdrawn, not forgotten: the supervisor may start the agent again, and a call
            # of its capabilities meanwhile waits for it (main() forgets them at the end).
            directory = self.runtime.directory
            if self.id in directory:
                directory.withdraw_capabilities(self.id)

    # ------------------------------------------------------------------ the mailbox loop

    async def _consume(self, instance: Behaviour, ctx: Context) -> tuple[Strategy, str]:
        """``max_concurrency`` workers sharing the mailbox, each with its own context."""
        n = self.spec.max_concurrency
        results: list[tuple[Strategy, str]] = []

        async def worker() -> None:
            wctx = self._context(ctx.state)
            results.append(await self._worker(*self._handlers(instance), wctx))

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(worker)
        for outcome in results:
            if outcome[0] is not Strategy.STOP or outcome[1]:
                return outcome
        return Strategy.STOP, ""

    async def _worker(
        self, handler: Handler, traced: Handler | None, ctx: Context
    ) -> tuple[Strategy, str]:
        """:meth:`_work`; with ``traced``, inside the unsampled decision (what a handler of
        an event without trace context sends and calls is not kept either; so is a dead
        letter the loop publishes)."""
        if traced is None:
            return await self._work(handler, None, ctx)
        token = UNSAMPLED.enter()
        try:
            return await self._work(handler, traced, ctx)
        finally:
            UNSAMPLED.leave(token)

    async def _work(
        self, handler: Handler, traced: Handler | None, ctx: Context
    ) -> tuple[Strategy, str]:
        """Handle the mailbox one event at a time until a stop or a failure halts the loop.

        The hottest loop of the runtime. Per event it makes one call into the mailbox's owner
        (``take``), the TTL check, the handler call and one counter; ``ctx.event`` is cleared
        at each await outside a handler (parking, the periodic checkpoint, a dead letter)
        rather than after every handler, since only then can another task see it. (Together
        these keep the loop within 3% of reading the buffer here, which took 5-9% less than a
        call alone.)
        """
        mailbox = self.mailbox
        tick = 0
        delivery: Delivery | None = self._retry  # a retried event goes first, to the new instance
        self._retry = None
        while self._halt is None:
            if delivery is None:
                delivery = take(mailbox)
                if delivery is None:
                    # Parked until an event arrives or a stop kicks us; then look again. (No
                    # exception on this path: a parked agent must not hold one alive.)
                    ctx.event = None
                    if mailbox.closed:
                        break
                    waiter = park(mailbox)
                    try:
                        await waiter.wait()
                    except BaseException:
                        unpark(mailbox, waiter)
                        raise
                    continue
                tick += 1
                if tick >= _YIELD_EVERY:  # handlers that never await must not starve others
                    tick = 0
                    ctx.event = None
                    await anyio.lowlevel.checkpoint()
            event = delivery.event
            env = event.envelope
            if env.hop >= env.ttl:
                ctx.event = None
                await self._dead_letter(
                    delivery, "ttl_expired", f"hop {env.hop} reached ttl {env.ttl}", 0
                )
                if self._inflight is not None:
                    await self._settle(delivery)
                delivery = None
                continue
            ctx.event = event
            try:
                if traced is None or not env.traceparent:
                    await handler(ctx, delivery.topic, event)
                else:
                    await traced(ctx, delivery.topic, event)
            except Exception as exc:
                ctx.event = None
                outcome = await self._on_failure(delivery, exc)
                if outcome is not None:
                    return outcome
                delivery = None
                continue
            if self._inflight is not None:
                await self._settle(delivery)
            delivery = None
            self.handled += 1
            if self._failing:  # handled again after failures: reset
                self._failing = False
                self._attempts = 0
                self._consecutive = 0
        ctx.event = None
        return self._halt or Strategy.STOP, ""

    async def _on_failure(self, delivery: Delivery, exc: Exception) -> tuple[Strategy, str] | None:
        """Apply the policy to a failed handler; ``None`` means carry on with the next event."""
        self.failed_events += 1
        policy = self.spec.policy
        strategy = policy.strategy
        reason = f"{type(exc).__name__}: {exc}"
        self.last_error = reason
        log_user_failure(log, f"agent {self.id}: handler failed on {delivery.topic}: {reason}", exc)
        if self._inflight is not None:
            msg = self._release(delivery)
            if msg is not None:
                # A durable delivery: its redelivery (with backoff) is the retry, and after
                # max_deliver the dead letter; the instance carries on with the next event
                # whatever the strategy (a restart would not make the event any better).
                await self._durable_failed(msg, reason)
                return None
        if strategy is Strategy.RESTART:
            self._attempts += 1
            self._failing = True
            if self._attempts >= policy.poison_after:
                await self._dead_letter(delivery, "poison", reason, self._attempts)
                self._attempts = 0
            else:
                self._retry = delivery  # handled first by the fresh instance
            self._halt_all(Strategy.RESTART)
            return Strategy.RESTART, reason
        await self._dead_letter(delivery, "handler_error", reason, 1)
        if strategy is Strategy.STOP:
            self._halt_all(Strategy.STOP)
            self.stopping = True
            return Strategy.STOP, reason
        return None

    def _decide(self, exc: Exception) -> tuple[Strategy, str]:
        strategy = self.spec.policy.strategy
        reason = f"on_start raised {type(exc).__name__}: {exc}"
        if strategy is Strategy.RESTART:
            return Strategy.RESTART, reason
        self.stopping = True
        return Strategy.STOP, reason

    def _halt_all(self, strategy: Strategy) -> None:
        self._halt = strategy
        kick(self.mailbox)

    # ------------------------------------------------------------------ dead letters & timers

    async def _dead_letter(
        self, delivery: Delivery, reason: str, error: str, attempts: int
    ) -> None:
        await self.services.dead_letter(self.id, delivery, reason, error, attempts)

    # ------------------------------------------------------------------ durable deliveries

    async def _pump(self, durable_log: DurableLog) -> None:
        """Fetch the durable name's deliveries into the mailbox, in log order, as long as the
        agent lives. Never raises: the log unreachable is retried with backoff and logged.

        At most ``2 * max_concurrency`` deliveries are in hand (queued or being handled) at a
        time, and the log is told every third of its ack wait that they still are: a slow
        handler (an LLM turn) then never sees an event it holds redelivered behind its back.
        """
        consumer = await self._open_consumer(durable_log)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, consumer)
                await self._fetch_loop(consumer)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.aclose()

    async def _open_consumer(self, durable_log: DurableLog) -> DurableConsumer:
        spec = self.spec
        delay = 0.1
        while True:
            try:
                return await durable_log.open_consumer(
                    spec.id,
                    spec.topics,
                    max_deliver=spec.max_deliver,
                    max_ack_pending=spec.mailbox_size,
                )
            except Exception as exc:
                log.warning("agent %s: durable log unreachable, retrying: %r", self.id, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _fetch_loop(self, consumer: DurableConsumer) -> None:
        window = 2 * self.spec.max_concurrency
        inflight = self._inflight
        assert inflight is not None
        delay = 0.1
        while not self.done:
            if len(inflight) >= window:
                self._room = anyio.Event()
                await self._room.wait()
                continue
            try:
                msgs = await consumer.fetch(window - len(inflight), 1.0)
            except Exception as exc:
                log.warning("agent %s: durable fetch failed, retrying: %r", self.id, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            for i, msg in enumerate(msgs):
                if not await self._admit(msg):
                    with anyio.CancelScope(shield=True):
                        for rest in msgs[i + 1 :]:  # handed back: the next holder's
                            await self._quietly(rest.nak())
                    return

    async def _keep_alive(self, consumer: DurableConsumer) -> None:
        assert self._inflight is not None
        while True:
            # Read each round: a remote agent's consumer learns its server's ack wait from
            # each connection's welcome (a restarted server may have another).
            await anyio.sleep(consumer.ack_wait / 3)
            for msg in list(self._inflight.values()):
                await self._quietly(msg.in_progress())

    async def _admit(self, msg: DurableMessage) -> bool:
        """Queue one durable delivery in the mailbox; False once the mailbox is closed."""
        if msg.attempt > self.spec.max_deliver:
            # Offered once more than allowed: an earlier holder died on its last attempt.
            await self._durable_dead_letter(msg, "max_deliver", "no answer on the last attempt")
            return True
        delivery = Delivery(msg.topic, msg.event, event_size(msg.event))
        assert self._inflight is not None
        self._inflight[id(delivery)] = msg
        try:
            taken = await put(self.mailbox, delivery)
        except BusClosed:
            taken = False
        if not taken:
            if self._release(delivery) is not None:
                with anyio.CancelScope(shield=True):
                    await self._quietly(msg.nak())
            return False
        return True

    def _release(self, delivery: Delivery) -> DurableMessage | None:
        """The durable delivery ``delivery`` leaves our hands (``None``: not a durable one)."""
        assert self._inflight is not None
        msg = self._inflight.pop(id(delivery), None)
        if msg is not None and self._room is not None:
            self._room.set()  # the pump may fetch again
        return msg

    async def _settle(self, delivery: Delivery) -> None:
        msg = self._release(delivery)
        if msg is not None:
            await self._quietly(msg.ack())

    async def _durable_failed(self, msg: DurableMessage, reason: str) -> None:
        if msg.attempt >= self.spec.max_deliver:
            await self._durable_dead_letter(msg, "max_deliver", reason)
        else:
            await self._quietly(msg.nak(self.spec.policy.backoff(msg.attempt)))

    async def _durable_dead_letter(self, msg: DurableMessage, reason: str, error: str) -> None:
        """Publish ``msg`` on ``loom.dlq.{id}``, then settle it for good (published first:
        a crash in between delivers it again rather than losing it)."""
        if isinstance(msg, RemoteDurableMessage):
            # A remote agent's: its server publishes the same dead letter (it alone may
            # publish on loom.dlq.>), then settles it, in that order.
            await self._quietly(msg.dead_letter(reason, error))
            return
        try:
            await self.runtime.bus.publish(
                dlq_topic(self.id), dead_letter_event(msg, self.id, reason, error)
            )
        except Exception as exc:
            log.warning("agent %s: dead letter not published, event kept: %r", self.id, exc)
            await self._quietly(msg.nak(1.0))
            return
        await self._quietly(msg.term())

    async def _quietly(self, settle: Awaitable[None]) -> None:
        # A settle that fails (the log unreachable) is not the handler's failure: the log
        # delivers the event again after its ack wait, marked as a redelivery.
        try:
            await settle
        except Exception as exc:
            log.warning("agent %s: durable settle failed (delivered again later): %r", self.id, exc)

    async def _deliver_timer(self, event: Event) -> None:
        await self.runtime.bus.publish(mailbox_topic(self.id), event)

    async def _close_mailbox(self, final: AgentStatus, reason: str) -> None:
        """Take the mailbox off the bus; what it still holds goes to the dead-letter topic."""
        mailbox = self.mailbox
        leftovers: list[Delivery] = []
        if self._retry is not None:
            leftovers.append(self._retry)
            self._retry = None
        if not mailbox.closed:
            # Off the bus first, so nothing new arrives; then what is queued, and what the
            # publishers already waiting for room were promised, so every one of those events
            # reaches the dead-letter topic instead of vanishing.
            leftovers.extend(await drain(mailbox))
            mailbox.close()
        why = "agent_failed" if final is AgentStatus.FAILED else "agent_stopped"
        for delivery in leftovers:
            msg = None if self._inflight is None else self._release(delivery)
            if msg is not None:
                await self._quietly(msg.nak())  # stored: delivered again when it is back
            else:
                await self._dead_letter(delivery, why, reason or final.value, 0)

    # ------------------------------------------------------------------ ContextHost

    @property
    def bus(self) -> EventBus:
        """The bus this agent lives on (``ctx.collab`` works on it)."""
        return self.runtime.bus

    async def publish(self, topic: str, event: Event, *, qos: QoS | None) -> bool:
        bus = self.runtime.bus
        if qos is QoS.REALTIME:
            try:
                bus.publish_nowait(topic, event)
            except WouldBlock:
                return False
            return True
        await bus.publish(topic, event)
        return True

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
        router = router_for(self.runtime.bus)
        event = request_event(
            payload,
            type=type,
            metadata=metadata,
            sender=self.id,
            reply_to=router.inbox(self.id),
            parent=parent,
        )
        return await router.call(topic, event, timeout=timeout)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        timeout: float | None,
        idempotency_key: str | None = None,
    ) -> Any:
        return await self.runtime.call_tool(
            name, arguments, timeout=timeout, idempotency_key=idempotency_key
        )

    async def list_tools(self) -> list[ToolSpec]:
        from ._runtime import tool_inventory  # imported here: _runtime imports this module

        seen: dict[str, ToolSpec] = {}
        for entry in tool_inventory(self.runtime):
            tool = entry.tool
            if entry.agent_id == self.id or tool.name in seen:
                continue
            seen[tool.name] = ToolSpec(
                name=tool.name,
                description=tool.description,
                parameters_schema=dict(tool.parameters_schema),
            )
        return list(seen.values())

    async def subscribe(self, pattern: str, *, qos: QoS | None) -> None:
        if self.mailbox.add_pattern(pattern, qos=qos):
            self.runtime.directory.add_pattern(self.id, pattern)

    async def unsubscribe(self, pattern: str) -> None:
        if pattern == mailbox_topic(self.id):
            raise InvalidArgument("an agent cannot unsubscribe from its own mailbox topic")
        if self.mailbox.remove_pattern(pattern):
            self.runtime.directory.remove_pattern(self.id, pattern)

    async def spawn(self, agent: AgentSpec | HasAgentSpec) -> str:
        return await self.runtime.start(agent, parent=self.id)

    def schedule(
        self, event: Event, *, delay: float | None, every: float | None, at: float | None
    ) -> Timer:
        if self.instance is None or self.stopping:
            raise BusClosed(f"agent {self.id} is not running")
        if self.timers is None:
            self.timers = TimerSet(self.services.task_group(), self._deliver_timer)
        return self.timers.schedule(event, delay=delay, every=every, at=at)


def _traced_handler(handler: Handler, tracer: PublishTracer, agent_id: str) -> Handler:
    """``handler`` inside a ``{topic} process`` span, current while it runs (what it emits,
    requests and calls is a child of it). A handler that raises marks the span an error."""

    async def traced(ctx: Context, topic: str, event: Event) -> None:
        span = tracer.process_span(topic, event, agent_id)
        if span is UNSAMPLED_SPAN:
            # Not kept: no SDK span, only the decision made current, so that what the
            # handler sends and calls carries it on.
            token = UNSAMPLED.enter()
            try:
                await handler(ctx, topic, event)
            finally:
                UNSAMPLED.leave(token)
            return
        with use_span(span, end_on_exit=True):
            await handler(ctx, topic, event)

    return traced
