from loom.bridge._generated import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_NATIVE: _ClassVar[ProviderKind]
    PROVIDER_WASM: _ClassVar[ProviderKind]
    PROVIDER_GRPC: _ClassVar[ProviderKind]
    PROVIDER_MCP: _ClassVar[ProviderKind]

class ToolStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_OK: _ClassVar[ToolStatus]
    TOOL_ERROR: _ClassVar[ToolStatus]
    TOOL_TIMEOUT: _ClassVar[ToolStatus]
    TOOL_NOT_FOUND: _ClassVar[ToolStatus]
    TOOL_INVALID_ARGUMENTS: _ClassVar[ToolStatus]
PROVIDER_NATIVE: ProviderKind
PROVIDER_WASM: ProviderKind
PROVIDER_GRPC: ProviderKind
PROVIDER_MCP: ProviderKind
TOOL_OK: ToolStatus
TOOL_ERROR: ToolStatus
TOOL_TIMEOUT: ToolStatus
TOOL_NOT_FOUND: ToolStatus
TOOL_INVALID_ARGUMENTS: ToolStatus

class ToolDescriptor(_message.Message):
    __slots__ = ("name", "description", "parameters_schema", "provider", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_schema: str
    provider: ProviderKind
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_schema: _Optional[str] = ..., provider: _Optional[_Union[ProviderKind, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments", "headers", "timeout_ms", "correlation_id", "qos")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments: str
    headers: _containers.ScalarMap[str, str]
    timeout_ms: int
    correlation_id: str
    qos: _event_pb2.QoSLevel
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ..., correlation_id: _Optional[str] = ..., qos: _Optional[_Union[_event_pb2.QoSLevel, str]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("id", "status", "output", "error", "scope_calls")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SCOPE_CALLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: ToolStatus
    output: str
    error: ToolError
    scope_calls: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[ToolStatus, str]] = ..., output: _Optional[str] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ..., scope_calls: _Optional[int] = ...) -> None: ...

class ToolError(_message.Message):
    __slots__ = ("code", "message", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("name_prefix", "providers")
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    providers: _containers.RepeatedScalarFieldContainer[ProviderKind]
    def __init__(self, name_prefix: _Optional[str] = ..., providers: _Optional[_Iterable[_Union[ProviderKind, str]]] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolDescriptor]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolDescriptor, _Mapping]]] = ...) -> None: ...

class ToolOutput(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ToolCallUpdate(_message.Message):
    __slots__ = ("output", "result")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    output: ToolOutput
    result: ToolResult
    def __init__(self, output: _Optional[_Union[ToolOutput, _Mapping]] = ..., result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...
