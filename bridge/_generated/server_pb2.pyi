from loom.bridge._generated import budget_pb2 as _budget_pb2
from loom.bridge._generated import cluster_status_pb2 as _cluster_status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("version", "started_ms", "uptime_ms", "agents", "connected", "topics", "subscriptions", "published", "dropped", "unrouted", "tool_calls", "tool_calls_running", "pending_tool_calls", "stale_after_ms", "nats_mode", "nats_url", "nats_store_dir", "nats_connected", "nats_restarts", "cluster", "namespace", "in_flight", "in_flight_bytes", "llm_cache_hits", "llm_cache_misses", "llm_cache_saved_tokens", "llm_cache_entries", "llm_cache_bytes", "approvals_pending", "approvals_approved", "approvals_denied", "approvals_expired", "approvals_answered", "budget_tokens", "budget_cost_usd", "budget_exhausted", "budget_top", "budget_window_ms", "budget_remote_tokens", "budget_remote_cost_usd", "budget_remote_calls")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    PENDING_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    STALE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    NATS_MODE_FIELD_NUMBER: _ClassVar[int]
    NATS_URL_FIELD_NUMBER: _ClassVar[int]
    NATS_STORE_DIR_FIELD_NUMBER: _ClassVar[int]
    NATS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    NATS_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LLM_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    LLM_CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    LLM_CACHE_SAVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LLM_CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LLM_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_PENDING_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_APPROVED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_DENIED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_COST_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOP_FIELD_NUMBER: _ClassVar[int]
    BUDGET_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMOTE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMOTE_COST_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMOTE_CALLS_FIELD_NUMBER: _ClassVar[int]
    version: str
    started_ms: int
    uptime_ms: int
    agents: int
    connected: int
    topics: int
    subscriptions: int
    published: int
    dropped: int
    unrouted: int
    tool_calls: int
    tool_calls_running: int
    pending_tool_calls: int
    stale_after_ms: int
    nats_mode: str
    nats_url: str
    nats_store_dir: str
    nats_connected: bool
    nats_restarts: int
    cluster: _cluster_status_pb2.ClusterStatus
    namespace: str
    in_flight: int
    in_flight_bytes: int
    llm_cache_hits: int
    llm_cache_misses: int
    llm_cache_saved_tokens: int
    llm_cache_entries: int
    llm_cache_bytes: int
    approvals_pending: int
    approvals_approved: int
    approvals_denied: int
    approvals_expired: int
    approvals_answered: int
    budget_tokens: int
    budget_cost_usd: float
    budget_exhausted: int
    budget_top: _containers.RepeatedCompositeFieldContainer[_budget_pb2.BudgetSpend]
    budget_window_ms: int
    budget_remote_tokens: int
    budget_remote_cost_usd: float
    budget_remote_calls: int
    def __init__(self, version: _Optional[str] = ..., started_ms: _Optional[int] = ..., uptime_ms: _Optional[int] = ..., agents: _Optional[int] = ..., connected: _Optional[int] = ..., topics: _Optional[int] = ..., subscriptions: _Optional[int] = ..., published: _Optional[int] = ..., dropped: _Optional[int] = ..., unrouted: _Optional[int] = ..., tool_calls: _Optional[int] = ..., tool_calls_running: _Optional[int] = ..., pending_tool_calls: _Optional[int] = ..., stale_after_ms: _Optional[int] = ..., nats_mode: _Optional[str] = ..., nats_url: _Optional[str] = ..., nats_store_dir: _Optional[str] = ..., nats_connected: _Optional[bool] = ..., nats_restarts: _Optional[int] = ..., cluster: _Optional[_Union[_cluster_status_pb2.ClusterStatus, _Mapping]] = ..., namespace: _Optional[str] = ..., in_flight: _Optional[int] = ..., in_flight_bytes: _Optional[int] = ..., llm_cache_hits: _Optional[int] = ..., llm_cache_misses: _Optional[int] = ..., llm_cache_saved_tokens: _Optional[int] = ..., llm_cache_entries: _Optional[int] = ..., llm_cache_bytes: _Optional[int] = ..., approvals_pending: _Optional[int] = ..., approvals_approved: _Optional[int] = ..., approvals_denied: _Optional[int] = ..., approvals_expired: _Optional[int] = ..., approvals_answered: _Optional[int] = ..., budget_tokens: _Optional[int] = ..., budget_cost_usd: _Optional[float] = ..., budget_exhausted: _Optional[int] = ..., budget_top: _Optional[_Iterable[_Union[_budget_pb2.BudgetSpend, _Mapping]]] = ..., budget_window_ms: _Optional[int] = ..., budget_remote_tokens: _Optional[int] = ..., budget_remote_cost_usd: _Optional[float] = ..., budget_remote_calls: _Optional[int] = ...) -> None: ...
