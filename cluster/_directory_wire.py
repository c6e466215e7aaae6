"""What nodes of one cluster tell each other about agents and tool calls: msgspec records,
encoded as JSON (the directory, in a JetStream KV bucket) or msgpack (calls, on core NATS).

Pure: no I/O. A :class:`~loom.runtime.tools.ToolError` crosses as a :class:`CallError` of
its kind and is rebuilt as the same class on the calling node, so a caller sees the error the
provider raised, whichever node it was on.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from loom.runtime import AgentNotFound
from loom.runtime.tools import (
    CallDepthExceeded,
    InvalidToolArguments,
    ScopeUnavailable,
    ToolCallRefused,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
    ToolUnavailable,
)

__all__ = [
    "AGENT_DISCONNECTED",
    "ENDED_STATUSES",
    "AgentRecord",
    "CallError",
    "CallOutput",
    "CallReply",
    "CallRequest",
    "NodeRecord",
    "ToolRecord",
    "agent_key",
    "error_from_wire",
    "error_to_wire",
    "node_key",
]

ENDED_STATUSES = frozenset({"stopped", "failed", "disconnected"})
"""An agent in one of these states (as its node wrote it) is not live: its id may be taken."""

AGENT_DISCONNECTED = "AGENT_DISCONNECTED"
"""``ToolFailed.cause_type`` of a call whose provider vanished (as the bridge says it)."""


class ToolRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One capability an agent offers, as another node needs it to describe and call it."""

    name: str
    description: str = ""
    parameters_schema: str = "{}"  # JSON text
    validates_arguments: bool = False


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One agent of the cluster, as its node publishes it (key ``agents.<id, base64url>``).

    Attributes:
        load: mailbox depth plus calls in flight at the last heartbeat: what other nodes'
            least-busy choice weighs it by.
    """

    id: str
    node: str
    status: str
    patterns: tuple[str, ...] = ()
    tools: tuple[ToolRecord, ...] = ()
    metadata: dict[str, str] = {}
    restarts: int = 0
    load: int = 0
    heartbeat_ms: int = 0


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A node is alive (key ``nodes.<name>``, put every heartbeat interval)."""

    node: str
    heartbeat_s: float
    heartbeat_ms: int


def agent_key(agent_id: str) -> str:
    """The KV key of an agent: agent ids may hold ``:@+`` that KV keys may not."""
    return "agents." + base64.urlsafe_b64encode(agent_id.encode()).decode().rstrip("=")


def node_key(node: str) -> str:
    return f"nodes.{node}"


class CallRequest(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A node asks another to run a capability of one of its agents.

    Attributes:
        id: the caller's id of the call (unique on the calling node).
        caller: the calling node (where a cancel comes from).
        agent: the providing agent, chosen by the caller.
        tool: the capability's name.
        arguments: the arguments object, as JSON text.
        timeout_ms: what is left of the caller's timeout (0: the provider's default).
        reply: the subject to answer on.
        headers: the call scope of the turn the call is made for (``loom-scope*``, as
            ``ToolCall.headers`` carry it over the bridge), so its caps hold across nodes.
            Last and defaulted: a node that predates it sends none and ignores it.
        output: the subject the call's partial output goes to, as :class:`CallOutput`s
            (``loom.runtime.tools.stream_tool_output``); empty: the caller takes none (it has
            no sink), so none is sent. Set, it is the reply subject's ``.out`` child, so the
            pieces and the answer reach the caller through one subscription, in the order
            they were published. After ``headers``, defaulted, for the same reason.
    """

    id: str
    caller: str
    agent: str
    tool: str
    arguments: str
    timeout_ms: int
    reply: str
    headers: dict[str, str] = {}
    output: str = ""


class CallError(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A ``ToolError`` on the wire: its kind and the fields that rebuild it."""

    kind: str
    message: str = ""
    detail: str = ""
    tool: str = ""
    timeout_s: float = 0.0
    # A call refused by a cap of its turn (ToolCallRefused, CallDepthExceeded): the cap's
    # limit and the depth reached. Last and defaulted, as ``CallRequest.headers``.
    limit: int = 0
    depth: int = 0


