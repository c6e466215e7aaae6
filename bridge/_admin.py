"""``AdminClient``: the server's services without an agent identity, for tools and the CLI.

It speaks ``Directory``, ``EventBus`` and ``ToolService`` (never ``Bridge``: it registers no
agent), and returns the runtime's own types (:class:`~loom.runtime.AgentInfo`,
:class:`~loom.runtime.BusStats`, :class:`~loom.runtime.Delivery`), so nothing generated
leaves ``bridge/``.

Nothing waits forever: every call carries a deadline (``timeout``), and a server that cannot
be reached fails the call at once with :class:`ConnectFailed` (gRPC's fail-fast: a channel
that cannot connect ends the call with ``UNAVAILABLE`` rather than waiting for the server).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import anyio
import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import (
    bridge_pb2,
    bus_pb2,
    bus_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from loom.runtime import (
    AgentInfo,
    BusStats,
    DeadlineExceeded,
    Delivery,
    DurabilityUnavailable,
    DurableStats,
    DurableUnavailable,
    Event,
    InvalidArgument,
    LoomError,
    Position,
    QoS,
)
from loom.runtime.lowlevel import new_id
from loom.runtime.tools import ToolOutputSink

from ._aio import rpc_text, unary
from ._client import ClientTLS
from ._convert import (
    bus_stats_from_proto,
    delivery_from_proto,
    durable_stats_from_proto,
    publish_to_proto,
    qos_to_proto,
    tool_call_to_proto,
    tool_descriptor_from_proto,
    tool_result_from_proto,
)
from ._directory_service import agent_info_from_proto
from ._errors import ConnectFailed, ConnectionLost
from ._server_status import ServerStatus, server_status_from_proto
from ._status import error_from_status
from ._tool_stream import call_tool_stream
from ._wire_types import ToolCallOutcome, ToolCallRequest, ToolDescriptor

__all__ = ["AdminClient", "PublishOutcome", "Rejection"]

# A tool call's RPC deadline is its timeout plus this: the server answers TOOL_TIMEOUT itself
# (with the tool's name and the timeout) rather than the client cutting the call short.
_TOOL_MARGIN_S = 2.0


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A publish the bus did not accept.

    Attributes:
        position: its 1-based position among the events of the call.
        code: a gRPC status name, e.g. ``"INVALID_ARGUMENT"``.
        reason: what is wrong, in words.
    """

    position: int
    code: str
    reason: str


class PublishOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What ``EventBus.Publish`` answered.

    Attributes:
        accepted: how many events the bus accepted.
        rejections: the others.
    """

    accepted: int
    rejections: tuple[Rejection, ...] = ()


class AdminClient:
    """A connection to a Loom server for looking and poking, not for being an agent.

    ::

        async with AdminClient("127.0.0.1:50051", timeout=5) as admin:
            for agent in await admin.list_agents():
                print(agent.id, agent.status)

    Args:
        address: ``host:port`` of the server.
        token: the bearer token, if the server wants one.
        tls: ``True`` for TLS with the system's CAs, or a :class:`ClientTLS`.
        timeout: the deadline of every call in seconds (for a tool call: added to the tool's
            own timeout; for :meth:`subscribe`: the wait for the subscription to be live).

    Every method raises:
        ConnectFailed: no server answered at ``address`` (refused, unresolvable, or TLS
            failed to set up).
        DeadlineExceeded: the server did not answer within ``timeout``.
        Unauthenticated: the token is missing or wrong.
        InvalidArgument: the server refused the request as malformed.
        StatusError: any other status.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not address:
            raise InvalidArgument("the server address must not be empty (host:port)")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidArgument(f"timeout must be > 0 seconds, not {timeout!r}")
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._tls = ClientTLS() if tls is True else (tls or None)
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> AdminClient:
        tls = self._tls
        if tls is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        else:
            options = []
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.root_certificates,
                private_key=tls.private_key,
                certificate_chain=tls.certificate_chain,
            )
            self._channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel; calls in flight are cancelled. Idempotent."""
        channel, self._channel = self._channel, None
        if channel is not None:
            with anyio.CancelScope(shield=True):
                await channel.close(grace=None)

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise InvalidArgument("the AdminClient is not open (use it with async with)")
        return self._channel

    def _error(self, exc: grpc.aio.AioRpcError, what: str, timeout: float) -> LoomError:
        code = exc.code()
        details = exc.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE:
            if "Cancelling all calls" in details:
                # grpc's words for a server that shut down while the call was in progress:
                # it was reached, so "cannot connect" would send the user looking elsewhere.
                return ConnectionLost(f"{what}: {self.address} shut down before answering")
            return ConnectFailed(self.address, rpc_text(exc), code=code.name)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"{what}: {self.address} did not answer within {timeout:g} s")
        return error_from_status(code, f"{what}: {details}")

    # ------------------------------------------------------------------ Server

    async def status(self) -> ServerStatus:
        """The server's version, uptime and headline counts (``loom status``)."""
        stub = server_pb2_grpc.ServerStub(self._open())
        try:
            response = await unary(
                stub.GetStatus(
                    server_pb2.GetStatusRequest(), timeout=self.timeout, metadata=self._metadata
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "status", self.timeout) from None
        return server_status_from_proto(response)

    # ------------------------------------------------------------------ Directory

    async def list_agents(self, *, capability: str = "", topic: str = "") -> list[AgentInfo]:
        """The server's agents, local and remote, in the order they were added.

        Args:
            capability: only agents offering the tool with this name.
            topic: only agents that would receive an event published on this concrete topic.
        """
        stub = directory_pb2_grpc.DirectoryStub(self._open())
        request = directory_pb2.ListAgentsRequest(capability=capability, topic=topic)
        try:
            response = await unary(
                stub.ListAgents(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "Directory.ListAgents", self.timeout) from None
        return [agent_info_from_proto(a) for a in response.agents]

    async def release_agent(self, agent_id: str) -> bool:
        """Free a remote agent's id (``Directory.ReleaseAgent``): its registration and secret
        are forgotten and its open stream, if any, ends. Return whether the server held a
        registration for it. Needs the server's admin token as this client's ``token``.

        Raises:
            WrongAgent: the token is not the server's admin token.
        """
        stub = directory_pb2_grpc.DirectoryStub(self._open())
        request = directory_pb2.ReleaseAgentRequest(agent_id=agent_id)
        try:
            response = await unary(
                stub.ReleaseAgent(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "Directory.ReleaseAgent", self.timeout) from None
        return response.released

    # ------------------------------------------------------------------ EventBus

    async def statistics(self, *, topics: bool = True, subscriptions: bool = False) -> BusStats:
        """The server bus's counters, with per-topic and per-subscription records if asked."""
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.GetStatsRequest(
            include_topics=topics, include_subscriptions=subscriptions
        )
        try:
            response = await unary(
                stub.GetStats(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "EventBus.GetStats", self.timeout) from None
        return bus_stats_from_proto(response)

    async def publish(
        self, topic: str, events: Sequence[Event], *, timeout: float | None = None
    ) -> PublishOutcome:
        """Publish ``events`` on ``topic`` in order; return what the bus accepted.

        The server waits for room where a lossless subscriber is full; ``timeout`` (default:
        the client's) bounds that wait. Cut off, the events not yet published are not.
        """
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.PublishRequest(publishes=[publish_to_proto(topic, e) for e in events])
        limit = self.timeout if timeout is None else timeout
        try:
            response = await unary(stub.Publish(request, timeout=limit, metadata=self._metadata))
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "EventBus.Publish", limit) from None
        return PublishOutcome(
            accepted=response.accepted,
            rejections=tuple(
                Rejection(position=r.sequence, code=r.code, reason=r.reason)
                for r in response.rejections
            ),
        )

    @asynccontextmanager
    async def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.REALTIME,
        event_types: Sequence[str] = (),
        buffer_size: int = 0,
    ) -> AsyncIterator[AsyncIterator[Delivery]]:
        """Subscribe on the server's bus for as long as the block lasts.

        Entering returns once the subscription is live (so nothing published afterwards is
        missed), or raises within ``timeout``. Iterate the result for deliveries, in bus
        order; iteration ends when the server ends the call (it raises the status, e.g.
        ``ConnectFailed`` when the server shut down, unless the block is left first).

        Args:
            pattern: a topic pattern (``*`` one segment, ``>`` the rest).
            qos: the subscription's tier; ``REALTIME`` (the default for an observer) drops for
                a slow reader instead of holding publishers back.
            event_types: only events of these types; empty for all.
            buffer_size: the subscription's bound on the server; 0 for the tier's default.
        """
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bridge_pb2.SubscribeRequest(
            pattern=pattern,
            qos=qos_to_proto(qos),
            event_types=list(event_types),
            buffer_size=buffer_size,
        )
        call = stub.Subscribe(request, metadata=self._metadata)
        try:
            try:
                with anyio.fail_after(self.timeout):
                    first: Any = await call.read()
            except TimeoutError:
                raise DeadlineExceeded(
                    f"EventBus.Subscribe: {self.address} did not confirm the subscription "
                    f"within {self.timeout:g} s"
                ) from None
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, "EventBus.Subscribe", self.timeout) from None
            if first is grpc.aio.EOF:
                raise ConnectFailed(self.address, "the subscription ended before it was live")
            yield self._deliveries(call)
        finally:
            call.cancel()

    async def _deliveries(
        self, call: grpc.aio.UnaryStreamCall[bridge_pb2.SubscribeRequest, bus_pb2.SubscribeResponse]
    ) -> AsyncIterator[Delivery]:
        while True:
            try:
                msg: Any = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, "EventBus.Subscribe", self.timeout) from None
            if msg is grpc.aio.EOF:
                return
            for delivery in msg.batch.deliveries:
                yield delivery_from_proto(delivery)

    # ------------------------------------------------------------------ durability

    async def durable_statistics(self) -> DurableStats | None:
        """The server's durable log: what it holds and each durable name's standing (its
        ``overflow``: events lost to it by the log's limits). ``None`` when the server has
        no durable log, its log did not answer, or the server predates this."""
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.GetStatsRequest(include_durable=True)
        try:
            response = await unary(
                stub.GetStats(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "EventBus.GetStats", self.timeout) from None
        if not response.HasField("durable"):
            return None
        return durable_stats_from_proto(response.durable)

    async def replay(
        self, pattern: str, *, since: Position | None = None, until: Position | None = None
    ) -> AsyncIterator[Delivery]:
        """The stored events on topics ``pattern`` matches, oldest first (``EventBus.Replay``;
        ``EventBus.replay`` on the server's bus). Each event's metadata carries its sequence
        in the log (``log.sequence``). Each message must come within ``timeout``.

        Raises:
            DurabilityUnavailable: the server's bus has no durable log (``--nats off``).
            WrongAgent: ``pattern`` names another agent's mailbox.
            InvalidArgument: a malformed pattern.
        """
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.ReplayRequest(pattern=pattern)
        if since is not None:
            request.since.CopyFrom(_position_to_proto(since))
        if until is not None:
            request.until.CopyFrom(_position_to_proto(until))
        call = stub.Replay(request, metadata=self._metadata)
        try:
            while True:
                try:
                    with anyio.fail_after(self.timeout):
                        msg: Any = await call.read()
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"EventBus.Replay: {self.address} sent nothing for {self.timeout:g} s"
                    ) from None
                except grpc.aio.AioRpcError as exc:
                    raise self._durable_error(exc, "EventBus.Replay") from None
                if msg is grpc.aio.EOF:
                    return
                yield delivery_from_proto(msg.delivery)
        finally:
            call.cancel()

    async def retry_dead_letter(self, sequence: int) -> tuple[str, str]:
        """Publish the dead letter at ``sequence`` again on its original topic, then remove
        it (``EventBus.RetryDeadLetter``). Returns the topic and the new event's id.

        Raises:
            WrongAgent: the server has an admin token and this client's is not it.
            InvalidArgument: the log holds no dead letter at ``sequence``.
            DurabilityUnavailable: the server's bus has no durable log.
        """
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.DeadLetterRequest(sequence=sequence)
        try:
            response = await unary(
                stub.RetryDeadLetter(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._durable_error(exc, "EventBus.RetryDeadLetter") from None
        return response.topic, response.event_id

    async def drop_dead_letter(self, sequence: int) -> None:
        """Remove the dead letter at ``sequence`` from the log (``EventBus.DropDeadLetter``).

        Raises:
            WrongAgent: the server has an admin token and this client's is not it.
            InvalidArgument: the log holds no dead letter at ``sequence``.
            DurabilityUnavailable: the server's bus has no durable log.
        """
        stub = bus_pb2_grpc.EventBusStub(self._open())
        request = bus_pb2.DeadLetterRequest(sequence=sequence)
        try:
            await unary(stub.DropDeadLetter(request, timeout=self.timeout, metadata=self._metadata))
        except grpc.aio.AioRpcError as exc:
            raise self._durable_error(exc, "EventBus.DropDeadLetter") from None

    def _durable_error(self, exc: grpc.aio.AioRpcError, what: str) -> LoomError:
        code = exc.code()
        details = exc.details() or ""
        # UNIMPLEMENTED is DurabilityUnavailable's code (bridge/_status.py): with its words, the
        # server's bus has no durable log; without them, an older server without these calls.
        unavailable = code is grpc.StatusCode.UNIMPLEMENTED and "needs durability" in details
        if code is grpc.StatusCode.UNIMPLEMENTED:
            if not unavailable:
                details = f"{what}: {self.address} does not offer durability ({details})"
            error = DurabilityUnavailable(what)
            error.args = (details,)
            return error
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and details != "Deadline Exceeded":
            # Not this call's own deadline (grpc's words) but the server's DurableUnavailable,
            # which crosses as DEADLINE_EXCEEDED (bridge/_status.py): its log did not answer.
            return DurableUnavailable(f"{what}: {details}")
        return self._error(exc, what, self.timeout)

    # ------------------------------------------------------------------ ToolService

    async def list_tools(self, *, prefix: str = "") -> list[ToolDescriptor]:
        """Every tool the server can call, sorted by name (``prefix``: names starting so)."""
        stub = tools_pb2_grpc.ToolServiceStub(self._open())
        request = tools_pb2.ListToolsRequest(name_prefix=prefix)
        try:
            response = await unary(
                stub.ListTools(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "ToolService.ListTools", self.timeout) from None
        return [tool_descriptor_from_proto(t) for t in response.tools]

    async def call_tool(
        self,
        name: str,
        arguments: str,
        *,
        timeout: float | None = None,
        on_output: ToolOutputSink | None = None,
    ) -> ToolCallOutcome:
        """Call a tool through ``ToolService.Call``; return the outcome, failed or not.

        A failed tool is an outcome with its status (``TOOL_NOT_FOUND``, ...), not an
        exception: the caller decides what a failure means to it.

        Args:
            name: the tool's name.
            arguments: the arguments object as JSON text.
            timeout: the tool's timeout in seconds (``timeout_ms``); ``None``: the server's
                default, under a deadline of the client's ``timeout``.
            on_output: takes each piece of the tool's partial output as it comes, before the
                outcome returns (``ToolService.CallStream``); a server that predates it is
                called with ``Call``, and sends none.
        """
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidArgument(f"timeout must be > 0 seconds, not {timeout!r}")
        stub = tools_pb2_grpc.ToolServiceStub(self._open())
        request = ToolCallRequest(
            id=new_id(),
            name=name,
            arguments=arguments,
            timeout_ms=0 if timeout is None else max(1, math.ceil(timeout * 1000)),
        )
        deadline = self.timeout if timeout is None else timeout + _TOOL_MARGIN_S
        if on_output is not None:
            try:
                streamed = await call_tool_stream(
                    stub, tool_call_to_proto(request), on_output, deadline, self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, "ToolService.CallStream", deadline) from None
            if streamed is not None:
                return streamed
        try:
            result = await unary(
                stub.Call(tool_call_to_proto(request), timeout=deadline, metadata=self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, "ToolService.Call", deadline) from None
        return tool_result_from_proto(result)


def _position_to_proto(position: Position) -> bus_pb2.ReplayPosition:
    if isinstance(position, bool):
        raise InvalidArgument(f"not a replay position: {position!r}")
    if isinstance(position, int):
        if position < 1:
            raise InvalidArgument(f"a log sequence starts at 1, not {position}")
        return bus_pb2.ReplayPosition(sequence=position)
    if isinstance(position, timedelta):
        return bus_pb2.ReplayPosition(ago_ms=max(0, int(position.total_seconds() * 1000)))
    if isinstance(position, datetime):
        return bus_pb2.ReplayPosition(time_ms=int(position.timestamp() * 1000))
    raise InvalidArgument(f"not a replay position: {position!r}")
