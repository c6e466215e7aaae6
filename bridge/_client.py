"""``BridgeClient``: an agent process's connection to a Loom server (the ``loom.v1`` wire).

::

    registration = AgentRegistration(agent_id="upperer", topics=("input.*",))
    async with BridgeClient("127.0.0.1:50051", registration, token=token) as client:
        await client.publish("output.upper", Event(payload=b"HELLO"))
        async for delivery in client:
            ...

What it promises:

* **Connecting.** ``__aenter__`` returns once the agent is registered, its stream open and
  the handshake done (``Ack`` with the agent id, then a ``StreamHello`` asking for batches,
  publish acks and tool-call cancellation). A server that cannot be reached is retried with
  backoff for ``connect_timeout`` seconds, then :class:`ConnectFailed`; refused credentials or
  a refused registration fail at once. Every RPC carries a deadline: nothing waits forever on
  an unknown target.
* **Ending for good.** Once connected, only a status no retry can fix closes the client:
  :class:`AgentReleased` when an operator released the agent's id (its open stream ended),
  :class:`ConnectionEnded` when the server ended the stream otherwise so, or refused the
  reconnection after a loss (its token changed meanwhile: ``cannot reconnect to X:
  UNAUTHENTICATED: ...``). Never :class:`ConnectFailed`, which is the first connection's.
* **Reconnecting** (``bridge/_reconnect.py``): when the stream ends or falls silent the client
  registers again, reopens the stream and resubscribes every dynamic subscription, one attempt
  at a time (never two registrations at once), with capped, jittered backoff. Deliveries
  already buffered stay buffered.
* **Deliveries** go to a bounded buffer (``inbound_buffer``) read by ``receive()`` / ``async
  for``, or, given an ``inbound`` sink (a remote agent's local bus, through its transport),
  straight from the stream's reader into ``inbound.deliver_inbound``: one hand-over fewer
  per event. Either way, when there is no room the stream's reader waits: that is
  backpressure all the way to the server's publishers. Replies are deliveries like any
  other: a remote agent's requests wait in its bus's reply router, as in process.
* **Publishing** (:meth:`publish`) waits for a connection, for publish credit (the server's
  pace, when it grants ``PUBLISH_ACK``) and for room in the bounded outbound queue; it never
  grows memory without bound. :meth:`publish_nowait` raises ``WouldBlock`` instead of waiting.
  A publish is sent at most once: one queued or unacknowledged when the connection drops is
  lost (or, if written, perhaps published): counted in ``statistics().lost``, and a publisher
  that asked to ``wait_accepted`` gets :class:`ConnectionLost` (it may retry). With
  ``wait_accepted`` the answer says whether anybody was subscribed (``Acceptance.UNROUTED``
  otherwise; counted in ``statistics().unrouted`` either way).
* **Tool calls** (:meth:`call_tool`) carry ``timeout_ms`` *and* a gRPC deadline of the same
  length (or the enclosing cancel scope's deadline, if sooner); cancelling the caller cancels
  the RPC, and the server withdraws the call from the agent serving it.
* **Pushed tool calls** run ``tool_handler`` in a task each (at most ``max_tool_calls`` at
  once; more are refused with ``RESOURCE_EXHAUSTED``), and a ``CancelToolCall`` cancels that
  task. They end with their session: the server has failed them already.
* **Trace context.** Every RPC carries the current OpenTelemetry span's ``traceparent`` in its
  metadata (the events carry theirs in the envelope), and the bearer token in
  ``authorization``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel
import grpc
import grpc.aio
import msgspec
from anyio.abc import TaskGroup
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc, tools_pb2, tools_pb2_grpc
from loom.runtime import (
    DEAD_LETTER_PREFIX,
    AgentStatus,
    Delivery,
    Event,
    InvalidArgument,
    LoomError,
    QoS,
    WouldBlock,
)
from loom.runtime.lowlevel import (
    Inbound,
    current_frame,
    dead_letter_metadata,
    event_size,
    mailbox_topic,
    new_id,
    scope_headers,
    validate_agent_id,
    validate_pattern,
)
from loom.runtime.tools import ToolFailed, ToolTimeout, ruled_approval

from ._agent_card import card_to_proto
from ._aio import rpc_text, unary
from ._approvals_remote import RemoteApprovals
from ._approved_calls import APPROVAL_HEADER
from ._budget_remote import RemoteBudgets
from ._client_config import (
    Acceptance,
    AgentRegistration,
    ClientOptions,
    ClientStatistics,
    ClientTLS,
)
from ._client_session import AckWaiter, CallWaiter, Counters, Session, SessionEnded
from ._client_tools import error_from_rpc
from ._convert import (
    fill_event,
    tool_call_to_proto,
    tool_descriptor_from_proto,
    tool_descriptor_to_proto,
    tool_result_from_proto,
)
from ._durable_topics import DurableTopics
from ._errors import (
    AgentReleased,
    ClientClosed,
    ConnectFailed,
    ConnectionEnded,
    ConnectionLost,
    DurablePublishFailed,
    PublishRejected,
    RegistrationRefused,
)
from ._lane import Lane
from ._llm_client import ServerLLM
from ._packed import pack_event
from ._reconnect import ConnectionStatus, Reconnector, StateListener, Wait
from ._reports import FINAL, Report, dead_letter_to_proto, report_to_proto
from ._scope_remote import RemoteScopes
from ._status import error_from_outcome
from ._tool_output import WANTS_OUTPUT, drain_until, relay, report_drops
from ._trace import trace_headers
from ._wire_types import (
    HELD_METADATA,
    QOS_KEY,
    RELEASED_METADATA,
    RESTARTS_KEY,
    SECRET_METADATA,
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
    ToolStatus,
)

__all__ = [
    "Acceptance",
    "AgentRegistration",
    "BridgeClient",
    "ClientOptions",
    "ClientStatistics",
    "ClientTLS",
    "ToolHandler",
]

log = logging.getLogger("loom.bridge.client")

# The registration secret of every agent id this process registered, by (address, agent id):
# one entry per id, replaced at each registration (see BridgeClient._secret).
_held_secrets: dict[tuple[str, str], str] = {}

_W3C = TraceContextTextMapPropagator()

ToolHandler = Callable[[ToolCallRequest], Awaitable[ToolCallOutcome]]
DurableSink = Callable[
    [str, Event, int, Callable[[bridge_pb2.DurableSettle], Awaitable[None]]], Awaitable[None]
]
"""Takes one durable delivery (topic, event, delivery id, how to settle it)."""
"""Serves one pushed tool call; runs in a task of its own, cancelled by ``CancelToolCall``."""


# How much later than the caller's own deadline the RPC's deadline is (see call_tool).
_DEADLINE_SLACK = 0.25

# Status codes that no retry can fix: the loop stops and the client closes.
_FATAL = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


def _note_scope_calls(outcome: ToolCallOutcome) -> None:
    """The server counted ``scope_calls`` calls of other processes for the turn this call was
    made for (a turn held here): its scope counts them too, so this process's local calls
    stop at the cap of the whole tree (docs/guardrails.md, "Across the bridge")."""
    if outcome.scope_calls:
        frame = current_frame()
        if frame is not None and not frame.scope.detached:
            frame.scope.note_others(outcome.scope_calls)


def _held_ms(exc: grpc.aio.AioRpcError) -> int | None:
    """In how many milliseconds the server frees a held id (``HELD_METADATA``), if it says."""
    for key, value in exc.trailing_metadata() or ():
        if key == HELD_METADATA:
            try:
                return max(0, int(value))
            except (TypeError, ValueError):
                return None
    return None


def _released(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the server ended the stream because an operator released the agent's id."""
    return any(key == RELEASED_METADATA for key, _ in exc.trailing_metadata() or ())


