"""``loom.runtime.llm`` values <-> ``loom.v1.LLM`` messages (``proto/loom/v1/llm.proto``):
pure functions, no I/O.

Every runtime type maps one to one: a :class:`CompletionRequest` and its messages and tools,
a :class:`ToolCall` with its :class:`BadToolCall`, a :class:`Completion`, each stream chunk,
and each :class:`LLMError` with its structured fields. A round trip gives back an equal value
(errors: the same class, the same ``str()`` and fields), except what the wire does not carry:
the :class:`RouteDecision` of a :class:`NoProviderAvailable` arrives as its one-line reason in
the message, with an empty decision.

The status code a failed ``Complete`` ends with is chosen here too (:func:`failure_code`), by
the failure's kind, since one code may stand for several kinds (the ``LLMFailure`` frame
before it says which); ``_status.py`` maps the codes of the other services, one class each.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import msgspec

from loom.bridge._generated import llm_pb2
from loom.runtime import InvalidArgument
from loom.runtime.llm import (
    AssistantMessage,
    BadResponse,
    BadToolCall,
    Completion,
    CompletionRequest,
    FinishReason,
    LLMError,
    MalformedToolArguments,
    Message,
    NoModelConfigured,
    NoProviderAvailable,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    RouteDecision,
    StreamChunk,
    StreamEnd,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolChoice,
    ToolMessage,
    ToolSpec,
    UnknownModel,
    UnknownTool,
    Usage,
    UserMessage,
)

from ._errors import WireError

__all__ = [
    "chunk_from_proto",
    "chunk_to_proto",
    "completion_from_proto",
    "completion_to_proto",
    "failure_code",
    "failure_from_proto",
    "failure_to_proto",
    "request_from_proto",
    "request_to_proto",
]

_encoder = msgspec.json.Encoder()
_object = msgspec.json.Decoder(dict[str, Any])

_CHOICE: dict[ToolChoice, int] = {
    "auto": llm_pb2.TOOL_CHOICE_AUTO,
    "none": llm_pb2.TOOL_CHOICE_NONE,
    "required": llm_pb2.TOOL_CHOICE_REQUIRED,
}
_CHOICE_OF = {v: k for k, v in _CHOICE.items()}
_FINISH: dict[FinishReason, int] = {
    "stop": llm_pb2.FINISH_STOP,
    "tool_calls": llm_pb2.FINISH_TOOL_CALLS,
    "length": llm_pb2.FINISH_LENGTH,
    "content_filter": llm_pb2.FINISH_CONTENT_FILTER,
    "other": llm_pb2.FINISH_OTHER,
}
_FINISH_OF = {v: k for k, v in _FINISH.items()}

_F = llm_pb2.LLMFailure
# The kind of each error class (subclasses before their bases) and its status code.
_KINDS: tuple[tuple[type[LLMError], int, grpc.StatusCode], ...] = (
    (UnknownModel, _F.LLM_UNKNOWN_MODEL, grpc.StatusCode.NOT_FOUND),
    (NoModelConfigured, _F.LLM_NOT_CONFIGURED, grpc.StatusCode.FAILED_PRECONDITION),
    (RateLimited, _F.LLM_RATE_LIMITED, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ProviderTimeout, _F.LLM_TIMEOUT, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ProviderUnavailable, _F.LLM_PROVIDER_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
    (RequestRejected, _F.LLM_REQUEST_REJECTED, grpc.StatusCode.INVALID_ARGUMENT),
    (BadResponse, _F.LLM_BAD_RESPONSE, grpc.StatusCode.INTERNAL),
    (NoProviderAvailable, _F.LLM_NO_PROVIDER, grpc.StatusCode.UNAVAILABLE),
)
_CODE_OF_KIND = {kind: code for _cls, kind, code in _KINDS}
_MAX_CAUSES = 4  # a chain of causes travels this deep (a router's is one)


# ------------------------------------------------------------------ requests


def _optional(msg: Any, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


def _finite(value: float | None, field: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise WireError(f"CompleteRequest.{field}", f"must be finite, not {value}")
    return value


def _tool_call_to_proto(call: ToolCall, msg: llm_pb2.LLMToolCall) -> None:
    msg.id = call.id
    msg.name = call.name
    msg.arguments = _encoder.encode(call.arguments).decode()
    msg.raw_arguments = call.raw_arguments
    error = call.error
    if error is not None:
        match error:
            case MalformedToolArguments():
                kind = llm_pb2.BadToolCall.BAD_TOOL_CALL_MALFORMED_ARGUMENTS
            case UnknownTool():
                kind = llm_pb2.BadToolCall.BAD_TOOL_CALL_UNKNOWN_TOOL
            case _:
                kind = llm_pb2.BadToolCall.BAD_TOOL_CALL_OTHER
        msg.error.kind = kind
        msg.error.message = str(error)


def _tool_call_from_proto(msg: llm_pb2.LLMToolCall, where: str) -> ToolCall:
    try:
        arguments = _object.decode(msg.arguments or "{}")
    except msgspec.DecodeError:
        raise WireError(f"{where}.arguments", "is not a JSON object") from None
    error: BadToolCall | None = None
    if msg.HasField("error") and msg.error.kind != llm_pb2.BadToolCall.BAD_TOOL_CALL_NONE:
        text = msg.error.message
        match msg.error.kind:
            case llm_pb2.BadToolCall.BAD_TOOL_CALL_MALFORMED_ARGUMENTS:
                error = MalformedToolArguments(
                    text, call_id=msg.id, tool_name=msg.name, raw_arguments=msg.raw_arguments
                )
            case llm_pb2.BadToolCall.BAD_TOOL_CALL_UNKNOWN_TOOL:
                error = UnknownTool(text, call_id=msg.id, tool_name=msg.name)
            case _:
                error = BadToolCall(text, call_id=msg.id, tool_name=msg.name)
    return ToolCall(
        id=msg.id,
        name=msg.name,
        arguments=arguments,
        raw_arguments=msg.raw_arguments,
        error=error,
    )


def _message_to_proto(message: Message, msg: llm_pb2.LLMMessage) -> None:
    match message:
        case SystemMessage():
            msg.system.content = message.content
        case UserMessage():
            msg.user.content = message.content
        case AssistantMessage():
            msg.assistant.content = message.content
            msg.assistant.SetInParent()
            for call in message.tool_calls:
                _tool_call_to_proto(call, msg.assistant.tool_calls.add())
        case ToolMessage():
            tool = msg.tool
            tool.tool_call_id = message.tool_call_id
            tool.content = message.content
            tool.is_error = message.is_error
            tool.name = message.name
            tool.SetInParent()


def _message_from_proto(msg: llm_pb2.LLMMessage, where: str) -> Message:
    match msg.WhichOneof("role"):
        case "system":
            return SystemMessage(content=msg.system.content)
        case "user":
            return UserMessage(content=msg.user.content)
        case "assistant":
            calls = tuple(
                _tool_call_from_proto(c, f"{where}.assistant.tool_calls[{i}]")
                for i, c in enumerate(msg.assistant.tool_calls)
            )
            return AssistantMessage(content=msg.assistant.content, tool_calls=calls)
        case "tool":
            t = msg.tool
            return ToolMessage(
                tool_call_id=t.tool_call_id, content=t.content, is_error=t.is_error, name=t.name
            )
        case _:
            raise WireError(where, "sets no role")


def request_to_proto(
    request: CompletionRequest, *, model: str = "", stream: bool = True
) -> llm_pb2.CompleteRequest:
    """The ``CompleteRequest`` of ``request``, for the model named ``model`` ('' the router)."""
    msg = llm_pb2.CompleteRequest(
        model=model,
        tool_choice=_CHOICE[request.tool_choice],  # type: ignore[arg-type]
        local_only=request.local_only,
        stream=stream,
    )
    for message in request.messages:
        _message_to_proto(message, msg.messages.add())
    for tool in request.tools:
        msg.tools.add(
            name=tool.name,
            description=tool.description,
            parameters_schema=_encoder.encode(tool.parameters_schema).decode(),
        )
    if request.temperature is not None:
        msg.temperature = request.temperature
    if request.max_tokens is not None:
        msg.max_tokens = request.max_tokens
    if request.timeout_s is not None:
        msg.timeout_s = request.timeout_s
    if request.latency_budget_s is not None:
        msg.latency_budget_s = request.latency_budget_s
    if request.max_cost_usd is not None:
        msg.max_cost_usd = request.max_cost_usd
    return msg


def request_from_proto(msg: llm_pb2.CompleteRequest) -> CompletionRequest:
    """The runtime request of a ``CompleteRequest``.

    Raises:
        WireError: a field is malformed (a message without a role, a tool schema that is not a
            JSON object, an unknown enum value, a non-finite number).
        InvalidArgument: the request itself is invalid (no message, repeated tool names, a
            non-positive ``max_tokens`` or ``timeout_s``).
    """
    messages = tuple(
        _message_from_proto(m, f"CompleteRequest.messages[{i}]") for i, m in enumerate(msg.messages)
    )
    tools = []
    for i, t in enumerate(msg.tools):
        where = f"CompleteRequest.tools[{i}]"
        try:
            schema = _object.decode(t.parameters_schema) if t.parameters_schema else None
        except msgspec.DecodeError:
            raise WireError(f"{where}.parameters_schema", "is not a JSON object") from None
        try:
            spec = (
                ToolSpec(name=t.name, description=t.description)
                if schema is None
                else ToolSpec(name=t.name, description=t.description, parameters_schema=schema)
            )
        except InvalidArgument as exc:
            raise WireError(where, str(exc)) from None
        tools.append(spec)
    choice = _CHOICE_OF.get(msg.tool_choice)
    if choice is None:
        raise WireError("CompleteRequest.tool_choice", f"unknown value {msg.tool_choice}")
    max_tokens = _optional(msg, "max_tokens")
    return CompletionRequest(
        messages=messages,
        tools=tuple(tools),
        tool_choice=choice,
        temperature=_finite(_optional(msg, "temperature"), "temperature"),
        max_tokens=None if max_tokens is None else int(max_tokens),
        timeout_s=_finite(_optional(msg, "timeout_s"), "timeout_s"),
        local_only=msg.local_only,
        latency_budget_s=_finite(_optional(msg, "latency_budget_s"), "latency_budget_s"),
        max_cost_usd=_finite(_optional(msg, "max_cost_usd"), "max_cost_usd"),
    )


# ------------------------------------------------------------------ answers


def completion_to_proto(completion: Completion) -> llm_pb2.Completion:
    msg = llm_pb2.Completion(
        text=completion.text,
        finish_reason=_FINISH[completion.finish_reason],  # type: ignore[arg-type]
        model=completion.model,
        provider=completion.provider,
        latency_s=completion.latency_s,
    )
    msg.usage.prompt_tokens = completion.usage.prompt_tokens
    msg.usage.completion_tokens = completion.usage.completion_tokens
    if completion.cost_usd is not None:
        msg.cost_usd = completion.cost_usd
    for call in completion.tool_calls:
        _tool_call_to_proto(call, msg.tool_calls.add())
    return msg


def completion_from_proto(msg: llm_pb2.Completion) -> Completion:
    """Raises: WireError: a malformed tool call, an unknown finish reason, or a cost that is
    not a number >= 0."""
    finish = _FINISH_OF.get(msg.finish_reason)
    if finish is None:
        raise WireError("Completion.finish_reason", f"unknown value {msg.finish_reason}")
    cost: float | None = _optional(msg, "cost_usd")
    if cost is not None and not (math.isfinite(cost) and cost >= 0):
        raise WireError("Completion.cost_usd", f"must be a number >= 0, not {cost}")
    return Completion(
        text=msg.text,
        tool_calls=tuple(
            _tool_call_from_proto(c, f"Completion.tool_calls[{i}]")
            for i, c in enumerate(msg.tool_calls)
        ),
        finish_reason=finish,
        usage=Usage(
            prompt_tokens=msg.usage.prompt_tokens, completion_tokens=msg.usage.completion_tokens
        ),
        model=msg.model,
        provider=msg.provider,
        latency_s=msg.latency_s,
        cost_usd=cost,
    )


def chunk_to_proto(chunk: StreamChunk) -> llm_pb2.CompleteResponse:
    """The stream message of one chunk."""
    msg = llm_pb2.CompleteResponse()
    match chunk:
        case TextDelta():
            msg.text = chunk.text
        case ToolCallReady():
            _tool_call_to_proto(chunk.call, msg.tool_call)
        case StreamEnd():
            msg.end.CopyFrom(completion_to_proto(chunk.completion))
    return msg


def chunk_from_proto(msg: llm_pb2.CompleteResponse) -> StreamChunk | LLMError:
    """The chunk of a stream message, or the error an ``error`` message reports.

    Raises:
        WireError: an empty message or a malformed one.
    """
    match msg.WhichOneof("chunk"):
        case "text":
            return TextDelta(text=msg.text)
        case "tool_call":
            return ToolCallReady(call=_tool_call_from_proto(msg.tool_call, "tool_call"))
        case "end":
            return StreamEnd(completion=completion_from_proto(msg.end))
        case "error":
            return failure_from_proto(msg.error)
        case _:
            raise WireError("CompleteResponse", "sets no chunk")


# ------------------------------------------------------------------ errors


def failure_to_proto(exc: LLMError, depth: int = 0) -> llm_pb2.LLMFailure:
    """The ``LLMFailure`` of ``exc``: its kind, ``str()``, structured fields and cause."""
    kind = next((k for cls, k, _code in _KINDS if isinstance(exc, cls)), _F.LLM_ERROR)
    msg = llm_pb2.LLMFailure(kind=kind, message=str(exc), provider=exc.provider)  # type: ignore[arg-type]
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        msg.http_status = status
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        msg.retry_after_s = retry_after
    cause = exc.__cause__
    if isinstance(cause, LLMError) and depth < _MAX_CAUSES:
        msg.cause.CopyFrom(failure_to_proto(cause, depth + 1))
    return msg


def failure_code(failure: llm_pb2.LLMFailure) -> grpc.StatusCode:
    """The status a call that failed with ``failure`` ends with (``UNKNOWN`` for a generic
    one)."""
    return _CODE_OF_KIND.get(failure.kind, grpc.StatusCode.UNKNOWN)


def failure_from_proto(msg: llm_pb2.LLMFailure) -> LLMError:
    """The runtime error an ``LLMFailure`` reports, with its message as sent."""
    provider = msg.provider
    status = msg.http_status or None
    exc: LLMError
    match msg.kind:
        case _F.LLM_UNKNOWN_MODEL:
            exc = UnknownModel("")
        case _F.LLM_NOT_CONFIGURED:
            exc = NoModelConfigured(msg.message)
        case _F.LLM_RATE_LIMITED:
            retry = msg.retry_after_s if msg.HasField("retry_after_s") else None
            exc = RateLimited(msg.message, provider=provider, retry_after=retry)
        case _F.LLM_TIMEOUT:
            exc = ProviderTimeout(msg.message, provider=provider)
        case _F.LLM_PROVIDER_UNAVAILABLE:
            exc = ProviderUnavailable(msg.message, provider=provider, status=status)
        case _F.LLM_REQUEST_REJECTED:
            exc = RequestRejected(msg.message, provider=provider, status=status or 0)
        case _F.LLM_BAD_RESPONSE:
            exc = BadResponse(msg.message, provider=provider)
        case _F.LLM_NO_PROVIDER:
            exc = NoProviderAvailable(msg.message, decision=RouteDecision(operation="stream"))
        case _:
            exc = LLMError(msg.message, provider=provider)
    exc.provider = provider
    exc.args = (msg.message,)  # the text as the server wrote it, not rebuilt from the fields
    if msg.HasField("cause"):
        exc.__cause__ = failure_from_proto(msg.cause)
    return exc
