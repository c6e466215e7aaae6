"""Typed errors of calls to remote A2A agents (:class:`~loom.A2AAgentTool`).

Each is the :class:`~loom.runtime.tools.ToolError` kind that says how the call went wrong, so it
crosses the bridge, reaches the LLM loop and is counted as that kind (unavailable, failed,
permission denied) and is also an :class:`A2AError`, so a caller can catch every A2A failure
at once. A timeout is the registry's :class:`~loom.runtime.tools.ToolTimeout`, as for any tool.
"""

from __future__ import annotations

from loom.runtime.tools import ToolError, ToolFailed, ToolPermissionDenied, ToolUnavailable

__all__ = ["A2AAuthFailed", "A2ABadCard", "A2AError", "A2ATaskFailed", "A2AUnreachable"]


class A2AError(ToolError):
    """Base of the errors of a remote A2A agent.

    Attributes:
        url: the agent's base URL.
    """

    url: str


class A2AUnreachable(A2AError, ToolUnavailable):
    """The agent's server did not answer: refused, unresolvable, timed out connecting, closed
    the connection, or answered with a server error. The call may or may not have reached the
    agent when it broke off mid-stream.

    Attributes:
        url: the agent's base URL.
        reason: what went wrong, in words.
    """

    def __init__(self, url: str, reason: str, *, tool: str | None = None) -> None:
        self.url = url
        self.server = url
        self.reason = reason
        ToolError.__init__(self, f"A2A agent at {url} is unreachable: {reason}", tool=tool)


class A2ABadCard(A2AError, ToolUnavailable):
    """The agent's card is missing, not JSON, not an agent card, or offers no transport Loom
    speaks (JSON-RPC over HTTP); nothing was sent to the agent.

    Attributes:
        url: the agent's base URL.
        reason: what is wrong with the card.
    """

    def __init__(self, url: str, reason: str, *, tool: str | None = None) -> None:
        self.url = url
        self.server = url
        self.reason = reason
        ToolError.__init__(
            self, f"A2A agent at {url} has no usable agent card: {reason}", tool=tool
        )


class A2AAuthFailed(A2AError, ToolPermissionDenied):
    """The agent's server refused our credentials (HTTP 401 or 403), or the task ended asking
    for authentication (``auth-required``).

    Attributes:
        url: the agent's base URL.
        reason: what the server said.
    """

    def __init__(self, url: str, reason: str, *, tool: str | None = None) -> None:
        self.url = url
        self.reason = reason
        ToolError.__init__(self, f"A2A agent at {url} refused the call: {reason}", tool=tool)


class A2ATaskFailed(A2AError, ToolFailed):
    """The remote task ended ``failed``, ``rejected`` or ``canceled`` (by the remote side), or
    the agent answered the request with an A2A error.

    Attributes:
        url: the agent's base URL.
        state: the task's final state (``failed``, ``rejected``, ``canceled``), or ``error`` for
            an A2A error answered instead of a task.
        task_id: the remote task's id ('' when none was made).
        cause_type, cause_message: as for :class:`~loom.runtime.tools.ToolFailed`.
    """

    def __init__(
        self, url: str, state: str, message: str, *, task_id: str = "", tool: str | None = None
    ) -> None:
        self.url = url
        self.state = state
        self.task_id = task_id
        self.cause_type = "A2ATaskFailed"
        self.cause_message = message
        what = f"task {task_id} ended {state}" if task_id else f"answered {state}"
        ToolError.__init__(self, f"A2A agent at {url}: {what}: {message}", tool=tool)
