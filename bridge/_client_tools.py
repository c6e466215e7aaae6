"""Tool-call failures on the client side of the bridge.

The status <-> error mapping itself lives in ``bridge/_status.py`` (one place for both sides);
this adds what only a client meets: an RPC that failed as a whole (no ``ToolResult``), and a
capability that raised something other than a ``ToolError`` while serving a pushed call.
"""

from __future__ import annotations

import grpc
import grpc.aio

from loom.runtime.tools import ToolError, ToolFailed

from ._status import outcome_from_error, tool_error_from_status
from ._wire_types import ToolCallOutcome

__all__ = ["error_from_rpc", "outcome_from_exception"]


def error_from_rpc(name: str, exc: grpc.aio.AioRpcError, timeout: float | None) -> ToolError:
    """The error a failed ``ForwardToolCall`` RPC means for ``ctx.tool`` (the mapping is
    ``_status.tool_error_from_status``)."""
    return tool_error_from_status(exc.code(), exc.details() or "", tool=name, timeout=timeout)


def outcome_from_exception(call_id: str, exc: Exception, *, tool: str) -> ToolCallOutcome:
    """The ``ToolResult`` reporting ``exc``, raised while serving pushed call ``call_id``."""
    if not isinstance(exc, ToolError):
        exc = ToolFailed.from_exception(exc, tool=tool)
    return outcome_from_error(call_id, exc)
