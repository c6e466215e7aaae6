from loom.bridge._generated import bridge_pb2 as _bridge_pb2
from loom.bridge._generated import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplayPosition(_message.Message):
    __slots__ = ("sequence", "time_ms", "ago_ms")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    AGO_MS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time_ms: int
    ago_ms: int
    def __init__(self, sequence: _Optional[int] = ..., time_ms: _Optional[int] = ..., ago_ms: _Optional[int] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("pattern", "since", "until")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    since: ReplayPosition
    until: ReplayPosition
    def __init__(self, pattern: _Optional[str] = ..., since: _Optional[_Union[ReplayPosition, _Mapping]] = ..., until: _Optional[_Union[ReplayPosition, _Mapping]] = ...) -> None: ...

class ReplayedEvent(_message.Message):
    __slots__ = ("delivery",)
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    delivery: _bridge_pb2.Delivery
    def __init__(self, delivery: _Optional[_Union[_bridge_pb2.Delivery, _Mapping]] = ...) -> None: ...

class DeadLetterRequest(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class DeadLetterResponse(_message.Message):
    __slots__ = ("topic", "event_id")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event_id: str
    def __init__(self, topic: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class DurableConsumerStats(_message.Message):
    __slots__ = ("name", "patterns", "pending", "in_flight", "redelivered", "overflow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    patterns: _containers.RepeatedScalarFieldContainer[str]
    pending: int
    in_flight: int
    redelivered: int
    overflow: int
    def __init__(self, name: _Optional[str] = ..., patterns: _Optional[_Iterable[str]] = ..., pending: _Optional[int] = ..., in_flight: _Optional[int] = ..., redelivered: _Optional[int] = ..., overflow: _Optional[int] = ...) -> None: ...

class DurableLogStats(_message.Message):
    __slots__ = ("stored", "bytes", "first_sequence", "last_sequence", "appended", "duplicates", "consumers")
    STORED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    bytes: int
    first_sequence: int
    last_sequence: int
    appended: int
    duplicates: int
    consumers: _containers.RepeatedCompositeFieldContainer[DurableConsumerStats]
    def __init__(self, stored: _Optional[int] = ..., bytes: _Optional[int] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., appended: _Optional[int] = ..., duplicates: _Optional[int] = ..., consumers: _Optional[_Iterable[_Union[DurableConsumerStats, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("include_subscriptions", "include_topics", "include_durable")
    INCLUDE_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TOPICS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DURABLE_FIELD_NUMBER: _ClassVar[int]
    include_subscriptions: bool
    include_topics: bool
    include_durable: bool
    def __init__(self, include_subscriptions: _Optional[bool] = ..., include_topics: _Optional[bool] = ..., include_durable: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("published", "unrouted", "delivered", "dropped", "subscriptions", "topics", "closed", "durable")
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    published: int
    unrouted: int
    delivered: int
    dropped: Drops
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionStats]
    topics: _containers.RepeatedCompositeFieldContainer[TopicStats]
    closed: bool
    durable: DurableLogStats
    def __init__(self, published: _Optional[int] = ..., unrouted: _Optional[int] = ..., delivered: _Optional[int] = ..., dropped: _Optional[_Union[Drops, _Mapping]] = ..., subscriptions: _Optional[_Iterable[_Union[SubscriptionStats, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicStats, _Mapping]]] = ..., closed: _Optional[bool] = ..., durable: _Optional[_Union[DurableLogStats, _Mapping]] = ...) -> None: ...