class CallOutput(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One piece of a running call's partial output, sent to ``CallRequest.output`` before
    the call's :class:`CallReply` (none after it)."""

    id: str
    text: str


class CallReply(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The answer: ``output`` (JSON text) or ``error``.

    Attributes:
        scope_calls: the tool calls this node counted for the caller's turn while serving the
            call (its copy of the turn's scope, nested calls on further nodes included), which
            the calling node never saw: it adds them to its own count, so the turn's
            ``max_tool_calls`` holds over the whole tree (``docs/guardrails.md``, "Across the
            bridge"). Last and defaulted: a node that predates it sends none (0) and ignores
            one.
    """

    id: str
    output: str = ""
    error: CallError | None = None
    scope_calls: int = 0


def error_to_wire(exc: ToolError | AgentNotFound) -> CallError:
    """The wire form of a failed call."""
    tool = (exc.tool or "") if isinstance(exc, ToolError) else ""
    match exc:
        case AgentNotFound():
            # Chosen by the caller, gone here before the call arrived: for the caller it
            # vanished, as a bridge agent whose stream ended.
            return CallError(kind="failed", message=str(exc), detail=AGENT_DISCONNECTED)
        case ToolNotFound():
            return CallError(kind="not_found", tool=tool)
        case InvalidToolArguments():
            return CallError(kind="invalid_arguments", message=exc.reason, tool=tool)
        case ToolTimeout():
            return CallError(kind="timeout", timeout_s=exc.timeout, tool=tool)
        case ToolPermissionDenied():
            return CallError(kind="permission_denied", message=exc.reason, tool=tool)
        case CallDepthExceeded():
            return CallError(kind="depth_exceeded", limit=exc.limit, depth=exc.depth, tool=tool)
        case ScopeUnavailable():
            # A refusal with no cap reached: the authority over the scope was not answering.
            return CallError(kind="call_refused", detail=exc.budget, message=exc.why, tool=tool)
        case ToolCallRefused():
            return CallError(kind="call_refused", detail=exc.budget, limit=exc.limit, tool=tool)
        case ToolUnavailable():
            return CallError(kind="unavailable", message=exc.reason, detail=exc.server, tool=tool)
        case ToolFailed():
            return CallError(
                kind="failed", message=exc.cause_message, detail=exc.cause_type, tool=tool
            )
        case _:
            return CallError(kind="failed", message=str(exc), detail=type(exc).__name__, tool=tool)


def error_from_wire(error: CallError) -> ToolError:
    """The ``ToolError`` a failed call raises on the calling node."""
    tool = error.tool or None
    match error.kind:
        case "not_found":
            return ToolNotFound(error.tool)
        case "invalid_arguments":
            return InvalidToolArguments(error.message, tool=tool)
        case "timeout":
            return ToolTimeout(error.timeout_s, tool=tool)
        case "permission_denied":
            return ToolPermissionDenied(error.message, tool=tool)
        case "unavailable":
            return ToolUnavailable(error.detail, error.message, tool=tool)
        case "depth_exceeded":
            return CallDepthExceeded(error.depth, error.limit, tool=tool)
        case "call_refused" if error.detail == "call_scope":
            return ScopeUnavailable(error.message, tool=tool)
        case "call_refused":
            return ToolCallRefused(error.detail, error.limit, tool=tool)
        case _:
            return ToolFailed(error.detail or "ToolFailed", error.message, tool=tool)


def json_text(value: Any) -> str:
    """``value`` as JSON text (``ToolFailed`` ``EncodeError`` if it is not JSON)."""
    try:
        return msgspec.json.encode(value).decode()
    except (msgspec.EncodeError, TypeError, UnicodeDecodeError) as exc:
        raise ToolFailed("EncodeError", f"the result is not JSON: {exc}") from None
