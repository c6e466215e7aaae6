from loom.bridge._generated import bridge_pb2 as _bridge_pb2
from loom.bridge._generated import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("publishes",)
    PUBLISHES_FIELD_NUMBER: _ClassVar[int]
    publishes: _containers.RepeatedCompositeFieldContainer[_bridge_pb2.Publish]
    def __init__(self, publishes: _Optional[_Iterable[_Union[_bridge_pb2.Publish, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("accepted", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejections: _containers.RepeatedCompositeFieldContainer[_bridge_pb2.PublishRejection]
    def __init__(self, accepted: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[_bridge_pb2.PublishRejection, _Mapping]]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("subscribed", "batch")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    subscribed: _bridge_pb2.SubscribeResult
    batch: _bridge_pb2.DeliveryBatch
    def __init__(self, subscribed: _Optional[_Union[_bridge_pb2.SubscribeResult, _Mapping]] = ..., batch: _Optional[_Union[_bridge_pb2.DeliveryBatch, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("include_subscriptions", "include_topics")
    INCLUDE_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TOPICS_FIELD_NUMBER: _ClassVar[int]
    include_subscriptions: bool
    include_topics: bool
    def __init__(self, include_subscriptions: _Optional[bool] = ..., include_topics: _Optional[bool] = ...) -> None: ...

class Drops(_message.Message):
    __slots__ = ("overflow", "closed", "bytes")
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    overflow: int
    closed: int
    bytes: int
    def __init__(self, overflow: _Optional[int] = ..., closed: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class SubscriptionStats(_message.Message):
    __slots__ = ("id", "pattern", "qos", "matched", "delivered", "dropped", "queued", "high_water", "capacity", "waiting_publishers", "patterns", "in_flight", "queued_bytes", "max_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    WAITING_PUBLISHERS_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    pattern: str
    qos: _event_pb2.QoSLevel
    matched: int
    delivered: int
    dropped: Drops
    queued: int
    high_water: int
    capacity: int
    waiting_publishers: int
    patterns: _containers.RepeatedScalarFieldContainer[str]
    in_flight: int
    queued_bytes: int
    max_bytes: int
    def __init__(self, id: _Optional[int] = ..., pattern: _Optional[str] = ..., qos: _Optional[_Union[_event_pb2.QoSLevel, str]] = ..., matched: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[_Union[Drops, _Mapping]] = ..., queued: _Optional[int] = ..., high_water: _Optional[int] = ..., capacity: _Optional[int] = ..., waiting_publishers: _Optional[int] = ..., patterns: _Optional[_Iterable[str]] = ..., in_flight: _Optional[int] = ..., queued_bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class TopicStats(_message.Message):
    __slots__ = ("topic", "published", "unrouted", "delivered", "dropped")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    topic: str
    published: int
    unrouted: int
    delivered: int
    dropped: Drops
    def __init__(self, topic: _Optional[str] = ..., published: _Optional[int] = ..., unrouted: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[_Union[Drops, _Mapping]] = ...) -> None: ...

class BusStats(_message.Message):
    __slots__ = ("published", "unrouted", "delivered", "dropped", "subscriptions", "topics", "closed")
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    published: int
    unrouted: int
    delivered: int
    dropped: Drops
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionStats]
    topics: _containers.RepeatedCompositeFieldContainer[TopicStats]
    closed: bool
    def __init__(self, published: _Optional[int] = ..., unrouted: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[_Union[Drops, _Mapping]] = ..., subscriptions: _Optional[_Iterable[_Union[SubscriptionStats, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicStats, _Mapping]]] = ..., closed: _Optional[bool] = ...) -> None: ...
