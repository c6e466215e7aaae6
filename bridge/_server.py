"""The gRPC server of the bridge: ``Bridge``, ``ToolService``, ``EventBus``, health, reflection.

:class:`BridgeServer` hosts them on one port, on an :class:`AgentRuntime`. ``docs/bridge.md``
has the semantics a client relies on (handshake, batching, flow control, tool calls, auth,
limits, status codes).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, cast

import anyio
import grpc
import grpc.aio
import msgspec
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from loom.bridge._generated import (
    approvals_pb2,
    approvals_pb2_grpc,
    bridge_pb2,
    bridge_pb2_grpc,
    budget_service_pb2,
    budget_service_pb2_grpc,
    bus_pb2,
    bus_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    llm_pb2,
    llm_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    scopes_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from loom.runtime import (
    AgentCard,
    AgentExists,
    AgentRuntime,
    BusClosed,
    DurabilityUnavailable,
    InvalidArgument,
)
from loom.runtime.lowlevel import RemoteTool

from ._approvals_service import ApprovalsServicer
from ._auth import TLSConfig, TokenInterceptor, certificate_names, check_bind
from ._budget_service import BudgetsServicer
from ._calls import serve_tool_call
from ._cluster_status import ClusterInfo
from ._directory_service import DirectoryService
from ._errors import (
    BindError,
    HandshakeError,
    LimitExceeded,
    NotRegistered,
    OutsideNamespace,
    WireError,
    WrongAgent,
)
from ._handlers import GenericOnly, RequestGuard
from ._hub import Hub, Registration
from ._identity import (
    Principal,
    authorize_agent,
    authorize_read,
    authorize_tool,
    claimed_sender,
)
from ._limits import Limits
from ._llm_service import LLMService
from ._memory_service import MemoryServicer
from ._memory_store import IN_MEMORY, PlanMemory
from ._scope_service import SCOPES_SERVICE, ScopesServicer
from ._server_session import Session
from ._server_status import NatsInfo, ServerService
from ._services import EventBusService, ToolService
from ._status import status_of
from ._tenants import Tenant, Tenants
from ._wire_types import HELD_METADATA, RELEASED_METADATA, SECRET_METADATA, VALIDATES_KEY

__all__ = ["BridgeServer", "ServerStatistics"]

log = logging.getLogger("loom.bridge")

SERVICE_NAMES = (
    bridge_pb2.DESCRIPTOR.services_by_name["Bridge"].full_name,
    tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
    bus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name,
    directory_pb2.DESCRIPTOR.services_by_name["Directory"].full_name,
    server_pb2.DESCRIPTOR.services_by_name["Server"].full_name,
    llm_pb2.DESCRIPTOR.services_by_name["LLM"].full_name,
)
_LLM_SERVICE = SERVICE_NAMES[-1]
MEMORY_SERVICE = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name
"""The original Loom's ``MemoryService`` (``bridge/_memory_service.py``)."""
APPROVALS_SERVICE = approvals_pb2.DESCRIPTOR.services_by_name["Approvals"].full_name
"""``loom.v1.Approvals``: human approval of tool calls (``bridge/_approvals_service.py``)."""
BUDGETS_SERVICE = budget_service_pb2.DESCRIPTOR.services_by_name["Budgets"].full_name
"""``loom.v1.Budgets``: connected agents' spend in this server's ledger
(``bridge/_budget_service.py``)."""

_Context = grpc.aio.ServicerContext[Any, Any]


