"""``ToolService`` and ``EventBus``: the runtime's tools and bus without an agent identity."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio
import msgspec

from loom.bridge._generated import bridge_pb2, bus_pb2, bus_pb2_grpc, tools_pb2, tools_pb2_grpc
from loom.runtime import (
    RETRY_OF_KEY,
    BusClosed,
    Delivery,
    DurabilityUnavailable,
    DurableUnavailable,
    InvalidArgument,
    Position,
    SubscriptionClosed,
    drop_dead_letter,
    retry_dead_letter,
)
from loom.runtime.lowlevel import DurableLog, tool_inventory

from ._calls import serve_tool_call
from ._convert import (
    bus_stats_to_proto,
    delivery_to_proto,
    durable_stats_to_proto,
    publish_from_proto,
    qos_from_proto,
    tool_descriptor_to_proto,
)
from ._errors import LimitExceeded, WireError, WrongAgent
from ._identity import (
    Principal,
    authorize_publish,
    authorize_read,
    authorize_tool,
    claimed_sender,
    may_receive,
    reaches_other_mailboxes,
)
from ._status import code_name, status_of
from ._tenants import namespace_stats, tool_inside
from ._tool_stream import serve_tool_call_stream
from ._wire_types import ProviderKind, ToolDescriptor

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["RETRY_OF_KEY", "EventBusService", "ToolService"]

_DEAD_LETTER_PREFIX = "dead_letter."
_DURABLE_STATS_WAIT = 5.0  # seconds GetStats waits for the durable log's own statistics

log = logging.getLogger("loom.bridge")

_Context = grpc.aio.ServicerContext[Any, Any]
_AGENT_KEY = "loom.agent"  # descriptor metadata: the agent that provides the tool
_NODE_KEY = "loom.node"  # ... and the cluster node that agent lives on (when in a cluster)


def _encode(delivery: Delivery, limit: int) -> bridge_pb2.Delivery | None:
    """The delivery's wire form, or ``None`` (logged) when it cannot travel."""
    try:
        msg = delivery_to_proto(delivery)
    except WireError as exc:
        log.warning("EventBus.Subscribe: event %s not delivered: %s", delivery.event.id, exc)
        return None
    if msg.ByteSize() + 8 > limit:
        log.warning(
            "EventBus.Subscribe: event %s not delivered: over max_message_bytes", delivery.event.id
        )
        return None
    return msg


