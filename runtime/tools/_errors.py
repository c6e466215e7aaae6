"""Typed errors of tool calls.

Every failure a caller of :meth:`ToolRegistry.call` sees is a :class:`ToolError`, so the gRPC
bridge and the LLM loop can map it by kind: not found, invalid arguments, timeout, permission
denied, failed. Cancellation is never wrapped: a cancelled call raises the backend's
cancellation exception as usual.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import DeadlineExceeded, InvalidArgument, LoomError

__all__ = [
    "InvalidToolArguments",
    "InvalidToolSchema",
    "ToolError",
    "ToolFailed",
    "ToolNotFound",
    "ToolPermissionDenied",
    "ToolTimeout",
    "ToolUnavailable",
]


class ToolError(LoomError):
    """Base of every error a tool call raises on purpose: a call that was made and went wrong.

    The kind says how (missing, bad arguments, timed out, refused, failed), and each crosses
    the wire as its own ``ToolResult`` status. A tool call the model got wrong before any call
    was made is :class:`~loom.runtime.llm.BadToolCall` instead.

    Attributes:
        tool: the name of the tool involved, or ``None`` while unknown (a tool may raise
            without naming itself; the registry fills it in before the error leaves
            :meth:`ToolRegistry.call`).
    """

    def __init__(self, message: str, *, tool: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.tool}: {message}" if self.tool else message


class ToolNotFound(ToolError, LookupError):
    """No tool of that name is registered; nothing was called."""

    def __init__(self, tool: str) -> None:
        super().__init__("no such tool", tool=tool)


class InvalidToolArguments(ToolError, InvalidArgument):
    """A tool call's arguments are not JSON, not an object, or fail the tool's schema; nothing
    was called.

    Tools raise it too for arguments the schema cannot express (a cap exceeded, say). It is
    the tool-call case of :class:`~loom.runtime.InvalidArgument` (a bad value given to any
    Loom API): it names the tool and where in the arguments the problem is, and crosses the
    wire as ``TOOL_INVALID_ARGUMENTS``.

    Attributes:
        path: where in the arguments object the problem is, as JSON keys and indices
            (``()`` for the object itself).
        reason: what is wrong, in words.
    """

    def __init__(
        self, reason: str, *, path: Sequence[str | int] = (), tool: str | None = None
    ) -> None:
        self.path: tuple[str | int, ...] = tuple(path)
        self.reason = reason
        where = "".join(f"[{p!r}]" for p in self.path)
        super().__init__(f"invalid arguments{where}: {reason}", tool=tool)


class InvalidToolSchema(ToolError, InvalidArgument):
    """A tool's ``parameters_schema`` is not a valid JSON Schema of an object; not registered.

    Attributes:
        reason: what is wrong with the schema.
    """

    def __init__(self, reason: str, *, tool: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"invalid parameters schema: {reason}", tool=tool)


class ToolTimeout(ToolError, DeadlineExceeded):
    """The call did not finish within its timeout; the tool was cancelled.

    What a timed-out tool leaves behind is the tool's business, documented per tool (native
    tools undo nothing but never leave a process running).

    Attributes:
        timeout: the timeout that expired, in seconds.
    """

    def __init__(self, timeout: float, *, tool: str | None = None) -> None:
        self.timeout = timeout
        super().__init__(f"timed out after {timeout:g} s", tool=tool)


class ToolPermissionDenied(ToolError, PermissionError):
    """The tool refused the request by policy: a path outside the workspace, a program or host
    that is not allowed. Nothing was done.

    Attributes:
        reason: what was refused and why.
    """

    def __init__(self, reason: str, *, tool: str | None = None) -> None:
        self.reason = reason
        super().__init__(reason, tool=tool)


class ToolFailed(ToolError):
    """The tool ran and failed (one kind of :class:`ToolError`: a call that went wrong).

    Raised by the registry for any non-``ToolError`` exception out of a tool (that exception
    is ``__cause__``), and by tools themselves for expected failures (a missing file).

    Attributes:
        cause_type: the name of the underlying exception type, e.g. ``"FileNotFoundError"``.
        cause_message: its message, safe to show to the model.
    """

    def __init__(self, cause_type: str, cause_message: str, *, tool: str | None = None) -> None:
        self.cause_type = cause_type
        self.cause_message = cause_message
        super().__init__(f"failed: {cause_type}: {cause_message}", tool=tool)

    @classmethod
    def from_exception(cls, exc: BaseException, *, tool: str | None = None) -> ToolFailed:
        """The ``ToolFailed`` that reports ``exc`` (the caller raises it ``from exc``)."""
        return cls(type(exc).__name__, str(exc), tool=tool)


class ToolUnavailable(ToolError):
    """The tool's provider (an MCP server) is not connected: it crashed, its HTTP endpoint
    went away, or it is still starting. Raised at once, never after waiting; the call may or
    may not have reached the server (a call in flight when the connection dropped is
    abandoned, not retried).

    Attributes:
        server: the MCP server's name.
        reason: why it is unavailable, in words.
    """

    def __init__(self, server: str, reason: str, *, tool: str | None = None) -> None:
        self.server = server
        self.reason = reason
        super().__init__(f"MCP server {server!r} is unavailable: {reason}", tool=tool)
