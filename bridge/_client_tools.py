"""Tool-call failures on the client side of the bridge.

The status <-> error mapping itself lives in ``bridge/_status.py`` (one place for both sides);
this adds what only a client meets: an RPC that failed as a whole (no ``ToolResult``), and a
capability that raised something other than a ``ToolError`` while serving a pushed call.
"""

from __future__ import annotations

import grpc
import grpc.aio

from loom.runtime.tools import (
    InvalidToolArguments,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)

from ._status import outcome_from_error
from ._wire_types import ToolCallOutcome

__all__ = ["error_from_rpc", "outcome_from_exception"]


def error_from_rpc(name: str, exc: grpc.aio.AioRpcError, timeout: float | None) -> ToolError:
    """The error a failed ``ForwardToolCall`` RPC means for ``ctx.tool``: a passed deadline is
    a :class:`ToolTimeout`, refused credentials a :class:`ToolPermissionDenied`, anything else
    a :class:`ToolFailed` naming the status (``UNAVAILABLE``: the server went away)."""
    code = exc.code()
    details = exc.details() or code.name
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ToolTimeout(timeout if timeout is not None else 0.0, tool=name)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ToolPermissionDenied(f"{code.name}: {details}", tool=name)
    if code is grpc.StatusCode.NOT_FOUND:
        return ToolNotFound(name)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidToolArguments(details, tool=name)
    return ToolFailed(code.name, details, tool=name)


def outcome_from_exception(call_id: str, exc: Exception, *, tool: str) -> ToolCallOutcome:
    """The ``ToolResult`` reporting ``exc``, raised while serving pushed call ``call_id``."""
    if not isinstance(exc, ToolError):
        exc = ToolFailed.from_exception(exc, tool=tool)
    return outcome_from_error(call_id, exc)
