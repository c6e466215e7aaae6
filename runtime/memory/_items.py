"""The data of the context layer: what is recorded (:class:`ContextItem`) and what a prompt is
made of (:class:`ChatMessage`).

Both are frozen msgspec Structs and know nothing of any LLM SDK: the LLM adapters turn a list of
``ChatMessage`` into their provider's request shape.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from .._ids import new_id, now_ms
from ._errors import InvalidItem

__all__ = [
    "KINDS",
    "ROLES",
    "ChatMessage",
    "ContextItem",
    "ItemKind",
    "Prompt",
    "Role",
    "ScoredItem",
    "ToolCallRequest",
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


class ToolCallRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One tool call inside an assistant :class:`ChatMessage`.

    Attributes:
        id: the call id its result answers to.
        name: the tool's name.
        arguments: the arguments as JSON text, as the model produced them.
    """

    id: str
    name: str
    arguments: str = "{}"


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One message of a built prompt, in the shape every chat LLM API shares.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: the text (may be empty for an assistant message that only calls tools).
        tool_calls: for an assistant message, the calls it makes; each is answered by a ``tool``
            message that follows it directly.
        tool_call_id: for a ``tool`` message, the call it answers.
        name: for a ``tool`` message, the tool's name.
        is_error: for a ``tool`` message, whether the call failed (the result text says how).
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    is_error: bool = False


class Prompt(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A built prompt and how it was made.

    Attributes:
        messages: the chat messages, in order.
        tokens: their estimated size, by the context's token counter.
        budget_tokens: the budget they were fitted to.
        window_items: how many stored items of the thread's recent window made it in.
        retrieved_items: how many older items were brought back by retrieval.
        truncated: whether older items of the thread are left out of the window (the budget
            ran out before the start of the thread was reached).
    """

    messages: tuple[ChatMessage, ...]
    tokens: int
    budget_tokens: int
    window_items: int
    retrieved_items: int
    truncated: bool
