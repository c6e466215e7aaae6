"""Turning what a provider sent into :class:`ToolCall`s and stream chunks (sans-IO).

Both providers feed the same :class:`StreamAssembler`: text pieces, and tool-call pieces keyed
by the call's index in the answer (OpenAI sends ``tool_calls[i].index``, Anthropic a content
block index). A call is emitted whole, with its arguments parsed, as soon as it is known to be
complete: when the provider says so (Anthropic's ``content_block_stop``), when a later call
starts (OpenAI sends calls one after another), or at the end of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import MalformedToolArguments, UnknownTool
from ._toolnames import ToolNameMap
from ._types import (
    Completion,
    FinishReason,
    StreamChunk,
    StreamEnd,
    TextDelta,
    ToolCall,
    ToolCallReady,
    Usage,
)

__all__ = ["StreamAssembler", "parse_tool_call"]


def parse_tool_call(
    names: ToolNameMap, *, call_id: str, wire_name: str, arguments: str | Mapping[str, Any]
) -> ToolCall:
    """A :class:`ToolCall` from the wire: name mapped back, arguments parsed, errors attached.

    ``arguments`` is the JSON text (OpenAI, and Anthropic streaming) or an already decoded
    object (Anthropic). An empty string means no arguments, as some servers send for a tool
    without parameters.
    """
    name = names.from_wire(wire_name)
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    if name is None:
        unknown = UnknownTool(
            f"the model called tool {wire_name!r}, which was not offered",
            call_id=call_id,
            tool_name=wire_name,
        )
        return ToolCall(id=call_id, name=wire_name, raw_arguments=raw, error=unknown)
    if isinstance(arguments, Mapping):
        return ToolCall(id=call_id, name=name, arguments=dict(arguments), raw_arguments=raw)
    problem = ""
    try:
        decoded = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at position {exc.pos})"
    else:
        if isinstance(decoded, dict):
            return ToolCall(id=call_id, name=name, arguments=decoded, raw_arguments=raw)
        problem = f"a JSON {type(decoded).__name__}, not an object"
    error = MalformedToolArguments(
        f"the arguments of the call to {name!r} are {problem}: {raw[:200]!r}",
        call_id=call_id,
        tool_name=name,
        raw_arguments=raw,
    )
    return ToolCall(id=call_id, name=name, raw_arguments=raw, error=error)


class _Pending:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class StreamAssembler:
    """Collects the pieces of one streamed answer and yields chunks as they become whole."""

    def __init__(self, names: ToolNameMap, *, provider: str) -> None:
        self._names = names
        self._provider = provider
        self._text: list[str] = []
        self._pending: dict[int, _Pending] = {}
        self._calls: list[ToolCall] = []
        self.finish_reason: FinishReason | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.model = ""

    def text(self, piece: str) -> TextDelta | None:
        """A text piece; ``None`` for an empty one (not worth a chunk)."""
        if not piece:
            return None
        self._text.append(piece)
        return TextDelta(text=piece)

    def tool_piece(
        self, index: int, *, call_id: str | None, name: str | None, arguments: str | None
    ) -> list[StreamChunk]:
        """A piece of the call at ``index``. A new index completes the calls before it."""
        done: list[StreamChunk] = []
        if index not in self._pending:
            for earlier in sorted(i for i in self._pending if i < index):
                done.extend(self.tool_done(earlier))
        pending = self._pending.setdefault(index, _Pending())
        if call_id:
            pending.id = call_id
        if name and name != pending.name:
            # OpenAI sends the name once; a few servers repeat it with every piece.
            pending.name += name
        if arguments:
            pending.arguments.append(arguments)
        return done

    def tool_done(self, index: int) -> list[StreamChunk]:
        """The call at ``index`` is complete: parse it and emit it."""
        pending = self._pending.pop(index, None)
        if pending is None:
            return []
        call = parse_tool_call(
            self._names,
            call_id=pending.id or f"call_{index}",
            wire_name=pending.name,
            arguments="".join(pending.arguments),
        )
        self._calls.append(call)
        return [ToolCallReady(call=call)]

    def finish(self, *, latency_s: float) -> list[StreamChunk]:
        """The answer is over: emit the calls still open, then the :class:`StreamEnd`."""
        chunks: list[StreamChunk] = []
        for index in sorted(self._pending):
            chunks.extend(self.tool_done(index))
        reason: FinishReason = self.finish_reason or ("tool_calls" if self._calls else "stop")
        completion = Completion(
            text="".join(self._text),
            tool_calls=tuple(self._calls),
            finish_reason=reason,
            usage=Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens),
            model=self.model,
            provider=self._provider,
            latency_s=latency_s,
        )
        chunks.append(StreamEnd(completion=completion))
        return chunks
