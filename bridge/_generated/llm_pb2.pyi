from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolChoice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_CHOICE_AUTO: _ClassVar[ToolChoice]
    TOOL_CHOICE_NONE: _ClassVar[ToolChoice]
    TOOL_CHOICE_REQUIRED: _ClassVar[ToolChoice]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_STOP: _ClassVar[FinishReason]
    FINISH_TOOL_CALLS: _ClassVar[FinishReason]
    FINISH_LENGTH: _ClassVar[FinishReason]
    FINISH_CONTENT_FILTER: _ClassVar[FinishReason]
    FINISH_OTHER: _ClassVar[FinishReason]
TOOL_CHOICE_AUTO: ToolChoice
TOOL_CHOICE_NONE: ToolChoice
TOOL_CHOICE_REQUIRED: ToolChoice
FINISH_STOP: FinishReason
FINISH_TOOL_CALLS: FinishReason
FINISH_LENGTH: FinishReason
FINISH_CONTENT_FILTER: FinishReason
FINISH_OTHER: FinishReason

class CompleteRequest(_message.Message):
    __slots__ = ("model", "messages", "tools", "tool_choice", "temperature", "max_tokens", "timeout_s", "local_only", "latency_budget_s", "max_cost_usd", "stream")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    model: str
    messages: _containers.RepeatedCompositeFieldContainer[LLMMessage]
    tools: _containers.RepeatedCompositeFieldContainer[LLMTool]
    tool_choice: ToolChoice
    temperature: float
    max_tokens: int
    timeout_s: float
    local_only: bool
    latency_budget_s: float
    max_cost_usd: float
    stream: bool
    def __init__(self, model: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[LLMMessage, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[LLMTool, _Mapping]]] = ..., tool_choice: _Optional[_Union[ToolChoice, str]] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., timeout_s: _Optional[float] = ..., local_only: _Optional[bool] = ..., latency_budget_s: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., stream: _Optional[bool] = ...) -> None: ...

class LLMTool(_message.Message):
    __slots__ = ("name", "description", "parameters_schema")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_schema: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_schema: _Optional[str] = ...) -> None: ...

class LLMMessage(_message.Message):
    __slots__ = ("system", "user", "assistant", "tool")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ASSISTANT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    system: SystemMessage
    user: UserMessage
    assistant: AssistantMessage
    tool: ToolMessage
    def __init__(self, system: _Optional[_Union[SystemMessage, _Mapping]] = ..., user: _Optional[_Union[UserMessage, _Mapping]] = ..., assistant: _Optional[_Union[AssistantMessage, _Mapping]] = ..., tool: _Optional[_Union[ToolMessage, _Mapping]] = ...) -> None: ...

class SystemMessage(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: str
    def __init__(self, content: _Optional[str] = ...) -> None: ...

class UserMessage(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: str
    def __init__(self, content: _Optional[str] = ...) -> None: ...

class AssistantMessage(_message.Message):
    __slots__ = ("content", "tool_calls")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    content: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[LLMToolCall]
    def __init__(self, content: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[LLMToolCall, _Mapping]]] = ...) -> None: ...

class ToolMessage(_message.Message):
    __slots__ = ("tool_call_id", "content", "is_error", "name")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    content: str
    is_error: bool
    name: str
    def __init__(self, tool_call_id: _Optional[str] = ..., content: _Optional[str] = ..., is_error: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class LLMToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments", "raw_arguments", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RAW_ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments: str
    raw_arguments: str
    error: BadToolCall
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., raw_arguments: _Optional[str] = ..., error: _Optional[_Union[BadToolCall, _Mapping]] = ...) -> None: ...

