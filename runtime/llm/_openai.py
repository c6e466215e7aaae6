"""The OpenAI chat completions provider: OpenAI itself, vLLM, Ollama, llama.cpp's server...

Speaks the wire through the official ``openai`` SDK with native tool calling: tools go out as
``{"type": "function", "function": {"name", "description", "parameters"}}`` under their wire
names, and tool calls come back from ``message.tool_calls`` (never parsed out of text).

The SDK is imported when a provider is made, not with this module: it takes seconds and about
a hundred megabytes, which every process that only imports ``loom`` would otherwise pay. So
``loom.runtime.llm`` holds this class from the start, like any other name.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, cast

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
    import openai
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionChunk,
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
        ChatCompletionToolChoiceOptionParam,
    )

__all__ = ["OpenAIProvider", "retry_after_seconds"]

# A keyless local server still gets a bearer token: the SDK insists on one, and we must not let
# it fall back to reading OPENAI_API_KEY from the process environment.
_NO_KEY = "unused"
# Likewise the base URL is always passed: left out, the SDK would read OPENAI_BASE_URL.
_DEFAULT_BASE_URL = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 or 503 asks for: ``retry-after-ms``, or ``retry-after`` in seconds or as
    an HTTP date; ``None`` when absent or unreadable."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def wire_arguments(call: ToolCall) -> str:
    """The argument text of a past call as it goes back to the model.

    A call whose arguments were malformed goes back as ``{}``: some servers (vLLM's chat
    templates) parse the history's arguments and would refuse the whole request; the tool
    message answering it tells the model what was wrong.
    """
    if call.error is not None:
        return "{}"
    return json.dumps(call.arguments)


def finish_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    return _FINISH.get(value, "other")


class OpenAIProvider(ProviderBase["AsyncStream[ChatCompletionChunk]"]):
    """A provider on the OpenAI chat completions wire.

    Args:
        name: the provider's name.
        config: its ``[llm.<name>]``; ``kind`` should be ``"openai"``.
        tracer_provider: where ``chat {model}`` spans go.
        client: an SDK client to use instead of one built from ``config`` (it is not closed
            by :meth:`aclose`).
    """

    system = "openai"

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        client: AsyncOpenAI | None = None,
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
            from openai import AsyncOpenAI

            client = AsyncOpenAI(
                api_key=config.api_key.reveal() or _NO_KEY,
                base_url=config.base_url or _DEFAULT_BASE_URL,
                timeout=config.timeout_s,
                max_retries=0,  # retries are ours: see ProviderBase
            )
        self._client = client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

    # ------------------------------------------------------------------ request

    def _messages(
        self, request: CompletionRequest, names: ToolNameMap
    ) -> list[ChatCompletionMessageParam]:
        out: list[ChatCompletionMessageParam] = []
        for message in request.messages:
            match message:
                case SystemMessage(content=content):
                    out.append({"role": "system", "content": content})
                case UserMessage(content=content):
                    out.append({"role": "user", "content": content})
                case AssistantMessage(content=content, tool_calls=calls):
                    wire_calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": names.to_wire(call.name),
                                "arguments": wire_arguments(call),
                            },
                        }
                        for call in calls
                    ]
                    if wire_calls:
                        out.append(
                            {
                                "role": "assistant",
                                "content": content or None,
                                "tool_calls": wire_calls,
                            }
                        )
                    else:
                        out.append({"role": "assistant", "content": content})
                case ToolMessage(tool_call_id=call_id, content=content):
                    out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        return out

    @staticmethod
    def _tools(
        request: CompletionRequest, names: ToolNameMap
    ) -> list[ChatCompletionFunctionToolParam]:
        return [
            {
                "type": "function",
                "function": {
                    "name": names.to_wire(tool.name),
                    "description": tool.description,
                    "parameters": dict(tool.parameters_schema),
                },
            }
            for tool in request.tools
        ]

    async def _create(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float, *, stream: bool
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        import openai

        tools = self._tools(request, names)
        tool_choice: ChatCompletionToolChoiceOptionParam | openai.Omit = (
            request.tool_choice if tools else openai.omit
        )
        return await self._client.chat.completions.create(
            model=self._config.model,
            messages=self._messages(request, names),
            tools=tools or openai.omit,
            tool_choice=tool_choice,
            temperature=openai.omit if request.temperature is None else request.temperature,
            # Always bounded: a model left to itself may write to its context limit (a small
            # local model did, until the call timed out).
            max_tokens=request.max_tokens or self._config.max_output_tokens,
            stream=stream,
            stream_options={"include_usage": True} if stream else openai.omit,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ answer

    async def _attempt(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> Completion:
        from openai.types.chat import ChatCompletion

        response = await self._create(request, names, timeout, stream=False)
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise BadResponse("the answer has no choices", provider=self._name)
        choice = response.choices[0]
        message = choice.message
        calls: list[ToolCall] = []
        for wire_call in message.tool_calls or ():
            function = getattr(wire_call, "function", None)
            if function is None:  # a "custom" tool call: we never offer those
                raise BadResponse(
                    f"unsupported tool call type {wire_call.type!r}", provider=self._name
                )
            calls.append(
                parse_tool_call(
                    names,
                    call_id=wire_call.id,
                    wire_name=function.name,
                    arguments=function.arguments or "",
                )
            )
        usage = response.usage
        reason = finish_reason(choice.finish_reason) or ("tool_calls" if calls else "stop")
        return Completion(
            text=message.content or "",
            tool_calls=tuple(calls),
            finish_reason=reason,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            model=response.model,
            provider=self._name,
        )

    async def _open_stream(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> AsyncStream[ChatCompletionChunk]:
        response = await self._create(request, names, timeout, stream=True)
        return cast("AsyncStream[ChatCompletionChunk]", response)

    async def _read_stream(
        self, stream: AsyncStream[ChatCompletionChunk], assembler: StreamAssembler
    ) -> AsyncGenerator[StreamChunk, None]:
        async for chunk in stream:
            if chunk.model:
                assembler.model = chunk.model
            if chunk.usage is not None:
                assembler.prompt_tokens = chunk.usage.prompt_tokens
                assembler.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices[:1]:
                delta = choice.delta
                if delta.content and (text := assembler.text(delta.content)) is not None:
                    yield text
                for piece in delta.tool_calls or ():
                    function = piece.function
                    for ready in assembler.tool_piece(
                        piece.index,
                        call_id=piece.id,
                        name=function.name if function else None,
                        arguments=function.arguments if function else None,
                    ):
                        yield ready
                if (reason := finish_reason(choice.finish_reason)) is not None:
                    assembler.finish_reason = reason

    async def _close_stream(self, stream: AsyncStream[ChatCompletionChunk]) -> None:
        await stream.close()

    # ------------------------------------------------------------------ errors

    def _map_error(self, exc: Exception) -> LLMError | None:
        import openai

        name = self._name
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout("the request timed out", provider=name)
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(f"cannot connect: {exc.message}", provider=name)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = f"HTTP {status}: {_server_message(exc.body) or exc.message}"[:500]
            if status == 429:
                return RateLimited(
                    detail, provider=name, retry_after=retry_after_seconds(exc.response.headers)
                )
            if status >= 500 or status == 408:
                return ProviderUnavailable(detail, provider=name, status=status)
            return RequestRejected(detail, provider=name, status=status)
        if isinstance(exc, openai.OpenAIError | json.JSONDecodeError):
            return BadResponse(f"unreadable answer: {exc}"[:500], provider=name)
        return None


def _server_message(body: object) -> str:
    """The human message of an error body (``{"error": {"message": ...}}`` or flatter)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message")
            return message if isinstance(message, str) else ""
        if isinstance(inner, str):
            return inner
    return ""
