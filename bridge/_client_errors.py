"""Errors of the bridge client (the SDK's remote mode).

Tool failures use the runtime's own tool errors (``ToolNotFound``, ``InvalidArguments``,
``ToolTimeout``, ``ToolFailed``) and request timeouts ``RequestTimeout``, so handler code
catches the same exceptions remote as in process. What only exists across a network is here.
"""

from __future__ import annotations

from loom.runtime import BusClosed, InvalidArgument, LoomError

__all__ = [
    "ClientClosed",
    "ConnectFailed",
    "ConnectionLost",
    "PublishRejected",
    "RegistrationRefused",
    "SubscribeRefused",
]


class ClientClosed(BusClosed):
    """The bridge client is closing or closed and refuses the operation."""


class ConnectionLost(LoomError, ConnectionError):
    """The event stream ended or went silent; the client reconnects by itself.

    Raised inside the client's session only; callers of ``publish``, ``subscribe`` and
    ``call_tool`` wait for the next connection instead of seeing it.

    Attributes:
        reason: what happened, in words.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFailed(LoomError, ConnectionError):
    """The first connection could not be made (within ``connect_timeout``, or the server
    refused the credentials); nothing is left running.

    Attributes:
        address: the server address.
        reason: the last failure, in words.
        code: the gRPC status code's name of the last failure, e.g. ``"UNAVAILABLE"``
            (``""`` when it was not a gRPC status).
    """

    def __init__(self, address: str, reason: str, *, code: str = "") -> None:
        super().__init__(f"cannot connect to {address}: {reason}")
        self.address = address
        self.reason = reason
        self.code = code


class RegistrationRefused(LoomError):
    """``RegisterAgent`` answered ``success = false``.

    Attributes:
        agent_id: the agent that asked.
        reason: the server's ``error_message``.
    """

    def __init__(self, agent_id: str, reason: str) -> None:
        super().__init__(f"the server refused agent {agent_id!r}: {reason}")
        self.agent_id = agent_id
        self.reason = reason


class SubscribeRefused(InvalidArgument):
    """The server refused a subscribe or an unsubscribe; nothing changed.

    Attributes:
        pattern: the pattern asked for.
        code: the server's machine-readable code, e.g. ``"RESOURCE_EXHAUSTED"``.
        reason: what is wrong, in words.
    """

    def __init__(self, pattern: str, code: str, reason: str) -> None:
        super().__init__(f"subscription {pattern!r} refused ({code}): {reason}")
        self.pattern = pattern
        self.code = code
        self.reason = reason


class PublishRejected(LoomError):
    """The server's bus did not accept a publish (only reported to a publisher that waits for
    acceptance).

    Attributes:
        topic: the topic published on.
        code: the server's machine-readable code, e.g. ``"INVALID_ARGUMENT"``.
        reason: what is wrong, in words.
    """

    def __init__(self, topic: str, code: str, reason: str) -> None:
        super().__init__(f"publish on {topic!r} rejected ({code}): {reason}")
        self.topic = topic
        self.code = code
        self.reason = reason