def _clock(seconds_from_now: float) -> str:
    """The wall-clock time (local, ``HH:MM:SS``) that many seconds from now, for a log line."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() + seconds_from_now))


def describe_failure(exc: Exception) -> str:
    """A connection attempt's failure in a few words on one line (never a gRPC repr)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return rpc_text(exc)
    if isinstance(exc, LoomError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Subscription(msgspec.Struct, frozen=True, kw_only=True):
    pattern: str
    qos: QoS
    event_types: tuple[str, ...] = ()
    buffer_size: int = 0


def _publish_frame(
    topic: str, event: Event, *, sender: str, mirror: bool, packed: bool = False
) -> bridge_pb2.ClientEvent | bytes:
    """The ``publish`` frame of ``event``, built in place (a message handed to a constructor
    is copied), or with ``packed`` its packed entry (``bridge/_packed.py``). An event without
    a sender gets ``sender``, this agent, as the server would stamp it (sparing the server a
    copy of the event to do so).

    Raises:
        WireError: the event cannot go on the wire.
    """
    if packed:
        return pack_event(topic, event, sender)
    frame = bridge_pb2.ClientEvent()
    msg = frame.publish
    msg.topic = topic
    wire = msg.event
    fill_event(wire, event, mirror=mirror)
    if not event.envelope.sender:
        wire.envelope.sender = sender
        if mirror:
            wire.metadata["sender"] = sender
    return frame


@runtime_checkable
class QueuedInbound(Inbound, Protocol):
    """An inbound sink that reports what it holds (for ``BridgeClient.statistics()``)."""

    def queued(self) -> tuple[int, int]:
        """Deliveries held in this process and not yet taken by a consumer, and their bytes
        (``event_size``)."""
        ...


def _delivery_size(delivery: Delivery) -> int:
    return delivery.size


class _LaneInbound:
    """The client's own inbound buffer as a sink: what ``receive()`` reads."""

    __slots__ = ("lane",)

    def __init__(self, lane: Lane[Delivery]) -> None:
        self.lane = lane

    def queued(self) -> tuple[int, int]:
        return len(self.lane), self.lane.queued_bytes

    def offer(self, topic: str, event: Event) -> bool:
        """Queue the delivery if there is room now; ``False`` (nothing queued) if not. The
        session's packed path calls this before :meth:`deliver_inbound`, which waits."""
        size = event_size(event)
        try:
            self.lane.send_sized_nowait(Delivery(topic, event, size), size)  # _delivery_size
        except anyio.WouldBlock:
            return False
        return True

    async def deliver_inbound(self, topic: str, event: Event) -> int:
        delivery = Delivery(topic, event, event_size(event))
        try:
            self.lane.send_nowait(delivery)
        except anyio.WouldBlock:
            await self.lane.send(delivery)
        return 1


class BridgeClient:
    """A registered agent's connection to a Loom server, kept alive across restarts.

    Args:
        address: ``host:port`` of the server.
        registration: the agent's id, topics, tools and metadata.
        token: bearer token sent in the ``authorization`` metadata of every call.
        tls: ``True`` for TLS with the system's CAs, or a :class:`ClientTLS`; ``None``/``False``
            for a plaintext channel (a server accepts that only on loopback).
        tool_handler: serves pushed calls of ``registration.tools``.
        options: bounds and timeouts.
        on_state_change: ``listener(old, new)`` for every :class:`ConnectionStatus` change.
        inbound: where deliveries go instead of the client's own buffer (``receive()`` is
            then refused); a remote agent's :class:`ClientTransport`, which hands them to its
            bus. The stream's reader awaits its ``deliver_inbound``, in stream
            order; a delivery it refuses with ``InvalidArgument`` is dropped and counted as
            malformed, and nothing is delivered once it raises ``BusClosed``.
    """

    def __init__(
        self,
        address: str,
        registration: AgentRegistration,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        tool_handler: ToolHandler | None = None,
        options: ClientOptions | None = None,
        on_state_change: StateListener | None = None,
        inbound: Inbound | None = None,
    ) -> None:
        if not address or not isinstance(address, str):
            raise InvalidArgument(f"a bridge address is host:port, not {address!r}")
        validate_agent_id(registration.agent_id)
        for pattern in registration.topics:
            validate_pattern(pattern)
        self.address = address
        self.registration = registration
        self.tool_handler = tool_handler
        # Cancels the agent's running turn in a thread (``thread_id``, ``reason``) and says how
        # many it cancelled; set before connecting, it asks for STREAM_FEATURE_TURN_CANCEL
        # (the server may then cancel turns, e.g. for A2A ``tasks/cancel``). Called in the
        # stream's reader: it must not block.
        self.turn_canceller: Callable[[str, str], int] | None = None
        # A durable registration's deliveries (Delivery.delivery_id), with how to settle
        # each on the stream it came on: the agent's WireDurableLog (bridge/_client_durable.py).
        self.durable_sink: DurableSink | None = None
        # Told the server's durable ack wait (seconds) by each welcome that grants
        # durability: the WireDurableLog's keep-alives follow it.
        self.durable_ack_wait: Callable[[float], None] | None = None
        # The topics the connected server stores durably (STREAM_FEATURE_DURABLE_TOPICS),
        # set by each session's welcome: a publish on one waits for its acceptance.
        self.durable_topics = DurableTopics()
        self.options = options if options is not None else ClientOptions()
        self._token = token
        self._tls: ClientTLS | None = ClientTLS() if tls is True else (tls or None)
        self._tools_pb = [tool_descriptor_to_proto(t) for t in registration.tools]
        self._reconnector = Reconnector(
            self.options.backoff,
            target=address,
            name=registration.agent_id,
            describe=describe_failure,
        )
        if on_state_change is not None:
            self._reconnector.add_listener(on_state_change)
        # The subscription set a new connection restores: topics registered with the agent
        # (less those unsubscribed since) and dynamic subscriptions, by pattern.
        self._topics: list[str] = list(dict.fromkeys(registration.topics))
        self._subscriptions: dict[str, _Subscription] = {}
        # The inbound buffer exists while the client is entered (a stream left unclosed is a
        # ResourceWarning); it outlives every session, so nothing buffered is lost to one.
        self._inbound: Lane[Delivery] | None = None
        self._sink = inbound
        self._channel: grpc.aio.Channel | None = None
        self._stub: bridge_pb2_grpc.BridgeAsyncStub | None = None
        self._session: Session | None = None
        self._tg: TaskGroup | None = None
        self._scopes: RemoteScopes | None = None
        self._closing = False
        self._fatal: Exception | None = None
        self._last_exc: Exception | None = None
        # Since when the first connection has found the agent's id taken by a live connection
        # (ALREADY_EXISTS), so the wait for it is bounded by options.id_wait.
        self._taken_since: float | None = None
        self._counters = Counters()  # written by the sessions; see statistics()
        # The latest registration's secret (AgentRegisterResponse.registration_secret): shown
        # on the stream and on the next RegisterAgent, so that across reconnects this client,
        # and no other, may take the agent's id back within the server's liveness window.
        # Kept per process too: a child spawned again after its parent restarted is a new
        # client of the same id, and the same holder.
        self._secret: str | None = (
            _held_secrets.get((address, registration.agent_id)) or self.options.registration_secret
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> BridgeClient:
        if self._tg is not None or self._closing:
            raise InvalidArgument("a BridgeClient can be entered once")
        if self._sink is None:
            self._inbound = Lane[Delivery](
                self.options.inbound_buffer,
                max_bytes=self.options.max_buffer_bytes,
                size=_delivery_size,
            )
            self._sink = _LaneInbound(self._inbound)
        self._channel = self._make_channel()
        self._stub = bridge_pb2_grpc.BridgeStub(self._channel)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        status = ConnectionStatus.CLOSED
        try:
            with anyio.move_on_after(self.options.connect_timeout):
                status = await self._reconnector.wait_status(
                    ConnectionStatus.CONNECTED, ConnectionStatus.CLOSED
                )
        except BaseException:
            # Cancelled (a Ctrl-C) before the first connection: leave nothing behind, and
            # exit the task group here, where it was entered, or anyio cannot unwind.
            await self.aclose()
            await self._finish()
            raise
        if status is ConnectionStatus.CONNECTED:
            return self
        fatal = self._fatal
        error = fatal or self._last_exc
        await self.aclose()
        await self._finish()
        if fatal is not None:
            raise fatal  # a refusal: ConnectFailed (a status) or RegistrationRefused
        reason = f"not connected within {self.options.connect_timeout:g} s"
        if error is not None:
            reason = f"{reason}: {describe_failure(error)}"
        code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else ""
        raise ConnectFailed(self.address, reason, code=code) from error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        await self._finish()

    async def _finish(self) -> None:
        # The task group is exited here, by the task that entered it and at the same depth of
        # cancel scopes (aclose may run anywhere, inside further scopes).
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(None, None, None)
        if self._inbound is not None:
            self._inbound.close_receiving()
        if self._channel is not None:
            with anyio.CancelScope(shield=True):
                await self._channel.close(grace=None)

    async def aclose(self) -> None:
        """Close: queued frames get ``close_grace`` seconds to go out, the stream is
        half-closed so the server sees a clean end, then every task of the client is
        cancelled; ``receive`` ends with ``EndOfStream`` once the buffer is empty.
        Shielded; idempotent."""
        await self.close_stream()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        if self._inbound is not None:
            self._inbound.close()

    async def close_stream(self) -> None:
        """The first half of :meth:`aclose`: queued frames get ``close_grace`` seconds to go
        out and the stream is half-closed, but the client's tasks are not cancelled (they end
        with the stream). For the owner of a task that runs inside the client (a remote
        agent's transport): it must not be cancelled by the client. Shielded; idempotent."""
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            self._reconnector.close()  # no further attempt; a backoff sleep ends at once
            session = self._session
            if session is not None and not session.ended:
                await session.close_gracefully()
                with anyio.move_on_after(self.options.close_grace):
                    await session.finished.wait()

    @property
    def status(self) -> ConnectionStatus:
        """The connection's status now."""
        return self._reconnector.status

    async def wait_connected(self) -> None:
        """Wait until the client is connected.

        Raises:
            ClientClosed: it closed instead (the cause is the fatal error, if any).
        """
        status = await self._reconnector.wait_status(
            ConnectionStatus.CONNECTED, ConnectionStatus.CLOSED
        )
        if status is ConnectionStatus.CLOSED:
            raise ClientClosed("the bridge client is closed") from self._fatal

    async def wait_closed(self) -> None:
        """Wait until the client has closed for good; re-raise the fatal error that closed it
        (``None`` for ``aclose()``)."""
        await self._reconnector.wait_status(ConnectionStatus.CLOSED)
        if self._fatal is not None:
            raise self._fatal

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(old, new)`` on every :class:`ConnectionStatus` change."""
        self._reconnector.add_listener(listener)

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters."""
        rs = self._reconnector.statistics()
        c = self._counters
        sink = self._sink
        inbound = sink.queued() if isinstance(sink, QueuedInbound) else (0, 0)
        session = self._session
        outbound = (0, 0) if session is None or session.ended else session.queued()
        return ClientStatistics(
            status=rs.status,
            attempts=rs.attempts,
            registrations=c.registrations,
            connects=rs.connects,
            features=c.features,
            published=c.published,
            dropped=c.dropped,
            rejected=c.rejected,
            unrouted=c.unrouted,
            lost=c.lost,
            delivered=c.delivered,
            inbound_queued=inbound[0],
            inbound_queued_bytes=inbound[1],
            outbound_queued=outbound[0],
            outbound_queued_bytes=outbound[1],
            max_buffer_bytes=self.options.max_buffer_bytes,
            malformed=c.malformed,
            tools_served=c.tools_served,
            tools_cancelled=c.tools_cancelled,
            tools_refused=c.tools_refused,
            pings=c.pings,
            pongs=c.pongs,
            rtt_ms=c.rtt_ms,
            server_errors=c.server_errors,
            last_error=c.last_server_error or rs.last_error,
        )

    # ------------------------------------------------------------------ the connection loop

    def _make_channel(self) -> grpc.aio.Channel:
        backoff_ms = int(self.options.backoff.maximum * 1000)
        options: list[tuple[str, str | int]] = [
            # The channel's own reconnects must not outwait ours: after a server restart the
            # next RegisterAgent should find the channel trying again within our backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", max(backoff_ms, 100)),
        ]
        tls = self._tls
        if tls is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.root_certificates,
            private_key=tls.private_key,
            certificate_chain=tls.certificate_chain,
        )
        return grpc.aio.secure_channel(self.address, credentials, options=options)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = []
        if self._token:
            md.append(("authorization", f"Bearer {self._token}"))
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        if "traceparent" in carrier:
            md.append(("traceparent", carrier["traceparent"]))
            if carrier.get("tracestate"):
                md.append(("tracestate", carrier["tracestate"]))
        return tuple(md)

    def _agent_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of RegisterAgent and EventStream: with the registration secret."""
        md = self._metadata()
        return md if self._secret is None else (*md, (SECRET_METADATA, self._secret))

    async def _run(self) -> None:
        try:
            await self._reconnector.run(self._attempt, fatal=self._is_fatal, wait=self._wait)
        except Exception as exc:
            # A gRPC status that no retry can fix is raised to the user as a Loom error
            # (one line), never as grpc's multi-line repr.
            if isinstance(exc, grpc.aio.AioRpcError):
                reason = rpc_text(exc)
                if self._reconnector.statistics().connects:
                    # Refused while reconnecting: what was running has ended, which is not a
                    # failure to connect (ConnectFailed is the first connection's).
                    exc = ConnectionEnded(self.address, reason, code=exc.code().name)
                else:
                    if exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                        reason = f"{reason} (still, after waiting {self.options.id_wait:g} s)"
                    exc = ConnectFailed(self.address, reason, code=exc.code().name)
            self._fatal = exc
            # Not logged at WARNING: whoever awaits the client gets it raised and says it.
            log.debug("bridge client for %s stopped: %s", self.registration.agent_id, exc)

    def _is_fatal(self, exc: Exception, ever_connected: bool) -> bool:
        self._last_exc = exc
        if isinstance(exc, ConnectionEnded):
            return True  # an open stream ended for good (see _attempt)
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            if code is grpc.StatusCode.ALREADY_EXISTS and not ever_connected:
                # The id is taken by a live connection: another process of this agent, or the
                # previous one, which the server has not yet seen go. Waited for, within bounds;
                # after a reconnect it is always the latter, and retried as long as it takes.
                now = anyio.current_time()
                if self._taken_since is None:
                    self._taken_since = now
                return now - self._taken_since >= self.options.id_wait
            self._taken_since = None
            if code is grpc.StatusCode.PERMISSION_DENIED and _held_ms(exc) is not None:
                return False  # held for a connection that ended: free at a time the server says
            return code in _FATAL
        self._taken_since = None
        # A refusal on first contact is an answer (a taken id, a bad declaration); after a
        # restart it is usually the server not yet having noticed our old stream end.
        return isinstance(exc, RegistrationRefused) and not ever_connected

    def _wait(self, exc: Exception) -> Wait | None:
        """The failures of a first connection that are the agent's id not released yet: one
        log line saying until when the next attempts wait (see :meth:`_is_fatal`)."""
        if not isinstance(exc, grpc.aio.AioRpcError):
            return None
        agent_id = self.registration.agent_id
        held = _held_ms(exc)
        if exc.code() is grpc.StatusCode.PERMISSION_DENIED and held is not None:
            # A little after the server's time: it frees the id once the window has passed.
            delay = held / 1000 + 0.2
            return Wait(
                kind="held",
                delay=delay,
                line=f"agent id {agent_id!r} is still held for its previous connection; "
                f"waiting until {_clock(delay)} for the server to release it",
            )
        if exc.code() is grpc.StatusCode.ALREADY_EXISTS and self._taken_since is not None:
            left = self._taken_since + self.options.id_wait - anyio.current_time()
            return Wait(
                kind="taken",
                line=f"agent id {agent_id!r} is taken by a live connection; waiting until "
                f"{_clock(left)} for it to be released (ClientOptions.id_wait)",
            )
        return None

    async def _attempt(self, connected: Callable[[], None]) -> None:
        stub = self._stub
        assert stub is not None
        reg = self.registration
        # The tier and the process's restarts ride in the metadata: the request's fields are
        # the original wire's.
        metadata = reg.metadata
        if reg.qos is not QoS.BATCHED:
            metadata = {**metadata, QOS_KEY: reg.qos.name.lower()}
        if self.options.process_restarts:
            metadata = {**metadata, RESTARTS_KEY: str(self.options.process_restarts)}
        request = bridge_pb2.AgentRegisterRequest(
            agent_id=reg.agent_id,
            subscribed_topics=self._topics,
            tools=self._tools_pb,
            metadata=metadata,
        )
        if reg.durable:
            request.durable.max_deliver = reg.max_deliver
        if reg.a2a is not None:
            request.a2a_card.CopyFrom(card_to_proto(reg.a2a))
        response = await unary(
            stub.RegisterAgent(
                request, timeout=self.options.rpc_timeout, metadata=self._agent_metadata()
            )
        )
        if not response.success:
            raise RegistrationRefused(reg.agent_id, response.error_message)
        # A server without secrets (older) answers none: then nothing is shown.
        self._secret = response.registration_secret or None
        key = (self.address, reg.agent_id)
        if self._secret is None:
            _held_secrets.pop(key, None)
        else:
            _held_secrets[key] = self._secret
        self._counters.registrations += 1
        assert self._sink is not None
        session = Session(
            self,
            stub,
            self._sink,
            self._counters,
            metadata=self._agent_metadata,
            restore=self._restorable,
            refused=self._drop_subscription,
        )
        self._session = session
        if self._closing:
            return

        established = False

        def on_connected() -> None:
            nonlocal established
            established = True
            names = bridge_pb2.StreamFeature
            self._counters.features = tuple(sorted(names.Name(f) for f in session.features))
            connected()

        try:
            await session.run(on_connected)
        except grpc.aio.AioRpcError as exc:
            # The server ended an established stream with a status no retry can fix: said as
            # the end it is (a release by the operator, above all), not as a failed connect.
            if not established or exc.code() not in _FATAL:
                raise
            if _released(exc):
                raise AgentReleased(self.address, reg.agent_id) from None
            raise ConnectionEnded(
                self.address, rpc_text(exc), code=exc.code().name, while_connected=True
            ) from None

    def _connected(self) -> bool:
        session = self._session
        return (
            not self._closing
            and session is not None
            and not session.ended
            and self._reconnector.status is ConnectionStatus.CONNECTED
        )

    async def _ready(self) -> Session:
        """The connected session, once there is one.

        Raises:
            ClientClosed: the client is closing or closed.
        """
        while True:
            if self._closing:
                raise ClientClosed("the bridge client is closed") from self._fatal
            session = self._session
            if session is not None and self._connected():
                return session
            await self.wait_connected()

    # ------------------------------------------------------------------ events

    async def publish(self, topic: str, event: Event, *, wait_accepted: bool = False) -> Acceptance:
        """Publish ``event`` on ``topic`` through the server's bus.

        Waits for a connection, for publish credit and for room in the outbound queue. With
        ``wait_accepted`` it also waits for the server's ``publish_ack`` (a server without
        that feature: until the frame is written).

        On a topic the server stores durably (it says which: ``STREAM_FEATURE_DURABLE_TOPICS``)
        it always waits for the ``publish_ack``, which the server sends once JetStream stored
        the event: when this returns, the event survives a crash of the server. A connection
        lost before that ack is not an error there: the same event is published again on the
        next connection (JetStream stores it once: ``Nats-Msg-Id``), within
        ``ClientOptions.durable_publish_timeout``.

        Returns:
            ``QUEUED`` without ``wait_accepted``; else ``ACCEPTED``, ``UNROUTED`` (the bus
            took it but nobody was subscribed: after a server restart, the subscribers had
            not come back within its settle window) or ``SENT`` (a server that does not
            acknowledge publishes).

        Raises:
            WireError: the event cannot go on the wire.
            PublishRejected: (``wait_accepted``, or a durable topic) the server's bus
                refused it.
            DurablePublishFailed: (a durable topic; a ``DurableUnavailable``) not stored:
                the server's log did not store it in time (its NATS server down), or no
                connection took it within ``durable_publish_timeout``. It may or may not have
                been stored; publishing the same event again stores it at most once.
            ConnectionLost: (``wait_accepted``) the connection dropped before the ack; the
                publish may or may not have been accepted.
            ClientClosed: the client is closed.
        """
        if self.durable_topics.matches(topic):
            return await self._publish_durable(topic, event)
        if not wait_accepted:
            session = self._session
            if session is not None and self._connected():
                size = event_size(event)
                if session.can_queue(size):
                    # The common case, credit and room at once: queued here, without the
                    # two coroutines of the path below (about 0.3 us of a publisher's CPU
                    # per event); same frame, same queue, same order.
                    frame = (
                        pack_event(topic, event, self.registration.agent_id)
                        if session.packed
                        else _publish_frame(
                            topic, event, sender=self.registration.agent_id, mirror=session.mirror
                        )
                    )
                    if session.queue_now(topic, frame, size):
                        await anyio.lowlevel.checkpoint()
                    return Acceptance.QUEUED
        return await self._publish(topic, event, AckWaiter(topic) if wait_accepted else None)

    async def _publish_durable(self, topic: str, event: Event) -> Acceptance:
        """A publish on a durable topic: returns once stored (see :meth:`publish`)."""
        limit = self.options.durable_publish_timeout
        deadline = anyio.current_time() + limit
        lost: ConnectionLost | None = None
        while True:
            try:
                if lost is None and self._connected():
                    # The common case: no deadline of our own (a cancel scope per event
                    # costs the publisher as much as the rest of the publish). A connection
                    # that dies meanwhile ends in ConnectionLost; the server answers a store
                    # it cannot make within its own publish timeout.
                    return await self._publish(topic, event, AckWaiter(topic))
                with anyio.move_on_after(deadline - anyio.current_time()):
                    return await self._publish(topic, event, AckWaiter(topic))
                break  # no connection took it in time
            except ConnectionLost as exc:
                # Written and perhaps stored, or never sent: the same event again (same id,
                # same topic) is stored once either way.
                lost = exc
                if anyio.current_time() >= deadline:
                    break
            except PublishRejected as exc:
                if exc.code != "DEADLINE_EXCEEDED":
                    raise
                # The server's log did not store it within its publish timeout.
                raise DurablePublishFailed(topic, exc.code, exc.reason) from exc
        reason = f"not stored within {limit:g} s"
        if lost is not None:
            reason += f" (the connection was lost: {lost})"
        raise DurablePublishFailed(topic, "UNAVAILABLE", reason) from lost

    async def _publish(self, topic: str, event: Event, waiter: AckWaiter | None) -> Acceptance:
        while True:
            session = self._session
            if session is None or not self._connected():
                session = await self._ready()  # (connected: no coroutine per publish)
            # Built for this session: an old server (after a reconnect) needs the mirror.
            frame = _publish_frame(
                topic,
                event,
                sender=self.registration.agent_id,
                mirror=session.mirror,
                packed=session.packed,
            )
            try:
                await session.publish(topic, frame, waiter, event_size(event))
            except SessionEnded:
                continue  # not queued: the next connection takes it
            break
        if waiter is None:
            return Acceptance.QUEUED
        await waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.outcome

    def publish_nowait(self, topic: str, event: Event) -> None:
        """Publish if that needs no wait at all (``ctx.emit(qos=REALTIME)``); a refusal is
        counted in ``statistics().dropped``.

        Raises:
            WouldBlock: not connected, no publish credit, or the outbound queue is full;
                nothing was queued.
            WireError: the event cannot go on the wire.
            ClientClosed: the client is closed.
        """
        if self._closing:
            raise ClientClosed("the bridge client is closed")
        if self.durable_topics.matches(topic):
            self._counters.dropped += 1
            raise WouldBlock(f"topic {topic!r} is durable: storing it needs a wait")
        session = self._session
        if (
            session is None
            or session.ended
            or self._reconnector.status is not ConnectionStatus.CONNECTED
        ):
            self._counters.dropped += 1
            raise WouldBlock("the bridge client is not connected")
        frame = _publish_frame(
            topic,
            event,
            sender=self.registration.agent_id,
            mirror=session.mirror,
            packed=session.packed,
        )
        try:
            session.publish_nowait(topic, frame, event_size(event))
        except (anyio.WouldBlock, SessionEnded):
            self._counters.dropped += 1
            raise WouldBlock("no publish credit or no room in the outbound queue") from None

    # ------------------------------------------------------------------ supervision

    async def report(
        self,
        status: AgentStatus,
        reason: str = "",
        *,
        restarts: int = 0,
        timeout: float | None = None,
    ) -> bool:
        """Tell the server the agent's own runtime changed its state (``AgentReport``: a
        restart, a failure, a stop), so the server publishes it as its lifecycle event and
        counts restarts. A final state (``stopped``, ``failed``) also releases the agent: the
        server dead-letters what its subscriptions hold and sends nothing more; this waits
        (at most ``timeout``, default the RPC timeout) until every delivery sent before that
        is read and handed to the inbound sink.

        Returns:
            False from a server that takes no reports (nothing was sent); also when the
            release was not confirmed in time.

        Raises:
            ClientClosed: the client is closed.
        """
        frame = report_to_proto(Report(status=status, reason=reason, restarts=restarts))
        while True:
            session = await self._ready()
            if bridge_pb2.STREAM_FEATURE_SUPERVISION not in session.features:
                return False
            try:
                await session.send(frame)
            except SessionEnded:
                continue
            break
        if status not in FINAL:
            return True
        limit = self.options.rpc_timeout if timeout is None else timeout
        with anyio.move_on_after(limit):
            await session.released.wait()
            return True
        log.warning("bridge: the server did not confirm the release of %s", self.agent_id)
        return False

    async def dead_letter(
        self, delivery: Delivery, *, reason: str, error: str, attempts: int = 0
    ) -> None:
        """Hand the server an event the agent could not handle; it goes to the server's
        ``loom.deadletter.{agent_id}`` with ``reason``, ``error`` and ``attempts`` in its
        metadata (``docs/agents.md``). To a server that takes no ``dead_letter`` frames it is
        published on that topic instead, in this agent's name (the original sender kept as
        ``dead_letter.sender``).

        Raises:
            WireError: the event cannot go on the wire.
            ClientClosed: the client is closed.
        """
        while True:
            session = await self._ready()
            if bridge_pb2.STREAM_FEATURE_SUPERVISION in session.features:
                frame = dead_letter_to_proto(
                    delivery, reason=reason, error=error, attempts=attempts
                )
                try:
                    await session.send(frame)
                except SessionEnded:
                    continue
                return
            break
        event = delivery.event
        agent_id = self.agent_id
        metadata = dead_letter_metadata(delivery, agent_id, reason, error, attempts)
        if event.envelope.sender != agent_id:
            metadata["dead_letter.sender"] = event.envelope.sender
        envelope = msgspec.structs.replace(event.envelope, sender=agent_id)
        event = msgspec.structs.replace(event, envelope=envelope, metadata=metadata)
        await self.publish(f"{DEAD_LETTER_PREFIX}.{agent_id}", event)

    @property
    def agent_id(self) -> str:
        """The registered agent's id."""
        return self.registration.agent_id

    async def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: tuple[str, ...] = (),
        buffer_size: int = 0,
    ) -> bool:
        """Subscribe on the stream; kept across reconnects until :meth:`unsubscribe`.

        Returns:
            False if this agent already held ``pattern`` (nothing was asked).

        Raises:
            InvalidTopic: a malformed pattern (checked here first).
            SubscribeRefused: the server refused it; nothing changed.
            ClientClosed: the client is closed.
        """
        validate_pattern(pattern)
        if pattern in self._subscriptions or pattern in self._topics:
            return False
        if pattern == mailbox_topic(self.registration.agent_id):
            return False
        sub = _Subscription(
            pattern=pattern, qos=qos, event_types=tuple(event_types), buffer_size=buffer_size
        )
        while True:
            session = await self._ready()
            try:
                await session.subscribe(sub)
            except SessionEnded:
                continue
            break
        # Recorded once confirmed; a session that ended before confirming resubscribed
        # without it, so the retry above on the next one cannot make a duplicate.
        self._subscriptions[pattern] = sub
        return True

    async def unsubscribe(self, pattern: str) -> bool:
        """Remove ``pattern`` (a dynamic subscription or a registered topic).

        Returns:
            False if this agent did not hold it.

        Raises:
            InvalidArgument: it is the agent's mailbox topic.
            SubscribeRefused: the server refused; the pattern is dropped here regardless, so
                a reconnect does not bring it back.
            ClientClosed: the client is closed.
        """
        if pattern == mailbox_topic(self.registration.agent_id):
            raise InvalidArgument("an agent cannot unsubscribe from its own mailbox topic")
        held = self._subscriptions.pop(pattern, None) is not None
        if pattern in self._topics:
            self._topics.remove(pattern)
            held = True
        if not held:
            return False
        session = await self._ready()
        with contextlib.suppress(SessionEnded):  # the next connection does not restore it
            await session.unsubscribe(pattern)
        return True

    def _restorable(self) -> list[_Subscription]:
        """The dynamic subscriptions a new stream restores, in the order they were made."""
        return list(self._subscriptions.values())

    def _drop_subscription(self, pattern: str) -> None:
        """Forget a subscription the server refused on a reconnect."""
        self._subscriptions.pop(pattern, None)

    def hold_credit(self) -> Callable[[], None]:
        """For an ``inbound`` sink, inside its ``deliver_inbound``: it holds the delivery it
        is handed rather than taking it in (nothing consumes there yet). The delivery is not
        credited back to the server, which counts it in flight, not ``delivered``, until the
        sink calls the returned function on handing it over; a delivery whose stream has
        ended by then was counted dropped (``closed``) there, and the call does nothing."""
        session = self._session
        assert session is not None  # only a session's reader hands deliveries to the sink
        return session.hold_credit()

    def subscriptions(self) -> tuple[str, ...]:
        """Every pattern a new connection restores (registered topics first)."""
        return (*self._topics, *self._subscriptions)

    async def receive(self) -> Delivery:
        """The next delivery.

        Raises:
            anyio.EndOfStream: the client is closed and the buffer is empty.
            InvalidArgument: the client delivers to an ``inbound`` sink instead.
        """
        if self._inbound is None:
            self._refuse_receive()
            raise ClientClosed("the bridge client is not open")
        return await self._inbound.receive()

    def _refuse_receive(self) -> None:
        if self._sink is not None and not isinstance(self._sink, _LaneInbound):
            raise InvalidArgument(
                "this bridge client delivers to its inbound sink; it has nothing to receive"
            )

    def __aiter__(self) -> BridgeClient:
        return self

    async def __anext__(self) -> Delivery:
        if self._inbound is None:
            self._refuse_receive()
            raise StopAsyncIteration
        try:
            return await self._inbound.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ tools & heartbeat

    async def call_tool(
        self,
        name: str,
        arguments: str,
        *,
        timeout: float | None = None,
        correlation_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Call a tool by name; return its output (JSON text).

        Connected to a server that grants ``STREAM_FEATURE_TOOL_CALLS``, the call goes on the
        open stream (a ``call`` frame, answered by ``call_result``): no RPC per call, which
        is most of a unary call's cost. Otherwise (an original-Loom server, no connection yet,
        a full outbound queue) it is a ``ForwardToolCall`` RPC.

        ``timeout`` goes out as ``timeout_ms`` and bounds our wait (for the RPC: its
        deadline, shortened to the enclosing cancel scope's deadline if that is sooner);
        ``None`` sends 0 (the server's default) and waits at most ``tool_deadline``.
        Cancelling the caller cancels the call (on the stream: a ``cancel_call`` frame).

        Raises:
            ToolNotFound, InvalidToolArguments, ToolTimeout, ToolPermissionDenied, ToolFailed: as
                in process; the timeout also when the connection did not come back in time.
            ToolCallRefused: made for a turn whose call scope has no calls left (nothing is
                sent; docs/guardrails.md).
            ClientClosed: the client is closed.
        """
        if timeout is not None and not timeout > 0:
            raise InvalidArgument(f"timeout must be > 0 seconds, not {timeout!r}")
        scope = scope_headers()
        frame = current_frame()
        if frame is not None and not frame.counted and not frame.scope.exact:
            # (A scope reserved from the server is counted there, as the call arrives.)
            # Made for a turn by a tool serving it here: this process's copy of the turn's
            # scope counts it (ToolCallRefused past the calls left), and says so.
            frame.scope.take(name)
            scope["loom-scope-counted"] = "1"
            # The calls left now (this one counted): the server's shared copy of a scope this
            # process holds bounds the other processes' calls by it.
            scope["loom-scope-caps"] = frame.scope.caps_left()
        if frame is not None:
            frame.scope.forwarded += 1  # the server counts it: not one of this process's own
        approval = ruled_approval()
        if approval:  # a human approved this call: the server's gated tool may check it
            scope[APPROVAL_HEADER] = approval
        request = ToolCallRequest(
            id=new_id(),
            name=name,
            arguments=arguments,
            # With a span current (a handler's, a tool call's), its context goes along:
            # the server and the agent serving the call continue the trace. Made for a
            # turn's tool call, the turn's call scope goes along too (its caps).
            headers={**(headers or {}), **trace_headers(), **scope},
            timeout_ms=0 if timeout is None else max(1, math.ceil(timeout * 1000)),
            correlation_id=correlation_id,
        )
        msg = tool_call_to_proto(request)
        budget = timeout if timeout is not None else self.options.tool_deadline
        if self._connected():
            session = self._session
            assert session is not None
            if session.stream_calls:
                # A caller that takes partial output (a turn's tool call) gets the pieces the
                # server relays, before the result.
                pieces = relay() if session.tool_output else None
                if pieces is not None:
                    msg.headers[WANTS_OUTPUT] = "1"
                try:
                    waiter = session.start_call(msg, pieces)
                except (anyio.WouldBlock, SessionEnded):
                    pass  # a full queue or a session just gone: the RPC below
                else:
                    return await self._await_call(session, msg.id, waiter, name, budget)
        now = anyio.current_time()
        deadline = now + budget
        if not self._connected():
            with anyio.move_on_after(budget):
                await self._ready()
            if not self._connected():
                raise ToolTimeout(budget, tool=name)
            now = anyio.current_time()
        stub = self._stub
        assert stub is not None
        # No cancel scope of our own (it would cost more than the rest of the call): the RPC's
        # deadline is our timeout, so grpc ends the call with DEADLINE_EXCEEDED (a ToolTimeout)
        # and the server, which also got timeout_ms, stops the tool. An enclosing scope with a
        # sooner deadline cancels the call as itself; the RPC's deadline is a backstop a little
        # after it.
        left = min(deadline, anyio.current_effective_deadline() + _DEADLINE_SLACK) - now
        try:
            result = await unary(
                stub.ForwardToolCall(msg, timeout=max(0.001, left), metadata=self._metadata())
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(name, exc, budget) from None
        except ConnectionLost:
            raise ToolTimeout(budget, tool=name) from None
        outcome = tool_result_from_proto(result)
        _note_scope_calls(outcome)
        if outcome.status is ToolStatus.OK:
            return outcome.output
        raise error_from_outcome(outcome, tool=name, timeout=budget)

    async def _await_call(
        self, session: Session, call_id: str, waiter: CallWaiter, name: str, budget: float
    ) -> str:
        """The output of a call made on the stream (see :meth:`call_tool`)."""
        try:
            with anyio.move_on_after(budget):
                if waiter.pieces is None:
                    await waiter.event.wait()
                else:
                    await drain_until(waiter.pieces, waiter.event)
        finally:
            if not waiter.event.is_set():  # timed out or cancelled: the server may stop
                session.withdraw_call(call_id, "the caller gave up")
            report_drops(waiter.pieces, call_id, name)
        if not waiter.event.is_set():
            raise ToolTimeout(budget, tool=name)
        if waiter.error is not None:
            raise ToolFailed("UNAVAILABLE", str(waiter.error), tool=name)
        assert waiter.result is not None
        outcome = tool_result_from_proto(waiter.result)
        _note_scope_calls(outcome)
        if outcome.status is ToolStatus.OK:
            return outcome.output
        raise error_from_outcome(outcome, tool=name, timeout=budget)

    async def list_tools(self, *, prefix: str = "") -> list[ToolDescriptor]:
        """Every tool callable through the server now (``ToolService.ListTools``): agents'
        capabilities, local and remote, then the runtime's own tools (native, MCP).

        Raises:
            ConnectionLost: the server did not answer within ``rpc_timeout``.
            ClientClosed: the client is closed.
        """
        await self._ready()
        assert self._channel is not None
        stub = tools_pb2_grpc.ToolServiceStub(self._channel)
        try:
            response = await unary(
                stub.ListTools(
                    tools_pb2.ListToolsRequest(name_prefix=prefix),
                    timeout=self.options.rpc_timeout,
                    metadata=self._metadata(),
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise ConnectionLost(f"ToolService.ListTools failed: {exc.details()}") from None
        return [tool_descriptor_from_proto(t) for t in response.tools]

    def llm(self, model: str = "", *, timeout_s: float = 300.0) -> ServerLLM:
        """The server's model (``loom.v1.LLM``) as an :class:`~loom.runtime.llm.LLM` over this
        connection: each call waits for the connection (within its deadline) and carries the
        token, so this process needs no API key (``bridge/_llm_client.py``).

        Args:
            model: a provider of the server's ``[llm]`` by name; ``""``: its router.
            timeout_s: the deadline of a call whose request sets no ``timeout_s``.
        """
        return ServerLLM(self._llm_channel, self._metadata, model=model, timeout_s=timeout_s)

    def approvals(self) -> RemoteApprovals:
        """The server's approvals store (``loom.v1.Approvals``) for this agent's turns, over
        this connection (``bridge/_approvals_remote.py``): ``ctx.approvals`` remotely."""
        return RemoteApprovals(self._llm_channel, self._metadata)

    def budgets(self) -> RemoteBudgets:
        """The server's budget ledger (``loom.v1.Budgets``) for this agent's model calls, over
        this connection (``bridge/_budget_remote.py``): where a remote turn's spend counts;
        its :attr:`~RemoteBudgets.scopes` are :meth:`scopes`."""
        budgets = RemoteBudgets(self._llm_channel, self._metadata)
        budgets.scopes = self.scopes()
        return budgets

    def scopes(self) -> RemoteScopes:
        """The server as the authority over the call scopes of capped turns
        (``loom.v1.Scopes``, ``bridge/_scope_remote.py``): every call this process makes for
        such a turn reserves its count and parallel slot there first. One per client."""
        if self._scopes is None:
            self._scopes = RemoteScopes(
                self._llm_channel, self._metadata, self.registration.agent_id, self._spawn
            )
        return self._scopes

    def _spawn(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._tg is None:
            raise RuntimeError("the client is not open")
        self._tg.start_soon(task)

    async def _llm_channel(self) -> grpc.aio.Channel:
        await self._ready()
        assert self._channel is not None
        return self._channel

    async def heartbeat(self) -> float:
        """Call the unary ``Heartbeat``; return the round trip in seconds.

        Raises:
            ConnectionLost: the server did not answer within ``rpc_timeout``.
        """
        stub = self._stub
        if stub is None or self._closing:
            raise ClientClosed("the bridge client is not open")
        start = time.monotonic()
        try:
            await unary(
                stub.Heartbeat(
                    bridge_pb2.HeartbeatRequest(timestamp_ms=int(time.time() * 1000)),
                    timeout=self.options.rpc_timeout,
                    metadata=self._metadata(),
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise ConnectionLost(rpc_text(exc)) from None
        return time.monotonic() - start
