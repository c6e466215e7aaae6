"""The one place where Loom's errors meet gRPC status codes and tool statuses.

Both directions live here: the server turns a :class:`LoomError` into a status code (a call's
status, an ``Error`` frame's ``code``, a rejection's ``code``) and a ``ToolError`` into a
``ToolResult``; a client turns them back. Nothing else in ``bridge/`` picks a code by itself.
"""

from __future__ import annotations

import contextlib
import math

import grpc

from loom.runtime import (
    AgentExists,
    AgentNotFound,
    BusClosed,
    DeadlineExceeded,
    InvalidArgument,
    LoomError,
    SubscriptionClosed,
    WouldBlock,
)
from loom.runtime.tools import (
    InvalidToolArguments,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)

from ._errors import (
    BindError,
    BridgeError,
    HandshakeError,
    InsecureBind,
    LimitExceeded,
    NotRegistered,
    Unauthenticated,
    WireError,
    WrongAgent,
)
from ._wire_types import ToolCallOutcome, ToolErrorInfo, ToolStatus

__all__ = [
    "StatusError",
    "code_name",
    "error_from_outcome",
    "error_from_status",
    "failed_outcome",
    "outcome_from_error",
    "status_of",
]

# First match wins: subclasses before their bases.
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (WrongAgent, grpc.StatusCode.PERMISSION_DENIED),
    (ToolPermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotRegistered, grpc.StatusCode.FAILED_PRECONDITION),
    (AgentExists, grpc.StatusCode.ALREADY_EXISTS),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (WouldBlock, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (HandshakeError, grpc.StatusCode.INVALID_ARGUMENT),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT),
    (InsecureBind, grpc.StatusCode.FAILED_PRECONDITION),
    (BindError, grpc.StatusCode.UNAVAILABLE),
    (BusClosed, grpc.StatusCode.UNAVAILABLE),
    (SubscriptionClosed, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ToolNotFound, grpc.StatusCode.NOT_FOUND),
    (AgentNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code that reports ``exc`` (``INTERNAL`` for an unexpected error)."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.UNKNOWN if isinstance(exc, LoomError) else grpc.StatusCode.INTERNAL


def code_name(code: grpc.StatusCode) -> str:
    """The code's canonical name (``"INVALID_ARGUMENT"``), as ``Error.code`` and rejections
    carry it."""
    return code.name


class StatusError(BridgeError):
    """A gRPC status that no more specific Loom error describes.

    Attributes:
        code: the status code's name, e.g. ``"UNAVAILABLE"``.
        details: the server's message.
    """

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def error_from_status(code: grpc.StatusCode | str, details: str) -> LoomError:
    """The Loom error a client raises for a failed call's status (or an ``Error`` frame)."""
    name = code.name if isinstance(code, grpc.StatusCode) else code
    match name:
        case "UNAUTHENTICATED":
            return Unauthenticated(details)
        case "PERMISSION_DENIED":
            return WrongAgent(details)
        case "INVALID_ARGUMENT":
            return InvalidArgument(details)
        case "DEADLINE_EXCEEDED":
            return DeadlineExceeded(details)
        case _:
            return StatusError(name, details)


# ------------------------------------------------------------------ tool calls


def _path(path: tuple[str | int, ...]) -> str:
    """A JSON Pointer (RFC 6901) to where in the arguments the problem is."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def outcome_from_error(call_id: str, exc: ToolError) -> ToolCallOutcome:
    """The ``ToolResult`` that reports a failed call.

    ``ToolNotFound`` -> ``NOT_FOUND``; ``InvalidToolArguments`` -> ``INVALID_ARGUMENTS``
    (``details`` has ``path``, a JSON Pointer); ``ToolTimeout`` -> ``TIMEOUT`` (``details`` has
    ``timeout_s``); anything else -> ``ERROR``, with ``code`` ``PERMISSION_DENIED`` for a
    refusal by policy and the failure's type name (``ToolFailed.cause_type``) otherwise.
    ``details["tool"]`` names the tool when known.
    """
    details = {"tool": exc.tool} if exc.tool else {}
    message = str(exc)
    match exc:
        case ToolNotFound():
            status, code = ToolStatus.NOT_FOUND, "NOT_FOUND"
        case InvalidToolArguments():
            status, code = ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS"
            details["path"] = _path(exc.path)
        case ToolTimeout():
            status, code = ToolStatus.TIMEOUT, "TIMEOUT"
            details["timeout_s"] = f"{exc.timeout:g}"
        case ToolPermissionDenied():
            status, code = ToolStatus.ERROR, "PERMISSION_DENIED"
        case ToolFailed():
            status, code = ToolStatus.ERROR, exc.cause_type
        case _:
            status, code = ToolStatus.ERROR, type(exc).__name__
    return ToolCallOutcome(
        id=call_id,
        status=status,
        error=ToolErrorInfo(code=code, message=message, details=details),
    )


def error_from_outcome(outcome: ToolCallOutcome, *, tool: str, timeout: float) -> ToolError:
    """The ``ToolError`` a failed ``ToolResult`` stands for (``outcome.status`` is not OK).

    Args:
        outcome: the result.
        tool: the tool's name.
        timeout: the call's timeout in seconds, reported when the result says ``TIMEOUT``
            without ``details["timeout_s"]``.
    """
    err = outcome.error or ToolErrorInfo()
    message = err.message or err.code or outcome.status.name.lower()
    match outcome.status:
        case ToolStatus.NOT_FOUND:
            return ToolNotFound(tool)
        case ToolStatus.INVALID_ARGUMENTS:
            return InvalidToolArguments(message, tool=tool)
        case ToolStatus.TIMEOUT:
            with contextlib.suppress(ValueError):
                timeout = float(err.details.get("timeout_s", timeout))
            return ToolTimeout(timeout if math.isfinite(timeout) else math.inf, tool=tool)
        case _ if err.code == "PERMISSION_DENIED":
            return ToolPermissionDenied(message, tool=tool)
        case _:
            return ToolFailed(err.code or "ToolError", message, tool=tool)


def failed_outcome(call_id: str, status: ToolStatus, code: str, message: str) -> ToolCallOutcome:
    """A call's outcome that is not OK: its status, ``error.code`` and message."""
    return ToolCallOutcome(
        id=call_id, status=status, error=ToolErrorInfo(code=code, message=message)
    )
