"""``CognitiveAgent``: an :class:`~loom.Agent` that answers its events with the LLM loop.

Every event the agent receives starts one turn of the perceive-think-act loop
(:mod:`loom.runtime.cognition`) in the conversation named by the event's thread::

    agent = CognitiveAgent(
        "assistant",
        llm=router,
        system_prompt="You answer questions about the repository.",
        tools=native_tools(workspace),
        use_capabilities=["text.upper"],
        data_dir=".loom",
        topics=["questions.*"],
    )

What happens to an event, in order:

1. the goal is :meth:`CognitiveAgent.perceive`\\ d from it (default: the payload as UTF-8 text)
   and recorded in the agent's memory, in the thread ``event.envelope.thread_id`` (or
   ``default`` when the event has none), so a conversation continues across events, restarts
   and, with a durable store, across restarts of the server;
2. partial output is published on ``stream_topic`` (default ``agent.{id}.stream``) as JSON
   events of type ``turn.text``, ``turn.tool_started``, ``turn.tool_output`` (a streaming
   tool's partial output, such as a remote A2A agent's) and ``turn.tool_finished``, then one
   ``turn.end`` with the whole :class:`~loom.runtime.cognition.TurnOutcome`; each carries the
   thread in its envelope and in ``metadata["thread_id"]``;
3. the answer is replied to the event (its ``reply_to``, else its sender's mailbox) with type
   ``agent.answer`` and the answer text as payload; a turn that ends otherwise replies with
   type ``agent.budget_exhausted``, ``agent.cancelled`` or ``agent.error`` and an empty
   payload. ``metadata`` says ``outcome``, ``iterations`` and, on failure, ``error`` (and
   ``budget``: the budget that stopped the turn). An event
   that names neither ``reply_to`` nor a sender gets no reply; its answer is still in the
   ``turn.end`` event and in the memory.

A turn whose tool calls need a human's approval (``approval=``, or the runtime's policies:
``docs/guardrails.md``) ends ``waiting_approval``: its ``turn.end`` says so, no reply goes
out, and the worker is free. When every approval of it is decided, the runtime puts an
``approval.decided`` event in the agent's mailbox and the turn resumes from its saved state
(:meth:`CognitiveAgent.resume`); its reply then goes to the original event. Decisions made
while the agent was not running are resumed when it starts.

With ``ask_user=True`` the model is offered the built-in tool ``ask_user(question)``: a call
of it is a question to the user, stored with the approvals (kind ``question``), and the turn
waits the same way, holding no worker, until ``loom answer ID TEXT`` (the dashboard,
``runtime.approvals.answer``, A2A's next message) answers it; the model reads the answer as
the call's result, or a note that none came when it expires (``ask_user_timeout_s``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

import anyio
import msgspec
from opentelemetry.trace import TracerProvider

from loom.runtime import (
    AgentCard,
    ApprovalPolicy,
    ApprovalRecord,
    ApprovalStore,
    Budget,
    BudgetLedger,
    Context,
    Event,
    InvalidArgument,
    QoS,
    SupervisionPolicy,
)
from loom.runtime.cognition import (
    ApprovalGate,
    AskUser,
    Loop,
    LoopConfig,
    PeerCapabilities,
    PeerSource,
    RemotePeers,
    SavedTurn,
    StrategyName,
    Toolset,
    Turn,
    TurnOutcome,
    TurnUpdate,
)
from loom.runtime.llm import LLM, ModelRouter, NoModelConfigured, RouteDecision
from loom.runtime.lowlevel import mailbox_topic, reply_topic
from loom.runtime.memory import AgentContext, InMemoryStore, MemoryStore, SQLiteStore
from loom.runtime.tools import EffectJournal, Tool, ToolRegistry

from ._agent import Agent

__all__ = ["DEFAULT_THREAD", "CognitiveAgent"]

DEFAULT_THREAD = "default"
"""The conversation of events that carry no thread id."""

_encoder = msgspec.json.Encoder(enc_hook=str)

OnUpdate = Callable[[TurnUpdate], Awaitable[None]]


class CognitiveAgent(Agent):
    """An agent whose events are answered by an LLM with tools, remembering its conversations.

    Args:
        id: the agent id.
        llm: the model: a provider or a :class:`~loom.runtime.llm.ModelRouter` (not closed by
            the agent); or ``"server"``: the model of its host (``ctx.llm``), chosen when it
            starts. Connected to a server (``Agent.run()``, ``loom run``), that is the
            server's ``[llm]`` router, called through ``loom.v1.LLM``, so the agent's process
            needs no API key; in process, its runtime's (``AgentRuntime(llm=...)``), and a
            runtime without one fails the start with ``NoModelConfigured``.
        config: how turns run (:class:`~loom.runtime.cognition.LoopConfig`). The five
            arguments below are shortcuts that replace the matching field when given.
        system_prompt: the agent's instructions.
        strategy: ``react`` (default), ``single_shot`` or ``chain_of_thought``.
        max_iterations: model calls per turn (default 8).
        max_parallel_tools: tool calls run at once (default 5).
        tool_timeout_s: seconds each tool call may take (default: the registry's).
        tools: the tools the model may call: a registry (shared, called through it) or tools
            (MCP tools, ``@capability`` functions, native tools). They are not offered to other
            agents; ``capabilities`` are.
        use_capabilities: other agents' capabilities the model may call, by name, or ``"all"``
            (every capability of every running agent, this one's included). In process only.
        memory: where conversations are kept (not closed by the agent).
        data_dir: keep conversations in ``data_dir/context.db`` (a :class:`SQLiteStore`
            opened on start and closed on stop). Without ``memory`` or ``data_dir``, memory
            lives in process and ends with the instance.
        stream_topic: where partial output goes (default ``agent.{id}.stream``).
        approval: an approval policy per tool name (``"always"``, ``"never"`` or a callable
            on the :class:`~loom.runtime.ApprovalCall`), over the runtime's own
            (``runtime.approvals.policies``). A call that needs approval waits in
            ``runtime.approvals``; the agent needs a runtime that has one. Connected to a
            server (``Agent.run()``, ``loom run``), it waits in the server's store
            (``ctx.approvals``), and the agent needs ``data_dir`` for its effect journal.
        approval_timeout_s: how long each approval waits before it counts as denied
            (default: the store's, 1 h).
        ask_user: offer the model the tool ``ask_user(question)``: its turn pauses until the
            user answers (``loom answer ID TEXT``, the dashboard, A2A), in the same store as
            approvals, so it needs one as ``approval`` does (no ``data_dir`` needed for it).
        ask_user_timeout_s: how long a question waits; then the model reads that no answer
            came (default: ``approval_timeout_s``, else the store's).
        journal: run every tool call through an effect journal in ``data_dir``
            (``effects.sqlite3``), so a resumed or redelivered turn never runs a call twice.
            Needs ``data_dir``. On whenever a connected agent asks for approval.
        tracer_provider: where ``invoke_agent {agent}`` spans go.
        budget: token and cost budgets and tool-call caps of its turns (``docs/guardrails.md``).
            Each turn applies the stricter of these and the operator's (``[budget]`` of
            ``loom.toml``, ``[budget.agents.<id>]`` over it), limit by limit: code cannot
            loosen the operator's. Spend is kept in the runtime's ledger
            (``runtime.budgets``); connected through the bridge, in the server's.
        topics, capabilities, qos, mailbox_size, max_concurrency, policy, metadata, a2a: as for
            :class:`~loom.Agent`.

    Raises:
        InvalidArgument: both ``memory`` and ``data_dir`` are given, or a setting is out of
            range.
    """

    def __init__(
        self,
        id: str | None = None,
        *,
        llm: LLM | Literal["server"],
        config: LoopConfig | None = None,
        system_prompt: str | None = None,
        strategy: StrategyName | None = None,
        max_iterations: int | None = None,
        max_parallel_tools: int | None = None,
        tool_timeout_s: float | None = None,
        tools: Iterable[Tool] | ToolRegistry = (),
        use_capabilities: Iterable[str] | Literal["all"] = (),
        memory: MemoryStore | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        stream_topic: str | None = None,
        approval: Mapping[str, ApprovalPolicy] | None = None,
        approval_timeout_s: float | None = None,
        ask_user: bool = False,
        ask_user_timeout_s: float | None = None,
        journal: bool = False,
        tracer_provider: TracerProvider | None = None,
        budget: Budget | None = None,
        topics: Iterable[str] | None = None,
        capabilities: Iterable[Tool] = (),
        qos: QoS = QoS.BATCHED,
        mailbox_size: int = 1000,
        max_concurrency: int = 1,
        policy: SupervisionPolicy | None = None,
        metadata: Mapping[str, str] | None = None,
        a2a: AgentCard | None = None,
    ) -> None:
        super().__init__(
            id,
            topics=topics,
            capabilities=capabilities,
            qos=qos,
            mailbox_size=mailbox_size,
            max_concurrency=max_concurrency,
            policy=policy,
            metadata=metadata,
            a2a=a2a,
        )
        if memory is not None and data_dir is not None:
            raise InvalidArgument("give a CognitiveAgent memory or data_dir, not both")
        if journal and data_dir is None:
            raise InvalidArgument("a CognitiveAgent's effect journal (journal=True) needs data_dir")
        shortcuts = {
            "system_prompt": system_prompt,
            "strategy": strategy,
            "max_iterations": max_iterations,
            "max_parallel_tools": max_parallel_tools,
            "tool_timeout_s": tool_timeout_s,
        }
        base = config if config is not None else LoopConfig()
        given = {k: v for k, v in shortcuts.items() if v is not None}
        # replace() skips __post_init__: re-validate through the constructor.
        self.config = LoopConfig(**{**msgspec.structs.asdict(base), **given})
        self.llm = llm
        self._model: LLM | None = None  # the one in use, once started
        self._tools: ToolRegistry | tuple[Tool, ...] = (
            tools if isinstance(tools, ToolRegistry) else tuple(tools)
        )
        self._use = use_capabilities if use_capabilities == "all" else tuple(use_capabilities)
        self._memory = memory
        self._data_dir = None if data_dir is None else Path(data_dir)
        self.stream_topic = stream_topic or f"agent.{self.agent_id}.stream"
        self._tracer_provider = tracer_provider
        self.budget = budget if budget is not None else Budget()
        self._store: MemoryStore | None = None
        self._remote_peers: RemotePeers | None = None
        self._decisions: list[RouteDecision] = []
        self._owns_store = False
        self._loop: Loop | None = None
        self._turns: dict[str, Turn] = {}
        self._approval = dict(approval or {})
        self._approval_timeout_s = approval_timeout_s
        self._ask_user = ask_user
        self._ask_user_timeout_s = ask_user_timeout_s
        self._use_journal = journal
        self._journal: EffectJournal | None = None
        self._approvals: ApprovalStore | None = None
        self._resuming: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self, ctx: Context) -> None:
        """Open the memory and assemble the tools; then the user's ``on_start``."""
        if self._memory is not None:
            self._store = self._memory
        elif self._data_dir is not None:
            self._store = await SQLiteStore.open(SQLiteStore.in_data_dir(self._data_dir).path)
            self._owns_store = True
        else:
            self._store = InMemoryStore()
        peers: PeerSource | None = None
        if self._use == "all" or self._use:
            # In process the runtime describes the peers; through the bridge the server lists
            # them (refreshed before each turn, see respond()).
            peers = PeerCapabilities.of_context(ctx, self._use) or RemotePeers(ctx, self._use)
        self._remote_peers = peers if isinstance(peers, RemotePeers) else None
        toolset = Toolset(
            [self._tools] if isinstance(self._tools, ToolRegistry) else (),
            tools=() if isinstance(self._tools, ToolRegistry) else self._tools,
            peers=peers,
        )
        if self._ask_user:
            toolset.add(AskUser())
        model = self._model = self._host_model(ctx) if self.llm == "server" else self.llm
        if isinstance(model, ModelRouter):
            # Published after each turn as llm.route debug events (see respond()).
            model.add_decision_listener(self._decisions.append)
        gate = self._gate(ctx)
        if gate is not None and ctx.runtime is None and self._asks_approval():
            # In its own process the turn waits on the server, but the tools run here: the
            # at-most-once promise needs this process's own journal, on its disk.
            if self._data_dir is None:
                raise InvalidArgument(
                    f"agent {self.agent_id} asks for approval of tool calls in its own "
                    "process: give it data_dir (its effect journal, effects.sqlite3, lives "
                    "there, so an approved call runs at most once across a crash)"
                )
            self._use_journal = True
        if self._use_journal and self._data_dir is not None:
            self._journal = await EffectJournal.open(EffectJournal.in_data_dir(self._data_dir))
        self._loop = Loop(
            model,
            tools=toolset,
            config=self.config,
            tracer_provider=self._tracer_provider or ctx.tracer_provider,
            agent_id=self.agent_id,
            journal=self._journal,
            approval=gate,
            budget=self.budget,
            # Shared by the runtime's agents, so agent and tenant windows are the runtime's.
            # In its own process: the server's ledger keeps its spend (bridge/_budget_remote.py).
            ledger=(
                ctx.runtime.budgets
                if ctx.runtime is not None
                else BudgetLedger(authority=ctx.budget_authority)
            ),
        )
        await super().on_start(ctx)
        if self._approvals is not None:
            # Decisions made while this agent was not running: each turn resumes through
            # the mailbox, as a live decision does, in a worker.
            turns = {r.turn_id: r for r in await self._approvals.unresumed(self.agent_id)}
            for record in turns.values():
                await ctx.emit(
                    mailbox_topic(self.agent_id),
                    msgspec.json.encode(record),
                    type="approval.decided",
                )

    def _gate(self, ctx: Context) -> ApprovalGate | None:
        """The approval gate of the host's store (the runtime's; connected through the
        bridge, the server's), with the store's policies and the agent's own over them
        (``None``: no store, or a remote agent that asks for nothing)."""
        asks = self._asks_approval() or self._ask_user
        approvals = ctx.approvals
        if ctx.runtime is None and not asks:
            approvals = None  # connected, and never waits: no calls to the server's store
        self._approvals = approvals
        if approvals is None:
            if asks and not self._asks_approval():
                raise InvalidArgument(
                    f"agent {self.agent_id} may ask the user (ask_user=True) and its runtime "
                    "has no approvals store for the questions to wait in (runtime.approvals; "
                    "loom serve opens one)"
                )
            if asks:
                raise InvalidArgument(
                    f"agent {self.agent_id} asks for approval of tool calls and its runtime "
                    "has no approval store (runtime.approvals; loom serve opens one)"
                )
            return None
        return ApprovalGate(
            approvals,
            {**approvals.policies, **self._approval},
            timeout_s=self._approval_timeout_s,
            ask_user=self._ask_user,
            question_timeout_s=self._ask_user_timeout_s,
        )

    def _asks_approval(self) -> bool:
        return any(p != "never" for p in self._approval.values())

    async def on_stop(self, ctx: Context) -> None:
        """The user's ``on_stop``, then close the memory (when the agent opened it).

        The runtime calls this once the handlers are done (or cancelled past its
        ``stop_timeout_s``); turns still running in other tasks are cancelled first.
        """
        self.cancel()
        journal, self._journal = self._journal, None
        if journal is not None:
            await journal.aclose()
        if isinstance(self._model, ModelRouter):
            self._model.remove_decision_listener(self._decisions.append)
        try:
            await super().on_stop(ctx)
        finally:
            store, self._store = self._store, None
            if store is not None and self._owns_store:
                with anyio.CancelScope(shield=True):
                    await store.aclose()

    def _host_model(self, ctx: Context) -> LLM:
        """``llm="server"``: the host's model.

        Raises:
            NoModelConfigured: in process, and the runtime has none.
        """
        model = ctx.llm
        if model is None:
            raise NoModelConfigured(
                f'agent {self.agent_id} asks for llm="server", and its runtime has no model: '
                "give the runtime one (AgentRuntime(llm=...)), or run the agent connected to a "
                "server with an [llm] table (Agent.run(), loom run)"
            )
        return model

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        """Answer ``event`` with one turn (see :meth:`respond`); an ``approval.decided``
        event in the mailbox resumes the turn it names (see :meth:`resume`)."""
        if event.type == "approval.decided" and topic == mailbox_topic(self.agent_id):
            record = msgspec.json.decode(event.payload, type=ApprovalRecord)
            await self.resume(ctx, record.turn_id)
            return
        await self.respond(ctx, event)

    # ------------------------------------------------------------------ turns

    def perceive(self, event: Event) -> str:
        """The goal of the turn an event starts: its payload as UTF-8 (override to change)."""
        return event.payload.decode("utf-8", errors="replace")

    def cancel(self, thread_id: str | None = None) -> int:
        """Cancel the running turn of ``thread_id`` (every running turn when ``None``).

        A cancelled turn ends with a ``cancelled`` outcome, replied like any other.

        Returns:
            How many turns were cancelled.
        """
        turns = list(self._turns.values()) if thread_id is None else [self._turns.get(thread_id)]
        n = 0
        for turn in turns:
            if turn is not None:
                turn.cancel()
                n += 1
        return n

    async def respond(self, ctx: Context, event: Event) -> TurnOutcome:
        """Run one turn on ``event``, publish its partial output, its end and the reply.

        Returns:
            The outcome (also in the ``turn.end`` event and the reply).

        Raises:
            InvalidArgument: the agent has not started.
        """
        loop, store = self._loop, self._store
        if loop is None or store is None:
            raise InvalidArgument(f"agent {self.agent_id} has not started")
        thread = event.envelope.thread_id or DEFAULT_THREAD
        context = AgentContext(store, agent_id=self.agent_id, thread_id=thread)
        if self._remote_peers is not None:
            await self._remote_peers.refresh()  # the tools the server offers now
        updates = self._updates(ctx, thread, event)
        turn = loop.turn(context, self.perceive(event), event=event, on_update=updates)
        return await self._run_turn(ctx, turn, thread, event)

    async def resume(self, ctx: Context, turn_id: str) -> TurnOutcome | None:
        """Resume the turn ``turn_id`` that waits for approval, once every approval of it is
        decided; publish and reply as :meth:`respond` does.

        The store says what to do, not the event that woke the agent: a turn with an
        approval still pending, already resumed, or being resumed by another worker is left
        alone (``None``).
        """
        loop, store, approvals = self._loop, self._store, self._approvals
        if loop is None or store is None or approvals is None or turn_id in self._resuming:
            return None
        # A turn that waited before (an earlier step's approval or question) has records of
        # that step, resumed already: only the step it waits at now counts, with its state.
        records = [r for r in await approvals.for_turn(self.agent_id, turn_id) if not r.resumed]
        if not records or any(r.status == "pending" for r in records):
            return None
        self._resuming.add(turn_id)
        try:
            saved = SavedTurn.decode(await approvals.state(records[-1].id))
            thread = records[0].thread_id
            context = AgentContext(store, agent_id=self.agent_id, thread_id=thread)
            event = saved.event if saved.event is not None else Event(id=turn_id)
            updates = self._updates(ctx, thread, event)
            turn = loop.resume(context, saved, records, on_update=updates)
            outcome = await self._run_turn(ctx, turn, thread, event)
            # After the reply: a crash before this line resumes the turn again at the next
            # start (the effect journal keeps its tools from running twice).
            await approvals.mark_resumed(self.agent_id, turn_id)
            return outcome
        finally:
            self._resuming.discard(turn_id)

    def _updates(self, ctx: Context, thread: str, event: Event) -> OnUpdate:
        stream_topic = self.stream_topic
        stream_metadata = {"thread_id": thread, "event_id": event.id}

        async def on_update(update: TurnUpdate) -> None:
            await ctx.emit(
                stream_topic,
                _encoder.encode(update),
                type=f"turn.{type(update).__struct_config__.tag}",
                metadata=stream_metadata,
            )

        return on_update

    async def _run_turn(self, ctx: Context, turn: Turn, thread: str, event: Event) -> TurnOutcome:
        stream_topic = self.stream_topic
        stream_metadata = {"thread_id": thread, "event_id": event.id}
        self._turns[thread] = turn
        try:
            outcome = await turn.run()
        finally:
            if self._turns.get(thread) is turn:
                del self._turns[thread]
        # Every routing decision, as a debug event with its reason (decisions of turns that
        # ran side by side go out with whichever turn ends first, each exactly once).
        decisions, self._decisions[:] = list(self._decisions), []
        for decision in decisions:
            await ctx.emit(
                stream_topic,
                _encoder.encode(decision),
                type="llm.route",
                metadata={**stream_metadata, "reason": decision.reason},
            )
        await ctx.emit(
            stream_topic, _encoder.encode(outcome), type="turn.end", metadata=stream_metadata
        )
        if outcome.kind != "waiting_approval":  # its reply goes out when it resumes
            await self._reply(ctx, event, outcome)
        return outcome

    async def _reply(self, ctx: Context, event: Event, outcome: TurnOutcome) -> None:
        try:
            reply_topic(event)
        except ValueError:
            return  # nowhere to reply; the turn.end event carries the answer
        metadata = {"outcome": outcome.kind, "iterations": str(outcome.iterations)}
        if outcome.error:
            metadata["error"] = outcome.error
        if outcome.budget:
            metadata["budget"] = outcome.budget
        await ctx.reply(
            event,
            outcome.answer if outcome.kind == "answer" else b"",
            type=f"agent.{outcome.kind}" if outcome.kind != "answer" else "agent.answer",
            metadata=metadata,
        )
