"""Errors of the bridge server: why a call, a stream or the server itself was refused.

Each maps to one gRPC status code in ``_status.py`` (the one place that mapping lives).
"""

from __future__ import annotations

from loom.runtime import LoomError

__all__ = [
    "AgentConnected",
    "BindError",
    "BridgeError",
    "HandshakeError",
    "InsecureBind",
    "LimitExceeded",
    "NotRegistered",
    "Unauthenticated",
    "WrongAgent",
]


class BridgeError(LoomError):
    """Base of the bridge server's own errors."""


class InsecureBind(BridgeError, ValueError):
    """The server would listen on a non-loopback address with neither a token nor TLS.

    Attributes:
        host: the address it was asked to bind.
    """

    def __init__(self, host: str) -> None:
        super().__init__(
            f"refusing to serve on non-loopback address {host!r} without authentication: "
            "set a token, TLS, or both (or bind 127.0.0.1)"
        )
        self.host = host


class BindError(BridgeError, OSError):
    """The server could not listen on the address (in use, not local, no permission)."""


class Unauthenticated(BridgeError, PermissionError):
    """A call carried no valid credentials (``authorization: Bearer <token>``)."""


class HandshakeError(BridgeError, ValueError):
    """An ``EventStream`` did not open with ``ack(message_id=<agent id>)``."""


class NotRegistered(BridgeError, LookupError):
    """An ``EventStream`` handshake named an agent id that never called ``RegisterAgent``.

    Attributes:
        agent_id: the id.
    """

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is not registered: call RegisterAgent first")
        self.agent_id = agent_id


class AgentConnected(BridgeError):
    """The agent id is in use: a local agent, or a remote one whose stream is open.

    Attributes:
        agent_id: the id.
    """

    def __init__(self, agent_id: str, detail: str) -> None:
        super().__init__(f"agent {agent_id!r} already exists: {detail}")
        self.agent_id = agent_id


class WrongAgent(BridgeError, PermissionError):
    """A stream acted as an agent other than the one it opened as (a publish whose sender is
    another agent, a result for a tool call pushed to another agent)."""


class LimitExceeded(BridgeError):
    """A configured limit was reached; nothing was done.

    Attributes:
        limit: the limit's name, e.g. ``"max_agents"``.
        value: its value.
    """

    def __init__(self, limit: str, value: int, detail: str) -> None:
        super().__init__(f"{detail} (limit {limit} = {value})")
        self.limit = limit
        self.value = value
