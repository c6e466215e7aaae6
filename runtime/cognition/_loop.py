"""The perceive-think-act loop: one :class:`Turn` of an agent, from a goal to an outcome.

A turn

1. **perceives**: records the goal in the agent's :class:`~loom.runtime.memory.AgentContext`;
2. **thinks**: builds the prompt from the context (the context engineering pipeline: system
   text, retrieved memory, the recent window) and calls the model with the tools' schemas;
3. **acts**: runs the tool calls the model made, in parallel up to a cap, each with its own
   timeout, and records every result (a failure becomes an error result for the model; it
   never ends the turn);

and repeats until the model answers or ``max_iterations`` model calls were made. It always
ends with a :class:`TurnOutcome` whose ``kind`` says how: ``answer``, ``budget_exhausted``,
``cancelled`` (by :meth:`Turn.cancel`) or ``error`` (the model could not be called, the store
failed). Cancellation from outside the turn (its task's scope) is never turned into an
outcome: it propagates, after cancelling the model call and the running tools.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import anyio
import msgspec
from opentelemetry import context as otel_context
from opentelemetry.trace import (
    NoOpTracerProvider,
    Span,
    StatusCode,
    TracerProvider,
    get_current_span,
    set_span_in_context,
    use_span,
)

from .._approvals import ApprovalCall, ApprovalRecord
from .._budget import Budget, BudgetExhausted, BudgetLedger
from .._errors import InvalidArgument, LoomError
from .._event import Event
from .._ids import new_id
from .._questions import question_result
from .._tracing import context_from_envelope
from ..llm import (
    LLM,
    BadResponse,
    Completion,
    CompletionRequest,
    ModelRouter,
    RoutableLLM,
    StreamEnd,
    TextDelta,
    ToolCall,
    Usage,
    llm_namespace,
)
from ..memory import AgentContext, ContextItem, ItemKind, Role, arguments_text
from ..tools import EffectJournal, ToolError, approval_ruled, tool_output_sink
from ._approval import (
    ApprovalGate,
    SavedCall,
    SavedResult,
    SavedTurn,
    denial_text,
)
from ._budgeting import TurnBudget
from ._model_call import ModelCall, model_call
from ._strategies import (
    COT_INSTRUCTIONS,
    StrategyName,
    ToolCalling,
    parse_text_step,
    split_final_answer,
    text_tools_instructions,
)
from ._toolset import EMPTY_TOOLS, Toolset, TurnTools

__all__ = [
    "Loop",
    "LoopConfig",
    "OutcomeKind",
    "TextChunk",
    "ToolFinished",
    "ToolOutput",
    "ToolResult",
    "ToolStarted",
    "Turn",
    "TurnOutcome",
    "TurnUpdate",
]

log = logging.getLogger("loom.runtime.loop")

OutcomeKind = Literal["answer", "budget_exhausted", "cancelled", "error", "waiting_approval"]
"""How a turn ended (``waiting_approval``: it stopped until humans decide; docs/guardrails.md)."""


class LoopConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How turns run.

    Attributes:
        system_prompt: the agent's instructions, first in every prompt.
        strategy: ``react``, ``single_shot`` or ``chain_of_thought``.
        tool_calling: how ``react`` offers tools (``auto``, ``native``, ``text``).
        max_iterations: model calls a turn may make; at least 1.
        max_parallel_tools: tool calls of one model answer that run at once; at least 1.
        tool_timeout_s: seconds each tool call may take (``None``: the tool's registry
            default; ``math.inf``: none).
        context_budget_tokens: the prompt's token budget (tool schemas not included).
        max_result_chars: a tool result longer than this is cut before the model sees it.
        temperature: sampling temperature, ``None`` for the provider's default.
        max_tokens: cap on generated tokens per call, ``None`` for the provider's default.
        llm_timeout_s: deadline of each model call, ``None`` for the provider's own.
        stream: stream the model's text as :class:`TextChunk` updates when someone listens.
    """

    system_prompt: str = ""
    strategy: StrategyName = "react"
    tool_calling: ToolCalling = "auto"
    max_iterations: int = 8
    max_parallel_tools: int = 5
    tool_timeout_s: float | None = None
    context_budget_tokens: int = 8000
    max_result_chars: int = 16_000
    temperature: float | None = None
    max_tokens: int | None = None
    llm_timeout_s: float | None = None
    stream: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in ("react", "single_shot", "chain_of_thought"):
            raise InvalidArgument(f"unknown strategy {self.strategy!r}")
        if self.tool_calling not in ("auto", "native", "text"):
            raise InvalidArgument(f"unknown tool_calling {self.tool_calling!r}")
        for name in ("max_iterations", "max_parallel_tools", "context_budget_tokens"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.max_result_chars < 100:
            raise InvalidArgument(f"max_result_chars must be >= 100, not {self.max_result_chars}")
        for name in ("tool_timeout_s", "llm_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidArgument(f"{name} must be positive seconds, not {value!r}")


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of a turn and what came of it.

    Attributes:
        iteration: the model call (from 1) that asked for it.
        call_id: the call's id.
        name: the tool's name (as the model said it, when it is not a known tool).
        arguments: the arguments it ran with (empty when the call was malformed).
        content: the result as the model reads it, or the error text.
        is_error: the call failed or could not be made.
        error_type: the error's class name ('' on success).
        duration_s: how long the call ran.
    """

    iteration: int
    call_id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    content: str = ""
    is_error: bool = False
    error_type: str = ""
    duration_s: float = 0.0


class TurnOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a turn ended, with everything it did.

    Attributes:
        kind: ``answer``, ``budget_exhausted``, ``cancelled`` or ``error``.
        answer: the final answer ('' unless ``kind`` is ``answer``).
        reasoning: the reasoning before the answer (``chain_of_thought`` only).
        thread_id: the conversation.
        iterations: model calls made.
        usage: tokens over all model calls.
        tool_results: every tool call, in the order made.
        error: what went wrong (``error``), or why the turn stopped.
        error_type: the error's class name.
        finish_reason: the last model call's finish reason ('' when none finished).
        approval_ids: the approvals a ``waiting_approval`` turn waits for.
        budget: the budget that stopped a ``budget_exhausted`` turn: ``max_iterations``, a
            :class:`~loom.runtime.Budget` field (``turn_tokens``, ``agent_cost_usd``,
            ``max_tool_calls``, ...); '' otherwise.
    """

    kind: OutcomeKind
    answer: str = ""
    reasoning: str = ""
    thread_id: str = ""
    iterations: int = 0
    usage: Usage = Usage()
    tool_results: tuple[ToolResult, ...] = ()
    error: str = ""
    error_type: str = ""
    finish_reason: str = ""
    approval_ids: tuple[str, ...] = ()
    budget: str = ""


class TextChunk(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="text"):
    """A piece of the model's text, as it is generated."""

    iteration: int
    text: str


class ToolStarted(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="tool_started"):
    """A tool call starts running."""

    iteration: int
    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolFinished(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="tool_finished"
):
    """A tool call has a result (or an error)."""

    result: ToolResult


class ToolOutput(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="tool_output"):
    """A piece of a running tool's partial output (a tool that streams, such as a remote A2A
    agent's answer: ``loom.runtime.tools.stream_tool_output``), between its start and finish."""

    iteration: int
    call_id: str
    name: str
    text: str


TurnUpdate = TextChunk | ToolStarted | ToolOutput | ToolFinished | ModelCall
"""Partial output of a turn; ``kind`` is the tag."""

OnUpdate = Callable[[TurnUpdate], Awaitable[None]]

_encoder = msgspec.json.Encoder(enc_hook=str)


class Loop:
    """Runs turns for one agent: an LLM, its tools, a configuration, a tracer.

    Args:
        llm: a provider or a :class:`~loom.runtime.llm.ModelRouter`.
        tools: where the tools come from; a snapshot is taken when each turn begins.
        config: how turns run.
        tracer_provider: where the ``invoke_agent {agent}`` spans go (none without one). Give the
            providers the same one to nest their ``chat {model}`` spans inside.
        agent_id: the agent the turns belong to (span attributes, logs, budgets).
        journal: run every tool call through this effect journal, keyed by agent, thread,
            turn and call id, so a resumed or redelivered turn never runs a call twice.
        approval: which tool calls wait for a human (the turn then ends ``waiting_approval``
            and :meth:`resume` continues it).
        budget: the limits of its turns (``docs/guardrails.md``); the stricter of these and
            the ledger's for the agent apply (``BudgetLedger.budget_for``).
        ledger: where spend over time is kept (``AgentRuntime.budgets``); its own without.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        tools: Toolset | None = None,
        config: LoopConfig | None = None,
        tracer_provider: TracerProvider | None = None,
        agent_id: str = "",
        journal: EffectJournal | None = None,
        approval: ApprovalGate | None = None,
        budget: Budget | None = None,
        ledger: BudgetLedger | None = None,
    ) -> None:
        self.llm = llm
        self.journal = journal
        self.approval = approval
        self.budget = budget if budget is not None else Budget()
        self.ledger = ledger if ledger is not None else BudgetLedger()
        self.tools = tools
        self.config = config if config is not None else LoopConfig()
        self.agent_id = agent_id
        self._tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("loom.runtime.loop")

    def turn(
        self,
        context: AgentContext,
        goal: str,
        *,
        event: Event | None = None,
        on_update: OnUpdate | None = None,
    ) -> Turn:
        """A turn towards ``goal`` in ``context``'s conversation, ready to :meth:`Turn.run`.

        Args:
            context: the conversation; the goal and everything the turn does are recorded in it.
            goal: what the user (or the event) asks, recorded as a user message.
            event: the event the goal came from: its trace context becomes the turn span's
                parent, and its id is kept with the recorded goal.
            on_update: receives partial output (text chunks, tool starts and results). It is
                awaited in line (a slow one slows the turn) and, for parallel tool calls,
                from several tasks at once.
        """
        return Turn(self, context, goal, event=event, on_update=on_update)

    def resume(
        self,
        context: AgentContext,
        saved: SavedTurn,
        decisions: Sequence[ApprovalRecord],
        *,
        on_update: OnUpdate | None = None,
    ) -> Turn:
        """A turn that goes on from ``saved`` (a ``waiting_approval`` turn) with the decided
        approvals of its step, ready to :meth:`Turn.run`: approved calls run, the others
        answer the model with their denial, then the loop continues."""
        turn = Turn(self, context, saved.goal, event=saved.event, on_update=on_update)
        turn._resume = (saved, {d.call_id: d for d in decisions})
        turn.turn_id = saved.turn_id
        return turn

    async def run(
        self,
        context: AgentContext,
        goal: str,
        *,
        event: Event | None = None,
        on_update: OnUpdate | None = None,
    ) -> TurnOutcome:
        """Run one turn to its outcome; see :meth:`turn`."""
        return await self.turn(context, goal, event=event, on_update=on_update).run()

    def _uses_text_tools(self) -> bool:
        mode = self.config.tool_calling
        if mode != "auto":
            return mode == "text"
        llm = self.llm
        if isinstance(llm, ModelRouter):
            return not any(p.profile.supports_tools for p in llm.providers.values())
        if isinstance(llm, RoutableLLM):
            return not llm.profile.supports_tools
        return False


class Turn:
    """One run of the loop; made by :meth:`Loop.turn`. Runs once."""

    def __init__(
        self,
        loop: Loop,
        context: AgentContext,
        goal: str,
        *,
        event: Event | None,
        on_update: OnUpdate | None,
    ) -> None:
        self._loop = loop
        self._config = loop.config
        self.context = context
        self.goal = goal
        self._event = event
        self._on_update = on_update
        self._scope: anyio.CancelScope | None = None
        self._cancel_requested = False
        self._started = False
        self._iterations = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._results: list[ToolResult] = []
        self._finish = ""
        self._resume: tuple[SavedTurn, dict[str, ApprovalRecord]] | None = None
        self._approval_id = ""  # the approval of the call being run (resumed step only)
        self.turn_id = event.id if event is not None else new_id()
        """Names the turn in the effect journal and in approvals (the event's id)."""
        self._budget = TurnBudget(
            loop.budget, loop.ledger, loop.llm, loop.agent_id, context.thread_id
        )
        self.outcome: TurnOutcome | None = None
        """The outcome, once :meth:`run` has returned."""

    def cancel(self) -> None:
        """End the turn now: the model call and the running tools are cancelled and
        :meth:`run` returns a ``cancelled`` outcome. Safe to call before it runs, and after."""
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> TurnOutcome:
        """Run the turn to its outcome.

        Raises:
            InvalidArgument: the turn has already run.
        """
        if self._started:
            raise InvalidArgument("a turn runs once; make another with Loop.turn")
        self._started = True
        loop = self._loop
        # Inside a handler's span (its ``{topic} process``), the turn is its child; else it
        # continues the trace of the event that asked for it.
        parent = None
        if self._event is not None and not get_current_span().get_span_context().is_valid:
            parent = context_from_envelope(self._event.envelope)
        span = loop._tracer.start_span(
            f"invoke_agent {loop.agent_id}",
            context=parent,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": loop.agent_id,
                "gen_ai.agent.name": loop.agent_id,
                "gen_ai.conversation.id": self.context.thread_id,
                "loom.llm.name": loop.llm.name,
                "loom.turn.strategy": self._config.strategy,
            },
        )
        outcome: TurnOutcome | None = None
        try:
            with (
                use_span(span, record_exception=False, set_status_on_exception=False),
                # The model calls of agent "team-a:planner" are namespace team-a's (the rule
                # of bridge/_tenants.py): the response cache never serves them to another.
                llm_namespace(loop.agent_id.partition(":")[0] if ":" in loop.agent_id else ""),
                anyio.CancelScope() as scope,
            ):
                self._scope = scope
                if self._cancel_requested:
                    scope.cancel()
                try:
                    await self._budget.prepare()  # the server's turn limits, for a remote agent
                    with self._budget.current():
                        outcome = await self._run(span)
                except BudgetExhausted as exc:  # refused before the call: no surprise bill
                    outcome = self._outcome("budget_exhausted", error=str(exc), budget=exc.budget)
                except LoomError as exc:
                    log.warning("turn of %s failed: %r", loop.agent_id, exc)
                    outcome = self._outcome("error", error=str(exc), error_type=type(exc).__name__)
            if outcome is None:  # our own scope absorbed a cancel() call
                outcome = self._outcome("cancelled", error="the turn was cancelled")
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            span.set_attribute("loom.turn.outcome", "cancelled" if cancelled else "error")
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(StatusCode.ERROR, "cancelled from outside" if cancelled else repr(exc))
            raise
        finally:
            self._scope = None
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": self._prompt_tokens,
                    "gen_ai.usage.output_tokens": self._completion_tokens,
                    "loom.turn.iterations": self._iterations,
                    "loom.turn.tool_calls": len(self._results),
                }
            )
            if outcome is not None:
                span.set_attribute("loom.turn.outcome", outcome.kind)
                if outcome.kind == "error":
                    span.set_attribute("error.type", outcome.error_type)
                    span.set_status(StatusCode.ERROR, outcome.error)
            span.end()
        self.outcome = outcome
        return outcome

    def _outcome(self, kind: OutcomeKind, **fields: Any) -> TurnOutcome:
        return TurnOutcome(
            kind=kind,
            thread_id=self.context.thread_id,
            iterations=self._iterations,
            usage=Usage(
                prompt_tokens=self._prompt_tokens, completion_tokens=self._completion_tokens
            ),
            tool_results=tuple(self._results),
            finish_reason=self._finish,
            **fields,
        )

    # ------------------------------------------------------------------ the loop

    async def _run(self, turn_span: Span) -> TurnOutcome:
        config = self._config
        context = self.context
        metadata = {"event_id": self._event.id} if self._event is not None else None
        react = config.strategy == "react"
        tools = self._loop.tools.snapshot() if react and self._loop.tools is not None else None
        tools = tools or EMPTY_TOOLS
        text_mode = react and len(tools) > 0 and self._loop._uses_text_tools()
        first = 1
        if self._resume is not None:  # the goal is in memory already: go on from the step
            text_mode = await self._resume_step(tools, turn_span)
            first = self._iterations + 1
        else:
            await context.record_user(self.goal, metadata=metadata)  # perceive
        system = self._system_prompt(tools, text_mode)
        offered = tools.specs if react and not text_mode else ()
        tracer = self._loop._tracer
        for n in range(first, config.max_iterations + 1):
            with tracer.start_as_current_span(
                f"iteration[{n}]", attributes={"loom.iteration": n}
            ) as span:
                prompt = await context.build_prompt(
                    goal=self.goal, budget_tokens=config.context_budget_tokens, system=system
                )
                request = CompletionRequest(
                    messages=prompt.messages,
                    tools=offered,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                    timeout_s=config.llm_timeout_s,
                )
                completion = await self._think(request, prompt.tokens, n, span)
                if not react:
                    await context.record_assistant(completion.text)
                    if config.strategy == "chain_of_thought":
                        reasoning, answer = split_final_answer(completion.text)
                        return self._outcome("answer", answer=answer, reasoning=reasoning)
                    return self._outcome("answer", answer=completion.text)
                # A step (the model's answer, its calls, their results) is recorded whole, in
                # one write, once its tools are done: a turn cancelled mid-step leaves no half
                # step behind, and an iteration costs one transaction.
                if text_mode:
                    step = parse_text_step(completion.text, tools.names, call_prefix=f"t{n}_")
                    if not step.calls:
                        await context.record_assistant(completion.text)
                        return self._outcome("answer", answer=step.answer)
                    try:
                        results = await self._act(step.calls, tools, n, span)
                    except _Suspend as wait:
                        return await self._suspend(wait, completion.text, step.calls, True)
                    await self._record_step(completion.text, step.calls, results, text_mode=True)
                    if self._budget.exhausted:
                        return self._capped()
                    continue
                calls = _unique_ids(completion.tool_calls)
                if not calls:
                    await context.record_assistant(completion.text)
                    return self._outcome("answer", answer=completion.text)
                try:
                    results = await self._act(calls, tools, n, span)
                except _Suspend as wait:
                    return await self._suspend(wait, completion.text, calls, False)
                await self._record_step(completion.text, calls, results, text_mode=False)
                if self._budget.exhausted:
                    return self._capped()
        turn_span.set_attribute("loom.turn.max_iterations", config.max_iterations)
        return self._outcome(
            "budget_exhausted",
            error=f"no final answer after {config.max_iterations} model calls",
            budget="max_iterations",
        )

    def _capped(self) -> TurnOutcome:
        # A call of this step was refused by a cap: the step is recorded whole (the refusal
        # is its result), and the turn ends rather than ask the model again.
        name = self._budget.exhausted
        return self._outcome(
            "budget_exhausted",
            error=f"budget {name} exhausted: a tool call was refused",
            budget=name,
        )

    async def _record_step(
        self,
        text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
        *,
        text_mode: bool,
    ) -> None:
        context = self.context
        if text_mode:
            await context.record_many(
                [
                    _item(context, "message", "assistant", text),
                    _item(context, "observation", "user", _observations(results)),
                ]
            )
            return
        items = [_item(context, "message", "assistant", text)]
        items += [
            _item(
                context,
                "tool_call",
                "assistant",
                arguments_text(c),
                tool_call_id=c.id,
                tool_name=c.name,
            )
            for c in calls
        ]
        items += [
            _item(
                context,
                "tool_result",
                "tool",
                r.content,
                tool_call_id=r.call_id,
                tool_name=r.name,
                metadata={"is_error": "true"} if r.is_error else {},
            )
            for r in results
        ]
        await context.record_many(items if text else items[1:])

    # ------------------------------------------------------------------ approval

    async def _suspend(
        self, wait: _Suspend, text: str, calls: Sequence[ToolCall], text_mode: bool
    ) -> TurnOutcome:
        """Save the turn with one approval request per waiting call; end ``waiting_approval``
        (nothing of the step is in memory yet: it is recorded whole when the turn resumes)."""
        gate = self._loop.approval
        assert gate is not None
        saved = SavedTurn(
            turn_id=self.turn_id,
            event=self._event,
            goal=self.goal,
            iteration=self._iterations,
            text=text,
            text_mode=text_mode,
            calls=tuple(
                SavedCall(id=c.id, name=c.name, arguments=dict(c.arguments)) for c in calls
            ),
            done=tuple(_saved(r) for r in wait.done),
            pending=tuple(c.id for c in wait.waiting),
            results=tuple(_saved(r) for r in self._results),
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
        )
        records = await gate.suspend(
            saved, agent_id=self._loop.agent_id, thread_id=self.context.thread_id
        )
        asked = sum(r.kind == "question" for r in records)
        waits = (
            [f"{len(records) - asked} tool call(s) wait for approval"]
            if asked < len(records)
            else []
        )
        waits += [f"{asked} question(s) wait for the user's answer"] if asked else []
        return self._outcome(
            "waiting_approval",
            error="; ".join(waits),
            approval_ids=tuple(r.id for r in records),
        )

    async def _resume_step(self, tools: TurnTools, turn_span: Span) -> bool:
        """Finish the saved step with its decisions and record it; returns its text mode."""
        assert self._resume is not None
        saved, decisions = self._resume
        n = self._iterations = saved.iteration
        self._prompt_tokens, self._completion_tokens = saved.prompt_tokens, saved.completion_tokens
        self._results = [ToolResult(**msgspec.structs.asdict(r)) for r in saved.results]
        done = {r.call_id: ToolResult(**msgspec.structs.asdict(r)) for r in saved.done}
        calls = [ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in saved.calls]
        parent = set_span_in_context(turn_span)
        results: list[ToolResult] = []
        for call in calls:
            if call.id in done:
                results.append(done[call.id])
                continue
            decision = decisions.get(call.id)
            if decision is not None and decision.status == "approved":
                # Its approval's id goes with the call (a server's NeedsApproval tool checks
                # it in the server's store); the step's calls run one at a time here.
                self._approval_id = decision.id
                try:
                    results.append(await self._call_tool(call, tools, n, parent))
                finally:
                    self._approval_id = ""
                continue
            if decision is not None and decision.kind == "question":
                result = question_tool_result(n, call, decision)
                if self._on_update is not None:
                    await self._on_update(ToolFinished(result=result))
                results.append(result)
                continue
            result = ToolResult(
                iteration=n,
                call_id=call.id,
                name=call.name,
                arguments=dict(call.arguments),
                content=denial_text(decision) if decision is not None else "not approved",
                is_error=True,
                error_type="ApprovalExpired"
                if decision is not None and decision.status == "expired"
                else "ApprovalDenied",
            )
            if self._on_update is not None:
                await self._on_update(ToolFinished(result=result))
            results.append(result)
        self._results.extend(results)
        await self._record_step(saved.text, calls, results, text_mode=saved.text_mode)
        return saved.text_mode

    def _system_prompt(self, tools: TurnTools, text_mode: bool) -> str:
        parts = [self._config.system_prompt] if self._config.system_prompt else []
        if self._config.strategy == "chain_of_thought":
            parts.append(COT_INSTRUCTIONS)
        if text_mode:
            parts.append(text_tools_instructions(tools.specs))
        return "\n\n".join(parts)

    async def _think(
        self, request: CompletionRequest, prompt_tokens: int, n: int, span: Span
    ) -> Completion:
        llm = self._loop.llm
        pending = await self._budget.before(request, prompt_tokens)  # raises: the call is not made
        self._iterations = n
        completion: Completion | None = None
        started = time.monotonic()
        try:
            if self._on_update is not None and self._config.stream:
                async with llm.stream(request) as chunks:
                    async for chunk in chunks:
                        if isinstance(chunk, TextDelta):
                            await self._on_update(TextChunk(iteration=n, text=chunk.text))
                        elif isinstance(chunk, StreamEnd):
                            completion = chunk.completion
                if completion is None:
                    raise BadResponse("the stream ended without its last chunk", provider=llm.name)
            else:
                completion = await llm.complete(request)
        except BaseException:
            self._budget.failed(pending)
            raise
        await self._budget.after(pending, completion)
        if self._on_update is not None:  # the timeline's tokens and duration per call
            await self._on_update(model_call(n, completion, time.monotonic() - started))
        usage = completion.usage
        self._prompt_tokens += usage.prompt_tokens
        self._completion_tokens += usage.completion_tokens
        self._finish = completion.finish_reason
        span.set_attributes(
            {
                "gen_ai.response.model": completion.model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": (completion.finish_reason,),
                "loom.llm.provider": completion.provider,
            }
        )
        return completion

    # ------------------------------------------------------------------ acting

    async def _act(
        self, calls: Sequence[ToolCall], tools: TurnTools, n: int, span: Span
    ) -> list[ToolResult]:
        results: list[ToolResult | None] = [None] * len(calls)
        parent = set_span_in_context(span)
        runnable = []
        for i, call in enumerate(calls):
            if call.error is None:
                runnable.append(i)
                continue
            # Malformed or unknown: answered with the error, never run.
            result = results[i] = ToolResult(
                iteration=n,
                call_id=call.id,
                name=call.name,
                content=str(call.error),
                is_error=True,
                error_type=type(call.error).__name__,
            )
            if self._on_update is not None:
                await self._on_update(ToolFinished(result=result))
        waiting = self._waiting(calls, runnable)
        runnable = [i for i in runnable if i not in waiting]
        if len(runnable) == 1:
            i = runnable[0]
            results[i] = await self._call_tool(calls[i], tools, n, parent)
        elif runnable:
            limiter = anyio.CapacityLimiter(self._config.max_parallel_tools)

            async def run(i: int) -> None:
                async with limiter:
                    results[i] = await self._call_tool(calls[i], tools, n, parent)

            async with anyio.create_task_group() as tg:
                for i in runnable:
                    tg.start_soon(run, i)
        done = [r for r in results if r is not None]
        if waiting:  # the step is finished when the turn resumes; its results are saved
            raise _Suspend(done, [calls[i] for i in sorted(waiting)])
        self._results.extend(done)
        return done

    def _waiting(self, calls: Sequence[ToolCall], runnable: list[int]) -> set[int]:
        gate = self._loop.approval
        if gate is None:
            return set()
        agent, thread = self._loop.agent_id, self.context.thread_id
        return {
            i
            for i in runnable
            if gate.needs(
                ApprovalCall(
                    tool=calls[i].name,
                    arguments=calls[i].arguments,
                    call_id=calls[i].id,
                    agent_id=agent,
                    thread_id=thread,
                )
            )
        }

    async def _call_tool(
        self, call: ToolCall, tools: TurnTools, n: int, parent: otel_context.Context
    ) -> ToolResult:
        arguments = dict(call.arguments)
        span = self._loop._tracer.start_span(
            f"execute_tool {call.name}",
            context=parent,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
                "loom.iteration": n,
            },
        )
        with use_span(span, end_on_exit=True):
            if self._on_update is not None:
                await self._on_update(
                    ToolStarted(iteration=n, call_id=call.id, name=call.name, arguments=arguments)
                )
            start = anyio.current_time()
            error_type = ""
            on_update = self._on_update

            async def output(text: str) -> None:  # a streaming tool's pieces, as turn updates
                if on_update is not None:
                    await on_update(
                        ToolOutput(iteration=n, call_id=call.id, name=call.name, text=text)
                    )

            try:
                with tool_output_sink(output if on_update is not None else None):
                    async with self._budget.tool_call(call.name):
                        value = await self._run_tool(call, arguments, tools)
            except ToolError as exc:
                content, error_type = str(exc), type(exc).__name__
            except Exception as exc:  # isolated: one tool's failure is a result, not the turn's
                content, error_type = f"{type(exc).__name__}: {exc}", type(exc).__name__
            else:
                content = self._render(value)
            if error_type:
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, content[:300])
            result = ToolResult(
                iteration=n,
                call_id=call.id,
                name=call.name,
                arguments=arguments,
                content=content,
                is_error=bool(error_type),
                error_type=error_type,
                duration_s=anyio.current_time() - start,
            )
            if self._on_update is not None:
                await self._on_update(ToolFinished(result=result))
            return result

    async def _run_tool(self, call: ToolCall, arguments: dict[str, Any], tools: TurnTools) -> Any:
        timeout = self._config.tool_timeout_s
        journal = self._loop.journal
        if self._loop.approval is not None:
            # The gate ruled on this call (approved, or no approval needed): a tool that runs
            # only behind a gate (NeedsApproval) may run.
            with approval_ruled(self._approval_id):
                return await self._journalled(call, arguments, tools, journal, timeout)
        return await self._journalled(call, arguments, tools, journal, timeout)

    async def _journalled(
        self,
        call: ToolCall,
        arguments: dict[str, Any],
        tools: TurnTools,
        journal: EffectJournal | None,
        timeout: float | None,
    ) -> Any:
        if journal is None:
            return await tools.call(call.name, arguments, timeout=timeout)
        # The key names the call across restarts: the same turn (event id) resumed or
        # redelivered makes the same key, so a call recorded there is never run again.
        key = f"{self._loop.agent_id}/{self.context.thread_id}/{self.turn_id}/{call.id}"
        return await journal.run(
            key, call.name, lambda: tools.call(call.name, arguments, timeout=timeout)
        )

    def _render(self, value: Any) -> str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, bytes):
            text = value.decode("utf-8", errors="replace")
        else:
            try:
                text = _encoder.encode(value).decode()
            except (TypeError, ValueError, msgspec.EncodeError):
                text = repr(value)
        limit = self._config.max_result_chars
        if len(text) > limit:
            text = f"{text[:limit]}\n[... {len(text) - limit} more characters cut]"
        return text


