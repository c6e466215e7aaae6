from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATUS_UNSPECIFIED: _ClassVar[AgentStatus]
    AGENT_STATUS_CREATED: _ClassVar[AgentStatus]
    AGENT_STATUS_STARTING: _ClassVar[AgentStatus]
    AGENT_STATUS_RUNNING: _ClassVar[AgentStatus]
    AGENT_STATUS_STOPPING: _ClassVar[AgentStatus]
    AGENT_STATUS_STOPPED: _ClassVar[AgentStatus]
    AGENT_STATUS_FAILED: _ClassVar[AgentStatus]
    AGENT_STATUS_STALE: _ClassVar[AgentStatus]
    AGENT_STATUS_DISCONNECTED: _ClassVar[AgentStatus]
AGENT_STATUS_UNSPECIFIED: AgentStatus
AGENT_STATUS_CREATED: AgentStatus
AGENT_STATUS_STARTING: AgentStatus
AGENT_STATUS_RUNNING: AgentStatus
AGENT_STATUS_STOPPING: AgentStatus
AGENT_STATUS_STOPPED: AgentStatus
AGENT_STATUS_FAILED: AgentStatus
AGENT_STATUS_STALE: AgentStatus
AGENT_STATUS_DISCONNECTED: AgentStatus

class ReleaseAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class ReleaseAgentResponse(_message.Message):
    __slots__ = ("released", "was_connected")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    WAS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    was_connected: bool
    def __init__(self, released: _Optional[bool] = ..., was_connected: _Optional[bool] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("capability", "topic")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    capability: str
    topic: str
    def __init__(self, capability: _Optional[str] = ..., topic: _Optional[str] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("id", "status", "remote", "patterns", "capabilities", "last_heartbeat_ms", "mailbox_depth", "in_flight", "restarts", "metadata", "node")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: AgentStatus
    remote: bool
    patterns: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    last_heartbeat_ms: int
    mailbox_depth: int
    in_flight: int
    restarts: int
    metadata: _containers.ScalarMap[str, str]
    node: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., remote: _Optional[bool] = ..., patterns: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., last_heartbeat_ms: _Optional[int] = ..., mailbox_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., restarts: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., node: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...
