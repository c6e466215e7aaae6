"""``loom.bridge``: the gRPC bridge (the ``loom.v1`` wire): the server, and the wire types."""

from ._auth import TLSConfig as TLSConfig
from ._auth import is_loopback as is_loopback
from ._calls import run_tool_call as run_tool_call
from ._client import AgentRegistration as AgentRegistration
from ._client import BridgeClient as BridgeClient
from ._client import ClientOptions as ClientOptions
from ._client import ClientStatistics as ClientStatistics
from ._client import ClientTLS as ClientTLS
from ._client_transport import ClientTransport as ClientTransport
from ._errors import AgentConnected as AgentConnected
from ._errors import BindError as BindError
from ._errors import BridgeError as BridgeError
from ._errors import ClientClosed as ClientClosed
from ._errors import ConnectFailed as ConnectFailed
from ._errors import ConnectionLost as ConnectionLost
from ._errors import HandshakeError as HandshakeError
from ._errors import InsecureBind as InsecureBind
from ._errors import LimitExceeded as LimitExceeded
from ._errors import NotRegistered as NotRegistered
from ._errors import PublishRejected as PublishRejected
from ._errors import RegistrationRefused as RegistrationRefused
from ._errors import SubscribeRefused as SubscribeRefused
from ._errors import Unauthenticated as Unauthenticated
from ._errors import WireError as WireError
from ._errors import WrongAgent as WrongAgent
from ._limits import Limits as Limits
from ._reconnect import Backoff as Backoff
from ._reconnect import ConnectionStatus as ConnectionStatus
from ._reconnect import ReconnectStatistics as ReconnectStatistics
from ._server import BridgeServer as BridgeServer
from ._status import StatusError as StatusError
from ._status import error_from_status as error_from_status
from ._wire_types import ProviderKind as ProviderKind
from ._wire_types import ToolCallOutcome as ToolCallOutcome
from ._wire_types import ToolCallRequest as ToolCallRequest
from ._wire_types import ToolDescriptor as ToolDescriptor
from ._wire_types import ToolErrorInfo as ToolErrorInfo
from ._wire_types import ToolStatus as ToolStatus

__all__ = [
    "AgentConnected",
    "AgentRegistration",
    "Backoff",
    "BindError",
    "BridgeClient",
    "BridgeError",
    "BridgeServer",
    "ClientClosed",
    "ClientOptions",
    "ClientStatistics",
    "ClientTLS",
    "ClientTransport",
    "ConnectFailed",
    "ConnectionLost",
    "ConnectionStatus",
    "HandshakeError",
    "InsecureBind",
    "LimitExceeded",
    "Limits",
    "NotRegistered",
    "ProviderKind",
    "PublishRejected",
    "ReconnectStatistics",
    "RegistrationRefused",
    "StatusError",
    "SubscribeRefused",
    "TLSConfig",
    "ToolCallOutcome",
    "ToolCallRequest",
    "ToolDescriptor",
    "ToolErrorInfo",
    "ToolStatus",
    "Unauthenticated",
    "WireError",
    "WrongAgent",
    "error_from_status",
    "is_loopback",
    "run_tool_call",
]
