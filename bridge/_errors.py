"""The bridge's errors: the wire's, the server's refusals, and what only the client meets.

Every class here is a :class:`~loom.runtime.LoomError`. Each that crosses the wire maps to one
gRPC status code in ``_status.py`` (the one place that mapping lives), and back to the same
class on the client. Tool failures use the runtime's own tool errors (``ToolNotFound``,
``InvalidToolArguments``, ``ToolTimeout``, ``ToolFailed``) and request timeouts ``RequestTimeout``,
so handler code catches the same exceptions remote as in process.
"""

from __future__ import annotations

from loom.runtime import BusClosed, DurableUnavailable, InvalidArgument, LoomError
from loom.runtime.tools import ToolFailed

__all__ = [
    "AGENT_UNRESPONSIVE",
    "AgentReleased",
    "AgentUnresponsive",
    "BindError",
    "BridgeError",
    "ClientClosed",
    "ConnectFailed",
    "ConnectionEnded",
    "ConnectionLost",
    "DurablePublishFailed",
    "HandshakeError",
    "InsecureBind",
    "LimitExceeded",
    "NotRegistered",
    "OutsideNamespace",
    "PublishRejected",
    "RegistrationRefused",
    "SubscribeRefused",
    "Unauthenticated",
    "WeakToken",
    "WireError",
    "WrongAgent",
]

# ---------------------------------------------------------------- the wire


class WireError(InvalidArgument):
    """A wire message (or a runtime value bound for the wire) is malformed; nothing was made.

    The bridge answers it with ``INVALID_ARGUMENT`` (or an ``Error`` frame on a stream) and
    carries on: one bad message never ends a connection. A bad value like any other (an
    ``InvalidArgument``), which is what a client rebuilds from that code.

    Attributes:
        field: where the problem is, e.g. ``"Event.metadata['ttl']"``.
        reason: what is wrong with it, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"malformed {field}: {reason}")
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------- the server's refusals


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


class WeakToken(InsecureBind):
    """The server would listen on a non-loopback address guarded by a token too easy to guess.

    Attributes:
        host: the address it was asked to bind.
        reason: what is wrong with the token.
    """

    def __init__(self, host: str, what: str, reason: str) -> None:
        BridgeError.__init__(
            self,
            f"refusing to serve on non-loopback address {host!r}: the {what} is too weak: "
            f"{reason}. Use at least 16 characters from a random source, e.g. "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"',
        )
        self.host = host
        self.reason = reason


class BindError(BridgeError, OSError):
    """The server could not listen on the address (in use, not local, no permission)."""


class Unauthenticated(BridgeError, PermissionError):
    """A call carried no valid credentials (``authorization: Bearer <token>``)."""


class HandshakeError(BridgeError, InvalidArgument):
    """An ``EventStream`` did not open with ``ack(message_id=<agent id>)``.

    Reported as ``INVALID_ARGUMENT``; a client rebuilds an ``InvalidArgument`` from it."""


class NotRegistered(BridgeError, LookupError):
    """An ``EventStream`` handshake named an agent id that never called ``RegisterAgent``.

    Attributes:
        agent_id: the id.
    """

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is not registered: call RegisterAgent first")
        self.agent_id = agent_id


class WrongAgent(BridgeError, PermissionError):
    """A stream acted as an agent other than the one it opened as (a publish whose sender is
    another agent, a result for a tool call pushed to another agent)."""


class OutsideNamespace(WrongAgent):
    """A caller confined to a namespace (a tenant token) reached outside it, or a caller
    outside a namespace reached for an agent id or tool name inside it (``bridge/_tenants.py``).
    Permanent for that caller: waiting or retrying changes nothing."""


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


# ---------------------------------------------------------------- tool calls to agents

AGENT_UNRESPONSIVE = "AGENT_UNRESPONSIVE"
"""The ``ToolResult.error.code`` of a call failed because its agent turned stale."""


class AgentUnresponsive(ToolFailed):
    """A tool call pushed to a remote agent failed because the agent turned stale: nothing
    (no ping, no frame) arrived from it for ``stale_after_s`` while the call was pending (a
    process stopped with SIGSTOP, a network partition). Its stream may still be open; the
    agent may still run the call, but nobody waits for its result any more.

    It crosses the wire as ``TOOL_ERROR`` with ``error.code = "AGENT_UNRESPONSIVE"`` and is
    rebuilt as itself; a ``ToolFailed``, so code catching tool failures catches it too.

    Attributes:
        agent_id: the agent that fell silent (``""`` when the result did not name it).
        stale_after_s: the silence that made it stale, in seconds (0 when not reported).
    """

    def __init__(self, agent_id: str, stale_after_s: float, *, tool: str | None = None) -> None:
        super().__init__(
            AGENT_UNRESPONSIVE,
            f"agent {agent_id} sent nothing for {stale_after_s:g} s and is stale; "
            "the call was given up",
            tool=tool,
        )
        self.agent_id = agent_id
        self.stale_after_s = stale_after_s


# ---------------------------------------------------------------- the client


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


class ConnectionEnded(LoomError, ConnectionError):
    """A connection that had been established ended for good; the client is closed and does
    not reconnect. Either the server ended the open stream with a status no retry can fix
    (``while_connected``; an operator's release is :class:`AgentReleased`), or, after a lost
    connection, it refused the reconnection so (``UNAUTHENTICATED``: its token changed while
    the agent was away; ``PERMISSION_DENIED``, ``INVALID_ARGUMENT``, ``UNIMPLEMENTED``).

    Unlike :class:`ConnectFailed` (no first connection) or :class:`ConnectionLost` (a loss the
    client mends by itself), it means what was running has stopped for a reason a retry
    would meet again.

    Attributes:
        address: the server address.
        reason: what the server said, in words.
        code: the gRPC status code's name, e.g. ``"UNAUTHENTICATED"``.
        while_connected: the open stream was ended (else the reconnection was refused).
    """

    def __init__(
        self, address: str, reason: str, *, code: str = "", while_connected: bool = False
    ) -> None:
        if while_connected:
            message = f"connection to {address} ended by the server: {reason}; not reconnecting"
        else:
            message = f"cannot reconnect to {address}: {reason}"
        super().__init__(message)
        self.address = address
        self.reason = reason
        self.code = code
        self.while_connected = while_connected


class AgentReleased(ConnectionEnded):
    """An operator released the agent's id while it was connected (``loom agents release
    ID``, ``Directory.ReleaseAgent``): the server ended its stream and forgot its registration
    so that another process may take the id. The client does not reconnect (it would take the
    id back), and an agent process exits with code 4, which ``loom run`` does not restart.

    Attributes:
        agent_id: the released agent.
    """

    def __init__(self, address: str, agent_id: str) -> None:
        LoomError.__init__(
            self,
            f"agent {agent_id!r} was released by the operator of {address}: its connection "
            "ended and it does not reconnect",
        )
        self.address = address
        self.reason = "released by the operator"
        self.code = "PERMISSION_DENIED"
        self.while_connected = True
        self.agent_id = agent_id


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


class DurablePublishFailed(PublishRejected, DurableUnavailable):
    """A publish on a topic the server stores durably was not stored: the server's log did
    not store it within its publish timeout (code ``DEADLINE_EXCEEDED``: its NATS server down),
    or no connection to the server took it within ``ClientOptions.durable_publish_timeout``
    (code ``UNAVAILABLE``). It may or may not have been stored; the same event published
    again is stored at most once. A :class:`PublishRejected` and the runtime's
    ``DurableUnavailable`` (a ``TimeoutError``), so that a remote ``ctx.emit`` fails as an
    in-process one does."""
