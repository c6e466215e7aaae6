from loom.bridge._generated import event_pb2 as _event_pb2
from loom.bridge._generated import tools_pb2 as _tools_pb2
from loom.bridge._generated import turns_pb2 as _turns_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamFeature(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_FEATURE_UNSPECIFIED: _ClassVar[StreamFeature]
    STREAM_FEATURE_BATCH: _ClassVar[StreamFeature]
    STREAM_FEATURE_PUBLISH_ACK: _ClassVar[StreamFeature]
    STREAM_FEATURE_TOOL_CANCEL: _ClassVar[StreamFeature]
    STREAM_FEATURE_TOOL_CALLS: _ClassVar[StreamFeature]
    STREAM_FEATURE_UNROUTED: _ClassVar[StreamFeature]
    STREAM_FEATURE_DELIVERY_CREDIT: _ClassVar[StreamFeature]
    STREAM_FEATURE_SUPERVISION: _ClassVar[StreamFeature]
    STREAM_FEATURE_DURABLE: _ClassVar[StreamFeature]
    STREAM_FEATURE_DURABLE_TOPICS: _ClassVar[StreamFeature]
    STREAM_FEATURE_TOOL_OUTPUT: _ClassVar[StreamFeature]
    STREAM_FEATURE_PACKED_EVENTS: _ClassVar[StreamFeature]
    STREAM_FEATURE_TURN_CANCEL: _ClassVar[StreamFeature]
STREAM_FEATURE_UNSPECIFIED: StreamFeature
STREAM_FEATURE_BATCH: StreamFeature
STREAM_FEATURE_PUBLISH_ACK: StreamFeature
STREAM_FEATURE_TOOL_CANCEL: StreamFeature
STREAM_FEATURE_TOOL_CALLS: StreamFeature
STREAM_FEATURE_UNROUTED: StreamFeature
STREAM_FEATURE_DELIVERY_CREDIT: StreamFeature
STREAM_FEATURE_SUPERVISION: StreamFeature
STREAM_FEATURE_DURABLE: StreamFeature
STREAM_FEATURE_DURABLE_TOPICS: StreamFeature
STREAM_FEATURE_TOOL_OUTPUT: StreamFeature
STREAM_FEATURE_PACKED_EVENTS: StreamFeature
STREAM_FEATURE_TURN_CANCEL: StreamFeature

class AgentRegisterRequest(_message.Message):
    __slots__ = ("agent_id", "subscribed_topics", "tools", "metadata", "durable", "a2a_card")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_TOPICS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    A2A_CARD_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    subscribed_topics: _containers.RepeatedScalarFieldContainer[str]
    tools: _containers.RepeatedCompositeFieldContainer[_tools_pb2.ToolDescriptor]
    metadata: _containers.ScalarMap[str, str]
    durable: DurableRegistration
    a2a_card: _turns_pb2.A2ACard
    def __init__(self, agent_id: _Optional[str] = ..., subscribed_topics: _Optional[_Iterable[str]] = ..., tools: _Optional[_Iterable[_Union[_tools_pb2.ToolDescriptor, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., durable: _Optional[_Union[DurableRegistration, _Mapping]] = ..., a2a_card: _Optional[_Union[_turns_pb2.A2ACard, _Mapping]] = ...) -> None: ...

class DurableRegistration(_message.Message):
    __slots__ = ("max_deliver",)
    MAX_DELIVER_FIELD_NUMBER: _ClassVar[int]
    max_deliver: int
    def __init__(self, max_deliver: _Optional[int] = ...) -> None: ...

class AgentRegisterResponse(_message.Message):
    __slots__ = ("success", "error_message", "registration_secret")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_SECRET_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error_message: str
    registration_secret: str
    def __init__(self, success: _Optional[bool] = ..., error_message: _Optional[str] = ..., registration_secret: _Optional[str] = ...) -> None: ...

class ClientEvent(_message.Message):
    __slots__ = ("publish", "ack", "ping", "tool_result", "hello", "subscribe", "unsubscribe", "publish_batch", "call", "cancel_call", "delivery_credit", "report", "dead_letter", "durable_settle", "tool_output", "turn_cancelled")
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_BATCH_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_CALL_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_CREDIT_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SETTLE_FIELD_NUMBER: _ClassVar[int]
    TOOL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TURN_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    publish: Publish
    ack: Ack
    ping: HeartbeatRequest
    tool_result: _tools_pb2.ToolResult
    hello: StreamHello
    subscribe: SubscribeRequest
    unsubscribe: UnsubscribeRequest
    publish_batch: PublishBatch
    call: _tools_pb2.ToolCall
    cancel_call: CancelToolCall
    delivery_credit: DeliveryCredit
    report: AgentReport
    dead_letter: DeadLetter
    durable_settle: DurableSettle
    tool_output: _tools_pb2.ToolOutput
    turn_cancelled: _turns_pb2.TurnCancelled
    def __init__(self, publish: _Optional[_Union[Publish, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., ping: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., tool_result: _Optional[_Union[_tools_pb2.ToolResult, _Mapping]] = ..., hello: _Optional[_Union[StreamHello, _Mapping]] = ..., subscribe: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., unsubscribe: _Optional[_Union[UnsubscribeRequest, _Mapping]] = ..., publish_batch: _Optional[_Union[PublishBatch, _Mapping]] = ..., call: _Optional[_Union[_tools_pb2.ToolCall, _Mapping]] = ..., cancel_call: _Optional[_Union[CancelToolCall, _Mapping]] = ..., delivery_credit: _Optional[_Union[DeliveryCredit, _Mapping]] = ..., report: _Optional[_Union[AgentReport, _Mapping]] = ..., dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ..., durable_settle: _Optional[_Union[DurableSettle, _Mapping]] = ..., tool_output: _Optional[_Union[_tools_pb2.ToolOutput, _Mapping]] = ..., turn_cancelled: _Optional[_Union[_turns_pb2.TurnCancelled, _Mapping]] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("delivery", "pong", "err", "tool_call", "welcome", "subscription", "delivery_batch", "publish_ack", "cancel_tool_call", "call_result", "released", "durable_patterns", "tool_output", "cancel_turn")
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_BATCH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    CALL_RESULT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    DURABLE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    TOOL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TURN_FIELD_NUMBER: _ClassVar[int]
    delivery: Delivery
    pong: HeartbeatResponse
    err: Error
    tool_call: _tools_pb2.ToolCall
    welcome: StreamWelcome
    subscription: SubscribeResult
    delivery_batch: DeliveryBatch
    publish_ack: PublishAck
    cancel_tool_call: CancelToolCall
    call_result: _tools_pb2.ToolResult
    released: Released
    durable_patterns: DurablePatterns
    tool_output: _tools_pb2.ToolOutput
    cancel_turn: _turns_pb2.CancelTurn
    def __init__(self, delivery: _Optional[_Union[Delivery, _Mapping]] = ..., pong: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., err: _Optional[_Union[Error, _Mapping]] = ..., tool_call: _Optional[_Union[_tools_pb2.ToolCall, _Mapping]] = ..., welcome: _Optional[_Union[StreamWelcome, _Mapping]] = ..., subscription: _Optional[_Union[SubscribeResult, _Mapping]] = ..., delivery_batch: _Optional[_Union[DeliveryBatch, _Mapping]] = ..., publish_ack: _Optional[_Union[PublishAck, _Mapping]] = ..., cancel_tool_call: _Optional[_Union[CancelToolCall, _Mapping]] = ..., call_result: _Optional[_Union[_tools_pb2.ToolResult, _Mapping]] = ..., released: _Optional[_Union[Released, _Mapping]] = ..., durable_patterns: _Optional[_Union[DurablePatterns, _Mapping]] = ..., tool_output: _Optional[_Union[_tools_pb2.ToolOutput, _Mapping]] = ..., cancel_turn: _Optional[_Union[_turns_pb2.CancelTurn, _Mapping]] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("topic", "event")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: _event_pb2.Event
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("topic", "event", "delivery_id")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: _event_pb2.Event
    delivery_id: int
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., delivery_id: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("timestamp_ms",)
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    def __init__(self, timestamp_ms: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("timestamp_ms", "status")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    status: str
    def __init__(self, timestamp_ms: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class StreamHello(_message.Message):
    __slots__ = ("features", "max_batch_events", "publish_window", "delivery_window", "delivery_window_bytes")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_WINDOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[StreamFeature]
    max_batch_events: int
    publish_window: int
    delivery_window: int
    delivery_window_bytes: int
    def __init__(self, features: _Optional[_Iterable[_Union[StreamFeature, str]]] = ..., max_batch_events: _Optional[int] = ..., publish_window: _Optional[int] = ..., delivery_window: _Optional[int] = ..., delivery_window_bytes: _Optional[int] = ...) -> None: ...

class StreamWelcome(_message.Message):
    __slots__ = ("features", "max_batch_events", "publish_window", "settle_ms", "delivery_window", "delivery_window_bytes", "durable_ack_wait_ms", "durable_patterns")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SETTLE_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_WINDOW_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURABLE_ACK_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[StreamFeature]
    max_batch_events: int
    publish_window: int
    settle_ms: int
    delivery_window: int
    delivery_window_bytes: int
    durable_ack_wait_ms: int
    durable_patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Iterable[_Union[StreamFeature, str]]] = ..., max_batch_events: _Optional[int] = ..., publish_window: _Optional[int] = ..., settle_ms: _Optional[int] = ..., delivery_window: _Optional[int] = ..., delivery_window_bytes: _Optional[int] = ..., durable_ack_wait_ms: _Optional[int] = ..., durable_patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("request_id", "pattern", "qos", "event_types", "buffer_size")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    pattern: str
    qos: _event_pb2.QoSLevel
    event_types: _containers.RepeatedScalarFieldContainer[str]
    buffer_size: int
    def __init__(self, request_id: _Optional[str] = ..., pattern: _Optional[str] = ..., qos: _Optional[_Union[_event_pb2.QoSLevel, str]] = ..., event_types: _Optional[_Iterable[str]] = ..., buffer_size: _Optional[int] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("request_id", "subscription_id", "pattern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    subscription_id: int
    pattern: str
    def __init__(self, request_id: _Optional[str] = ..., subscription_id: _Optional[int] = ..., pattern: _Optional[str] = ...) -> None: ...

class SubscribeResult(_message.Message):
    __slots__ = ("request_id", "ok", "subscription_id", "code", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ok: bool
    subscription_id: int
    code: str
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., ok: _Optional[bool] = ..., subscription_id: _Optional[int] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PublishBatch(_message.Message):
    __slots__ = ("publishes", "ack_requested", "packed", "packed_count")
    PUBLISHES_FIELD_NUMBER: _ClassVar[int]
    ACK_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    PACKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    publishes: _containers.RepeatedCompositeFieldContainer[Publish]
    ack_requested: bool
    packed: bytes
    packed_count: int
    def __init__(self, publishes: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ..., ack_requested: _Optional[bool] = ..., packed: _Optional[bytes] = ..., packed_count: _Optional[int] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("deliveries", "packed", "packed_count")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    PACKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    packed: bytes
    packed_count: int
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., packed: _Optional[bytes] = ..., packed_count: _Optional[int] = ...) -> None: ...

class PublishAck(_message.Message):
    __slots__ = ("sequence", "credit", "rejections")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    credit: int
    rejections: _containers.RepeatedCompositeFieldContainer[PublishRejection]
    def __init__(self, sequence: _Optional[int] = ..., credit: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[PublishRejection, _Mapping]]] = ...) -> None: ...

class PublishRejection(_message.Message):
    __slots__ = ("sequence", "code", "reason")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    code: str
    reason: str
    def __init__(self, sequence: _Optional[int] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelToolCall(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeliveryCredit(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class AgentReport(_message.Message):
    __slots__ = ("status", "reason", "restarts")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    restarts: int
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("topic", "event", "reason", "error", "attempts")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: _event_pb2.Event
    reason: str
    error: str
    attempts: int
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class Released(_message.Message):
    __slots__ = ("dead_lettered",)
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    dead_lettered: int
    def __init__(self, dead_lettered: _Optional[int] = ...) -> None: ...

class DurableSettle(_message.Message):
    __slots__ = ("acks", "naks", "dead_letters", "in_progress")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    NAKS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedScalarFieldContainer[int]
    naks: _containers.RepeatedCompositeFieldContainer[DurableNak]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DurableDeadLetter]
    in_progress: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, acks: _Optional[_Iterable[int]] = ..., naks: _Optional[_Iterable[_Union[DurableNak, _Mapping]]] = ..., dead_letters: _Optional[_Iterable[_Union[DurableDeadLetter, _Mapping]]] = ..., in_progress: _Optional[_Iterable[int]] = ...) -> None: ...

class DurableNak(_message.Message):
    __slots__ = ("delivery_id", "delay_ms")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    delay_ms: int
    def __init__(self, delivery_id: _Optional[int] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class DurableDeadLetter(_message.Message):
    __slots__ = ("delivery_id", "reason", "error")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    delivery_id: int
    reason: str
    error: str
    def __init__(self, delivery_id: _Optional[int] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class DurablePatterns(_message.Message):
    __slots__ = ("patterns",)
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, patterns: _Optional[_Iterable[str]] = ...) -> None: ...
