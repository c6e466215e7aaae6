from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QoSLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QOS_REALTIME: _ClassVar[QoSLevel]
    QOS_BATCHED: _ClassVar[QoSLevel]
    QOS_BACKGROUND: _ClassVar[QoSLevel]
QOS_REALTIME: QoSLevel
QOS_BATCHED: QoSLevel
QOS_BACKGROUND: QoSLevel

class Event(_message.Message):
    __slots__ = ("id", "type", "timestamp_ms", "source", "metadata", "payload", "confidence", "tags", "priority", "envelope")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    timestamp_ms: int
    source: str
    metadata: _containers.ScalarMap[str, str]
    payload: bytes
    confidence: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    envelope: Envelope
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., source: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., confidence: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., envelope: _Optional[_Union[Envelope, _Mapping]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("thread_id", "correlation_id", "sender", "reply_to", "ttl", "hop", "traceparent", "tracestate")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    HOP_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    correlation_id: str
    sender: str
    reply_to: str
    ttl: int
    hop: int
    traceparent: str
    tracestate: str
    def __init__(self, thread_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., sender: _Optional[str] = ..., reply_to: _Optional[str] = ..., ttl: _Optional[int] = ..., hop: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...