class ToolService(tools_pb2_grpc.ToolServiceServicer):
    """``loom.v1.ToolService``: list and call every tool the runtime can reach."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def ListTools(
        self, request: tools_pb2.ListToolsRequest, context: _Context
    ) -> tools_pb2.ListToolsResponse:
        prefix = request.name_prefix
        providers = set(request.providers)
        # A tenant lists the tools of its namespace only.
        namespace = self.hub.caller(context).namespace
        found: dict[str, ToolDescriptor] = {}
        # The order of the inventory is the order call_tool prefers: agents' tools first.
        for entry in tool_inventory(self.hub.runtime):
            tool = entry.tool
            name = tool.name
            if name in found or not name.startswith(prefix):
                continue
            if namespace is not None and not tool_inside(namespace, name):
                continue
            declared = None
            if entry.remote and entry.agent_id is not None:
                declared = self.hub.descriptor(entry.agent_id, name)
            if declared is None:
                declared = ToolDescriptor(
                    name=name,
                    description=tool.description,
                    parameters_schema=msgspec.json.encode(tool.parameters_schema).decode(),
                    provider=ProviderKind.NATIVE,
                )
            if entry.agent_id is not None:
                metadata = {**declared.metadata, _AGENT_KEY: entry.agent_id}
                if entry.node:
                    metadata[_NODE_KEY] = entry.node
                declared = msgspec.structs.replace(declared, metadata=metadata)
            if providers and int(declared.provider) not in providers:
                continue
            found[name] = declared
        return tools_pb2.ListToolsResponse(
            tools=[tool_descriptor_to_proto(found[name]) for name in sorted(found)]
        )

    async def Call(self, request: tools_pb2.ToolCall, context: _Context) -> tools_pb2.ToolResult:
        try:
            caller = self.hub.caller(context)
            claimed_sender(caller, request.headers)
            authorize_tool(caller, request.name, self.hub.tenants)
        except WrongAgent as exc:
            await context.abort(status_of(exc), str(exc))
        return await serve_tool_call(self.hub.runtime, request, context)

    async def CallStream(self, request: tools_pb2.ToolCall, context: _Context) -> None:  # type: ignore[override]
        # Call, its partial output streamed before its result (bridge/_tool_stream.py).
        try:
            caller = self.hub.caller(context)
            claimed_sender(caller, request.headers)
            authorize_tool(caller, request.name, self.hub.tenants)
        except WrongAgent as exc:
            await context.abort(status_of(exc), str(exc))
        await serve_tool_call_stream(self.hub.runtime, request, context)


class EventBusService(bus_pb2_grpc.EventBusServicer):
    """``loom.v1.EventBus``: publish, subscribe and read counters."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def Publish(
        self, request: bus_pb2.PublishRequest, context: _Context
    ) -> bus_pb2.PublishResponse:
        bus = self.hub.runtime.bus
        principal = self.hub.caller(context)
        accepted = 0
        rejections = []
        for position, publish in enumerate(request.publishes, 1):
            try:
                topic, event = publish_from_proto(publish)
                await bus.publish(topic, authorize_publish(principal, topic, event))
            except (WireError, InvalidArgument, BusClosed, WrongAgent) as exc:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "EventBus.Publish from %s: publish %d on %r rejected: %s: %s",
                        principal.describe(),
                        position,
                        publish.topic,
                        status_of(exc).name,
                        exc,
                    )
                rejections.append(
                    bridge_pb2.PublishRejection(
                        sequence=position, code=code_name(status_of(exc)), reason=str(exc)
                    )
                )
            else:
                accepted += 1
        return bus_pb2.PublishResponse(accepted=accepted, rejections=rejections)

    async def Subscribe(  # type: ignore[override]
        self, request: bridge_pb2.SubscribeRequest, context: _Context
    ) -> None:
        hub = self.hub
        limits = hub.limits
        principal = hub.caller(context)
        screen = reaches_other_mailboxes(principal, request.pattern)
        try:
            authorize_read(principal, request.pattern)
            qos = qos_from_proto(request.qos, field="SubscribeRequest.qos")
            if request.buffer_size > limits.max_subscription_buffer:
                raise InvalidArgument(
                    f"buffer_size {request.buffer_size} is over the server's maximum "
                    f"{limits.max_subscription_buffer}"
                )
            if len(hub.streams) >= limits.max_bus_subscribers:
                raise LimitExceeded(
                    "max_bus_subscribers",
                    limits.max_bus_subscribers,
                    f"{len(hub.streams)} EventBus.Subscribe calls are open",
                )
            sub = hub.runtime.bus.subscribe(
                request.pattern,
                qos=qos,
                event_types=list(request.event_types) or None,
                buffer_size=request.buffer_size or None,
            )
        except (WireError, InvalidArgument, LimitExceeded, BusClosed, WrongAgent) as exc:
            log.debug(
                "EventBus.Subscribe to %r from %s refused: %s: %s",
                request.pattern,
                principal.describe(),
                status_of(exc).name,
                exc,
            )
            await context.abort(status_of(exc), str(exc))
        limit = limits.max_message_bytes - 64
        with anyio.CancelScope() as scope:
            hub.streams.add(scope)
            try:
                ok = bridge_pb2.SubscribeResult(ok=True, subscription_id=sub.id)
                await context.write(bus_pb2.SubscribeResponse(subscribed=ok))
                carry: Delivery | None = None
                while True:
                    if carry is not None:
                        delivery, carry = carry, None
                    else:
                        try:
                            delivery = await sub.receive()
                        except SubscriptionClosed:
                            break
                    batch: list[bridge_pb2.Delivery] = []
                    size = 0
                    while True:
                        # Another agent's mailbox, matched by a wildcard: withheld.
                        withheld = screen and not may_receive(principal, delivery.topic)
                        msg = None if withheld else _encode(delivery, limit)
                        if msg is not None:
                            grown = size + msg.ByteSize() + 8
                            if grown > limit and batch:
                                carry = delivery  # it opens the next frame
                                break
                            batch.append(msg)
                            size = grown
                        if len(batch) >= limits.max_batch_events:
                            break
                        try:
                            delivery = sub.receive_nowait()
                        except (anyio.WouldBlock, SubscriptionClosed):
                            break
                    if batch:
                        frame = bridge_pb2.DeliveryBatch(deliveries=batch)
                        # Finished once started (see _server_session.Session._stop for why).
                        with anyio.move_on_after(5.0, shield=True):
                            await context.write(bus_pb2.SubscribeResponse(batch=frame))
            finally:
                hub.streams.discard(scope)
                sub.close()
        if scope.cancelled_caught:
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details("the server is shutting down")

    async def GetStats(
        self, request: bus_pb2.GetStatsRequest, context: _Context
    ) -> bus_pb2.BusStats:
        bus = self.hub.runtime.bus
        stats = bus.statistics()
        namespace = self.hub.caller(context).namespace
        if namespace is not None:
            stats = namespace_stats(stats, namespace)
        msg = bus_stats_to_proto(
            stats,
            include_subscriptions=request.include_subscriptions,
            include_topics=request.include_topics,
        )
        durable_log = bus.plumbing.durable_log
        # The log's counters are every namespace's: not a tenant's to read.
        if request.include_durable and durable_log is not None and namespace is None:
            # The log answers from its own server: bounded, and left out (not an error) when
            # that server does not answer, so the bus's own counters still come back.
            with anyio.move_on_after(_DURABLE_STATS_WAIT):
                try:
                    msg.durable.CopyFrom(durable_stats_to_proto(await durable_log.statistics()))
                except Exception as exc:  # nats-py's errors are not Loom's; bridge cannot name them
                    log.warning("EventBus.GetStats: the durable log did not answer: %r", exc)
        return msg

    async def Replay(  # type: ignore[override]
        self, request: bus_pb2.ReplayRequest, context: _Context
    ) -> None:
        hub = self.hub
        principal = hub.caller(context)
        # Every replayed event is screened, not only under a wildcard over mailboxes: a dead
        # letter (on loom.dlq.NAME) may hold an event of another agent's mailbox.
        screen = not principal.operator
        try:
            authorize_read(principal, request.pattern)
            if len(hub.streams) >= hub.limits.max_bus_subscribers:
                # A replay holds a consumer on the log's server: counted as a subscription.
                raise LimitExceeded(
                    "max_bus_subscribers",
                    hub.limits.max_bus_subscribers,
                    f"{len(hub.streams)} EventBus.Subscribe and Replay calls are open",
                )
            since = _position(request.since, "since") if request.HasField("since") else None
            until = _position(request.until, "until") if request.HasField("until") else None
            stored = hub.runtime.bus.replay(request.pattern, since=since, until=until)
        except (InvalidArgument, WrongAgent, DurabilityUnavailable, LimitExceeded) as exc:
            await context.abort(status_of(exc), str(exc))
        limit = hub.limits.max_message_bytes - 64
        with anyio.CancelScope() as scope:
            hub.streams.add(scope)
            try:
                try:
                    async for delivery in stored:
                        if screen and not _may_read(principal, delivery):
                            continue  # another agent's mailbox (or its dead letter): withheld
                        msg = _encode(delivery, limit)
                        if msg is not None:
                            await context.write(bus_pb2.ReplayedEvent(delivery=msg))
                except DurableUnavailable as exc:
                    # The log's server went away mid-replay: said with its code (the
                    # message says how far it got), not grpc's UNKNOWN for an exception.
                    await context.abort(status_of(exc), str(exc))
            finally:
                hub.streams.discard(scope)
                with anyio.CancelScope(shield=True):
                    await stored.aclose()  # type: ignore[attr-defined]
        if scope.cancelled_caught:
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details("the server is shutting down")

    async def RetryDeadLetter(
        self, request: bus_pb2.DeadLetterRequest, context: _Context
    ) -> bus_pb2.DeadLetterResponse:
        try:
            self._operator_log(context, "retrying a dead letter")
            topic, original = await retry_dead_letter(self.hub.runtime.bus, request.sequence)
        except (InvalidArgument, WrongAgent, DurabilityUnavailable, BusClosed) as exc:
            await context.abort(status_of(exc), str(exc))
        log.info(
            "dead letter %d retried by the operator: event %s on %r (was %s)",
            request.sequence,
            original.id,
            topic,
            original.metadata[RETRY_OF_KEY],
        )
        return bus_pb2.DeadLetterResponse(topic=topic, event_id=original.id)

    async def DropDeadLetter(
        self, request: bus_pb2.DeadLetterRequest, context: _Context
    ) -> bus_pb2.DeadLetterResponse:
        try:
            self._operator_log(context, "dropping a dead letter")
            await drop_dead_letter(self.hub.runtime.bus, request.sequence)
        except (InvalidArgument, WrongAgent, DurabilityUnavailable) as exc:
            await context.abort(status_of(exc), str(exc))
        log.info("dead letter %d dropped by the operator", request.sequence)
        return bus_pb2.DeadLetterResponse()

    def _operator_log(self, context: _Context, what: str) -> DurableLog:
        """The bus's durable log, for a caller allowed to change it: anyone on a server
        without an admin token (as for publishing), the admin token's holder alone on one
        with it (dead letters are every durable name's, not one caller's).

        Raises:
            WrongAgent: the server has an admin token and the caller did not show it.
            DurabilityUnavailable: the bus has no durable log.
        """
        hub = self.hub
        caller = hub.caller(context)
        if (hub.admin_token is not None or caller.namespace is not None) and not caller.operator:
            raise WrongAgent(f"{what} needs the server's admin token")
        durable_log = hub.runtime.bus.plumbing.durable_log
        if durable_log is None:
            raise DurabilityUnavailable(what)
        return durable_log


def _may_read(principal: Principal, delivery: Delivery) -> bool:
    if not may_receive(principal, delivery.topic):
        return False
    # A dead letter carries the original event: readable where the original is.
    original = delivery.event.metadata.get(_DEAD_LETTER_PREFIX + "topic")
    return original is None or may_receive(principal, original)


def _position(msg: bus_pb2.ReplayPosition, field: str) -> Position:
    """A replay position off the wire.

    Raises:
        InvalidArgument: none set, or a moment or span outside what a datetime can hold.
    """
    try:
        match msg.WhichOneof("at"):
            case "sequence":
                return msg.sequence
            case "time_ms":
                return datetime.fromtimestamp(msg.time_ms / 1000, UTC)
            case "ago_ms":
                ago = timedelta(milliseconds=msg.ago_ms)
                _ = datetime.now(UTC) - ago  # raises when it reaches before year 1
                return ago
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgument(f"ReplayRequest.{field}: out of range: {exc}") from None
    raise InvalidArgument(f"ReplayRequest.{field}: set sequence, time_ms or ago_ms")
