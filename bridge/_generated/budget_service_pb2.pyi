from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TurnLimitsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class TurnLimitsResponse(_message.Message):
    __slots__ = ("turn_tokens", "turn_cost_usd", "max_tool_calls", "max_parallel_tool_calls", "max_call_depth")
    TURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TURN_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    turn_tokens: int
    turn_cost_usd: float
    max_tool_calls: int
    max_parallel_tool_calls: int
    max_call_depth: int
    def __init__(self, turn_tokens: _Optional[int] = ..., turn_cost_usd: _Optional[float] = ..., max_tool_calls: _Optional[int] = ..., max_parallel_tool_calls: _Optional[int] = ..., max_call_depth: _Optional[int] = ...) -> None: ...

class SpendLimits(_message.Message):
    __slots__ = ("thread_tokens", "thread_cost_usd", "agent_tokens", "agent_cost_usd", "tenant_tokens", "tenant_cost_usd")
    THREAD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    THREAD_COST_USD_FIELD_NUMBER: _ClassVar[int]
    AGENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AGENT_COST_USD_FIELD_NUMBER: _ClassVar[int]
    TENANT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENANT_COST_USD_FIELD_NUMBER: _ClassVar[int]
    thread_tokens: int
    thread_cost_usd: float
    agent_tokens: int
    agent_cost_usd: float
    tenant_tokens: int
    tenant_cost_usd: float
    def __init__(self, thread_tokens: _Optional[int] = ..., thread_cost_usd: _Optional[float] = ..., agent_tokens: _Optional[int] = ..., agent_cost_usd: _Optional[float] = ..., tenant_tokens: _Optional[int] = ..., tenant_cost_usd: _Optional[float] = ...) -> None: ...

class HoldSpendRequest(_message.Message):
    __slots__ = ("agent_id", "thread_id", "tokens", "cost_usd", "limits")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    thread_id: str
    tokens: int
    cost_usd: float
    limits: SpendLimits
    def __init__(self, agent_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., limits: _Optional[_Union[SpendLimits, _Mapping]] = ...) -> None: ...

class HoldSpendResponse(_message.Message):
    __slots__ = ("hold_id", "refused", "limit", "spent", "needed")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    NEEDED_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    refused: str
    limit: float
    spent: float
    needed: float
    def __init__(self, hold_id: _Optional[str] = ..., refused: _Optional[str] = ..., limit: _Optional[float] = ..., spent: _Optional[float] = ..., needed: _Optional[float] = ...) -> None: ...

class SettleSpendRequest(_message.Message):
    __slots__ = ("hold_id", "tokens", "cost_usd")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    tokens: int
    cost_usd: float
    def __init__(self, hold_id: _Optional[str] = ..., tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class SettleSpendResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
