"""The Anthropic messages provider, through the official ``anthropic`` SDK.

Differences from the chat completions wire that this module absorbs:

* system messages go in the top-level ``system`` parameter (joined with blank lines);
* an assistant turn is a list of ``text`` and ``tool_use`` blocks; tool results are
  ``tool_result`` blocks of a *user* turn, and consecutive tool messages share one turn;
* tools are ``{"name", "description", "input_schema"}``; ``tool_choice`` ``required`` is
  ``{"type": "any"}``;
* the installed SDK (2.x) has no ``temperature`` parameter any more, so
  ``CompletionRequest.temperature`` is not sent on this wire;
* ``max_tokens`` is mandatory (``max_output_tokens`` of the config when a request sets none);
* ``stop_reason`` ``end_turn`` / ``tool_use`` / ``max_tokens`` become ``stop`` /
  ``tool_calls`` / ``length``.

The SDK's own OpenTelemetry spans are switched off: ours are made with the tracer provider we
are given, never the global one. The SDK is imported when a provider is made, not with this
module (see :mod:`._openai`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..resilience import Policy
from ._assemble import StreamAssembler, parse_tool_call
from ._config import ProviderConfig
from ._errors import (
    BadResponse,
    LLMError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
)
from ._openai import retry_after_seconds
from ._provider import ProviderBase
from ._toolnames import ToolNameMap
from ._types import (
    AssistantMessage,
    Completion,
    CompletionRequest,
    FinishReason,
    StreamChunk,
    SystemMessage,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic, AsyncStream
    from anthropic.types import (
        Message,
        MessageParam,
        RawMessageStreamEvent,
        ToolChoiceParam,
        ToolParam,
    )

__all__ = ["AnthropicProvider"]

_DEFAULT_BASE_URL = "https://api.anthropic.com"
_NO_KEY = "unused"
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}
_CHOICE: dict[str, ToolChoiceParam] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}


def _stop_reason(value: str | None) -> FinishReason | None:
    return None if value is None else _STOP.get(value, "other")


def _call_input(call: ToolCall) -> dict[str, Any]:
    # A malformed call goes back with an empty input; its tool_result explains the problem.
    return {} if call.error is not None else dict(call.arguments)


class AnthropicProvider(ProviderBase["AsyncStream[RawMessageStreamEvent]"]):
    """A provider on the Anthropic messages wire.

    Args:
        name: the provider's name.
        config: its ``[llm.<name>]``; ``kind`` should be ``"anthropic"``.
        tracer_provider: where ``chat {model}`` spans go.
        client: an SDK client to use instead of one built from ``config`` (it is not closed
            by :meth:`aclose`).
    """

    system = "anthropic"

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        client: AsyncAnthropic | None = None,
        policy: Policy | None = None,
    ) -> None:
        super().__init__(
            name,
            config,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            policy=policy,
        )
        self._owns_client = client is None
        if client is None:
            from anthropic import AsyncAnthropic

            # Key and base URL are always passed, so the SDK does not look for its own in the
            # process environment.
            client = AsyncAnthropic(
                api_key=config.api_key.reveal() or _NO_KEY,
                base_url=config.base_url or _DEFAULT_BASE_URL,
                timeout=config.timeout_s,
                max_retries=0,  # retries are ours: see ProviderBase
                open_telemetry=False,
            )
        self._client = client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

    # ------------------------------------------------------------------ request

    @staticmethod
    def _messages(request: CompletionRequest, names: ToolNameMap) -> tuple[str, list[MessageParam]]:
        system: list[str] = []
        turns: list[dict[str, Any]] = []
        for message in request.messages:
            match message:
                case SystemMessage(content=content):
                    system.append(content)
                case UserMessage(content=content):
                    turns.append({"role": "user", "content": content})
                case AssistantMessage(content=content, tool_calls=calls):
                    blocks: list[dict[str, Any]] = []
                    if content:
                        blocks.append({"type": "text", "text": content})
                    blocks += [
                        {
                            "type": "tool_use",
                            "id": call.id,
                            "name": names.to_wire(call.name),
                            "input": _call_input(call),
                        }
                        for call in calls
                    ]
                    turns.append({"role": "assistant", "content": blocks or content})
                case ToolMessage(tool_call_id=call_id, content=content, is_error=is_error):
                    block = {
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "content": content,
                        "is_error": is_error,
                    }
                    last = turns[-1] if turns else None
                    if (
                        last is not None
                        and last["role"] == "user"
                        and isinstance(last["content"], list)
                    ):
                        last["content"].append(block)
                    else:
                        turns.append({"role": "user", "content": [block]})
        # Plain dicts, cast once: the SDK's TypedDict unions add nothing the structure above
        # does not already guarantee.
        return "\n\n".join(system), cast("list[MessageParam]", turns)

    @staticmethod
    def _tools(request: CompletionRequest, names: ToolNameMap) -> list[ToolParam]:
        return [
            cast(
                "ToolParam",
                {
                    "name": names.to_wire(tool.name),
                    "description": tool.description,
                    "input_schema": dict(tool.parameters_schema),
                },
            )
            for tool in request.tools
        ]

    async def _create(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float, *, stream: bool
    ) -> Message | AsyncStream[RawMessageStreamEvent]:
        import anthropic

        system, messages = self._messages(request, names)
        tools = self._tools(request, names)
        return await self._client.messages.create(
            model=self._config.model,
            messages=messages,
            system=system or anthropic.omit,
            max_tokens=request.max_tokens or self._config.max_output_tokens,
            tools=tools or anthropic.omit,
            tool_choice=_CHOICE[request.tool_choice] if tools else anthropic.omit,
            stream=stream,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ answer

    async def _attempt(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> Completion:
        from anthropic.types import Message, ToolUseBlock
        from anthropic.types import TextBlock as SDKTextBlock

        response = await self._create(request, names, timeout, stream=False)
        if not isinstance(response, Message):
            raise BadResponse("expected a message", provider=self._name)
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in response.content:
            if isinstance(block, SDKTextBlock):
                text.append(block.text)
            elif isinstance(block, ToolUseBlock):
                # The SDK does not validate answers, so a server may have sent a non-object.
                arguments: object = block.input
                calls.append(
                    parse_tool_call(
                        names,
                        call_id=block.id,
                        wire_name=block.name,
                        arguments=arguments if isinstance(arguments, dict) else str(arguments),
                    )
                )
        reason = _stop_reason(response.stop_reason) or ("tool_calls" if calls else "stop")
        return Completion(
            text="".join(text),
            tool_calls=tuple(calls),
            finish_reason=reason,
            usage=Usage(
                prompt_tokens=response.usage.input_tokens,
                completion_tokens=response.usage.output_tokens,
            ),
            model=response.model,
            provider=self._name,
        )

    async def _open_stream(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> AsyncStream[RawMessageStreamEvent]:
        response = await self._create(request, names, timeout, stream=True)
        return cast("AsyncStream[RawMessageStreamEvent]", response)

    async def _read_stream(
        self, stream: AsyncStream[RawMessageStreamEvent], assembler: StreamAssembler
    ) -> AsyncGenerator[StreamChunk, None]:
        from anthropic.types import (
            InputJSONDelta,
            RawContentBlockDeltaEvent,
            RawContentBlockStartEvent,
            RawContentBlockStopEvent,
            RawMessageDeltaEvent,
            RawMessageStartEvent,
            ToolUseBlock,
        )
        from anthropic.types import TextBlock as SDKTextBlock
        from anthropic.types import TextDelta as SDKTextDelta

        tool_blocks: set[int] = set()
        async for event in stream:
            if isinstance(event, RawMessageStartEvent):
                assembler.model = event.message.model
                assembler.prompt_tokens = event.message.usage.input_tokens
            elif isinstance(event, RawContentBlockStartEvent):
                block = event.content_block
                if isinstance(block, ToolUseBlock):
                    tool_blocks.add(event.index)
                    for ready in assembler.tool_piece(
                        event.index, call_id=block.id, name=block.name, arguments=None
                    ):
                        yield ready
                elif isinstance(block, SDKTextBlock) and (text := assembler.text(block.text)):
                    yield text
            elif isinstance(event, RawContentBlockDeltaEvent):
                delta = event.delta
                if isinstance(delta, SDKTextDelta):
                    if (text := assembler.text(delta.text)) is not None:
                        yield text
                elif isinstance(delta, InputJSONDelta) and event.index in tool_blocks:
                    for ready in assembler.tool_piece(
                        event.index, call_id=None, name=None, arguments=delta.partial_json
                    ):
                        yield ready
            elif isinstance(event, RawContentBlockStopEvent):
                if event.index in tool_blocks:
                    for ready in assembler.tool_done(event.index):
                        yield ready
            elif isinstance(event, RawMessageDeltaEvent):
                if (reason := _stop_reason(event.delta.stop_reason)) is not None:
                    assembler.finish_reason = reason
                assembler.completion_tokens = event.usage.output_tokens

    async def _close_stream(self, stream: AsyncStream[RawMessageStreamEvent]) -> None:
        await stream.close()

    # ------------------------------------------------------------------ errors

    def _map_error(self, exc: Exception) -> LLMError | None:
        import anthropic

        name = self._name
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeout("the request timed out", provider=name)
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderUnavailable(f"cannot connect: {exc.message}", provider=name)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            detail = f"HTTP {status}: {exc.api_message or exc.message}"[:500]
            if status == 429:
                return RateLimited(
                    detail, provider=name, retry_after=retry_after_seconds(exc.response.headers)
                )
            # 529 is Anthropic's "overloaded".
            if status >= 500 or status == 408:
                return ProviderUnavailable(detail, provider=name, status=status)
            return RequestRejected(detail, provider=name, status=status)
        if isinstance(exc, anthropic.AnthropicError | json.JSONDecodeError):
            return BadResponse(f"unreadable answer: {exc}"[:500], provider=name)
        return None
