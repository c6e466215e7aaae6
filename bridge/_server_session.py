"""One ``EventStream`` session: a connected remote agent, from handshake to end of stream.

Four kinds of task, all in the session's task group, none per message (a tool call the
agent makes on the stream runs in a worker of its own, so that a slow tool holds up nothing;
see ``bridge/_workers.py``):

* the **reader** (the handler's own task) takes ``ClientEvent`` frames and handles each at
  once; nothing it does waits on the bus, so pings, tool results and subscriptions are never
  stuck behind a slow subscriber;
* the **publisher** publishes what the reader queued on the bounded publish lane, in order,
  waiting on the bus where a lossless subscriber is full, and acknowledges with credit;
* one **pump** per bus subscription writes its deliveries onto the wire itself, coalescing
  what is already queued into ``delivery_batch`` frames once batching is on (no added
  latency). While it writes, the subscription fills, and its tier decides: drop or
  backpressure. No task stands between a subscription and the wire: a hand-over per event
  cost as much as the rest of the server's work on it;
* **delivery credit** (``STREAM_FEATURE_DELIVERY_CREDIT``) bounds what is in flight to the
  agent, in deliveries and in bytes: the pumps send no more than the agent has credited back
  (the count window), and no delivery that would take the bytes sent and not yet credited
  past the byte window (a single larger one goes alone, when nothing else is in flight). The
  server keeps each in-flight delivery's encoded size, oldest first, and frees the oldest
  ones' bytes as their credit returns (credit is a count on the wire). So a slow agent leaves
  its events in its subscriptions, where the tier decides (drop, or hold the publishers back) and
  the statistics see them. A delivery sent is ``in_flight`` on its subscription until the
  agent credits it (then ``delivered``); when the stream ends what is in flight is dropped,
  reason ``closed``. A stream without the feature (an old client) has each delivery counted
  delivered once its write completed: one frame at a time per subscription is in flight, and
  gRPC's own flow control holds what the client has not read;
* the **writer** drains the bounded outbound queue of everything else (acks, pongs, pushed
  tool calls, results, errors) onto the wire.

Pumps and writer take turns through one lock (a gRPC call takes one write at a time), first
come first served. Everything a session holds is bounded: the outbound queue
(``Limits.outbound_queue``), the publish lane (the publish window, or a small fixed size for
streams without acks), the subscriptions' buffers, and the pushed tool calls
(``Limits.max_pending_tool_calls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.lowlevel
import grpc
import grpc.aio
import msgspec
from anyio.abc import TaskGroup
from google.protobuf.message import DecodeError

from loom.bridge._generated import bridge_pb2, tools_pb2, turns_pb2
from loom.runtime import (
    AgentStatus,
    BusClosed,
    Delivery,
    DurableMessage,
    DurableSubscription,
    DurableUnavailable,
    Event,
    InvalidArgument,
    Subscription,
    SubscriptionClosed,
    TurnNotCancellable,
    WouldBlock,
)
from loom.runtime.lowlevel import (
    RemoteAgent,
    event_size,
    key_headers,
    lend_in_flight,
    lose_in_flight,
    mailbox_topic,
    new_id,
    scope_headers,
    settle_in_flight,
)
from loom.runtime.tools import JSONObject, ToolFailed, tool_output_sink

from ._approvals_replay import replay_decided
from ._calls import (
    count_pushed_calls,
    decode_output,
    disconnected_outcome,
    run_tool_call,
    unresponsive_outcome,
)
from ._convert import (
    event_from_proto,
    fill_event,
    qos_from_proto,
    tool_call_from_proto,
    tool_result_from_proto,
    tool_result_to_proto,
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
from ._lane import Lane
from ._packed import checked, pack, pack_event, unpack_events
from ._reports import FINAL, dead_letter_from_proto, report_from_proto
from ._status import code_name, error_from_outcome, failed_outcome, status_of
from ._tenants import topic_namespace
from ._tool_output import WANTS_OUTPUT, Pieces, drain_until, relay, report_drops, wants
from ._trace import trace_headers
from ._wire_types import ToolCallOutcome, ToolCallRequest, ToolStatus
from ._workers import Workers

if TYPE_CHECKING:
    from ._hub import Hub, Registration

__all__ = ["Session", "StreamStatistics"]

log = logging.getLogger("loom.bridge")

_FEATURES: Final = frozenset(
    {
        bridge_pb2.STREAM_FEATURE_BATCH,
        bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT,
        bridge_pb2.STREAM_FEATURE_PUBLISH_ACK,
        bridge_pb2.STREAM_FEATURE_TOOL_CANCEL,
        bridge_pb2.STREAM_FEATURE_TOOL_CALLS,
        bridge_pb2.STREAM_FEATURE_UNROUTED,
        bridge_pb2.STREAM_FEATURE_SUPERVISION,
        bridge_pb2.STREAM_FEATURE_DURABLE,
        bridge_pb2.STREAM_FEATURE_DURABLE_TOPICS,
        bridge_pb2.STREAM_FEATURE_TOOL_OUTPUT,
        bridge_pb2.STREAM_FEATURE_PACKED_EVENTS,
        bridge_pb2.STREAM_FEATURE_TURN_CANCEL,
    }
)
_DELIVERY_WINDOW: Final = 1024  # granted to a stream that asks for credit but names no window
_OLD_LANE: Final = 64  # publish lane of a stream without acks: the reader waits beyond this
_FRAME_OVERHEAD: Final = 64  # bytes kept free in a batch for the frame around the deliveries
_ACK_LINGER: Final = 0.01  # seconds; unless due sooner, acks of a steady stream come this often
_MAX_REJECTIONS: Final = 64  # an ack is sent once this many rejections wait in it
_STORE_AHEAD: Final = 256  # durable publishes queued behind one whose stores are started too
_DURABLE_AHEAD: Final = 256  # durable deliveries fetched at a time for a remote durable agent
_WRITE_GRACE: Final = 5.0  # seconds a started write may take to finish once its stream ends
_NO_CREDIT: Final = "no publish credit left: wait for a publish_ack before publishing more"

_encoder = msgspec.json.Encoder()
_W = TypeVar("_W")  # a publish as read off the wire: a protobuf Event, or a packed one

Status = tuple[grpc.StatusCode, str]


class _Publish(msgspec.Struct, gc=False):
    """One publish on the lane: an event to publish, or a rejection decided by the reader."""

    seq: int  # 0 for a stream without publish acks
    topic: str = ""
    event: Event | None = None
    credit: bool = False  # it used a unit of credit, which its ack gives back
    code: str = ""
    reason: str = ""
    ahead: bool = False  # its store was started ahead (_store_ahead)


_ACK_DUE: Final = _Publish(0)
"""Put on the lane for the publisher task when publishes the reader made itself await an ack."""


def _unrouted(seq: int, topic: str) -> bridge_pb2.PublishRejection:
    """The ack's notice (``STREAM_FEATURE_UNROUTED``) of a publish that reached nobody."""
    return bridge_pb2.PublishRejection(
        sequence=seq, code="UNROUTED", reason=f"no subscription took the event on {topic!r}"
    )


def _publish_size(item: _Publish) -> int:
    """What a publish counts against the lane's byte bound (a marker or a refusal: 0)."""
    return 0 if item.event is None else event_size(item.event)


class StreamStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What one agent's stream has in flight to it (:meth:`Session.statistics`).

    Attributes:
        credited: the stream runs under delivery credit (``STREAM_FEATURE_DELIVERY_CREDIT``);
            else (an old client) gRPC's flow control alone holds what it has not read, and
            the figures below are 0.
        in_flight: deliveries sent and not yet credited back.
        in_flight_bytes: their encoded size.
        max_in_flight_bytes: the most ``in_flight_bytes`` has been on this stream.
        delivery_window: the count window granted.
        delivery_window_bytes: the byte window granted; ``in_flight_bytes`` stays within it,
            except a single delivery larger than it, sent alone.
    """

    credited: bool
    in_flight: int
    in_flight_bytes: int
    max_in_flight_bytes: int
    delivery_window: int
    delivery_window_bytes: int


class _Pending:
    """A tool call pushed to the agent, waiting for its ``tool_result``."""

    __slots__ = ("done", "outcome", "pieces")

    def __init__(self, pieces: Pieces | None = None) -> None:
        self.done = anyio.Event()
        self.outcome: ToolCallOutcome | None = None
        # Its partial output on the way to the caller (STREAM_FEATURE_TOOL_OUTPUT granted and
        # the caller takes it), else None.
        self.pieces = pieces


class Session:
    """A remote agent's open ``EventStream`` (see the module docs)."""

    def __init__(
        self,
        hub: Hub,
        remote: RemoteAgent,
        context: grpc.aio.ServicerContext[bridge_pb2.ClientEvent, bridge_pb2.ServerEvent],
    ) -> None:
        self.hub = hub
        self.agent_id = remote.id
        # The namespace of the token the stream showed (the handshake checked the id is in it).
        self.principal = Principal.agent(remote.id, hub.caller(context).namespace)
        self.remote = remote
        self._ctx = context
        limits = hub.limits
        self._limits = limits
        # Bounded in count and in bytes (Limits.max_buffer_bytes): a few pushed calls with
        # large arguments, or a window of large publishes, must not pin the server's memory.
        # A frame counts its encoded size (acks and pongs are a few bytes; pushed calls and
        # results carry their arguments and output), measured by protobuf itself: no Python
        # call in between, since every frame but a delivery is measured.
        self._out = Lane[bridge_pb2.ServerEvent](
            limits.outbound_queue,
            max_bytes=limits.max_buffer_bytes,
            size=bridge_pb2.ServerEvent.ByteSize,
        )
        self._lane = Lane[_Publish](
            limits.publish_window + limits.max_batch_events + _OLD_LANE,
            max_bytes=limits.max_buffer_bytes,
            size=_publish_size,
        )
        self._hello = False
        self._acks = False
        self._cancels = False
        self._outputs = False  # STREAM_FEATURE_TOOL_OUTPUT: partial output crosses the stream
        # STREAM_FEATURE_TURN_CANCEL: the agent cancels its turns when told (cancel_turn).
        self.cancels_turns = False
        self._unrouted = False  # report publishes that reached no subscription (in acks)
        self._max_batch = limits.max_batch_events
        self._window = 0
        self._credit = 0  # what the client may still send, as the server counts it
        self._seq = 0
        self._acked = 0
        self._credit_back = 0
        self._last_ack = -math.inf
        self._ack_wanted = 0  # the client asked for an ack once this publish is handled
        self._linger: asyncio.TimerHandle | None = None
        self._rejections: list[bridge_pb2.PublishRejection] = []
        self._bus = hub.runtime.bus
        self._queued = 0  # publishes (and refusals) on the lane, not yet taken by the publisher
        self._looked_ahead = 0  # lane items, from its head, that _store_ahead has looked at
        self._blocked = False  # the publisher holds a publish it waits to hand to the bus
        self._pending: dict[str, _Pending] = {}
        self._watch = anyio.Event()  # set when a call is pushed: the watchdog looks again
        self._calls: dict[str, anyio.CancelScope] = {}  # calls the agent made on the stream
        self._tg: TaskGroup | None = None
        self._workers: Workers | None = None  # run the calls the agent makes, one each
        self._write_lock = asyncio.Lock()  # one write at a time on the call (fair: FIFO)
        self._write_scopes: set[anyio.CancelScope] = set()  # of the writer and the pumps
        self._batching = False  # set once the welcome granting BATCH is on the wire
        self._packed = False  # and this with PACKED_EVENTS: delivery batches go packed
        # Delivery credit (see the module docs); on once the welcome granting it is written.
        self._credited = False
        self._dwindow = 0
        self._dcredit = 0  # deliveries the pumps may still send
        self._dwindow_bytes = 0  # the byte window granted (with credit)
        self._dbytes = 0  # bytes of deliveries sent and not yet credited
        self._dbytes_high = 0  # the most _dbytes has been
        self._credit_event = asyncio.Event()  # more credit, or the stream ends
        # The topics and encoded sizes of deliveries sent and not yet credited, by frame, in
        # wire order (not the deliveries: their events need not stay alive); of the oldest
        # frame the first _flight_off are credited already. Credit comes back as a count in
        # that order, so the sizes of the oldest are the bytes it frees.
        self._flight: deque[tuple[Subscription | None, list[str], list[int]]] = deque()
        self._flight_off = 0  # (a None subscription: a durable delivery)
        self.status: Status | None = None
        self.released_by_operator = False  # Hub.release ended it (see RELEASED_METADATA)
        self.closed = False
        # A clean end of the client's side (half-close): what it published is still
        # published and acknowledged before the stream ends (see _finish_publishes).
        self._half_closed = False
        self._published_all = anyio.Event()
        self._wrote_all = anyio.Event()
        self.finished = anyio.Event()  # set once _finish is done (Hub.release waits on it)
        # Whether a pattern of the agent's matches other agents' mailboxes: their deliveries
        # are then withheld one by one (bridge/_identity.py).
        self._screen = False
        # A durable agent (its registration, set by the handshake): its topics come from the
        # durable log if the hello grants STREAM_FEATURE_DURABLE (else from memory).
        self.durable: Registration | None = None
        self._dsub: DurableSubscription | None = None
        self._dheld: dict[int, DurableMessage] = {}  # sent and not settled, by delivery id
        # STREAM_FEATURE_DURABLE_TOPICS: durable patterns the bus learnt since the welcome,
        # not yet told (the bus calls _durable_learnt; _tell_durable sends them).
        self._dlearnt: list[str] = []
        self._dlearnt_any = anyio.Event()
        self._unwatch: Callable[[], None] | None = None

    def statistics(self) -> StreamStatistics:
        """What is in flight to the agent now (see :class:`StreamStatistics`)."""
        credited = self._credited
        return StreamStatistics(
            credited=credited,
            in_flight=self._dwindow - self._dcredit if credited else 0,
            in_flight_bytes=self._dbytes,
            max_in_flight_bytes=self._dbytes_high,
            delivery_window=self._dwindow,
            delivery_window_bytes=self._dwindow_bytes,
        )

    def screen(self, patterns: Sequence[str]) -> None:
        """Note patterns the agent holds: deliveries from other agents' mailboxes that they
        match are withheld from now on."""
        self._screen = self._screen or any(
            reaches_other_mailboxes(self.principal, p) for p in patterns
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> Status | None:
        """Serve the stream until it ends; return the status to end the call with (``None``:
        OK). Always detaches the agent and fails its pending calls before returning."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._workers = Workers(tg)
                tg.start_soon(self._writer)
                tg.start_soon(self._publisher)
                tg.start_soon(self._pump, self.remote.mailbox)
                tg.start_soon(self._watchdog)
                # Decisions it missed while away (bridge/_approvals_replay.py).
                tg.start_soon(replay_decided, self.hub.runtime, self.agent_id)
                try:
                    await self._reader()
                    if self._half_closed and self.status is None:
                        await self._finish_publishes()
                finally:
                    # However the reading ended (EOF, an error, the call cancelled from outside,
                    # a failing task cancelling this one): the shielded writers must stop too.
                    self._stop()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()
        return self.status

    def end(self, code: grpc.StatusCode, details: str) -> None:
        """End the stream from outside (server shutdown) or inside, with this status."""
        if self.status is None:
            self.status = (code, details)
        self._stop()

    def _stop(self) -> None:
        """Cancel the session's tasks; a write already started may finish within _WRITE_GRACE.

        A grpc.aio write cancelled half way leaves its operation inside gRPC's core, and the
        call can then never send its status (TOO_MANY_OPERATIONS). So the writer and the pumps
        run shielded from the task group's cancellation and are stopped here without one:
        their sources are closed (the outbound queue, the agent's subscriptions, whose
        deliveries would be dropped as it detaches anyway), which ends each between writes,
        and a write in progress gets a deadline (a peer that reads nothing for that long is
        given up on).
        """
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._out.close_receiving()
        for sub in (self.remote.mailbox, *self.remote.subscriptions()):
            sub.close()
        if self._dsub is not None:
            self._dsub.close_by_bus()  # its pump ends within a poll (about a second)
        self._credit_event.set()  # pumps waiting for credit see their subscription closed
        deadline = anyio.current_time() + _WRITE_GRACE
        for scope in self._write_scopes:
            scope.deadline = min(scope.deadline, deadline)

    async def _finish(self) -> None:
        self.closed = True
        reason = "stream ended" if self.status is None else self.status[1]
        # Callers waiting on this agent learn at once; nobody waits for a timeout.
        for call_id, pending in list(self._pending.items()):
            if pending.outcome is None:
                pending.outcome = disconnected_outcome(call_id, self.agent_id, reason)
                pending.done.set()
        if self._unwatch is not None:
            self._unwatch()
        self._out.close_receiving()
        self._lane.close_receiving()
        self._lose_flight()
        await self._hand_back()
        if self.hub.sessions.get(self.agent_id) is self:
            del self.hub.sessions[self.agent_id]
            self.hub.stream_ended(self.agent_id, final=self.remote.released)
        try:
            await self.remote.detach(reason)
        finally:
            self.finished.set()

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        ctx = self._ctx
        while True:
            try:
                msg: object = await ctx.read()
            except DecodeError as exc:
                # Bytes that are no ClientEvent: the frames after them cannot be trusted.
                self.end(grpc.StatusCode.INVALID_ARGUMENT, f"a frame is not a ClientEvent: {exc}")
                return
            except Exception as exc:  # the call broke (reset): it is over
                log.debug("agent %s: stream read failed: %r", self.agent_id, exc)
                return
            if not isinstance(msg, bridge_pb2.ClientEvent):  # grpc.aio.EOF: the client is done
                self._half_closed = True
                return
            self.remote.heartbeat()  # any frame is a sign of life
            try:
                await self._dispatch(msg)
            except Exception as exc:
                # A bug of ours must not end the agent's stream: report it, keep serving.
                log.exception("agent %s: frame not handled", self.agent_id)
                await self._error("INTERNAL", f"the frame was not handled: {exc!r}")

    async def _finish_publishes(self) -> None:
        """The client half-closed its side: publish what it sent before (the publish lane
        drains, waiting for room in lossless subscribers as ever), send the last ack, then let
        the stream end. Without this, a client that closes cleanly right after publishing
        would lose everything still on the lane (up to its publish window). Bounded by
        ``_WRITE_GRACE``: what is left after it is dropped, unacknowledged (our client counts
        it ``lost``)."""
        self._lane.close()
        with anyio.move_on_after(_WRITE_GRACE):
            await self._published_all.wait()
            self._out.close()  # the writer sends the last ack, then stops
            await self._wrote_all.wait()

    async def _dispatch(self, msg: bridge_pb2.ClientEvent) -> None:
        match msg.WhichOneof("msg"):
            case "publish":
                await self._accept(msg.publish)
            case "publish_batch":
                batch = msg.publish_batch
                packed: list[tuple[str, Event]] = []
                if batch.packed_count:
                    try:
                        packed = unpack_events(batch.packed, batch.packed_count)
                    except WireError as exc:
                        # Its entries cannot even be counted, so neither numbered nor acked.
                        self.end(grpc.StatusCode.INVALID_ARGUMENT, f"publish_batch: {exc}")
                        return
                entries = len(batch.publishes) + len(packed)
                if batch.ack_requested and self._acks and entries:
                    # Every entry takes a number, so the batch's last one is known now.
                    self._ack_wanted = self._seq + entries
                await self._accept_batch(batch.publishes, packed)
            case "ping":
                pong = bridge_pb2.HeartbeatResponse(timestamp_ms=msg.ping.timestamp_ms, status="ok")
                await self._send(bridge_pb2.ServerEvent(pong=pong))
            case "tool_result":
                await self._resolve(msg.tool_result)
            case "tool_output":
                # Only into a call pushed to this agent and not yet answered: an agent cannot
                # feed pieces to another agent's (or another tenant's) calls.
                pending = self._pending.get(msg.tool_output.id)
                if pending is not None and pending.pieces is not None and self._outputs:
                    pending.pieces.put(msg.tool_output.text)
            case "delivery_credit":
                extra = self._on_credit(msg.delivery_credit.count)
                if extra:
                    await self._error(
                        "INVALID_ARGUMENT",
                        f"delivery_credit of {msg.delivery_credit.count} is {extra} more than "
                        "the deliveries in flight; the excess is ignored",
                    )
            case "ack":
                pass  # an ack after the handshake (old clients ack deliveries) needs nothing
            case "hello":
                await self._negotiate(msg.hello)
            case "call":
                await self._call(msg.call)
            case "cancel_call":
                scope = self._calls.get(msg.cancel_call.id)
                if scope is not None:
                    scope.cancel()
            case "subscribe":
                await self._subscribe(msg.subscribe)
            case "unsubscribe":
                await self._unsubscribe(msg.unsubscribe)
            case "report" | "dead_letter":
                await self._supervised(msg)
            case "durable_settle":
                await self._settle_durable(msg.durable_settle)
            case "turn_cancelled":
                done = msg.turn_cancelled
                self.hub.turn_cancels.confirm(self.agent_id, done.thread_id)
                log.info(
                    "agent %s: %d turn(s) of thread %s cancelled",
                    self.agent_id,
                    done.cancelled,
                    done.thread_id,
                )
            case _:
                await self._error(
                    "INVALID_ARGUMENT",
                    "a ClientEvent with no known 'msg' variant set (empty, or from a newer "
                    "protocol); ignored",
                )

    def cancel_turn(self, thread_id: str, reason: str) -> None:
        """Ask the agent to cancel its running turn in ``thread_id`` (``cancel_turn``); it
        ends that turn ``cancelled`` and publishes its ``turn.end`` and reply as usual.

        Raises:
            TurnNotCancellable: the stream did not negotiate ``STREAM_FEATURE_TURN_CANCEL``,
                or its outbound queue is full (nothing was sent). A stream closing now
                raises nothing: the cancel is held for the agent's next stream.
        """
        if not self.cancels_turns:
            raise TurnNotCancellable(
                self.agent_id,
                "its connection does not take cancels of turns (it runs no CognitiveAgent, "
                "or an SDK older than STREAM_FEATURE_TURN_CANCEL)",
            )
        frame = turns_pb2.CancelTurn(thread_id=thread_id, reason=reason)
        try:
            self._out.send_nowait(bridge_pb2.ServerEvent(cancel_turn=frame))
        except anyio.WouldBlock:
            raise TurnNotCancellable(
                self.agent_id, "its connection is too busy to take the cancel now; try again"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # The stream ends as we speak: the agent's next stream gets the cancel.
            log.info(
                "agent %s: its stream is closing; the cancel of thread %s is held for its next",
                self.agent_id,
                thread_id,
            )
        # Kept until the agent answers it: lost with this stream, it goes out on the next.
        self.hub.turn_cancels.hold(self.agent_id, thread_id, reason)

    def _resend_turn_cancels(self) -> None:
        """Send again the cancels of turns the agent's earlier streams never confirmed
        (``bridge/_turn_cancels.py``), right after the welcome, so they precede any delivery
        of this stream; a stream that takes none drops them (its agent runs no turns now)."""
        held = self.hub.turn_cancels
        if not self.cancels_turns:
            if dropped := held.drop(self.agent_id):
                log.info(
                    "agent %s: %d held cancel(s) of turns dropped: its stream takes none",
                    self.agent_id,
                    dropped,
                )
            return
        for thread_id, reason in held.due(self.agent_id):
            frame = turns_pb2.CancelTurn(thread_id=thread_id, reason=reason)
            try:
                self._out.send_nowait(bridge_pb2.ServerEvent(cancel_turn=frame))
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # still held: the next stream tries again
            log.info(
                "agent %s: unconfirmed cancel of thread %s sent again", self.agent_id, thread_id
            )

    async def _send(self, frame: bridge_pb2.ServerEvent) -> None:
        try:
            await self._out.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The stream is over (_stop closed the queue): nothing more goes out, and the
            # sending task is being cancelled; it learns at this checkpoint.
            await anyio.lowlevel.checkpoint()

    async def _error(self, code: str, message: str) -> None:
        await self._send(bridge_pb2.ServerEvent(err=bridge_pb2.Error(code=code, message=message)))

    async def _supervised(self, msg: bridge_pb2.ClientEvent) -> None:
        """A ``report`` or ``dead_letter`` (``bridge/_reports.py``): published by the server's
        runtime in this agent's name. A final report releases the agent: its subscriptions
        leave the bus (what they hold is dead-lettered) and ``released`` follows every
        delivery already on its way, on the stream."""
        try:
            if msg.HasField("report"):
                report = report_from_proto(msg.report)
                await self.remote.report(report.status, report.reason, report.restarts)
                if report.status in FINAL:
                    count = await self.remote.release(report.status, report.reason)
                    frame = bridge_pb2.ServerEvent(
                        released=bridge_pb2.Released(dead_lettered=count)
                    )
                    await self._send(frame)
            else:
                delivery, reason, error, attempts = dead_letter_from_proto(msg.dead_letter)
                await self.remote.dead_letter(delivery, reason, error, attempts)
        except (WireError, InvalidArgument) as exc:
            await self._error("INVALID_ARGUMENT", f"{msg.WhichOneof('msg')} ignored: {exc}")

    # ------------------------------------------------------------------ features

    async def _negotiate(self, hello: bridge_pb2.StreamHello) -> None:
        if self._hello:
            await self._error("INVALID_ARGUMENT", "hello may be sent once per stream; ignored")
            return
        self._hello = True
        granted = sorted(_FEATURES.intersection(hello.features))
        limits = self._limits
        self._max_batch = min(
            hello.max_batch_events or limits.max_batch_events, limits.max_batch_events
        )
        if bridge_pb2.STREAM_FEATURE_PUBLISH_ACK in granted:
            self._acks = True
            self._window = min(hello.publish_window or limits.publish_window, limits.publish_window)
            self._credit = self._window
        self._cancels = bridge_pb2.STREAM_FEATURE_TOOL_CANCEL in granted
        self._outputs = bridge_pb2.STREAM_FEATURE_TOOL_OUTPUT in granted
        self.cancels_turns = bridge_pb2.STREAM_FEATURE_TURN_CANCEL in granted
        if bridge_pb2.STREAM_FEATURE_UNROUTED in granted:
            if self._acks and self.hub.local_routing:
                self._unrouted = True
            else:  # nothing to report it in, or nothing this server can know
                granted.remove(bridge_pb2.STREAM_FEATURE_UNROUTED)
        if bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT in granted:
            asked = hello.delivery_window or _DELIVERY_WINDOW
            self._dwindow = min(asked, limits.delivery_window)
            # A client that names no byte window (one from before it) still gets the server's.
            asked_bytes = hello.delivery_window_bytes or limits.delivery_window_bytes
            self._dwindow_bytes = min(asked_bytes, limits.delivery_window_bytes)
        packed = bridge_pb2.STREAM_FEATURE_PACKED_EVENTS
        if packed in granted and bridge_pb2.STREAM_FEATURE_BATCH not in granted:
            granted.remove(packed)  # packs travel in batch frames only
        if bridge_pb2.STREAM_FEATURE_DURABLE in granted and self.durable is None:
            granted.remove(bridge_pb2.STREAM_FEATURE_DURABLE)  # not a durable registration
        self._start_durable(bridge_pb2.STREAM_FEATURE_DURABLE in granted)
        plumbing = self._bus.plumbing
        durable_log = plumbing.durable_log
        topics = bridge_pb2.STREAM_FEATURE_DURABLE_TOPICS
        if topics in granted and (durable_log is None or not self._acks):
            granted.remove(topics)  # nothing is stored here, or there is no ack to wait for
        # Batching starts when the writer has written this welcome (see _writer), so no batch
        # can overtake it.
        welcome = bridge_pb2.StreamWelcome(
            features=granted,
            max_batch_events=self._max_batch,
            publish_window=self._window,
            settle_ms=math.ceil(self.hub.settle.remaining() * 1000),
            delivery_window=self._dwindow,
            delivery_window_bytes=self._dwindow_bytes,
        )
        if self.durable is not None and durable_log is not None:
            # The agent's keep-alives must come well within the log's ack wait, whatever
            # this server was configured with (StreamWelcome.durable_ack_wait_ms).
            welcome.durable_ack_wait_ms = max(1, round(durable_log.ack_wait * 1000))
        if topics in granted:
            # Watched before the snapshot is taken: a pattern learnt in between is told twice
            # rather than never (the client keeps a set).
            self._unwatch = plumbing.watch_durable(self._durable_learnt)
            told = filter(self._tells, plumbing.durable_patterns())
            welcome.durable_patterns.extend(sorted(told))
        await self._send(bridge_pb2.ServerEvent(welcome=welcome))
        self._resend_turn_cancels()
        if self._unwatch is not None and self._tg is not None:
            self._tg.start_soon(self._tell_durable)

    def _durable_learnt(self, patterns: tuple[str, ...]) -> None:
        """The bus learnt durable patterns (called synchronously by it): tell the client."""
        told = [p for p in patterns if self._tells(p)]
        if told:
            self._dlearnt.extend(told)
            self._dlearnt_any.set()

    def _tells(self, pattern: str) -> bool:
        """Whether this stream is told durable pattern ``pattern``: a tenant only of those in
        its own namespace or in none (a system pattern, a wildcard first segment). Another
        tenant's patterns name its topics, which are not this one's to know, and no publish
        of this one can be stored under them (it is refused outside its namespace)."""
        namespace = self.principal.namespace
        return namespace is None or topic_namespace(pattern) in (namespace, None)

    async def _tell_durable(self) -> None:
        """Send the durable patterns learnt since the welcome (STREAM_FEATURE_DURABLE_TOPICS),
        those that came together in one frame; after the welcome, in the outbound order."""
        while True:
            await self._dlearnt_any.wait()
            self._dlearnt_any = anyio.Event()
            learnt, self._dlearnt = self._dlearnt, []
            frame = bridge_pb2.DurablePatterns(patterns=learnt)
            await self._send(bridge_pb2.ServerEvent(durable_patterns=frame))

    # ------------------------------------------------------------------ publishing

    async def _accept_batch(
        self, publishes: Sequence[bridge_pb2.Publish], packed: list[tuple[str, Event]]
    ) -> None:
        """A ``publish_batch`` (its ``publishes``, then its ``packed`` entries, read): admitted
        against the credit there is when the frame arrives, all at once, so its outcome does
        not depend on how fast acks go out meanwhile."""
        total = len(publishes) + len(packed)
        size = min(total, self._max_batch)
        admitted = min(size, max(self._credit, 0)) if self._acks else size
        if self._acks:
            self._credit -= admitted
        first = len(publishes)
        for i in range(total):
            if i < admitted:
                if i < first:
                    await self._accept(publishes[i], paid=True)
                else:
                    topic, event = packed[i - first]
                    seq = self._number()
                    if not self._admit_nowait(seq, topic, event):
                        await self._admit(seq, topic, event, checked)
            elif i < size:
                await self._reject("RESOURCE_EXHAUSTED", _NO_CREDIT)
            else:
                await self._reject(
                    "INVALID_ARGUMENT",
                    f"publish_batch entry {i} is beyond max_batch_events ({self._max_batch}); "
                    "not published",
                )

    def _number(self) -> int:
        """The next publish's sequence number (0 without acks)."""
        if not self._acks:
            return 0
        self._seq += 1
        return self._seq

    async def _accept(self, publish: bridge_pb2.Publish, *, paid: bool = False) -> None:
        """Number, check and publish one publish (see :meth:`_admit`)."""
        if self._acks and not paid:
            if self._credit <= 0:
                await self._reject("RESOURCE_EXHAUSTED", _NO_CREDIT)
                return
            self._credit -= 1
        await self._admit(self._number(), publish.topic, publish.event, event_from_proto)

    async def _admit(self, seq: int, topic: str, wire: _W, read: Callable[[_W], Event]) -> None:
        """Read (``read(wire)``), check and publish publish number ``seq``: here when nothing
        is ahead of it and the bus takes it at once, else through the publisher task (which
        waits, and answers errors)."""
        try:
            event = read(wire)
        except WireError as exc:
            await self._queue(
                _Publish(seq, credit=bool(seq), code="INVALID_ARGUMENT", reason=str(exc))
            )
            return
        try:
            # The sender is this stream's agent (stamped when empty, so a reply to it finds
            # this agent's mailbox); the server's topics are not this agent's to publish on.
            event = authorize_publish(self.principal, topic, event)
        except WrongAgent as error:
            await self._queue(
                _Publish(
                    seq,
                    topic,
                    credit=bool(seq),
                    code=code_name(status_of(error)),
                    reason=str(error),
                )
            )
            return
        if not self._publish_here(seq, topic, event):
            await self._queue(_Publish(seq, topic, event, credit=bool(seq)))

    def _admit_nowait(self, seq: int, topic: str, event: Event) -> bool:
        """:meth:`_admit` of a packed entry without a coroutine (this runs per event), when
        it passes its checks and is published here at once; ``False`` (nothing done) leaves
        it to :meth:`_admit`, which says what is wrong or queues it."""
        try:
            event = authorize_publish(self.principal, topic, checked(event))
        except (WireError, WrongAgent):
            return False
        return self._publish_here(seq, topic, event)

    def _publish_here(self, seq: int, topic: str, event: Event) -> bool:
        """Publish on the reader's turn if nothing is ahead of it and the bus takes it at
        once (booked as settled); ``False`` if it must go through the publisher task."""
        if (
            not self._queued
            and not self._blocked
            and not (self.hub.settle.active and not self.hub.routable(topic))
        ):
            # Nothing ahead of it, so publishing here keeps the stream's order, and saves the
            # hand-over to the publisher task (a stream of single events paid one per event).
            # A publish the settle window holds goes to the publisher task, which waits.
            try:
                reached = self._bus.publish_nowait(topic, event)
            except (WouldBlock, InvalidArgument, BusClosed):
                return False  # the publisher task waits for room, or answers the error
            if seq:
                if not reached and self._unrouted:
                    self._rejections.append(_unrouted(seq, topic))
                self._settled_here(seq)
            return True
        return False

    def _settled_here(self, seq: int) -> None:
        """Book a publish the reader made; the publisher task acks it (see _publisher)."""
        self._acked = seq
        self._credit_back += 1
        if (
            self._credit_back == 1
            or 2 * self._credit_back == self._window
            or (seq == self._ack_wanted)
        ):
            # The publisher decides from the state, not from the marker: when the lane is
            # (improbably) full, the markers already on it do the same job.
            with contextlib.suppress(anyio.WouldBlock):
                self._lane.send_nowait(_ACK_DUE)

    def _ack_due(self) -> bool:
        """Whether an ack must go now rather than when the queue empties (and the linger is
        over): half the window is due back, rejections pile up, or the client asked for it."""
        return (
            2 * self._credit_back >= self._window
            or len(self._rejections) >= _MAX_REJECTIONS
            or 0 < self._ack_wanted <= self._acked
        )

    async def _queue(self, item: _Publish) -> None:
        """Hand a publish to the publisher task, without a yield while the lane has room (so a
        whole publish_batch is queued before the publisher runs, and acked once)."""
        self._queued += 1
        try:
            self._lane.send_nowait(item)
        except anyio.WouldBlock:
            await self._lane.send(item)

    async def _reject(self, code: str, reason: str) -> None:
        """Queue a refusal decided here; with acks it is numbered and answered in order."""
        seq = 0
        if self._acks:
            self._seq += 1
            seq = self._seq
        await self._queue(_Publish(seq, code=code, reason=reason))

    async def _store_ahead(
        self, store_ahead: Callable[[str, Event], Awaitable[None]], item: _Publish
    ) -> None:
        """Start the durable stores of ``item`` and of up to ``_STORE_AHEAD`` publishes queued
        behind it, in stream order, so they are in flight together: a stream of durable
        publishes then pays one store round trip per window, not one per event. The stores
        are started in lane order on one connection, so the log keeps the stream's order;
        each publish still waits for its own store before it is routed and acknowledged."""
        assert item.event is not None
        if not item.ahead:
            item.ahead = True
            await store_ahead(item.topic, item.event)
        # Listed first: the lane may change while a store is being started. Those at its
        # head that an earlier call looked at are skipped (in C): looking at the whole window
        # again for every publish cost the server a loop of 256 per event.
        start = self._looked_ahead
        window = list(itertools.islice(self._lane.peek(), start, _STORE_AHEAD))
        self._looked_ahead = start + len(window)
        for queued in window:
            if queued.event is not None and not queued.ahead:
                queued.ahead = True
                await store_ahead(queued.topic, queued.event)  # if its topic is durable

    async def _publisher(self) -> None:
        bus = self._bus
        store_ahead = bus.plumbing.store_ahead
        settle = self.hub.settle
        lane = self._lane
        loop = asyncio.get_running_loop()  # grpc.aio: the server runs on asyncio only
        try:
            while True:
                try:
                    item = lane.receive_nowait()
                except anyio.WouldBlock:
                    # The lane is drained: the burst is done, so ack it (once, not per event).
                    # Unless an ack went out less than _ACK_LINGER ago: then more may come
                    # meanwhile (a stream of one event per frame drains the lane every time),
                    # and one ack per linger settles them all; an idle lane is acked when the
                    # linger ends. Credit does not wait for it (half the window is acked at
                    # once), nor does a client that asked for an ack.
                    # The linger is one timer per linger, not a cancel scope per drained lane
                    # (a stream of single events drains it at every event).
                    if self._credit_back or self._rejections:
                        wait = self._last_ack + _ACK_LINGER - loop.time()
                        if wait <= 0:
                            await self._ack()
                        elif self._linger is None:
                            self._linger = loop.call_later(wait, self._linger_over)
                    item = await lane.receive()
                if self._looked_ahead:
                    self._looked_ahead -= 1  # the lane's head moved on (see _store_ahead)
                if item is _ACK_DUE:
                    # Publishes the reader made are due an ack (sent when the lane is drained,
                    # above), or one is due now (half the window back, asked for), or the
                    # linger is over.
                    if self._ack_due() or (
                        (self._credit_back or self._rejections)
                        and loop.time() - self._last_ack >= _ACK_LINGER
                    ):
                        await self._ack()
                    continue
                self._queued -= 1
                reached = -1
                if item.event is not None:
                    if settle.active and not self.hub.routable(item.topic):
                        # Held until a subscriber reattaches or the window closes (Settle):
                        # the publishes behind it wait too, so the stream keeps its order.
                        self._blocked = True
                        try:
                            if self._credit_back or self._rejections:
                                await self._ack()
                            await settle.hold(functools.partial(self.hub.routable, item.topic))
                        finally:
                            self._blocked = False
                    try:
                        try:
                            reached = bus.publish_nowait(item.topic, item.event)
                        except WouldBlock:
                            self._blocked = True  # the reader must queue behind this one
                            try:
                                # About to wait for a full subscriber: first tell the client
                                # what is done, so its credit does not wait on this publish (if
                                # an ack is due: a subscriber that is full at every publish
                                # would else cost an ack frame per event).
                                if (self._credit_back or self._rejections) and (
                                    self._ack_due() or loop.time() - self._last_ack >= _ACK_LINGER
                                ):
                                    await self._ack()
                                if store_ahead is not None:
                                    await self._store_ahead(store_ahead, item)
                                reached = await bus.publish(item.topic, item.event)
                            finally:
                                self._blocked = False
                    except (InvalidArgument, BusClosed, DurableUnavailable) as exc:
                        # DurableUnavailable: a durable topic's event not stored within the
                        # log's publish timeout (its server down): refused, with its code
                        # (DEADLINE_EXCEEDED), and the stream goes on.
                        item.code, item.reason = code_name(status_of(exc)), str(exc)
                if item.code and log.isEnabledFor(logging.DEBUG):
                    on = f" on {item.topic!r}" if item.topic else ""
                    log.debug(
                        "agent %s: publish%s rejected: %s: %s",
                        self.agent_id,
                        on,
                        item.code,
                        item.reason,
                    )
                if not item.seq:
                    if item.code:
                        await self._error(item.code, item.reason)
                    continue
                self._acked = item.seq
                if item.credit:
                    self._credit_back += 1
                if item.code:
                    self._rejections.append(
                        bridge_pb2.PublishRejection(
                            sequence=item.seq, code=item.code, reason=item.reason
                        )
                    )
                elif reached == 0 and self._unrouted:
                    self._rejections.append(_unrouted(item.seq, item.topic))
                # Within a burst, ack when half the window is due back (so a long burst never
                # stalls the client), when rejections pile up, or when the client asked.
                if self._ack_due():
                    await self._ack()
        except anyio.EndOfStream:
            # The lane was closed by _finish_publishes and is drained: the last ack.
            if self._credit_back or self._rejections:
                await self._ack()
            self._published_all.set()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        finally:
            if self._linger is not None:
                self._linger.cancel()

    def _linger_over(self) -> None:
        """The linger timer: wake the publisher task to ack (it checks what is due)."""
        self._linger = None
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            # A full lane keeps the publisher busy: it lingers again when the lane drains.
            self._lane.send_nowait(_ACK_DUE)

    async def _ack(self) -> None:
        self._last_ack = anyio.current_time()
        credit, self._credit_back = self._credit_back, 0
        rejections, self._rejections = self._rejections, []
        if self._ack_wanted <= self._acked:
            self._ack_wanted = 0
        ack = bridge_pb2.PublishAck(sequence=self._acked, credit=credit, rejections=rejections)
        await self._send(bridge_pb2.ServerEvent(publish_ack=ack))
        self._credit += credit

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, req: bridge_pb2.SubscribeRequest) -> None:
        def result(ok: bool, sub_id: int = 0, code: str = "", reason: str = "") -> Any:
            return bridge_pb2.ServerEvent(
                subscription=bridge_pb2.SubscribeResult(
                    request_id=req.request_id,
                    ok=ok,
                    subscription_id=sub_id,
                    code=code,
                    reason=reason,
                )
            )

        limits = self._limits
        try:
            authorize_read(self.principal, req.pattern)
            qos = qos_from_proto(req.qos, field="SubscribeRequest.qos")
            if req.buffer_size > limits.max_subscription_buffer:
                raise InvalidArgument(
                    f"buffer_size {req.buffer_size} is over the server's maximum "
                    f"{limits.max_subscription_buffer}"
                )
            if self.remote.pattern_count() >= limits.max_topics_per_agent:
                raise LimitExceeded(
                    "max_topics_per_agent",
                    limits.max_topics_per_agent,
                    f"agent {self.agent_id} holds {self.remote.pattern_count()} patterns",
                )
            if not req.event_types and not req.buffer_size:
                # A plain subscription joins the agent's mailbox, as ctx.subscribe does in
                # process: an event that several of its patterns match arrives once, in
                # order with the rest. (Removed by pattern; its id is the mailbox's.)
                self.remote.add_pattern(req.pattern, qos=qos)
                self.hub.settle.activity()
                self.screen((req.pattern,))
                await self._send(result(True, self.remote.mailbox.id))
                return
            sub = self.remote.subscribe(
                req.pattern,
                qos=qos,
                event_types=list(req.event_types) or None,
                buffer_size=req.buffer_size or None,
            )
        except (WireError, InvalidArgument, LimitExceeded, BusClosed, WrongAgent) as exc:
            code = code_name(status_of(exc))
            log.debug(
                "agent %s: subscription to %r refused: %s: %s",
                self.agent_id,
                req.pattern,
                code,
                exc,
            )
            await self._send(result(False, code=code, reason=str(exc)))
            return
        self.screen((req.pattern,))
        assert self._tg is not None
        self._tg.start_soon(self._pump, sub)
        self.hub.settle.activity()
        await self._send(result(True, sub.id))

    async def _unsubscribe(self, req: bridge_pb2.UnsubscribeRequest) -> None:
        code, reason, sub_id = "", "", 0
        match req.WhichOneof("target"):
            case "subscription_id":
                sub_id = req.subscription_id
                if not self.remote.unsubscribe(sub_id):
                    code, reason = "NOT_FOUND", f"no stream subscription has id {sub_id}"
            case "pattern":
                pattern = req.pattern
                if pattern == mailbox_topic(self.agent_id):
                    code, reason = "INVALID_ARGUMENT", "the mailbox topic cannot be unsubscribed"
                else:
                    removed = self.remote.remove_pattern(pattern)
                    for sub in self.remote.subscriptions():
                        if sub.pattern == pattern:
                            removed = self.remote.unsubscribe(sub.id) or removed
                    if not removed:
                        code, reason = "NOT_FOUND", f"agent {self.agent_id} holds no {pattern!r}"
            case _:
                code, reason = "INVALID_ARGUMENT", "unsubscribe names neither an id nor a pattern"
        frame = bridge_pb2.SubscribeResult(
            request_id=req.request_id,
            ok=not code,
            subscription_id=sub_id,
            code=code,
            reason=reason,
        )
        await self._send(bridge_pb2.ServerEvent(subscription=frame))

    async def _pump(self, sub: Subscription) -> None:
        """Write ``sub``'s deliveries onto the wire, in its order, until it closes (see _stop)."""
        with self._shielded():
            try:
                await self._pump_frames(sub)
            except Exception as exc:  # the call is over (the peer went away mid-write)
                log.debug("agent %s: stream write failed: %r", self.agent_id, exc)
                self.end(grpc.StatusCode.UNAVAILABLE, "the stream could not be written")

    async def _pump_frames(self, sub: Subscription) -> None:
        lock = self._write_lock
        write = self._ctx.write
        limit = self._limits.max_message_bytes - _FRAME_OVERHEAD
        held: Delivery | None = None
        # Topics of what was taken from ``sub`` (so in flight on it) and not yet handed to
        # _flight or settled: lost (dropped ``closed``) if the pump ends with them. ``sizes``:
        # the encoded sizes of those in the frame being built (for the byte window).
        sent: list[str] = []
        sizes: list[int] = []
        try:
            while True:
                if held is not None:
                    item, held = held, None
                else:
                    if self._credited and self._dcredit <= 0 and not await self._wait_credit(sub):
                        return
                    try:
                        item = await sub.receive()
                    except SubscriptionClosed:
                        return
                    lend_in_flight(sub, 1)
                    if self._screen and not may_receive(self.principal, item.topic):
                        # Another agent's mailbox, matched by a wildcard: withheld (taken from
                        # the buffer, so settled as delivered, never written).
                        settle_in_flight(sub, 1)
                        continue
                sent = [item.topic]
                frame = bridge_pb2.ServerEvent()
                if not self._batching:
                    filled = self._fill(frame.delivery, item)
                    if isinstance(filled, bridge_pb2.ServerEvent):
                        settle_in_flight(sub, 1)  # an Error frame goes in its place
                        sent = []
                        async with lock:
                            await write(filled)
                        continue
                    # Another pump may have used the credit while this one waited for an
                    # event; and the byte window needs the delivery's size.
                    if self._credited and not await self._wait_room(sub, filled):
                        return
                    sizes = [filled]
                    async with lock:
                        await self._write_deliveries(frame, sub, sent, sizes)
                    sent = []
                    continue
                # Each delivery is built inside the batch frame; one that does not fit is taken
                # out again and goes first in the next frame; one that cannot go at all is
                # replaced by an error frame, after the batch, in order.
                batch = _PackedBatch(self) if self._packed else _ProtoBatch(self, frame)
                filled = batch.add(item)
                if isinstance(filled, bridge_pb2.ServerEvent):
                    settle_in_flight(sub, 1)
                    sent = []
                    async with lock:
                        await write(filled)
                    continue
                # As above: the credit may be spent, and the bytes may not fit yet.
                if self._credited and not await self._wait_room(sub, filled):
                    return
                size = filled + 8
                sizes = [filled]
                room = min(self._max_batch, self._dcredit) if self._credited else self._max_batch
                # Bytes this frame may still carry within the byte window.
                bytes_left = self._dwindow_bytes - self._dbytes - filled
                error: bridge_pb2.ServerEvent | None = None
                while len(sent) < room:
                    try:
                        nxt = sub.receive_nowait()
                    except (WouldBlock, SubscriptionClosed):
                        break
                    lend_in_flight(sub, 1)
                    if self._screen and not may_receive(self.principal, nxt.topic):
                        settle_in_flight(sub, 1)  # withheld, as above
                        continue
                    filled = batch.add(nxt)
                    if isinstance(filled, bridge_pb2.ServerEvent):
                        batch.drop_last()
                        settle_in_flight(sub, 1)
                        error = filled
                        break
                    if size + filled + 8 > limit or (self._credited and filled > bytes_left):
                        batch.drop_last()
                        held = nxt
                        break
                    size += filled + 8
                    bytes_left -= filled
                    sent.append(nxt.topic)
                    sizes.append(filled)
                async with lock:
                    await self._write_deliveries(batch.frame(), sub, sent, sizes)
                    sent = []
                    if error is not None:
                        await write(error)
        finally:
            if held is not None:
                sent.append(held.topic)
            if sent:
                lose_in_flight(sub, sent)

    async def _write_deliveries(
        self, frame: bridge_pb2.ServerEvent, sub: Subscription, sent: list[str], sizes: list[int]
    ) -> None:
        """Write a frame carrying ``sent`` (encoded sizes ``sizes``; called holding the write
        lock, so _flight is in wire order). With delivery credit they stay in flight until the
        agent credits them; without, they are delivered once the write completed."""
        if self._credited:
            self._dcredit -= len(sent)
            self._took_bytes(sum(sizes))
            # Before the write: the agent may credit them before the write call returns.
            # _flight owns them now: the caller's list is emptied, so its clean-up loses none.
            self._flight.append((sub, sent.copy(), sizes))
            sent.clear()
            await self._ctx.write(frame)
        else:
            await self._ctx.write(frame)
            settle_in_flight(sub, len(sent))
            sent.clear()

    async def _wait_credit(self, sub: Subscription) -> bool:
        """Wait for delivery credit; False if ``sub`` closed first (the stream is ending)."""
        while self._dcredit <= 0:
            if sub.closed or self.closed:
                return False
            self._credit_event.clear()
            await self._credit_event.wait()
        return not sub.closed

    def _fits(self, size: int) -> bool:
        """Whether a delivery of ``size`` bytes may go now: a unit of credit, and room in the
        byte window (or nothing in flight: a delivery larger than the window goes alone)."""
        return self._dcredit > 0 and (
            not self._dbytes or self._dbytes + size <= self._dwindow_bytes
        )

    async def _wait_room(self, sub: Subscription, size: int) -> bool:
        """Wait until a delivery of ``size`` bytes fits (:meth:`_fits`); False if ``sub``
        closed first (the stream is ending)."""
        while not self._fits(size):
            if sub.closed or self.closed:
                return False
            self._credit_event.clear()
            await self._credit_event.wait()
        return not sub.closed

    def _took_bytes(self, size: int) -> None:
        self._dbytes += size
        if self._dbytes > self._dbytes_high:
            self._dbytes_high = self._dbytes

    def _on_credit(self, count: int) -> int:
        """The agent took in ``count`` more deliveries: settle the oldest in flight and give
        the pumps that much more credit. Returns how much of ``count`` matched nothing."""
        flight = self._flight
        settled = 0
        freed = 0
        while count and flight:
            sub, sent, sizes = flight[0]
            off = self._flight_off
            n = min(count, len(sent) - off)
            if sub is not None:
                settle_in_flight(sub, n)
            freed += sizes[0] if n == 1 == len(sizes) else sum(sizes[off : off + n])
            settled += n
            count -= n
            if off + n == len(sent):
                flight.popleft()
                self._flight_off = 0
            else:
                self._flight_off += n
        if settled:
            self._dcredit += settled
            self._dbytes -= freed
            self._credit_event.set()
        return count

    def _lose_flight(self) -> None:
        """The stream ended: what is in flight never arrives (dropped, reason ``closed``)."""
        flight = self._flight
        while flight:
            sub, sent, _ = flight.popleft()
            if sub is not None:
                lose_in_flight(sub, sent[self._flight_off :])
            self._flight_off = 0
        self._dbytes = 0

    # ------------------------------------------------------------------ durable deliveries

    def _start_durable(self, granted: bool) -> None:
        """A durable registration: its topics from the durable log (keyed by the agent id),
        or, on a stream that did not negotiate durability, from memory as any agent's."""
        reg = self.durable
        if reg is None:
            return
        if not granted:
            self.durable = None
            for pattern in reg.topics:
                self.remote.add_pattern(pattern)
            return
        try:
            self._dsub = self._bus.subscribe_durable(
                self.agent_id,
                reg.topics,
                max_deliver=reg.max_deliver,
                max_ack_pending=reg.qos.default_buffer,
                # Fetched a batch frame's worth at a time: what is at hand goes out in one
                # delivery_batch (_durable_frames), not a round trip and a frame per event.
                ahead=_DURABLE_AHEAD,
            )
        except Exception as exc:  # the log went away since RegisterAgent (checked there)
            self.end(grpc.StatusCode.UNAVAILABLE, f"durable delivery unavailable: {exc}")
            return
        assert self._tg is not None
        self._tg.start_soon(self._durable_pump, self._dsub)

    async def _durable_pump(self, sub: DurableSubscription) -> None:
        """Write the durable name's deliveries, each with its delivery id (the event's
        sequence in the log, the same on every redelivery), under the delivery credit."""
        with self._shielded():
            try:
                await self._durable_frames(sub)
            except SubscriptionClosed:
                return
            except Exception as exc:
                log.warning("agent %s: durable delivery failed: %r", self.agent_id, exc)
                self.end(grpc.StatusCode.UNAVAILABLE, "durable delivery failed")

    async def _durable_frames(self, sub: DurableSubscription) -> None:
        limit = sub.max_ack_pending  # at most this many unsettled at the agent
        while not self.closed:
            if len(self._dheld) >= limit or (self._credited and self._dcredit <= 0):
                self._credit_event.clear()
                await self._credit_event.wait()  # set by credit, a settle and by _stop
                if self._tg is not None and self._tg.cancel_scope.cancel_called:
                    return
                continue
            msg = await sub.take()
            if self._batching:
                await self._durable_batch(sub, msg, limit)
                continue
            frame = bridge_pb2.ServerEvent()
            filled = self._fill(frame.delivery, Delivery(msg.topic, msg.event, 0))
            if isinstance(filled, bridge_pb2.ServerEvent):
                # It cannot go (too large): given up as a handler failure would be at the end.
                await sub.dead_letter(msg, "undeliverable", filled.err.message)
                continue
            frame.delivery.delivery_id = msg.sequence
            self._dheld[msg.sequence] = msg  # from here on handed back if the stream ends
            # Another pump may have used the credit while this one waited for the log; and
            # the byte window needs the delivery's size.
            while self._credited and not self._fits(filled):
                self._credit_event.clear()
                await self._credit_event.wait()
                if self._tg is not None and self._tg.cancel_scope.cancel_called:
                    return
            async with self._write_lock:
                if self._credited:
                    self._dcredit -= 1
                    self._took_bytes(filled)
                    self._flight.append((None, [msg.topic], [filled]))
                await self._ctx.write(frame)

    async def _durable_batch(
        self, sub: DurableSubscription, msg: DurableMessage, limit: int
    ) -> None:
        """Write ``msg`` and the deliveries already fetched behind it in one
        ``delivery_batch``, within the batch size, the frame's byte bound, the delivery credit
        and ``limit`` unsettled at the agent."""
        self._dheld[msg.sequence] = msg  # from here on handed back if the stream ends
        # The first delivery must fit the byte window as well as the credit: its size, from a
        # scratch encoding (one that cannot go at all is dead-lettered below, not waited for).
        first = self._fill(bridge_pb2.Delivery(), Delivery(msg.topic, msg.event, 0))
        first_size = 0 if isinstance(first, bridge_pb2.ServerEvent) else first
        while self._credited and not self._fits(first_size):
            self._credit_event.clear()
            await self._credit_event.wait()
            if self._tg is not None and self._tg.cancel_scope.cancel_called:
                return
        async with self._write_lock:
            # Counted under the lock: another pump may have used credit while this waited.
            room = min(self._max_batch, limit - len(self._dheld) + 1)
            if self._credited:
                room = min(room, self._dcredit)
            frame = bridge_pb2.ServerEvent()
            entries = frame.delivery_batch.deliveries
            bound = self._limits.max_message_bytes - _FRAME_OVERHEAD
            size = 0
            topics: list[str] = []
            sizes: list[int] = []
            nxt: DurableMessage | None = msg
            now = anyio.current_time()  # one clock read per frame, not per delivery
            while nxt is not None:
                entry = entries.add()
                filled = self._fill(entry, Delivery(nxt.topic, nxt.event, 0))
                if isinstance(filled, bridge_pb2.ServerEvent):
                    del entries[-1]
                    if nxt is msg:
                        del self._dheld[msg.sequence]
                    else:
                        sub.take_ready()
                    # It cannot go (too large): given up as a handler failure would be.
                    await sub.dead_letter(nxt, "undeliverable", filled.err.message)
                elif topics and (
                    size + filled + 8 > bound
                    or (self._credited and self._dbytes + sum(sizes) + filled > self._dwindow_bytes)
                ):
                    del entries[-1]  # left fetched: the next frame's first
                    break
                else:
                    if nxt is not msg:
                        sub.take_ready()
                        self._dheld[nxt.sequence] = nxt
                    entry.delivery_id = nxt.sequence
                    size += filled + 8
                    topics.append(nxt.topic)
                    sizes.append(filled)
                if len(topics) >= max(room, 1):
                    break
                nxt = sub.peek_ready(now)
            if not topics:
                return
            if self._credited:
                self._dcredit -= len(topics)
                self._took_bytes(sum(sizes))
                self._flight.append((None, topics, sizes))
            await self._ctx.write(frame)

    async def _settle_durable(self, frame: bridge_pb2.DurableSettle) -> None:
        """The agent's acks, naks, terms and keep-alives, by delivery id. An id this stream
        does not hold (an earlier stream's, handed back when it ended) is ignored."""
        held = self._dheld
        try:
            for did in frame.acks:
                if (msg := held.pop(did, None)) is not None:
                    await msg.ack()
            for nak in frame.naks:
                if (msg := held.pop(nak.delivery_id, None)) is not None:
                    await msg.nak(nak.delay_ms / 1000)
            for given_up in frame.dead_letters:
                if (msg := held.pop(given_up.delivery_id, None)) is not None:
                    assert self._dsub is not None  # deliveries are held only with one
                    # The in-process agent's dead letter (dead_letter_event), published on
                    # loom.dlq.{id} before the event is settled for good.
                    await self._dsub.dead_letter(msg, given_up.reason, given_up.error)
            for did in frame.in_progress:
                if (msg := held.get(did)) is not None:
                    await msg.in_progress()
        except Exception as exc:  # the log unreachable: it delivers again after its ack wait
            log.warning("agent %s: durable settle failed: %r", self.agent_id, exc)
        self._credit_event.set()  # room for the durable pump

    async def _hand_back(self) -> None:
        """The stream ended: what the agent holds unsettled is handed back at once (a nak,
        no delay), so it comes again to its next stream without waiting out the ack wait."""
        held, self._dheld = self._dheld, {}
        for msg in held.values():
            try:
                await msg.nak()
            except Exception as exc:
                log.warning("agent %s: durable hand-back failed: %r", self.agent_id, exc)
                break
        if self._dsub is not None:
            await self._dsub.aclose()

    # ------------------------------------------------------------------ writing

    def _fill(self, msg: bridge_pb2.Delivery, delivery: Delivery) -> int | bridge_pb2.ServerEvent:
        """Write ``delivery`` into the empty ``msg`` (in place: no copy into its frame); return
        its encoded size, or the ``Error`` frame that replaces a delivery that cannot go (the
        caller then discards ``msg``).

        A stream that said hello reads the typed envelope, so its events carry no metadata
        mirror of it: an old client's get one.
        """
        msg.topic = delivery.topic
        try:
            fill_event(msg.event, delivery.event, mirror=not self._hello)
        except WireError as exc:
            return self._undeliverable(delivery, exc)
        size: int = msg.ByteSize()
        return self._sized(delivery, size)

    def _sized(self, delivery: Delivery, size: int) -> int | bridge_pb2.ServerEvent:
        """``size`` if a delivery of ``size`` encoded bytes fits a message, else the ``Error``
        frame that replaces it."""
        if size + _FRAME_OVERHEAD <= self._limits.max_message_bytes:
            return size
        reason = (
            f"event {delivery.event.id} on {delivery.topic!r} not delivered: "
            f"{size} bytes is over max_message_bytes ({self._limits.max_message_bytes})"
        )
        log.warning("agent %s: %s", self.agent_id, reason)
        return bridge_pb2.ServerEvent(
            err=bridge_pb2.Error(code="RESOURCE_EXHAUSTED", message=reason)
        )

    def _undeliverable(self, delivery: Delivery, exc: WireError) -> bridge_pb2.ServerEvent:
        """The ``Error`` frame that replaces a delivery the wire cannot carry."""
        reason = f"event {delivery.event.id} not delivered: {exc}"
        log.warning("agent %s: %s", self.agent_id, reason)
        return bridge_pb2.ServerEvent(err=bridge_pb2.Error(code="INVALID_ARGUMENT", message=reason))

    @contextlib.contextmanager
    def _shielded(self) -> Iterator[anyio.CancelScope]:
        """A writing task's scope: shielded while the stream lasts (see _stop), so that a slow
        reader is backpressure, not an error (gRPC keepalive finds a peer that is gone)."""
        scope = anyio.CancelScope(shield=True)
        if self._tg is None or self._tg.cancel_scope.cancel_called:
            scope.deadline = anyio.current_time() + _WRITE_GRACE  # started as the stream ends
        self._write_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._write_scopes.discard(scope)

    async def _writer(self) -> None:
        """Write the outbound queue (everything but deliveries) until _stop closes it."""
        with self._shielded():
            try:
                await self._write_frames()
                self._wrote_all.set()
            except Exception as exc:  # the call is over (the peer went away mid-write)
                log.debug("agent %s: stream write failed: %r", self.agent_id, exc)
                self.end(grpc.StatusCode.UNAVAILABLE, "the stream could not be written")

    async def _write_frames(self) -> None:
        recv = self._out
        lock = self._write_lock
        write = self._ctx.write
        try:
            while True:
                frame = await recv.receive()
                async with lock:
                    await write(frame)
                    if frame.HasField("welcome"):
                        features = frame.welcome.features
                        self._batching = bridge_pb2.STREAM_FEATURE_BATCH in features
                        self._packed = bridge_pb2.STREAM_FEATURE_PACKED_EVENTS in features
                        if bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT in features:
                            # Deliveries written from now on count against the window; the
                            # agent credits only those it reads after this welcome.
                            self._dcredit = self._dwindow
                            self._credited = True
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return

    # ------------------------------------------------------------------ pushed tool calls

    async def invoke(self, name: str, arguments: JSONObject) -> Any:
        """Push a call of ``name`` to the agent and wait for its result (a ``ToolInvoker``).

        Runs inside the registry's timeout scope; the pushed ``timeout_ms`` is what is left of
        it. Cancelled (timeout, caller gone), it sends ``cancel_tool_call`` when the agent
        negotiated it; a result arriving later is discarded.
        """
        if self.closed:
            raise ToolFailed("AGENT_DISCONNECTED", f"agent {self.agent_id} is disconnected")
        limit = self._limits.max_pending_tool_calls
        if len(self._pending) >= limit:
            error = LimitExceeded(
                "max_pending_tool_calls", limit, f"agent {self.agent_id} has {limit} calls pending"
            )
            raise ToolFailed(code_name(status_of(error)), str(error))
        call_id = new_id()
        start = anyio.current_time()
        deadline = anyio.current_effective_deadline()
        timeout_ms = 0 if math.isinf(deadline) else max(1, int((deadline - start) * 1000))
        call = tools_pb2.ToolCall(
            id=call_id,
            name=name,
            arguments=_encoder.encode(arguments).decode(),
            timeout_ms=timeout_ms,
            # The context of the call being served (its execute_tool span), so the agent's
            # side of it joins the caller's trace; and the call scope of the turn it is made
            # for, so the agent's own calls count against that turn's caps.
            # And the call's idempotency key, which the agent's tool receives.
            headers={**trace_headers(), **scope_headers(pushed=True), **key_headers()},
        )
        pending = _Pending(relay() if self._outputs else None)
        if pending.pieces is not None:
            call.headers[WANTS_OUTPUT] = "1"
        self._pending[call_id] = pending
        self.hub.calls[call_id] = self
        if not self._watch.is_set():
            self._watch.set()
        try:
            await self._send(bridge_pb2.ServerEvent(tool_call=call))
            if pending.pieces is None:
                await pending.done.wait()
            else:
                await drain_until(pending.pieces, pending.done)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the stream ended while queueing: _finish has set the outcome
        except BaseException:
            if pending.outcome is None and self._cancels and not self.closed:
                why = (
                    "deadline exceeded" if anyio.current_time() >= deadline else "caller cancelled"
                )
                cancel = bridge_pb2.CancelToolCall(id=call_id, reason=why)
                try:
                    self._out.send_nowait(bridge_pb2.ServerEvent(cancel_tool_call=cancel))
                except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    log.debug("agent %s: cancel of call %s not sent", self.agent_id, call_id)
            raise
        finally:
            self._pending.pop(call_id, None)
            self.hub.calls.pop(call_id, None)
            report_drops(pending.pieces, call_id, name)
        outcome = pending.outcome or disconnected_outcome(call_id, self.agent_id, "stream ended")
        count_pushed_calls(outcome)  # the agent's calls for the turn the server never saw
        if outcome.status is ToolStatus.OK:
            return decode_output(outcome.output)
        raise error_from_outcome(outcome, tool=name, timeout=deadline - start)

    async def _watchdog(self) -> None:
        """Fail the calls pushed to the agent once it turns stale (``AGENT_UNRESPONSIVE``).

        Stale is the directory's rule: nothing from the agent (no frame at all: our SDK
        pings every ``heartbeat_interval``) for the runtime's ``stale_after_s``. A stopped
        (SIGSTOP) or partitioned process keeps its stream open for as long as TCP and gRPC
        keepalive take to notice (tens of seconds), and its callers would wait for their
        whole timeout; they are told at the threshold instead. The call is only given up
        here: the stream stays, and a result the agent sends later is discarded. Sleeps
        while no call is pending, so an idle agent costs no wake-ups.
        """
        runtime = self.hub.runtime
        while True:
            if not self._pending:
                self._watch = anyio.Event()
                await self._watch.wait()
            threshold = runtime.stale_after_s
            info = runtime.directory.get(self.agent_id)
            if info is None:
                return
            silent = (time.time_ns() // 1_000_000 - info.last_heartbeat_ms) / 1000
            if info.status is not AgentStatus.STALE and silent < threshold:
                await anyio.sleep(threshold - silent)
                continue
            for call_id, pending in list(self._pending.items()):
                if pending.outcome is None:
                    pending.outcome = unresponsive_outcome(call_id, self.agent_id, threshold)
                    pending.done.set()
            # The calls are being woken; give them the turn before looking again.
            await anyio.lowlevel.checkpoint()

    async def _resolve(self, msg: tools_pb2.ToolResult) -> None:
        try:
            outcome = tool_result_from_proto(msg)
        except WireError as exc:
            await self._error("INVALID_ARGUMENT", f"tool_result {msg.id!r} ignored: {exc}")
            return
        pending = self._pending.get(outcome.id)
        if pending is None:
            owner = self.hub.calls.get(outcome.id)
            if owner is not None and owner is not self:
                error = WrongAgent(
                    f"tool call {outcome.id!r} was not pushed to agent {self.agent_id!r}; "
                    "result ignored"
                )
                await self._error(code_name(status_of(error)), str(error))
            # Otherwise it is late (the call was cancelled or timed out): discarded.
            return
        if pending.outcome is None:
            pending.outcome = outcome
            pending.done.set()

    # ------------------------------------------------------------------ calls the agent makes

    async def _call(self, msg: tools_pb2.ToolCall) -> None:
        """A ``call`` frame: the tool runs in a task of its own (the reader goes on at once);
        its ``call_result`` follows, unless the agent withdraws the call first."""
        call_id = msg.id
        refusal: ToolCallOutcome | None = None
        if not call_id:
            refusal = failed_outcome(
                "", ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS", "a call needs an id"
            )
        elif call_id in self._calls:
            refusal = failed_outcome(
                call_id, ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS", "id already in flight"
            )
        elif len(self._calls) >= self._limits.max_pending_tool_calls:
            refusal = failed_outcome(
                call_id,
                ToolStatus.ERROR,
                "RESOURCE_EXHAUSTED",
                f"agent {self.agent_id} already has {len(self._calls)} calls in flight "
                f"(max_pending_tool_calls)",
            )
        else:
            try:
                request = tool_call_from_proto(msg)
                claimed_sender(self.principal, request.headers)
                authorize_tool(self.principal, request.name, self.hub.tenants)
            except WireError as exc:
                refusal = failed_outcome(
                    call_id, ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS", str(exc)
                )
            except WrongAgent as exc:
                refusal = failed_outcome(
                    call_id, ToolStatus.ERROR, code_name(status_of(exc)), str(exc)
                )
        if refusal is not None:
            await self._send(bridge_pb2.ServerEvent(call_result=tool_result_to_proto(refusal)))
            return
        scope = anyio.CancelScope()
        self._calls[call_id] = scope
        assert self._workers is not None
        self._workers.submit(functools.partial(self._run_call, request, scope))

    async def _run_call(self, request: ToolCallRequest, scope: anyio.CancelScope) -> None:
        outcome = None
        try:
            # The tool's partial output goes to the agent on this stream, ahead of the result
            # (the same queue, so the result never overtakes a piece; a full queue holds the
            # tool back). Without the feature, nobody here takes it.
            wanted = self._outputs and wants(request.headers)
            sink = functools.partial(self._tool_output, request.id) if wanted else None
            with scope, tool_output_sink(sink):
                # timeout_ms (or the tool's default) is the call's only deadline: no RPC here.
                outcome = await run_tool_call(self.hub.runtime, request, deadline_s=None)
        finally:
            self._calls.pop(request.id, None)
        if outcome is not None:  # else the agent withdrew the call: it wants no answer
            await self._send(bridge_pb2.ServerEvent(call_result=tool_result_to_proto(outcome)))

    async def _tool_output(self, call_id: str, text: str) -> None:
        """A piece of a running ``call``'s partial output, to the agent that made it."""
        piece = tools_pb2.ToolOutput(id=call_id, text=text)
        await self._send(bridge_pb2.ServerEvent(tool_output=piece))


class _ProtoBatch:
    """A ``delivery_batch`` being filled, one ``Delivery`` message per entry (built in
    place)."""

    __slots__ = ("_entries", "_frame", "_session")

    def __init__(self, session: Session, frame: bridge_pb2.ServerEvent) -> None:
        self._session = session
        self._frame = frame
        self._entries = frame.delivery_batch.deliveries

    def add(self, delivery: Delivery) -> int | bridge_pb2.ServerEvent:
        """Add ``delivery``; its encoded size, or the error frame that replaces it (then
        :meth:`drop_last`)."""
        return self._session._fill(self._entries.add(), delivery)

    def drop_last(self) -> None:
        del self._entries[-1]

    def frame(self) -> bridge_pb2.ServerEvent:
        return self._frame


class _PackedBatch:
    """A ``delivery_batch`` being filled with packed entries (``STREAM_FEATURE_PACKED_EVENTS``,
    ``bridge/_packed.py``): each event encoded once, the frame made at the end."""

    __slots__ = ("_entries", "_fits", "_session")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._entries: list[bytes] = []
        self._fits = session._limits.max_message_bytes - _FRAME_OVERHEAD

    def add(self, delivery: Delivery) -> int | bridge_pb2.ServerEvent:
        """As :meth:`_ProtoBatch.add`."""
        try:
            entry = pack_event(delivery.topic, delivery.event)
        except WireError as exc:
            self._entries.append(b"")  # so that drop_last drops it
            return self._session._undeliverable(delivery, exc)
        self._entries.append(entry)
        size = len(entry)
        return size if size <= self._fits else self._session._sized(delivery, size)

    def drop_last(self) -> None:
        self._entries.pop()

    def frame(self) -> bridge_pb2.ServerEvent:
        frame = bridge_pb2.ServerEvent()
        batch = frame.delivery_batch
        batch.packed = pack(self._entries)
        batch.packed_count = len(self._entries)
        return frame