def _secret(context: _Context) -> str | None:
    """The registration secret the call shows (``loom-agent-secret`` metadata), if any."""
    for key, value in context.invocation_metadata() or ():
        if key == SECRET_METADATA:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class BridgeServicer(bridge_pb2_grpc.BridgeServicer):
    """``loom.v1.Bridge``: how an agent process connects."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def RegisterAgent(
        self, request: bridge_pb2.AgentRegisterRequest, context: _Context
    ) -> bridge_pb2.AgentRegisterResponse:
        try:
            self._check_identity(context, request.agent_id)
            reg = Registration.from_proto(request, self.hub.limits)
            caller = self.hub.caller(context)
            authorize_agent(caller, reg.agent_id, self.hub.tenants)
            agent = Principal.agent(reg.agent_id, caller.namespace)
            for pattern in reg.topics:
                authorize_read(agent, pattern)
            for tool in reg.tools:
                authorize_tool(caller, tool.name, self.hub.tenants, declare=True)
            if reg.durable and self.hub.runtime.bus.plumbing.durable_log is None:
                # Refused now, not on the stream: the agent learns it before it runs.
                raise DurabilityUnavailable(f"durable agent {reg.agent_id!r}")
            secret = self.hub.register(reg, _secret(context))
        except (
            InvalidArgument,
            WireError,
            LimitExceeded,
            AgentExists,
            WrongAgent,
            DurabilityUnavailable,
        ) as exc:
            log.info("agent %s refused: %s", request.agent_id, exc)
            trailer: tuple[tuple[str, str], ...] = ()
            # A namespace's refusal is for good: no "free again at" for the client to wait on.
            held = (
                self.hub.held_for(request.agent_id)
                if isinstance(exc, WrongAgent) and not isinstance(exc, OutsideNamespace)
                else None
            )
            if held is not None:
                # When the id is free again, so a new process of the agent can wait for it.
                trailer = ((HELD_METADATA, str(math.ceil(held * 1000))),)
            await context.abort(status_of(exc), str(exc), trailing_metadata=trailer)
        log.info(
            "agent %s registered (%d topics, %d tools)",
            reg.agent_id,
            len(reg.topics),
            len(reg.tools),
        )
        return bridge_pb2.AgentRegisterResponse(success=True, registration_secret=secret)

    async def Heartbeat(
        self, request: bridge_pb2.HeartbeatRequest, context: _Context
    ) -> bridge_pb2.HeartbeatResponse:
        return bridge_pb2.HeartbeatResponse(timestamp_ms=request.timestamp_ms, status="ok")

    async def ForwardToolCall(
        self, request: tools_pb2.ToolCall, context: _Context
    ) -> tools_pb2.ToolResult:
        try:
            caller = self.hub.caller(context)
            claimed_sender(caller, request.headers)
            authorize_tool(caller, request.name, self.hub.tenants)
        except WrongAgent as exc:
            await context.abort(status_of(exc), str(exc))
        return await serve_tool_call(self.hub.runtime, request, context)

    async def EventStream(  # type: ignore[override]
        self, request_iterator: Any, context: _Context
    ) -> None:
        try:
            session = await self._handshake(context)
        except (
            HandshakeError,
            NotRegistered,
            AgentExists,
            BusClosed,
            WrongAgent,
        ) as exc:
            log.info("event stream refused: %s", exc)
            context.set_code(status_of(exc))
            context.set_details(str(exc))
            return
        except TimeoutError:
            context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
            context.set_details(
                f"no handshake within {self.hub.limits.handshake_timeout_s:g} s: send "
                "ack(message_id=<agent id>) first"
            )
            return
        log.info("agent %s connected", session.agent_id)
        reg = self.hub.registrations.get(session.agent_id)
        card = reg.a2a if reg is not None else None
        if card is not None:
            self.hub.announce(session.agent_id, card)
        status = None
        try:
            status = await session.run()
        finally:
            # Also when the call is cancelled under it (a client gone, a server stopping):
            # every disconnect is logged, once.
            why = f": {status[1]}" if status else ""
            log.info("agent %s disconnected%s", session.agent_id, why)
            if card is not None:
                self.hub.announce(session.agent_id, None)
        if status is not None:
            context.set_code(status[0])
            context.set_details(status[1])
            if session.released_by_operator:
                # So the client knows not to come back, rather than reading it from the words.
                context.set_trailing_metadata(((RELEASED_METADATA, "operator"),))

    def _check_identity(self, context: _Context, agent_id: str) -> None:
        """With ``TLSConfig.bind_agent_ids``: the client certificate must name ``agent_id``.

        Raises:
            WrongAgent: it does not (``PERMISSION_DENIED``).
        """
        if not self.hub.bind_agent_ids:
            return
        names = certificate_names(context)
        if agent_id not in names:
            shown = ", ".join(sorted(names)) or "nothing"
            raise WrongAgent(
                f"the client certificate names {shown}, not agent {agent_id!r}: it may act "
                "only as an agent it names (bind_agent_ids)"
            )

    async def _handshake(self, context: _Context) -> Session:
        hub = self.hub
        if hub.closing:
            raise BusClosed("the server is shutting down")
        with anyio.fail_after(hub.limits.handshake_timeout_s):
            try:
                first = await context.read()
            except DecodeError as exc:
                raise HandshakeError(f"the first frame is not a ClientEvent: {exc}") from None
        if not isinstance(first, bridge_pb2.ClientEvent):  # grpc.aio.EOF
            raise HandshakeError("the stream ended before the handshake ack")
        kind = first.WhichOneof("msg")
        if kind != "ack":
            raise HandshakeError(
                "the first ClientEvent must be an ack whose message_id is the agent id given "
                f"to RegisterAgent, not {kind or 'an empty frame'}"
            )
        agent_id = first.ack.message_id
        if not agent_id:
            raise HandshakeError("the handshake ack must carry the agent id in message_id")
        self._check_identity(context, agent_id)
        authorize_agent(hub.caller(context), agent_id, hub.tenants)
        reg = hub.registrations.get(agent_id)
        if reg is None:
            raise NotRegistered(agent_id)
        if agent_id in hub.sessions:
            raise AgentExists(agent_id, "another stream is open for it")
        hub.admit_stream(agent_id, _secret(context))
        hub.count_process_restarts(agent_id, reg)
        remote = await hub.runtime.attach_remote(
            agent_id, metadata=reg.metadata, qos=reg.qos, tool_timeout_s=hub.limits.tool_timeout_s
        )
        session = Session(hub, remote, context)
        hub.sessions[agent_id] = session
        try:
            if reg.durable:
                # Its topics come from the durable log once the hello grants durability, or
                # from memory if it does not (Session._negotiate).
                session.durable = reg
            else:
                for pattern in reg.topics:
                    remote.add_pattern(pattern)
            session.screen(reg.topics)
            remote.declare_tools(
                RemoteTool(
                    t.name,
                    t.description,
                    reg.schemas[t.name],
                    session.invoke,
                    validates_arguments=t.metadata.get(VALIDATES_KEY) == "true",
                )
                for t in reg.tools
            )
        except BaseException:
            del hub.sessions[agent_id]
            with anyio.CancelScope(shield=True):
                await remote.detach("refused on connect")
            raise
        hub.settle.activity()  # its subscriptions are live: held publishes look again
        return session


class _Health(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard health service, with ``List`` too: grpcio-health-checking's servicer
    leaves it to the generated default, which answers ``UNIMPLEMENTED`` and has grpc log an
    ERROR traceback for every call (anyone could fill the log with them)."""

    def __init__(self, names: tuple[str, ...] = SERVICE_NAMES) -> None:
        super().__init__()
        self.names = names

    async def List(
        self, request: health_pb2.HealthListRequest, context: _Context
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name in ("", *self.names):
            check = await self.Check(health_pb2.HealthCheckRequest(service=name), context)
            response.statuses[name].CopyFrom(check)
        return response


def _check_bindable(host: str, port: int, address: str) -> None:
    """Bind ``host:port`` with a plain socket first, as grpc would (``SO_REUSEADDR``, no
    ``SO_REUSEPORT``), so that a taken port is one clear line (``cannot listen on
    127.0.0.1:50051: address already in use``) rather than grpc's C-core log and its "set
    GRPC_VERBOSITY" hint. Port 0 always binds; a race with another process after this check
    still ends in grpc's own, vaguer, error.

    Raises:
        BindError: the address cannot be bound (the OS's reason, in its words).
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BindError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise BindError(f"cannot listen on {address}: {reason}") from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ServerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a :class:`BridgeServer` (:meth:`BridgeServer.statistics`).

    Attributes:
        registered: agents that called ``RegisterAgent`` and are remembered.
        connected: agents whose ``EventStream`` is open.
        pending_tool_calls: tool calls pushed to agents and not yet answered.
        settling: the settle window is open (publishes no subscription matches are held).
        held_publishes: publishes that waited in the settle window.
        malformed_requests: requests (or request frames) whose bytes did not decode as the
            method's message, answered ``INVALID_ARGUMENT`` (``docs/security.md``).
        in_flight: deliveries sent on agents' streams and not yet credited back.
        in_flight_bytes: their encoded bytes (each stream's within its byte window).
        streams_opened: ``EventStream`` calls since the server started.
        frames_received: frames read from those streams (``ClientEvent``).
        bytes_received: their encoded bytes.
        frames_sent: frames written to them (``ServerEvent``).
        bytes_sent: their encoded bytes.
    """

    registered: int
    connected: int
    pending_tool_calls: int
    settling: bool = False
    held_publishes: int = 0
    malformed_requests: int = 0
    in_flight: int = 0
    in_flight_bytes: int = 0
    streams_opened: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0


class BridgeServer:
    """Loom's gRPC server on an :class:`AgentRuntime`: ``Bridge``, ``ToolService``,
    ``EventBus``, ``Directory``, ``Server``, ``LLM`` (the runtime's model, ``runtime.llm``),
    the standard health service and server reflection, on one port.

    Use it as an async context manager (inside the runtime's)::

        async with BridgeServer(runtime, port=0) as server:
            print("listening on", server.address)

    Entering binds and starts serving; leaving drains: health turns ``NOT_SERVING``, open
    streams end with ``UNAVAILABLE``, and calls in flight get ``grace_s`` to finish before
    they are cancelled.

    Args:
        runtime: the runtime to serve.
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one (read it from :attr:`port`).
        token: a bearer token every call must carry (``authorization: Bearer <token>``).
        tls: TLS (mutual when it names a client CA).
        limits: the server's limits.
        grace_s: seconds calls in flight get to finish when the server stops.
        settle_s: the settle window after the server starts: for at most this long, a
            stream's publish that no subscription matches waits for agents to reattach (see
            ``docs/bridge.md``, "Restarts"). 0 (the default here; ``loom serve`` uses 2 s):
            none, for a server whose process starts its own agents.
        admin_token: a second bearer token, accepted wherever ``token`` is, that makes its
            caller the operator: it may read every agent's mailbox and release agent ids
            (``Directory.ReleaseAgent``). ``None``: nobody may.
        nats: where the server's NATS is, asked at each ``GetStatus`` (``None``: reported
            as ``off``).
        cluster: this node's cluster transport statistics, asked at each ``GetStatus``
            (``ClusterTransport.statistics``; ``None``: no cluster node).
        tenants: tenant tokens, each accepted wherever ``token`` is and confining its caller
            to a namespace (``docs/security.md``, "Tenants"). With them ``token`` may be
            ``None``: only they and the admin token are admitted then.
        data_dir: where the server keeps what it stores: the original Loom's
            ``MemoryService`` in ``data_dir/memory.sqlite3`` (``loom serve``: its data
            directory), opened and closed with the server. ``None``: in memory, gone with
            the server, as the original's was. ``docs/interop.md``.
        memory: a ``MemoryService`` store opened and closed by the caller (to choose its
            file or its :class:`MemoryLimits`); it takes the place of ``data_dir``'s.

    Raises:
        InsecureBind: ``host`` is not loopback and neither ``token`` nor ``tls`` is given.
        WeakToken: ``host`` is not loopback and ``token``, ``admin_token`` or a tenant
            token is too weak (``loom.bridge.token_weakness``).
        InvalidArgument: two tenants share a token, or one has no valid namespace.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls: TLSConfig | None = None,
        limits: Limits | None = None,
        grace_s: float = 5.0,
        settle_s: float = 0.0,
        admin_token: str | None = None,
        nats: Callable[[], NatsInfo] | None = None,
        cluster: Callable[[], ClusterInfo] | None = None,
        tenants: Iterable[Tenant] = (),
        data_dir: str | os.PathLike[str] | None = None,
        memory: PlanMemory | None = None,
    ) -> None:
        if admin_token is not None and not admin_token:
            raise InvalidArgument("admin_token must not be empty (None for none)")
        table = Tenants(tenants)
        for tenant in table.tenants:
            if tenant.token in (token, admin_token):
                raise InvalidArgument(
                    f"tenant token {tenant.name!r} is the server's shared or admin token: "
                    "a tenant needs a token of its own"
                )
        check_bind(host, token=token, tls=tls, admin_token=admin_token, tenants=table)
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be 0..65535, not {port}")
        if grace_s < 0:
            raise InvalidArgument(f"grace_s must be >= 0, not {grace_s}")
        if not 0 <= settle_s < float("inf"):
            raise InvalidArgument(f"settle_s must be >= 0 seconds, not {settle_s}")
        self.host = host
        self.requested_port = port
        self.token = token
        self.tls = tls
        self.limits = limits if limits is not None else Limits()
        self.grace_s = grace_s
        self.settle_s = settle_s
        self.nats = nats
        self.cluster = cluster
        # Without a store given, one of the server's own, in data_dir or in memory.
        self._own_memory: PlanMemory | None = None
        if memory is None:
            memory = self._own_memory = (
                PlanMemory(IN_MEMORY) if data_dir is None else PlanMemory.in_data_dir(data_dir)
            )
        self.memory = memory
        self.services = (
            *SERVICE_NAMES,
            MEMORY_SERVICE,
            APPROVALS_SERVICE,
            BUDGETS_SERVICE,
            SCOPES_SERVICE,
        )
        self.hub = Hub(runtime, self.limits, settle_s=settle_s)
        self.hub.bind_agent_ids = tls is not None and tls.bind_agent_ids
        self.hub.admin_token = admin_token
        self.hub.tenants = table
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._guard = RequestGuard()
        self._closed = False

    @property
    def address(self) -> str:
        """``host:port`` as bound (valid once entered)."""
        return _address(self.host, self.port)

    async def __aenter__(self) -> BridgeServer:
        if self._own_memory is not None:
            await self._own_memory.__aenter__()
        try:
            await self._start()
        except BaseException:
            await self._close_own_memory()
            raise
        return self

    async def _close_own_memory(self) -> None:
        if self._own_memory is not None:
            await self._own_memory.aclose()

    async def _start(self) -> None:
        size = self.limits.max_message_bytes
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),
            # Find dead peers (a killed agent behind a silent network) within about 30 s.
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ]
        interceptors = (
            [TokenInterceptor(self.token, self.hub.admin_token, self.hub.tenants)]
            if self.token or self.hub.tenants
            else []
        )
        server = grpc.aio.server(interceptors=interceptors, options=options)
        # Generic handlers only: registered methods cost every call a wait on all of them.
        target = cast(grpc.aio.Server, GenericOnly(server, self._guard))
        bridge_pb2_grpc.add_BridgeServicer_to_server(BridgeServicer(self.hub), target)
        tools_pb2_grpc.add_ToolServiceServicer_to_server(ToolService(self.hub), target)
        bus_pb2_grpc.add_EventBusServicer_to_server(EventBusService(self.hub), target)
        directory_pb2_grpc.add_DirectoryServicer_to_server(DirectoryService(self.hub), target)
        status = ServerService(self.hub, nats=self.nats, cluster=self.cluster)
        server_pb2_grpc.add_ServerServicer_to_server(status, target)
        llm = LLMService(self.hub.runtime, caller=self.hub.caller)
        llm_pb2_grpc.add_LLMServicer_to_server(llm, target)
        memory = MemoryServicer(self.hub, self.memory)
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(memory, target)
        approvals = ApprovalsServicer(self.hub)
        approvals_pb2_grpc.add_ApprovalsServicer_to_server(approvals, target)
        budget_service_pb2_grpc.add_BudgetsServicer_to_server(BudgetsServicer(self.hub), target)
        scopes_pb2_grpc.add_ScopesServicer_to_server(ScopesServicer(self.hub), target)
        self._health = _Health(self.services)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, target)
        reflection.enable_server_reflection(
            (*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), target
        )
        address = _address(self.host, self.requested_port)
        _check_bindable(self.host, self.requested_port, address)
        credentials = None if self.tls is None else self.tls.credentials()
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise BindError(f"cannot listen on {address}: {exc}") from None
        if not port:
            raise BindError(f"cannot listen on {address}")
        self.port = port
        await server.start()
        self._server = server
        for name in ("", *self.services):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.hub.runtime.llm is None:
            # Without a model every LLM call fails (FAILED_PRECONDITION); health says so.
            await self._health.set(_LLM_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.hub.settle.open()
        log.info("bridge listening on %s%s", self.address, " (TLS)" if self.tls else "")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, grace_s: float | None = None) -> None:
        """Drain and stop (see the class docs). Shielded; idempotent."""
        if self._closed or self._server is None:
            self._closed = True
            await self._close_own_memory()
            return
        self._closed = True
        hub = self.hub
        hub.closing = True
        hub.settle.close()
        grace = self.grace_s if grace_s is None else grace_s
        with anyio.CancelScope(shield=True):
            await self._health.enter_graceful_shutdown()
            for session in list(hub.sessions.values()):
                session.end(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            for scope in list(hub.streams):
                scope.cancel()
            await self._server.stop(grace)
            await self._close_own_memory()  # after the calls that might use it

    def cancel_turn(self, agent_id: str, thread_id: str, reason: str = "") -> bool:
        """Cancel the running turn in ``thread_id`` of agent ``agent_id``, connected here:
        the frame goes to the agent, which ends that turn ``cancelled`` (its ``turn.end``
        and reply come back on the bus). False: no stream of that agent is open here.

        Until the agent confirms it, the cancel is held (``bridge/_turn_cancels.py``) and
        sent again on its next stream: one lost with a dropped stream, or asked while a
        registered agent is reconnecting (False then), still stops its turn when it is back.

        Raises:
            TurnNotCancellable: its stream does not take cancels of turns, or cannot now.
        """
        session = self.hub.sessions.get(agent_id)
        if session is None:
            if thread_id and agent_id in self.hub.registrations:
                self.hub.turn_cancels.hold(agent_id, thread_id, reason)
            return False
        session.cancel_turn(thread_id, reason)
        return True

    def add_presence_listener(self, listener: Callable[[str, AgentCard | None], None]) -> None:
        """Call ``listener(agent_id, card)`` (in line; it must not block) when an agent whose
        registration carries an A2A card opens its stream, and ``listener(agent_id, None)``
        when that stream ends (``loom serve`` exposes it over A2A meanwhile)."""
        self.hub.presence.append(listener)

    def statistics(self) -> ServerStatistics:
        """Counters: registered and connected agents, pushed tool calls in flight, requests
        refused as undecodable, deliveries in flight to agents, the streams' frames and
        bytes."""
        streams = [session.statistics() for session in self.hub.sessions.values()]
        return ServerStatistics(
            registered=len(self.hub.registrations),
            connected=len(self.hub.sessions),
            pending_tool_calls=len(self.hub.calls),
            settling=self.hub.settle.active,
            held_publishes=self.hub.settle.held,
            malformed_requests=self._guard.refused,
            in_flight=sum(s.in_flight for s in streams),
            in_flight_bytes=sum(s.in_flight_bytes for s in streams),
            streams_opened=self._guard.streams,
            frames_received=self._guard.frames_received,
            bytes_received=self._guard.bytes_received,
            frames_sent=self._guard.frames_sent,
            bytes_sent=self._guard.bytes_sent,
        )
