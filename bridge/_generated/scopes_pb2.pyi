from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScopeRequest(_message.Message):
    __slots__ = ("acquire", "release")
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    acquire: ScopeAcquire
    release: ScopeRelease
    def __init__(self, acquire: _Optional[_Union[ScopeAcquire, _Mapping]] = ..., release: _Optional[_Union[ScopeRelease, _Mapping]] = ...) -> None: ...

class ScopeAcquire(_message.Message):
    __slots__ = ("reservation_id", "scope_id", "agent_id", "max_tool_calls", "max_parallel_tool_calls", "max_call_depth", "wait", "tool")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    scope_id: str
    agent_id: str
    max_tool_calls: int
    max_parallel_tool_calls: int
    max_call_depth: int
    wait: bool
    tool: str
    def __init__(self, reservation_id: _Optional[str] = ..., scope_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., max_tool_calls: _Optional[int] = ..., max_parallel_tool_calls: _Optional[int] = ..., max_call_depth: _Optional[int] = ..., wait: _Optional[bool] = ..., tool: _Optional[str] = ...) -> None: ...

class ScopeRelease(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ScopeReply(_message.Message):
    __slots__ = ("reservation_id", "kind", "budget", "limit")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ScopeReply.Kind]
        KIND_GRANTED: _ClassVar[ScopeReply.Kind]
        KIND_QUEUED: _ClassVar[ScopeReply.Kind]
        KIND_REFUSED: _ClassVar[ScopeReply.Kind]
    KIND_UNSPECIFIED: ScopeReply.Kind
    KIND_GRANTED: ScopeReply.Kind
    KIND_QUEUED: ScopeReply.Kind
    KIND_REFUSED: ScopeReply.Kind
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    kind: ScopeReply.Kind
    budget: str
    limit: int
    def __init__(self, reservation_id: _Optional[str] = ..., kind: _Optional[_Union[ScopeReply.Kind, str]] = ..., budget: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...
