"""The data of the memory layer: what is recorded (:class:`ContextItem`) and the prompt built
from it (:class:`Prompt`).

A prompt is made of the LLM layer's own messages (:data:`~loom.runtime.llm.Message`), so a
built prompt goes into a :class:`~loom.runtime.llm.CompletionRequest` as it is; the model's
tool calls are recorded from, and rebuilt as, :class:`~loom.runtime.llm.ToolCall`. A tool
call's arguments are stored as JSON text (:func:`arguments_text`) and read back by
:func:`tool_call_of`; those two are the stored form of a call.
"""

from __future__ import annotations

import json
import math
from typing import Literal

import msgspec

from .._ids import new_id, now_ms
from ..llm import MalformedToolArguments, Message, ToolCall
from ._errors import InvalidItem

__all__ = [
    "KINDS",
    "ROLES",
    "ContextItem",
    "ItemKind",
    "Prompt",
    "Role",
    "ScoredItem",
    "arguments_text",
    "tool_call_of",
]

ItemKind = Literal["message", "tool_call", "tool_result", "event", "observation"]
"""What an item records: a chat message, one tool call the model made, one tool's result, an
event the agent received, or an observation the agent (or its runtime) noted."""

Role = Literal["system", "user", "assistant", "tool"]
"""The chat role an item plays in a prompt."""

KINDS: tuple[ItemKind, ...] = ("message", "tool_call", "tool_result", "event", "observation")
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")

# Which roles each kind may take. A tool call is always the assistant's and a tool result always
# the tool's: the pairing rules of the window rely on it.
_ROLES_OF_KIND: dict[str, frozenset[str]] = {
    "message": frozenset({"system", "user", "assistant"}),
    "tool_call": frozenset({"assistant"}),
    "tool_result": frozenset({"tool"}),
    "event": frozenset({"system", "user"}),
    "observation": frozenset({"system", "user", "assistant"}),
}


class ContextItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recorded thing in an agent's memory.

    Attributes:
        kind: what is recorded (see :data:`ItemKind`).
        role: the chat role it plays; constrained by ``kind`` (a ``tool_call`` is ``assistant``,
            a ``tool_result`` is ``tool``, nothing else is ``tool``).
        agent_id: the agent whose memory this is.
        thread_id: the conversation it belongs to.
        content: the text. For a ``tool_call`` it is the JSON text of the arguments; for an
            offloaded ``tool_result`` it is the preview (see ``metadata["offload_path"]``).
        tool_call_id: pairs a ``tool_call`` with its ``tool_result``; required for both.
        tool_name: the tool's name; required for a ``tool_call``.
        importance: 0.0 to 1.0; retrieval favours important items (default 0.5).
        timestamp_ms: when it happened, Unix milliseconds; made for you.
        id: unique id; made for you (UUIDv7).
        seq: the store's recording order, assigned when the item is stored (0 before).
            Conversation order is ``seq`` order, not timestamp order.
        metadata: free string key/values.
    """

    kind: ItemKind
    role: Role
    agent_id: str
    thread_id: str
    content: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    importance: float = 0.5
    timestamp_ms: int = msgspec.field(default_factory=now_ms)
    id: str = msgspec.field(default_factory=new_id)
    seq: int = 0
    metadata: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _ROLES_OF_KIND:
            raise InvalidItem(f"unknown kind {self.kind!r}")
        if self.role not in _ROLES_OF_KIND[self.kind]:
            raise InvalidItem(f"a {self.kind} cannot have role {self.role!r}")
        if not self.agent_id:
            raise InvalidItem("agent_id is empty")
        if not self.thread_id:
            raise InvalidItem("thread_id is empty")
        if not self.id:
            raise InvalidItem("id is empty")
        if not (0.0 <= self.importance <= 1.0) or math.isnan(self.importance):
            raise InvalidItem(f"importance {self.importance!r} is outside 0..1")
        if self.seq < 0:
            raise InvalidItem(f"seq {self.seq} is negative")
        if self.kind in ("tool_call", "tool_result") and not self.tool_call_id:
            raise InvalidItem(f"a {self.kind} needs a tool_call_id")
        if self.kind == "tool_call" and not self.tool_name:
            raise InvalidItem("a tool_call needs a tool_name")


class ScoredItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An item found by a keyword search, with its relevance.

    Attributes:
        item: the stored item.
        score: keyword relevance, larger is better (BM25 with the sign made positive).
    """

    item: ContextItem
    score: float


def arguments_text(call: ToolCall) -> str:
    """The stored text of ``call``'s arguments: as the model wrote them when known (a malformed
    call included), else their JSON; ``{}`` for a malformed call without text."""
    if call.error is not None or call.raw_arguments:
        return call.raw_arguments or "{}"
    return json.dumps(call.arguments)


def tool_call_of(item: ContextItem) -> ToolCall:
    """The :class:`~loom.runtime.llm.ToolCall` a ``tool_call`` item records.

    Arguments that are not a JSON object come back marked malformed (so providers send ``{}``
    in their place); empty text means no arguments.
    """
    text, call_id, name = item.content, item.tool_call_id, item.tool_name
    try:
        arguments = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        arguments = None
    if isinstance(arguments, dict):
        return ToolCall(id=call_id, name=name, arguments=arguments, raw_arguments=text)
    error = MalformedToolArguments(
        "malformed arguments", call_id=call_id, tool_name=name, raw_arguments=text
    )
    return ToolCall(id=call_id, name=name, raw_arguments=text, error=error)


class Prompt(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A built prompt and how it was made.

    Attributes:
        messages: the messages for the model, in order.
        tokens: their estimated size, by the context's token counter.
        budget_tokens: the budget they were fitted to.
        window_items: how many stored items of the thread's recent window made it in.
        retrieved_items: how many older items were brought back by retrieval.
        truncated: whether older items of the thread are left out of the window (the budget
            ran out before the start of the thread was reached).
    """

    messages: tuple[Message, ...]
    tokens: int
    budget_tokens: int
    window_items: int
    retrieved_items: int
    truncated: bool
