from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BudgetSpend(_message.Message):
    __slots__ = ("kind", "key", "tokens", "cost_usd")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    kind: str
    key: str
    tokens: int
    cost_usd: float
    def __init__(self, kind: _Optional[str] = ..., key: _Optional[str] = ..., tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ...) -> None: ...
