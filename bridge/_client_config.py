"""The values that describe a :class:`~loom.bridge._client.BridgeClient`: its registration,
its TLS, its options (every bound and timeout), and a snapshot of its counters."""

from __future__ import annotations

import enum
import math

import msgspec

from loom.runtime import DEFAULT_MAX_BUFFER_BYTES, AgentCard, InvalidArgument, QoS

from ._reconnect import Backoff, ConnectionStatus
from ._wire_types import ToolDescriptor

__all__ = ["Acceptance", "AgentRegistration", "ClientOptions", "ClientStatistics", "ClientTLS"]


class Acceptance(enum.Enum):
    """What :meth:`~loom.bridge.BridgeClient.publish` learned of a publish."""

    QUEUED = "queued"
    """Not waited for (``wait_accepted=False``): queued for the stream, nothing more known. If
    the connection drops before the server acknowledges it, it is counted in
    ``statistics().lost``."""
    SENT = "sent"
    """Written to the stream of a server that does not acknowledge publishes (an original
    Loom server): nothing more can be known."""
    ACCEPTED = "accepted"
    """The server's bus accepted it (after any wait for room in a lossless subscriber) and
    it reached a subscription (a server without ``STREAM_FEATURE_UNROUTED``: accepted, and
    perhaps reached nobody)."""
    UNROUTED = "unrouted"
    """The server's bus accepted it, but no subscription matched it, even after the
    server's settle window: nobody got it."""


