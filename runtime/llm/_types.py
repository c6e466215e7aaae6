"""What goes to a model and what comes back: messages, requests, completions, stream chunks.

All are frozen msgspec Structs. Messages and stream chunks are tagged unions (``role`` and
``kind``), so a caller dispatches with ``match`` and the history encodes to JSON as it is.
Tool names in here are always Loom's own (dotted) names; the mapping to the names an LLM API
accepts happens inside the providers (see :mod:`._toolnames`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from .._errors import InvalidArgument
from ..tools import ToolSpec
from ._errors import BadToolCall

__all__ = [
    "AssistantMessage",
    "Completion",
    "CompletionRequest",
    "FinishReason",
    "Message",
    "StreamChunk",
    "StreamEnd",
    "SystemMessage",
    "TextDelta",
    "ToolCall",
    "ToolCallReady",
    "ToolChoice",
    "ToolMessage",
    "Usage",
    "UserMessage",
]

FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "other"]
"""Why the model stopped, normalised over providers (Anthropic's ``end_turn`` is ``stop``,
``tool_use`` is ``tool_calls``, ``max_tokens`` is ``length``; anything unknown is ``other``)."""

ToolChoice = Literal["auto", "none", "required"]
"""Whether the model may (``auto``), must not (``none``) or must (``required``) call a tool."""


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call made by the model, assembled and parsed.

    Attributes:
        id: the provider's call id; the answering :class:`ToolMessage` must carry it.
        name: Loom's name of the tool (the model's own name when the tool is unknown).
        arguments: the parsed JSON object of arguments (empty when ``error`` is set).
        raw_arguments: the argument text as the model produced it ('' for calls made in code).
        error: why the call cannot be run (:class:`~loom.runtime.llm.MalformedToolArguments`,
            :class:`~loom.runtime.llm.UnknownTool`), or ``None`` for a good call. The loop
            answers such a call with a tool message carrying ``str(error)``.
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = msgspec.field(default_factory=dict)
    raw_arguments: str = ""
    error: BadToolCall | None = None


class SystemMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="role", tag="system"):
    """Instructions to the model. Several are joined, in order, for APIs that take one."""

    content: str


class UserMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="role", tag="user"):
    """What the user (or the runtime on the user's behalf) said."""

    content: str


class AssistantMessage(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="role", tag="assistant"
):
    """A turn of the model: text, tool calls, or both."""

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="role", tag="tool"):
    """The result of one tool call, answering the call with id ``tool_call_id``.

    Attributes:
        tool_call_id: the :attr:`ToolCall.id` this answers.
        content: the result (or error text) as the model should read it.
        is_error: the call failed; providers that can say so (Anthropic) tell the model.
        name: the tool's name, when known ('' otherwise). The OpenAI and Anthropic wires pair
            a result with its call by id and do not send it; it is there for whoever reads
            the history (and a token estimate counts it).
    """

    tool_call_id: str
    content: str
    is_error: bool = False
    name: str = ""


Message = SystemMessage | UserMessage | AssistantMessage | ToolMessage
"""One message of a conversation; ``role`` is the tag."""


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request to a model.

    The last three fields are routing hints read by :class:`~loom.runtime.llm.ModelRouter`;
    a provider called directly ignores them.

    Attributes:
        messages: the conversation, oldest first; at least one message.
        tools: the tools the model may call; names must be unique.
        tool_choice: see :data:`ToolChoice`; only meaningful with tools.
        temperature: sampling temperature, or ``None`` for the provider's default.
        max_tokens: cap on generated tokens, or ``None`` for the provider's default.
        timeout_s: overrides the provider's ``timeout_s`` for this request.
        local_only: the request holds data that must not leave this machine's trust
            boundary: only ``locality = "local"`` providers may serve it.
        latency_budget_s: only providers whose typical latency fits may serve it.
        max_cost_usd: only providers whose estimated cost for it fits may serve it.
    """

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    local_only: bool = False
    latency_budget_s: float | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidArgument("a completion request needs at least one message")
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InvalidArgument(f"tool names must be unique; repeated: {dupes}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise InvalidArgument(f"max_tokens must be positive, got {self.max_tokens}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidArgument(f"timeout_s must be positive, got {self.timeout_s}")


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens one call used, as the provider reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a model answered.

    Attributes:
        text: the text of the answer ('' when it only called tools).
        tool_calls: the calls it made, in order; check each ``call.error``.
        finish_reason: why it stopped.
        usage: tokens used.
        model: the model that answered, as the provider named it.
        provider: the name of the provider that served the call.
        latency_s: wall time of the call, retries included.
        cached: the answer came from the response cache: no model was called, and ``usage``
            is zero (the tokens it saved are in the cache's statistics).
        cost_usd: what the call cost in USD, when the model that answered priced it itself
            (``ServerLLM``: the server, at the provider that served the call); ``None``: the
            caller prices ``usage`` from the provider's configuration.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()
    model: str = ""
    provider: str = ""
    latency_s: float = 0.0
    cached: bool = False
    cost_usd: float | None = None

    @property
    def message(self) -> AssistantMessage:
        """The answer as a message to append to the conversation."""
        return AssistantMessage(content=self.text, tool_calls=self.tool_calls)


class TextDelta(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="text"):
    """A piece of answer text, in order."""

    text: str


class ToolCallReady(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="tool_call"):
    """A tool call whose streamed pieces are complete; ``call.error`` says if it is usable."""

    call: ToolCall


class StreamEnd(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="end"):
    """The last chunk of a stream: the whole answer, as :meth:`LLM.complete` would give it."""

    completion: Completion


StreamChunk = TextDelta | ToolCallReady | StreamEnd
"""One item of a streamed answer; ``kind`` is the tag."""
