""":class:`AgentContext`: one agent's view of one conversation, and the prompt pipeline.

The perceive-think-act loop records what happens (the user's message or the incoming event,
the model's answers and tool calls, the tools' results, observations) and, before each model
call, asks for a prompt::

    ctx = AgentContext(store, agent_id="researcher", thread_id=event.envelope.thread_id)
    await ctx.record_user("Summarise the open issues about the bus")
    messages = await ctx.build(budget_tokens=8000, system=SYSTEM_PROMPT)

See docs/memory.md for the whole pipeline and its rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence

import msgspec

from .._errors import InvalidArgument
from .._event import Event
from .._ids import now_ms
from ..llm import Message, SystemMessage, ToolCall
from ._errors import BudgetTooSmall, InvalidItem
from ._items import ContextItem, ItemKind, Prompt, Role, arguments_text, tool_call_of
from ._offload import Offloader
from ._retrieval import RankedItem, RetrievalPolicy, rank
from ._store import MemoryStore
from ._tokens import MESSAGE_OVERHEAD_TOKENS, HeuristicTokenCounter, TokenCounter, message_tokens
from ._window import Turn, fit_turns, group_turns, item_tokens

__all__ = ["MEMORY_HEADER", "AgentContext"]

MEMORY_HEADER = "Earlier context retrieved for this turn (oldest first):"
"""The first line of the system message that carries retrieved items."""

_FIRST_PAGE = 64
_MAX_FIRST_PAGE = 4096
_TOKENS_PER_ITEM_GUESS = 16
_COST_CACHE_SIZE = 65_536


def _label(item: ContextItem) -> str:
    when = dt.datetime.fromtimestamp(item.timestamp_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
    match item.kind:
        case "tool_call":
            what = f"assistant called {item.tool_name} with"
        case "tool_result":
            what = f"result of {item.tool_name or 'a tool'}"
        case "message":
            what = item.role
        case _:
            what = item.kind
    return f"- [{when} UTC] {what}: "


class AgentContext:
    """Records one conversation of one agent in a :class:`MemoryStore` and builds prompts.

    Recording methods store at once (durably, with a durable store); ``build`` reads the store
    each time, so several ``AgentContext`` objects over the same store and thread agree, and a
    conversation survives a restart when the store is durable.

    Args:
        store: where items live.
        agent_id: the agent this memory belongs to.
        thread_id: the conversation.
        counter: token counter; the default is :class:`HeuristicTokenCounter`.
        policy: retrieval policy; the default :class:`RetrievalPolicy`.
        offloader: when given, tool results and event payloads over its threshold are written
            to files and only a preview is recorded.
        clock: Unix milliseconds now (recency is measured against it).

    Raises:
        InvalidArgument: ``agent_id`` or ``thread_id`` is empty.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        agent_id: str,
        thread_id: str,
        counter: TokenCounter | None = None,
        policy: RetrievalPolicy | None = None,
        offloader: Offloader | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not agent_id or not thread_id:
            raise InvalidArgument("agent_id and thread_id must not be empty")
        self.store = store
        self.agent_id = agent_id
        self.thread_id = thread_id
        self.counter: TokenCounter = counter if counter is not None else HeuristicTokenCounter()
        self.policy = policy if policy is not None else RetrievalPolicy()
        self.offloader = offloader
        self._clock = clock
        # Items are immutable, so an item's cost under this context's counter never changes,
        # and neither does the call a tool_call item records (parsed JSON: worth keeping, as
        # every build of a turn's loop renders the same calls again).
        self._costs: dict[str, int] = {}
        self._calls: dict[str, ToolCall] = {}

    # ------------------------------------------------------------------ recording

    async def record(self, item: ContextItem) -> ContextItem:
        """Store ``item`` (offloading a large tool result or event); return it as stored.

        Raises:
            InvalidItem: the item belongs to another agent or thread.
            DuplicateItem: its id is already stored.
        """
        return (await self.record_many([item]))[0]

    async def record_many(self, items: Sequence[ContextItem]) -> list[ContextItem]:
        """Store ``items`` atomically and in order; see :meth:`record`."""
        prepared = []
        for item in items:
            if item.agent_id != self.agent_id or item.thread_id != self.thread_id:
                raise InvalidItem(
                    f"item {item.id} belongs to {item.agent_id}/{item.thread_id}, "
                    f"not to this context's {self.agent_id}/{self.thread_id}"
                )
            prepared.append(await self._offload(item))
        return await self.store.add_many(prepared)

    async def _offload(self, item: ContextItem) -> ContextItem:
        if self.offloader is None or item.kind not in ("tool_result", "event"):
            return item
        done = await self.offloader.offload(self.agent_id, item.id, item.content)
        if done is None:
            return item
        metadata = {
            **item.metadata,
            "offload_path": str(done.path),
            "offload_bytes": str(done.size),
        }
        return msgspec.structs.replace(item, content=done.preview, metadata=metadata)

    def _item(
        self,
        kind: ItemKind,
        role: Role,
        content: str,
        importance: float,
        metadata: Mapping[str, str] | None,
        *,
        tool_call_id: str = "",
        tool_name: str = "",
    ) -> ContextItem:
        return ContextItem(
            kind=kind,
            role=role,
            agent_id=self.agent_id,
            thread_id=self.thread_id,
            content=content,
            importance=importance,
            timestamp_ms=self._clock(),
            metadata=dict(metadata or {}),
            tool_call_id=tool_call_id,
            tool_name=tool_name,
        )

    async def record_user(
        self, content: str, *, importance: float = 0.5, metadata: Mapping[str, str] | None = None
    ) -> ContextItem:
        """Record a user message (the goal of a turn, a follow-up question)."""
        return await self.record(self._item("message", "user", content, importance, metadata))

    async def record_system(
        self, content: str, *, importance: float = 0.5, metadata: Mapping[str, str] | None = None
    ) -> ContextItem:
        """Record a system message inside the conversation (an instruction given mid-way).

        The system prompt of every build is passed to :meth:`build`, not recorded.
        """
        return await self.record(self._item("message", "system", content, importance, metadata))

    async def record_assistant(
        self,
        content: str = "",
        *,
        tool_calls: Sequence[ToolCall] = (),
        importance: float = 0.5,
        metadata: Mapping[str, str] | None = None,
    ) -> list[ContextItem]:
        """Record one model answer: its text (when any) and the tool calls it makes, atomically.

        Returns the stored items: the message (when ``content`` or no calls), then one
        ``tool_call`` item per call, whose ``content`` is the call's arguments as JSON text
        (as the model wrote them, when the call carries its ``raw_arguments``).
        """
        items = []
        if content or not tool_calls:
            items.append(self._item("message", "assistant", content, importance, metadata))
        for call in tool_calls:
            items.append(
                self._item(
                    "tool_call",
                    "assistant",
                    arguments_text(call),
                    importance,
                    metadata,
                    tool_call_id=call.id,
                    tool_name=call.name,
                )
            )
        return await self.record_many(items)

    async def record_tool_result(
        self,
        tool_call_id: str,
        content: str,
        *,
        tool_name: str = "",
        is_error: bool = False,
        importance: float = 0.5,
        metadata: Mapping[str, str] | None = None,
    ) -> ContextItem:
        """Record a tool's result for the call ``tool_call_id`` (offloaded when large)."""
        meta = dict(metadata or {})
        if is_error:
            meta["is_error"] = "true"
        item = self._item(
            "tool_result",
            "tool",
            content,
            importance,
            meta,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
        )
        return await self.record(item)

    async def record_event(
        self, event: Event, *, importance: float = 0.5, role: Role = "user"
    ) -> ContextItem:
        """Record an event the agent received, as ``[event TYPE from SOURCE] payload``.

        The payload is read as UTF-8 (invalid bytes replaced). The event's id, type and source
        go into metadata; its timestamp becomes the item's.
        """
        payload = event.payload.decode("utf-8", errors="replace")
        source = f" from {event.source}" if event.source else ""
        text = f"[event {event.type or 'untyped'}{source}] {payload}".rstrip()
        item = self._item(
            "event",
            role,
            text,
            importance,
            {"event_id": event.id, "event_type": event.type, "source": event.source},
        )
        return await self.record(msgspec.structs.replace(item, timestamp_ms=event.timestamp_ms))

    async def record_observation(
        self,
        content: str,
        *,
        importance: float = 0.5,
        role: Role = "user",
        metadata: Mapping[str, str] | None = None,
    ) -> ContextItem:
        """Record an observation: something noticed rather than said (a file changed, a
        reflection, a summary)."""
        return await self.record(self._item("observation", role, content, importance, metadata))

    # ------------------------------------------------------------------ reading

    async def history(self, limit: int = 100) -> list[ContextItem]:
        """The newest ``limit`` items of this conversation, oldest first."""
        return await self.store.recent(self.agent_id, self.thread_id, limit=limit)

    async def recall(
        self, query: str, *, limit: int = 10, kinds: Collection[ItemKind] | None = None
    ) -> list[RankedItem]:
        """Retrieval on demand (for a "search memory" tool): candidates for ``query`` in the
        policy's scope, ranked by the policy, best first."""
        thread = self.thread_id if self.policy.scope == "thread" else None
        hits = await self.store.search(
            self.agent_id, query, thread_id=thread, kinds=kinds, limit=limit
        )
        return rank(hits, (), self.policy, self._clock())[:limit]

    async def forget(
        self, *, keep_last: int | None = None, older_than_ms: int | None = None
    ) -> int:
        """Retention for this conversation; see :meth:`MemoryStore.prune`."""
        return await self.store.prune(
            self.agent_id, self.thread_id, keep_last=keep_last, older_than_ms=older_than_ms
        )

    # ------------------------------------------------------------------ building

    def _cost(self, item: ContextItem) -> int:
        cost = self._costs.get(item.id)
        if cost is None:
            if len(self._costs) >= _COST_CACHE_SIZE:
                self._costs.clear()
            cost = self._costs[item.id] = item_tokens(item, self.counter)
        return cost

    def _tool_call(self, item: ContextItem) -> ToolCall:
        call = self._calls.get(item.id)
        if call is None:
            if len(self._calls) >= _COST_CACHE_SIZE:
                self._calls.clear()
            call = self._calls[item.id] = tool_call_of(item)
        return call

    async def build(
        self, *, goal: str | None = None, budget_tokens: int, system: str = ""
    ) -> list[Message]:
        """The messages of :meth:`build_prompt`."""
        prompt = await self.build_prompt(goal=goal, budget_tokens=budget_tokens, system=system)
        return list(prompt.messages)

    async def build_prompt(
        self, *, goal: str | None = None, budget_tokens: int, system: str = ""
    ) -> Prompt:
        """Build the prompt for the next model call.

        The prompt is: the ``system`` text (when given), then a system message of retrieved
        older items (when retrieval found any that fit), then the newest turns of the
        conversation, whole, in recording order, as many as fit. ``goal`` is only the
        retrieval query (default: the newest user message); record it first if the model
        should see it.

        Raises:
            InvalidArgument: ``budget_tokens`` < 1.
            BudgetTooSmall: the system text and the newest turn do not fit together.
        """
        if budget_tokens < 1:
            raise InvalidArgument(f"budget_tokens must be >= 1, got {budget_tokens}")
        head: list[Message] = []
        used = 0
        if system:
            head.append(SystemMessage(content=system))
            used = message_tokens(head[0], self.counter)
            if used > budget_tokens:
                raise BudgetTooSmall(budget_tokens, used)
        available = budget_tokens - used

        turns, exhausted = await self._fetch_turns(available)
        n, window_tokens = fit_turns(turns, available, self._cost)
        if turns and n == 0:
            raise BudgetTooSmall(budget_tokens, used + turns[-1].tokens(self._cost))
        truncated = n < len(turns) or not exhausted

        policy = self.policy
        retrieved: list[RankedItem] = []
        memory: Message | None = None
        if truncated or policy.scope == "agent":
            if truncated and policy.budget_share > 0:
                reserve = int(available * policy.budget_share)
                n, window_tokens = fit_turns(turns, max(available - reserve, 0), self._cost)
                if n == 0:  # the newest turn is always kept; retrieval gets what is left
                    n, window_tokens = 1, turns[-1].tokens(self._cost)
            window = turns[len(turns) - n :]
            query = goal if goal is not None else self._newest_user_text(window)
            memory, retrieved = await self._retrieve(query, window, available - window_tokens)
        window = turns[len(turns) - n :]

        messages = list(head)
        tokens = used + window_tokens
        if memory is not None:
            messages.append(memory)
            tokens += message_tokens(memory, self.counter)
        window_items = 0
        for turn in window:
            messages.extend(turn.messages(self._tool_call))
            window_items += len(turn.items())
        return Prompt(
            messages=tuple(messages),
            tokens=tokens,
            budget_tokens=budget_tokens,
            window_items=window_items,
            retrieved_items=len(retrieved),
            truncated=truncated,
        )

    async def _fetch_turns(self, available: int) -> tuple[list[Turn], bool]:
        """The thread's newest turns, enough to fill ``available`` tokens (or all of them).

        Returns the turns and whether the start of the thread was reached. Pages grow by
        doubling, so a long window costs a few queries, and a short one reads few rows.
        """
        # A first guess at how many items fill the budget: one round trip for most builds.
        first = min(max(available // _TOKENS_PER_ITEM_GUESS, _FIRST_PAGE), _MAX_FIRST_PAGE)
        items = await self.store.recent(self.agent_id, self.thread_id, limit=first)
        exhausted = len(items) < first
        while True:
            turns = group_turns(items)
            n, _ = fit_turns(turns, available, self._cost)
            if exhausted or n < len(turns):
                return turns, exhausted
            # Everything fetched fits: fetch as many older items again (the pages double).
            older = await self.store.recent(
                self.agent_id, self.thread_id, limit=len(items), before_seq=items[0].seq
            )
            exhausted = len(older) < len(items)
            items = older + items

    @staticmethod
    def _newest_user_text(window: Sequence[Turn]) -> str:
        for turn in reversed(window):
            item = turn.item
            if item is not None and item.role == "user":
                return item.content
        return ""

    async def _retrieve(
        self, query: str, window: Sequence[Turn], budget: int
    ) -> tuple[Message | None, list[RankedItem]]:
        policy = self.policy
        header_cost = MESSAGE_OVERHEAD_TOKENS + self.counter.count(MEMORY_HEADER) + 2
        if budget <= header_cost or policy.max_candidates == 0:
            return None, []
        thread = self.thread_id if policy.scope == "thread" else None
        start = window[0].first_seq if window else None
        in_window = {i.id for t in window for i in t.items()}
        before = start if policy.scope == "thread" else None
        hits = await self.store.search(
            self.agent_id, query, thread_id=thread, before_seq=before, limit=policy.max_candidates
        )
        important: list[ContextItem] = []
        if policy.recall_importance <= 1.0:
            important = await self.store.query(
                self.agent_id,
                thread_id=thread,
                min_importance=policy.recall_importance,
                before_seq=before,
                limit=policy.max_candidates,
            )
        candidates = [
            r
            for r in rank(hits, important, policy, self._clock())
            if r.item.id not in in_window
            and not (
                r.item.thread_id == self.thread_id and start is not None and r.item.seq >= start
            )
        ]
        chosen: list[tuple[RankedItem, str, int]] = []
        used = header_cost
        for ranked in candidates:
            text = ranked.item.content
            if len(text) > policy.max_item_chars:
                text = text[: policy.max_item_chars] + " [...]"
            line = _label(ranked.item) + text.replace("\n", "\n  ")
            cost = self.counter.count(line) + 2
            if used + cost <= budget:
                chosen.append((ranked, line, cost))
                used += cost
        while chosen:
            # Estimates of the parts need not add up exactly to the estimate of the whole;
            # the whole is what counts, so shed the least relevant lines until it fits.
            in_order = sorted(chosen, key=lambda c: c[0].item.seq)
            content = "\n".join([MEMORY_HEADER, *(line for _, line, _ in in_order)])
            memory = SystemMessage(content=content)
            if message_tokens(memory, self.counter) <= budget:
                return memory, [r for r, _, _ in in_order]
            chosen.pop()
        return None, []