class ClientTLS(msgspec.Struct, frozen=True, kw_only=True):
    """TLS for the channel (PEM bytes); mutual TLS when a client certificate is given.

    Attributes:
        root_certificates: CAs to trust; ``None`` for the system's.
        certificate_chain: the client certificate (mutual TLS).
        private_key: its key (mutual TLS).
        server_name: the name to check the server's certificate against, when it differs from
            the address's host (``grpc.ssl_target_name_override``).
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None


class ClientOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the client behaves; every bound and timeout in one place.

    Attributes:
        connect_timeout: how long ``__aenter__`` keeps trying to make the first connection
            (``math.inf``: until it succeeds or a fatal error; ``Agent.run`` and ``loom run``
            default to that, so start order does not matter).
        rpc_timeout: deadline of ``RegisterAgent``, of the wait for the server's welcome and of
            each subscribe/unsubscribe answer.
        tool_deadline: how long a tool call made without a timeout is waited for (``timeout_ms``
            is then 0: the server's default applies within it).
        heartbeat_interval: seconds between ``ping`` frames.
        heartbeat_timeout: a stream silent this long is dead and is replaced.
        inbound_buffer: deliveries buffered for the reader of the client (``receive()``), or
            held for an ``inbound`` sink that is not ready yet (the SDK's agent before it
            started).
        outbound_buffer: frames queued for the writer.
        max_buffer_bytes: the byte bound of each of those two buffers, and of every
            subscription's buffer on a remote agent's own bus (its mailbox): each event counted
            by ``loom.runtime.lowlevel.event_size``, other frames by their encoded size. A
            buffer full by bytes acts as one full by count (the reader, or the publisher,
            waits); one item larger than the bound still goes into an empty buffer.
        publish_window: the publish credit asked for (0: the server's default).
        delivery_window: the delivery credit offered: deliveries the server may have in flight
            to this client, not yet taken in by its sink (0: ``inbound_buffer``); the server
            may grant less.
        delivery_window_bytes: the byte window offered with it: bytes of deliveries (each its
            encoded size) the server may have in flight to this client (0:
            ``max_buffer_bytes``, the bound of what this process holds); the server may grant
            less, and sends a single larger delivery alone.
        max_batch_events: the most events per batch frame, either way.
        max_tool_calls: pushed tool calls served at once.
        stream_calls: make tool calls on the open stream when the server takes them (one frame
            each way instead of an RPC per call); off, every call is a ``ForwardToolCall``.
        backoff: delays between reconnect attempts.
        close_grace: how long ``aclose`` lets queued frames go out before it cuts the stream.
        registration_secret: the secret to show on the first ``RegisterAgent`` (at least 16
            random characters), which the server adopts while nobody holds the id. A
            supervisor that restarts the agent's process gives each new process the same one,
            so the new process takes the id back at once. ``None``: the server makes one.
        id_wait: how long a first connection waits while the agent's id is taken by a live
            connection (``ALREADY_EXISTS``: another process of the agent, or its previous one,
            which the server has not yet seen go) before the refusal is final
            (``ConnectFailed``, code ``ALREADY_EXISTS``; an agent process then exits 3). An id
            the server still holds for a connection that ended (``PERMISSION_DENIED`` with
            the time the server frees it) is waited for until that time, whatever this says.
        durable_publish_timeout: how long a publish on a topic the server stores durably
            may take, reconnections included, before it raises ``DurableUnavailable``
            (``BridgeClient.publish``).
        process_restarts: how often the supervisor of this process (``loom run``) has
            started the agent again after its process ended; the server counts them among
            the agent's restarts (``loom agents``). Sent as the ``loom.process_restarts``
            metadata key.
    """

    connect_timeout: float = 10.0
    rpc_timeout: float = 5.0
    tool_deadline: float = 300.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    inbound_buffer: int = 1000
    outbound_buffer: int = 1000
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    publish_window: int = 0
    delivery_window: int = 0
    delivery_window_bytes: int = 0
    max_batch_events: int = 256
    max_tool_calls: int = 64
    stream_calls: bool = True
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    close_grace: float = 5.0
    registration_secret: str | None = None
    id_wait: float = 30.0
    process_restarts: int = 0
    durable_publish_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "rpc_timeout",
            "tool_deadline",
            "heartbeat_interval",
            "durable_publish_timeout",
        ):
            value = getattr(self, name)
            if not (value > 0 and (math.isfinite(value) or name == "connect_timeout")):
                raise InvalidArgument(f"ClientOptions.{name} must be > 0, not {value!r}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise InvalidArgument("ClientOptions.heartbeat_timeout must exceed the interval")
        names = ("inbound_buffer", "outbound_buffer", "max_batch_events", "max_tool_calls")
        for name in (*names, "max_buffer_bytes"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"ClientOptions.{name} must be >= 1")
        if self.process_restarts < 0:
            raise InvalidArgument("ClientOptions.process_restarts must be >= 0")
        if not (self.id_wait >= 0 and math.isfinite(self.id_wait)):
            raise InvalidArgument(f"ClientOptions.id_wait must be >= 0, not {self.id_wait!r}")
        if min(self.publish_window, self.delivery_window, self.delivery_window_bytes) < 0:
            raise InvalidArgument(
                "publish_window, delivery_window and delivery_window_bytes must be >= 0"
            )
        if self.close_grace < 0:
            raise InvalidArgument("close_grace must be >= 0")


class AgentRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """What ``RegisterAgent`` declares.

    Attributes:
        agent_id: the agent's id (one topic segment).
        topics: patterns subscribed at registration.
        tools: the tools this agent serves (``tool_handler`` answers their calls).
        metadata: free key/values for the server's directory.
        qos: the tier of the agent's subscriptions on the server (its mailbox and ``topics``):
            there a ``REALTIME`` agent that falls behind has events dropped and counted. Sent
            as the ``loom.qos`` metadata key.
        durable: the agent's ``topics`` are durable on the server (``Agent(durable=True)``,
            ``docs/durability.md``): negotiated with ``STREAM_FEATURE_DURABLE``; its
            deliveries go to :attr:`BridgeClient.durable_sink`.
        max_deliver: (durable) deliveries of one event before it is dead-lettered.
        a2a: the agent's A2A card (``Agent(..., a2a=...)``): a server with an HTTP port
            exposes the agent over A2A while its stream is open (``docs/interop.md``).
    """

    agent_id: str
    topics: tuple[str, ...] = ()
    tools: tuple[ToolDescriptor, ...] = ()
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    qos: QoS = QoS.BATCHED
    durable: bool = False
    max_deliver: int = 5
    a2a: AgentCard | None = None


class ClientStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a :class:`BridgeClient` (a snapshot).

    Attributes:
        status: the connection's status.
        attempts: connection attempts made.
        registrations: successful ``RegisterAgent`` calls (one per connection).
        connects: connections established (the first one and every reconnect).
        features: the stream features the current (or last) server granted, by name.
        published: publishes written to the stream.
        dropped: :meth:`~BridgeClient.publish_nowait` calls refused (no connection, publish
            credit or queue room): nothing was sent.
        rejected: publishes the server's bus did not accept.
        unrouted: publishes the server's bus accepted but no subscription took
            (``Acceptance.UNROUTED``; only from a server that reports it).
        lost: publishes a dropped connection took with it: queued and never written, or
            written and never acknowledged (these may still have reached the bus: at most
            this many were lost). A publisher that waits (``wait_accepted``) gets
            ``ConnectionLost`` for each; counted for the others too.
        delivered: deliveries handed to the inbound buffer or sink.
        inbound_queued: deliveries in this process that its consumer has not taken: those
            in the ``receive()`` buffer, or, for a remote agent (an ``inbound`` sink that
            reports them), those held before it started and those its own bus's
            subscriptions hold; ``inbound_queued_bytes``: what they measure (``event_size``).
        outbound_queued: frames queued for the writer (publishes waiting for the server's
            credit among them); ``outbound_queued_bytes``: what they measure.
        max_buffer_bytes: the byte bound of each of those buffers (``ClientOptions``).
        malformed: deliveries dropped because they did not decode.
        tools_served: pushed tool calls answered.
        tools_cancelled: pushed tool calls withdrawn by the server.
        tools_refused: pushed tool calls refused for the concurrency limit.
        pings: heartbeats sent; ``pongs``: answered; ``rtt_ms``: the latest round trip.
        server_errors: ``Error`` frames received; ``last_error``: the latest failure.
    """

    status: ConnectionStatus
    attempts: int
    registrations: int
    connects: int
    features: tuple[str, ...]
    published: int
    dropped: int
    rejected: int
    unrouted: int
    lost: int
    delivered: int
    inbound_queued: int
    inbound_queued_bytes: int
    outbound_queued: int
    outbound_queued_bytes: int
    max_buffer_bytes: int
    malformed: int
    tools_served: int
    tools_cancelled: int
    tools_refused: int
    pings: int
    pongs: int
    rtt_ms: int
    server_errors: int
    last_error: str
