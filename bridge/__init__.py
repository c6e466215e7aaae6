"""``loom.bridge``: the gRPC bridge (the ``loom.v1`` wire): the server, the clients, the wire types.

Everything the SDK takes from the bridge is exported here (``tests/test_architecture.py`` fails
on an import of a ``loom.bridge._*`` module from outside ``bridge/``): :class:`BridgeServer`,
the agent-side :class:`BridgeClient` and :class:`ClientTransport` (a remote agent's connection
as the transport of its bus), the :class:`AdminClient` the CLI uses, the error classes and the
status mapping (:func:`error_from_status`, :func:`error_from_outcome`), and the pieces a host
needs to serve tool calls (:func:`run_tool_call`, the one serving path of server and SDK,
:func:`decode_output`).
"""

from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._admin import AdminClient as AdminClient
from ._admin import PublishOutcome as PublishOutcome
from ._admin import Rejection as Rejection
from ._approvals_remote import RemoteApprovals as RemoteApprovals
from ._approvals_service import ApprovalsClient as ApprovalsClient
from ._auth import TLSConfig as TLSConfig
from ._auth import is_loopback as is_loopback
from ._auth import token_weakness as token_weakness
from ._budget_remote import RemoteBudgets as RemoteBudgets
from ._cache_status import LLMCacheTotals as LLMCacheTotals
from ._calls import decode_output as decode_output
from ._calls import run_tool_call as run_tool_call
from ._client import Acceptance as Acceptance
from ._client import AgentRegistration as AgentRegistration
from ._client import BridgeClient as BridgeClient
from ._client import ClientOptions as ClientOptions
from ._client import ClientStatistics as ClientStatistics
from ._client import ClientTLS as ClientTLS
from ._client_durable import WireDurableLog as WireDurableLog
from ._client_transport import ClientTransport as ClientTransport
from ._cluster_status import ClusterInfo as ClusterInfo
from ._cluster_status import ClusterPeerInfo as ClusterPeerInfo
from ._cluster_status import ClusterPeerStatus as ClusterPeerStatus
from ._cluster_status import ClusterStatus as ClusterStatus
from ._errors import AgentReleased as AgentReleased
from ._errors import AgentUnresponsive as AgentUnresponsive
from ._errors import BindError as BindError
from ._errors import BridgeError as BridgeError
from ._errors import ClientClosed as ClientClosed
from ._errors import ConnectFailed as ConnectFailed
from ._errors import ConnectionEnded as ConnectionEnded
from ._errors import ConnectionLost as ConnectionLost
from ._errors import DurablePublishFailed as DurablePublishFailed
from ._errors import HandshakeError as HandshakeError
from ._errors import InsecureBind as InsecureBind
from ._errors import LimitExceeded as LimitExceeded
from ._errors import NotRegistered as NotRegistered
from ._errors import OutsideNamespace as OutsideNamespace
from ._errors import PublishRejected as PublishRejected
from ._errors import RegistrationRefused as RegistrationRefused
from ._errors import SubscribeRefused as SubscribeRefused
from ._errors import Unauthenticated as Unauthenticated
from ._errors import WeakToken as WeakToken
from ._errors import WireError as WireError
from ._errors import WrongAgent as WrongAgent
from ._limits import Limits as Limits
from ._llm_client import ServerLLM as ServerLLM
from ._memory_store import MEMORY_FILENAME as MEMORY_FILENAME
from ._memory_store import MemoryLimits as MemoryLimits
from ._memory_store import PlanMemory as PlanMemory
from ._reconnect import Backoff as Backoff
from ._reconnect import ConnectionStatus as ConnectionStatus
from ._reconnect import ReconnectStatistics as ReconnectStatistics
from ._reconnect import StateListener as StateListener
from ._server import BridgeServer as BridgeServer
from ._server import ServerStatistics as ServerStatistics
from ._server_status import NatsInfo as NatsInfo
from ._server_status import ServerStatus as ServerStatus
from ._server_status import loom_version as loom_version
from ._status import StatusError as StatusError
from ._status import error_from_outcome as error_from_outcome
from ._status import error_from_status as error_from_status
from ._tenants import Tenant as Tenant
from ._tenants import validate_namespace as validate_namespace
from ._wire_types import VALIDATES_KEY as VALIDATES_KEY
from ._wire_types import ProviderKind as ProviderKind
from ._wire_types import ToolCallOutcome as ToolCallOutcome
from ._wire_types import ToolCallRequest as ToolCallRequest
from ._wire_types import ToolDescriptor as ToolDescriptor
from ._wire_types import ToolErrorInfo as ToolErrorInfo
from ._wire_types import ToolStatus as ToolStatus

__all__ = [
    "MEMORY_FILENAME",
    "VALIDATES_KEY",
    "Acceptance",
    "AdminClient",
    "AgentRegistration",
    "AgentReleased",
    "AgentUnresponsive",
    "ApprovalsClient",
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
    "ClusterInfo",
    "ClusterPeerInfo",
    "ClusterPeerStatus",
    "ClusterStatus",
    "ConnectFailed",
    "ConnectionEnded",
    "ConnectionLost",
    "ConnectionStatus",
    "DurablePublishFailed",
    "HandshakeError",
    "InsecureBind",
    "LLMCacheTotals",
    "LimitExceeded",
    "Limits",
    "MemoryLimits",
    "NatsInfo",
    "NotRegistered",
    "OutsideNamespace",
    "PlanMemory",
    "ProviderKind",
    "PublishOutcome",
    "PublishRejected",
    "ReconnectStatistics",
    "RegistrationRefused",
    "Rejection",
    "RemoteApprovals",
    "RemoteBudgets",
    "ServerLLM",
    "ServerStatistics",
    "ServerStatus",
    "StateListener",
    "StatusError",
    "SubscribeRefused",
    "TLSConfig",
    "Tenant",
    "ToolCallOutcome",
    "ToolCallRequest",
    "ToolDescriptor",
    "ToolErrorInfo",
    "ToolStatus",
    "Unauthenticated",
    "WeakToken",
    "WireDurableLog",
    "WireError",
    "WrongAgent",
    "decode_output",
    "error_from_outcome",
    "error_from_status",
    "is_loopback",
    "loom_version",
    "run_tool_call",
    "token_weakness",
    "validate_namespace",
]

_set_public_module(globals())
