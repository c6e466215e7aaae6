from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CancelTurn(_message.Message):
    __slots__ = ("thread_id", "reason")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    reason: str
    def __init__(self, thread_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TurnCancelled(_message.Message):
    __slots__ = ("thread_id", "cancelled")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    cancelled: int
    def __init__(self, thread_id: _Optional[str] = ..., cancelled: _Optional[int] = ...) -> None: ...

class A2ACard(_message.Message):
    __slots__ = ("name", "description", "version", "skills", "stream_topic")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SKILLS_FIELD_NUMBER: _ClassVar[int]
    STREAM_TOPIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    version: str
    skills: _containers.RepeatedCompositeFieldContainer[A2ASkill]
    stream_topic: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., version: _Optional[str] = ..., skills: _Optional[_Iterable[_Union[A2ASkill, _Mapping]]] = ..., stream_topic: _Optional[str] = ...) -> None: ...

class A2ASkill(_message.Message):
    __slots__ = ("id", "name", "description", "tags", "examples")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    examples: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., examples: _Optional[_Iterable[str]] = ...) -> None: ...
