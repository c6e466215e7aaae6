"""``Agent``: what users write. The same object runs in process or, through the bridge, remote.

Two forms, one class::

    # function form
    agent = Agent("upperer", topics=["input.*"], capabilities=[upper], on_event=on_event)

    # class form
    class Upperer(Agent):
        @capability("text.upper")
        async def upper(self, text: str) -> str:
            return text.upper()

        async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
            ...

    agent = Upperer("upperer", topics=["input.*"])

A restart builds a *fresh* instance by calling the class again with the arguments the agent
was first built with, so ``__init__`` sets up state exactly as it did the first time.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from loom.runtime import (
    DEFAULT_MAX_DELIVER,
    AgentCard,
    AgentSpec,
    AgentStatus,
    Context,
    Event,
    InvalidArgument,
    QoS,
    SupervisionPolicy,
)
from loom.runtime.lowlevel import validate_agent_id
from loom.runtime.tools import Tool

from ._capability import capabilities_of

if TYPE_CHECKING:
    from loom.bridge import ClientOptions, ClientTLS

    from ._process import Ended

__all__ = ["Agent", "EventHandler", "Hook"]

EventHandler = Callable[[Context, str, Event], Awaitable[None]]
"""``async def on_event(ctx, topic, event) -> None``."""
Hook = Callable[[Context], Awaitable[None]]
"""``async def on_start(ctx) -> None`` / ``on_stop``."""

log = logging.getLogger("loom.agent")

_DEFAULT_POLICY = SupervisionPolicy()  # frozen: one shared by every agent that takes the default


class _Factory:
    """This agent first, fresh instances after restarts (a small object, not a closure: an
    idle agent's memory is counted in bytes)."""

    __slots__ = ("_agent", "_first")

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._first = True

    def __call__(self) -> Agent:
        if self._first:
            self._first = False
            return self._agent
        return self._agent.fresh()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration in seconds from the environment (``default`` if unset or empty).

    Raises:
        SystemExit: (3) not a number of seconds >= 0, said in one log line first.
    """
    text = env.get(name) or ""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        logging.getLogger("loom.agent").error(
            "%s must be a number of seconds >= 0, not %r", name, text
        )
        raise SystemExit(3)
    return value


def _check_async(fn: Callable[..., object] | None, what: str) -> None:
    if fn is not None and not inspect.iscoroutinefunction(fn):
        name = getattr(fn, "__qualname__", repr(fn))
        raise InvalidArgument(f"{what} must be an async function (async def), not {name}")


class Agent:
    """An agent: an id, the topics it listens to, what it does with events, what it offers.

    Args:
        id: unique among the agents of a runtime; one topic segment (no dots). Subclasses may
            set a class attribute ``id`` instead.
        topics: patterns to subscribe to (``*`` one segment, ``>`` the rest). The agent is
            always subscribed to its mailbox topic ``agent.{id}.replies`` as well.
        capabilities: ``@capability`` functions (or any ``Tool``) this agent offers to every
            other agent, the runtime and the LLM loop. Methods decorated with ``@capability``
            in a subclass are found by themselves.
        on_event: ``async def on_event(ctx, topic, event)``; or override the method.
        on_start: ``async def on_start(ctx)``, run before the first event; or override.
        on_stop: ``async def on_stop(ctx)``, run after the last one; or override.
        qos: tier of the agent's subscriptions: lossless ``BATCHED`` by default.
        mailbox_size: bound of the mailbox (default 1000).
        max_concurrency: handlers that may run at once (default 1: one at a time, in order).
        policy: supervision policy (default: restart with backoff; see docs/agents.md).
        metadata: free key/values shown in the directory.
        durable: in a runtime whose bus has a durable log, ``topics`` become a durable
            subscription named by the agent's id: nothing published on them is lost while the
            agent is stopped or crashed, each event is acknowledged when the handler returns,
            redelivered (marked) when it raises, dead-lettered on ``loom.dlq.{id}`` after
            ``max_deliver`` tries. See ``docs/durability.md``. (In process only for now.)
        max_deliver: deliveries of one event to a durable agent (default 5).
        a2a: the agent's A2A card (:class:`~loom.AgentCard`): connected to a ``loom serve``
            with an HTTP port, the agent is exposed over A2A at ``/a2a/{id}/`` while it is
            connected, without ``[a2a] expose`` (``docs/interop.md``).
    """

    id: ClassVar[str | None] = None
    topics: ClassVar[Sequence[str]] = ()

    _loom_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Agent:
        self = super().__new__(cls)
        # Remembered so that a restart can build a fresh instance exactly like this one.
        self._loom_args = (args, kwargs)
        return self

    def __init__(
        self,
        id: str | None = None,
        *,
        topics: Iterable[str] | None = None,
        capabilities: Iterable[Tool] = (),
        on_event: EventHandler | None = None,
        on_start: Hook | None = None,
        on_stop: Hook | None = None,
        qos: QoS = QoS.BATCHED,
        mailbox_size: int = 1000,
        max_concurrency: int = 1,
        policy: SupervisionPolicy | None = None,
        metadata: Mapping[str, str] | None = None,
        durable: bool = False,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        a2a: AgentCard | None = None,
    ) -> None:
        agent_id = id if id is not None else type(self).id
        if agent_id is None:
            raise InvalidArgument(f"{type(self).__name__} needs an id")
        _check_async(on_event, "on_event")
        _check_async(on_start, "on_start")
        _check_async(on_stop, "on_stop")
        self.agent_id: str = validate_agent_id(agent_id)
        self.subscriptions: tuple[str, ...] = tuple(type(self).topics if topics is None else topics)
        self._capabilities = tuple(capabilities)
        for cap in self._capabilities:
            if not isinstance(cap, Tool):
                raise InvalidArgument(f"capabilities must be @capability tools, not {cap!r}")
        self._on_event = on_event
        self._on_start = on_start
        self._on_stop = on_stop
        if on_event is not None:
            # The runtime calls instance.on_event for every event: bind the user's function
            # straight there rather than through a delegating coroutine per event.
            self.on_event = on_event  # type: ignore[method-assign,assignment]
        self.qos = qos
        self.mailbox_size = mailbox_size
        self.max_concurrency = max_concurrency
        self.policy = policy if policy is not None else _DEFAULT_POLICY
        self.metadata: dict[str, str] = dict(metadata) if metadata else {}
        self.durable = durable
        self.max_deliver = max_deliver
        if a2a is not None and not isinstance(a2a, AgentCard):
            raise InvalidArgument(f"a2a must be a loom.AgentCard, not {a2a!r}")
        self.a2a = a2a
        self.state: dict[str, Any] = {}
        """The instance's state; ``ctx.state`` is this dict. A restart starts with a new one."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.agent_id!r} topics={list(self.subscriptions)}>"

    # ------------------------------------------------------------------ behaviour

    async def on_start(self, ctx: Context) -> None:
        """Called before the first event. Override, or pass ``on_start=``."""
        if self._on_start is not None:
            await self._on_start(ctx)

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        """Handle one event. Override, or pass ``on_event=``."""
        if self._on_event is not None:
            await self._on_event(ctx, topic, event)
        else:
            ctx.log.debug("no handler for %s event on %s; ignored", event.type, topic)

    async def on_stop(self, ctx: Context) -> None:
        """Called after the last event (stop, delete, restart, shutdown). Override, or pass
        ``on_stop=``."""
        if self._on_stop is not None:
            await self._on_stop(ctx)

    def tools(self) -> Sequence[Tool]:
        """Every capability this instance offers: the ones passed in, then its methods."""
        found: list[Tool] = list(self._capabilities)
        found.extend(capabilities_of(self))
        return found

    # ------------------------------------------------------------------ hosting

    def a2a_card(self) -> AgentCard | None:
        """The A2A card this agent is exposed with (``a2a=``), ``None`` without one. A card
        that names no ``stream_topic`` takes the agent's own (a ``CognitiveAgent``'s)."""
        card = self.a2a
        topic = getattr(self, "stream_topic", "")
        if card is not None and not card.stream_topic and isinstance(topic, str) and topic:
            card = msgspec.structs.replace(card, stream_topic=topic)
        return card

    def fresh(self) -> Agent:
        """A new instance built with the same arguments, for a restart."""
        args, kwargs = self._loom_args
        return type(self)(*args, **kwargs)

    def agent_spec(self) -> AgentSpec:
        """How a runtime hosts this agent: this instance first, fresh ones after restarts."""
        return AgentSpec(
            id=self.agent_id,
            factory=_Factory(self),
            topics=self.subscriptions,
            qos=self.qos,
            mailbox_size=self.mailbox_size,
            max_concurrency=self.max_concurrency,
            policy=self.policy,
            metadata=self.metadata,
            durable=self.durable,
            max_deliver=self.max_deliver,
        )

    # ------------------------------------------------------------------ remote mode

    def run(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        options: ClientOptions | None = None,
        environ: Mapping[str, str] | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        stop_timeout_s: float = 5.0,
    ) -> AgentStatus:
        """Connect to a Loom server and run this agent there, in this process, until it stops,
        or SIGINT/SIGTERM asks it to (then it drains and disconnects cleanly).

        The agent code is the same as in process: handlers run one at a time from a local
        mailbox fed by the server, with the same supervision and timers, and ``ctx`` reaches
        the server's bus and tools. ``ctx.spawn`` runs the child in this process as a remote
        agent of its own, linked to its parent (``sdk/_remote_spawn.py``); ``ctx.request``
        and ``ctx.collab`` (gather, contract-net, barriers) run on the agent's one local bus,
        whose transport is this connection (``loom.bridge.ClientTransport``). What differs
        remotely is written in ``sdk/_remote.py``: a request nobody answers times out
        instead of raising ``NoResponders``, for one. Blocks: it calls ``anyio.run``, so
        call it from synchronous code; async code awaits :func:`loom.serve_agent` instead.

        The process's log: one line per connection change (``connecting to ...``, ``cannot
        connect to ...: connection refused; retrying in 0.2 s``, ``connected to ... as
        ID``, ``reconnected ...``), one line per failure of the agent's own code with its
        file and line (the traceback at ``debug``). The first connection is retried until it
        succeeds (``options.connect_timeout`` bounds that; default: forever), so the agent
        may start before the server. A signal at any moment (before the first connection,
        while reconnecting, while connected) stops it quietly: the handler in progress and
        the capability calls running get ``stop_timeout_s`` to finish, no new ones are
        taken, ``on_stop`` runs, and it disconnects.

        Args:
            address: ``host:port`` of the server; default ``$LOOM_BRIDGE_ADDR``, else
                ``127.0.0.1:50051`` (where ``loom serve`` listens by default).
            token: the bearer token; default ``$LOOM_TOKEN`` (none if unset or empty).
            tls: ``True`` for TLS with the system's CAs, or a ``ClientTLS``.
            options: the connection's bounds and timeouts (``ClientOptions``); by default
                its own, with ``connect_timeout`` infinite, ``registration_secret`` from
                ``$LOOM_AGENT_SECRET`` (without one, a process started again within the
                server's hold of the id waits until the server frees it, and says until
                when) and ``id_wait`` from ``$LOOM_ID_WAIT`` (default 30 s: how long it waits
                for its id while a live connection has it before exiting 3).
            environ: where the variables are read; ``os.environ`` when ``None``. This
                method is the outermost layer: nothing below it reads the environment.
                The standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
                ``OTEL_SERVICE_NAME`` (default: the agent id), ``OTEL_TRACES_SAMPLER``...)
                switch on the export of its traces over OTLP (``docs/observability.md``).
            log_level: ``debug``, ``info``, ``warning`` or ``error``; default
                ``$LOOM_LOG_LEVEL``, else ``info``.
            log_format: ``text`` or ``json``; default ``$LOOM_LOG_FORMAT``, else ``text``.
                Logging is set up only when the process has not set it up already (the root
                logger has no handler).
            stop_timeout_s: the grace of a stop (see above).

        Returns:
            How the agent ended: ``STOPPED`` (also after a signal) or ``FAILED``.

        Raises:
            SystemExit: the agent could not run: the reason is logged in one line first.
                Code 1 when running it again may help (its ``on_start`` kept failing), 3
                when it cannot (refused credentials, not permitted, its id taken by a live
                connection past ``id_wait``, a malformed address, a reconnection refused
                so), 4 when an operator released its id while it ran (``loom agents release
                ID``); ``loom run`` restarts the first and not the others.
        """
        import math
        import signal
        import threading

        import anyio

        from loom.bridge import ClientOptions

        from ._logging import configure_logging
        from ._process import DEFAULT_ADDRESS, run_agent
        from ._telemetry import trace_config

        env = os.environ if environ is None else environ
        address = address or env.get("LOOM_BRIDGE_ADDR") or DEFAULT_ADDRESS
        if token is None:
            token = env.get("LOOM_TOKEN") or None
        if not logging.getLogger().handlers:
            configure_logging(
                log_level or env.get("LOOM_LOG_LEVEL") or "info",
                log_format or env.get("LOOM_LOG_FORMAT") or "text",
            )
        if options is None:
            # $LOOM_AGENT_SECRET: the registration secret a supervisor (compose, systemd) gives
            # every process of this agent, so a restarted one takes its id back at once.
            options = ClientOptions(
                connect_timeout=math.inf,
                registration_secret=env.get("LOOM_AGENT_SECRET") or None,
                id_wait=_seconds(env, "LOOM_ID_WAIT", 30.0),
            )

        # OTEL_EXPORTER_OTLP_ENDPOINT and the rest: traces exported, or nothing at all.
        tracing = trace_config(env, service_name=self.agent_id)

        async def main() -> Ended:
            return await run_agent(
                self,
                address,
                token=token,
                tls=tls,
                options=options,
                stop_timeout_s=stop_timeout_s,
                tracing=tracing,
            )

        # Until anyio's own handlers are up, a SIGTERM is a KeyboardInterrupt too: a signal
        # at any moment is a quiet stop. (Signal handlers belong to the main thread.)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = (
            signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
        )
        try:
            ended = anyio.run(main)
        except KeyboardInterrupt:
            return AgentStatus.STOPPED
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
        if ended.status is None:
            raise SystemExit(ended.code)
        return ended.status
