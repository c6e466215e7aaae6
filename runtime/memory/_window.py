"""The window: from a thread's items to the model's messages, within a token budget.

Items are first grouped into *turns*, the smallest pieces a prompt may hold or leave out:

* An assistant tool-call turn is an assistant ``message`` item directly followed by
  ``tool_call`` items (or ``tool_call`` items alone), together with the ``tool_result`` items
  that answer those calls, wherever they were recorded later. It renders as one assistant
  message carrying the calls, followed directly by one ``tool`` message per answered call, in
  call order. A call that has no result is left out of the message (its text stays); a turn
  left with neither text nor answered calls renders as nothing.
* A ``tool_result`` whose call is not among the items (pruned, never recorded, or recorded after
  it) is an orphan and is never rendered; so is a second result for the same call.
* Every other item is a turn of its own, rendered as one message with its role and content.

A turn is placed where its first item was recorded. The window keeps the newest turns, whole,
newest first, until the next older turn would not fit: it is always a contiguous run of turns
ending at the newest, in recording order. So every assistant tool call in a prompt is followed by
all its results, and no tool message appears without its call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..llm import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from ._items import ContextItem, tool_call_of
from ._tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter

__all__ = ["Turn", "fit_turns", "group_turns", "item_tokens"]


def item_tokens(item: ContextItem, counter: TokenCounter) -> int:
    """What ``item`` adds to a prompt, so that a turn's cost is the sum over its items.

    Consistent with :func:`~loom.runtime.memory.message_tokens`: an assistant message's text
    item carries the message overhead, each tool call its name, arguments and structure, and a
    tool-call turn without text adds one overhead for its message (see :class:`Turn`).
    """
    if item.kind == "tool_call":
        return counter.count(item.tool_name) + counter.count(item.content) + 8
    cost = MESSAGE_OVERHEAD_TOKENS + counter.count(item.content)
    if item.kind == "tool_result":
        cost += counter.count(item.tool_name) + 2
    return cost


def _plain_message(item: ContextItem) -> Message:
    # A plain item is never the tool's: tool results render only with their call.
    if item.role == "system":
        return SystemMessage(content=item.content)
    if item.role == "assistant":
        return AssistantMessage(content=item.content)
    return UserMessage(content=item.content)


_NO_CALLS: list[ContextItem] = []
_NO_RESULTS: dict[str, ContextItem] = {}


class Turn:
    """A group of items that a prompt holds whole or not at all."""

    __slots__ = ("calls", "first_seq", "item", "results", "text")

    def __init__(self, first_seq: int, item: ContextItem | None = None) -> None:
        self.first_seq = first_seq
        self.item = item  # a plain turn: one item, one message
        self.text: ContextItem | None = None  # an assistant tool-call turn's text, if any
        # Shared empties until a call arrives: most turns are plain, and a build makes hundreds.
        self.calls: list[ContextItem] = _NO_CALLS
        self.results: dict[str, ContextItem] = _NO_RESULTS

    def items(self) -> list[ContextItem]:
        """The items this turn renders (unanswered calls excluded)."""
        if self.item is not None:
            return [self.item]
        kept = [self.text] if self.text is not None else []
        for call in self.calls:
            result = self.results.get(call.tool_call_id)
            if result is not None:
                kept += [call, result]
        return kept

    def messages(self, call_of: Callable[[ContextItem], ToolCall] = tool_call_of) -> list[Message]:
        """The messages of this turn, in prompt order; ``call_of`` reads a ``tool_call`` item
        (a caller may cache what it reads: items never change)."""
        if self.item is not None:
            return [_plain_message(self.item)]
        answered = [c for c in self.calls if c.tool_call_id in self.results]
        text = self.text.content if self.text is not None else ""
        if not answered and self.text is None:
            return []
        out: list[Message] = [
            AssistantMessage(content=text, tool_calls=tuple(call_of(c) for c in answered))
        ]
        for call in answered:
            result = self.results[call.tool_call_id]
            out.append(
                ToolMessage(
                    tool_call_id=call.tool_call_id,
                    content=result.content,
                    is_error=result.metadata.get("is_error") == "true",
                    name=result.tool_name or call.tool_name,
                )
            )
        return out

    def tokens(self, cost: Callable[[ContextItem], int]) -> int:
        """The turn's size: the sum of its items' costs (plus a message overhead for a
        tool-call turn without text, whose message no item carries)."""
        items = self.items()
        total = sum(cost(i) for i in items)
        if self.item is None and self.text is None and items:
            total += MESSAGE_OVERHEAD_TOKENS
        return total


def group_turns(items: Sequence[ContextItem]) -> list[Turn]:
    """Group ``items`` (in recording order) into turns, in the order they are placed.

    Turns that render as nothing (orphan results are dropped, a text-less turn whose calls all
    went unanswered) are left out.
    """
    turns: list[Turn] = []
    open_calls: dict[str, Turn] = {}
    current: Turn | None = None  # the assistant turn that a following tool_call joins
    for item in items:
        if item.kind == "tool_call":
            if current is None:
                current = Turn(item.seq)
                turns.append(current)
            if current.calls is _NO_CALLS:
                current.calls, current.results = [], {}
            if item.tool_call_id in open_calls:
                # The same id again: the earlier call is superseded and stays unanswered.
                earlier = open_calls[item.tool_call_id]
                earlier.calls = [c for c in earlier.calls if c.tool_call_id != item.tool_call_id]
            current.calls.append(item)
            open_calls[item.tool_call_id] = current
            continue
        if item.kind == "tool_result":
            owner = open_calls.pop(item.tool_call_id, None)
            if owner is not None:
                owner.results[item.tool_call_id] = item
            current = None
            continue
        if item.kind == "message" and item.role == "assistant":
            current = Turn(item.seq)
            current.text = item
            turns.append(current)
            continue
        current = None
        turns.append(Turn(item.seq, item))
    return [t for t in turns if t.item is not None or t.text is not None or t.results]


def fit_turns(
    turns: Sequence[Turn], budget: int, cost: Callable[[ContextItem], int]
) -> tuple[int, int]:
    """How many of the newest turns fit ``budget``, and their tokens.

    Returns ``(n, tokens)``: the window is ``turns[len(turns) - n:]``.
    """
    used = 0
    n = 0
    for turn in reversed(turns):
        size = turn.tokens(cost)
        if used + size > budget:
            break
        used += size
        n += 1
    return n, used