class BadToolCall(_message.Message):
    __slots__ = ("kind", "message")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BAD_TOOL_CALL_NONE: _ClassVar[BadToolCall.Kind]
        BAD_TOOL_CALL_MALFORMED_ARGUMENTS: _ClassVar[BadToolCall.Kind]
        BAD_TOOL_CALL_UNKNOWN_TOOL: _ClassVar[BadToolCall.Kind]
        BAD_TOOL_CALL_OTHER: _ClassVar[BadToolCall.Kind]
    BAD_TOOL_CALL_NONE: BadToolCall.Kind
    BAD_TOOL_CALL_MALFORMED_ARGUMENTS: BadToolCall.Kind
    BAD_TOOL_CALL_UNKNOWN_TOOL: BadToolCall.Kind
    BAD_TOOL_CALL_OTHER: BadToolCall.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: BadToolCall.Kind
    message: str
    def __init__(self, kind: _Optional[_Union[BadToolCall.Kind, str]] = ..., message: _Optional[str] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("text", "tool_call", "end", "error")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    text: str
    tool_call: LLMToolCall
    end: Completion
    error: LLMFailure
    def __init__(self, text: _Optional[str] = ..., tool_call: _Optional[_Union[LLMToolCall, _Mapping]] = ..., end: _Optional[_Union[Completion, _Mapping]] = ..., error: _Optional[_Union[LLMFailure, _Mapping]] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("text", "tool_calls", "finish_reason", "usage", "model", "provider", "latency_s", "cost_usd")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    text: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[LLMToolCall]
    finish_reason: FinishReason
    usage: Usage
    model: str
    provider: str
    latency_s: float
    cost_usd: float
    def __init__(self, text: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[LLMToolCall, _Mapping]]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., latency_s: _Optional[float] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class LLMFailure(_message.Message):
    __slots__ = ("kind", "message", "provider", "http_status", "retry_after_s", "cause")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LLM_ERROR: _ClassVar[LLMFailure.Kind]
        LLM_RATE_LIMITED: _ClassVar[LLMFailure.Kind]
        LLM_TIMEOUT: _ClassVar[LLMFailure.Kind]
        LLM_PROVIDER_UNAVAILABLE: _ClassVar[LLMFailure.Kind]
        LLM_REQUEST_REJECTED: _ClassVar[LLMFailure.Kind]
        LLM_BAD_RESPONSE: _ClassVar[LLMFailure.Kind]
        LLM_NO_PROVIDER: _ClassVar[LLMFailure.Kind]
        LLM_UNKNOWN_MODEL: _ClassVar[LLMFailure.Kind]
        LLM_NOT_CONFIGURED: _ClassVar[LLMFailure.Kind]
    LLM_ERROR: LLMFailure.Kind
    LLM_RATE_LIMITED: LLMFailure.Kind
    LLM_TIMEOUT: LLMFailure.Kind
    LLM_PROVIDER_UNAVAILABLE: LLMFailure.Kind
    LLM_REQUEST_REJECTED: LLMFailure.Kind
    LLM_BAD_RESPONSE: LLMFailure.Kind
    LLM_NO_PROVIDER: LLMFailure.Kind
    LLM_UNKNOWN_MODEL: LLMFailure.Kind
    LLM_NOT_CONFIGURED: LLMFailure.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    kind: LLMFailure.Kind
    message: str
    provider: str
    http_status: int
    retry_after_s: float
    cause: LLMFailure
    def __init__(self, kind: _Optional[_Union[LLMFailure.Kind, str]] = ..., message: _Optional[str] = ..., provider: _Optional[str] = ..., http_status: _Optional[int] = ..., retry_after_s: _Optional[float] = ..., cause: _Optional[_Union[LLMFailure, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "priced")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PRICED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    priced: bool
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., priced: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "model", "locality", "supports_tools", "supports_streaming", "typical_latency_s", "cost_per_1k_input", "cost_per_1k_output", "max_output_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_INPUT_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    model: str
    locality: str
    supports_tools: bool
    supports_streaming: bool
    typical_latency_s: float
    cost_per_1k_input: float
    cost_per_1k_output: float
    max_output_tokens: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., locality: _Optional[str] = ..., supports_tools: _Optional[bool] = ..., supports_streaming: _Optional[bool] = ..., typical_latency_s: _Optional[float] = ..., cost_per_1k_input: _Optional[float] = ..., cost_per_1k_output: _Optional[float] = ..., max_output_tokens: _Optional[int] = ...) -> None: ...
