"""Tool messages of the ``loom.v1`` wire as msgspec Structs, so no ``_pb2`` type leaves ``bridge/``.

Each Struct mirrors one protobuf message field by field, with the wire's defaults. JSON travels
as text (``parameters_schema``, ``arguments``, ``output``) and stays text here: deciding what
malformed JSON means (``TOOL_INVALID_ARGUMENTS`` for arguments) is the server's job, not the
conversion's.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from loom.runtime import QoS

__all__ = [
    "HELD_METADATA",
    "QOS_KEY",
    "RELEASED_METADATA",
    "RESTARTS_KEY",
    "SECRET_METADATA",
    "VALIDATES_KEY",
    "ProviderKind",
    "ToolCallOutcome",
    "ToolCallRequest",
    "ToolDescriptor",
    "ToolErrorInfo",
    "ToolStatus",
]

SECRET_METADATA: Final = "loom-agent-secret"
"""The call metadata in which a client shows its registration secret (``RegisterAgent``,
``EventStream``): ``AgentRegisterResponse.registration_secret`` of its latest registration."""
HELD_METADATA: Final = "loom-agent-held-ms"
"""The trailing metadata of a ``RegisterAgent`` refused ``PERMISSION_DENIED`` because the id is
held for a client whose stream ended: in how many milliseconds the server frees the id (the
rest of its liveness window). A client without the secret may wait that long and try again."""
RELEASED_METADATA: Final = "loom-agent-released"
"""The trailing metadata (value ``"operator"``) of an ``EventStream`` the server ended with
``PERMISSION_DENIED`` because an operator released the agent's id (``Directory.ReleaseAgent``):
the client must not come back for the id (``AgentReleased``), unlike a refusal it might outwait."""
QOS_KEY: Final = "loom.qos"
"""``AgentRegisterRequest.metadata`` key: the tier of the agent's server-side subscriptions
(its mailbox and registered topics), ``"realtime"``, ``"batched"`` or ``"background"``;
absent: batched (what an old client gets)."""

RESTARTS_KEY: Final = "loom.process_restarts"
"""``AgentRegisterRequest.metadata`` key: how often the supervisor of the agent's process
(``loom run``) has started it again after it ended (``"2"``: this is its third process). The
server counts each one it has not seen yet among the agent's restarts (``loom agents``), on top
of those its own runtime reports; absent: ``0``."""

VALIDATES_KEY: Final = "loom.validates_arguments"
"""``ToolDescriptor.metadata`` key: ``"true"`` when the declaring agent checks every call's
arguments against the schema itself (the server then skips its own check)."""


class ProviderKind(enum.IntEnum):
    """Where a tool comes from (``loom.v1.ProviderKind``; the values are the wire's)."""

    NATIVE = 0
    WASM = 1
    GRPC = 2
    MCP = 3


class ToolStatus(enum.IntEnum):
    """How a tool call ended (``loom.v1.ToolStatus``; the values are the wire's).

    ``NOT_FOUND``: no tool has the name. ``INVALID_ARGUMENTS``: the arguments are not JSON or
    fail the tool's schema. ``TIMEOUT``: ``timeout_ms`` or the caller's deadline passed.
    ``ERROR``: anything else.
    """

    OK = 0
    ERROR = 1
    TIMEOUT = 2
    NOT_FOUND = 3
    INVALID_ARGUMENTS = 4


class ToolDescriptor(msgspec.Struct, frozen=True, kw_only=True):
    """A tool as an agent declares it or the server lists it (``loom.v1.ToolDescriptor``).

    Attributes:
        name: dotted and unique, e.g. ``fs.read``.
        description: what an LLM reads to decide when to call it.
        parameters_schema: JSON Schema of the arguments object, as JSON text.
        provider: where the tool comes from.
        metadata: free string key/values.
    """

    name: str
    description: str = ""
    parameters_schema: str = ""
    provider: ProviderKind = ProviderKind.NATIVE
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class ToolCallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One invocation of a tool by name (``loom.v1.ToolCall``).

    Attributes:
        id: unique per call; the outcome carries it back.
        name: the tool's name.
        arguments: the arguments object, as JSON text.
        headers: free string key/values for the tool's provider.
        timeout_ms: the time the call may take; 0 means the server's default. Never negative.
        correlation_id: ties the call to the conversation that made it.
        qos: the tier the caller asks for.
    """

    id: str
    name: str
    arguments: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_ms: int = 0
    correlation_id: str = ""
    qos: QoS = QoS.REALTIME


class ToolErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Why a tool call failed (``loom.v1.ToolError``).

    Attributes:
        code: a machine-readable code.
        message: what happened, in words.
        details: free string key/values.
    """

    code: str = ""
    message: str = ""
    details: dict[str, str] = msgspec.field(default_factory=dict)


class ToolCallOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a tool call (``loom.v1.ToolResult``).

    Attributes:
        id: the call's id.
        status: how it ended.
        output: the result as JSON text, when ``status`` is ``OK``.
        error: why it failed; ``None`` when the wire message carried no error.
        scope_calls: the calls the server's shared copy of the caller's turn scope counted
            (``ToolResult.scope_calls``; 0: none, or not sent).
    """

    id: str
    status: ToolStatus = ToolStatus.OK
    output: str = ""
    error: ToolErrorInfo | None = None
    scope_calls: int = 0