# ---------------------------------------------------------------------- helpers


class _Suspend(Exception):
    """Raised by ``_act`` when calls of the step wait for approval (caught in ``_run``)."""

    def __init__(self, done: list[ToolResult], waiting: list[ToolCall]) -> None:
        super().__init__("waiting for approval")
        self.done = done
        self.waiting = waiting


def question_tool_result(n: int, call: ToolCall, record: ApprovalRecord) -> ToolResult:
    """The ``ask_user`` call's result once its question is settled: the answer, or why none
    came (an error result the model reads, never a failed turn)."""
    content, error_type = question_result(record)
    return ToolResult(
        iteration=n,
        call_id=call.id,
        name=call.name,
        arguments=dict(call.arguments),
        content=content,
        is_error=bool(error_type),
        error_type=error_type,
    )


def _saved(result: ToolResult) -> SavedResult:
    return SavedResult(**msgspec.structs.asdict(result))


def _item(
    context: AgentContext,
    kind: ItemKind,
    role: Role,
    content: str,
    *,
    tool_call_id: str = "",
    tool_name: str = "",
    metadata: dict[str, str] | None = None,
) -> ContextItem:
    return ContextItem(
        kind=kind,
        role=role,
        agent_id=context.agent_id,
        thread_id=context.thread_id,
        content=content,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        metadata=metadata or {},
    )


def _unique_ids(calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    # A result is paired with its call by id; a server that repeats or omits ids would make
    # results land on the wrong call, so such calls get fresh ids (the model only ever sees
    # the ids we send back).
    seen: set[str] = set()
    out = []
    for call in calls:
        if not call.id or call.id in seen:
            call = msgspec.structs.replace(call, id=f"call_{new_id().replace('-', '')[-16:]}")
        seen.add(call.id)
        out.append(call)
    return tuple(out)


def _observations(results: Sequence[ToolResult]) -> str:
    parts = []
    for r in results:
        status = "error" if r.is_error else "result"
        parts.append(f"Observation ({r.name}, {status}): {r.content}")
    return "\n\n".join(parts)
