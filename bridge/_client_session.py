"""One connected ``EventStream``: the handshake, a reader, a writer, heartbeats, pushed tools.

A session lives from a successful ``RegisterAgent`` to the end of its stream; the client's
reconnect loop makes the next one. Its tasks:

* the **reader** only decodes frames. Deliveries go to the client's inbound sink, its bounded
  buffer or the agent's local bus (waiting for room there is the stream's backpressure),
  pushed tool calls to workers of their own (``bridge/_workers.py``), the results of our own
  calls to their waiters. It never runs a handler.
* the **writer** drains the session's bounded outbound queue in order. Consecutive publishes
  are sent as one ``publish_batch`` once the server has answered our hello (an old server
  gets single ``publish`` frames), and numbered as the server numbers them, so that each
  ``publish_ack`` settles the right publishers.
* the **creditor** (with ``STREAM_FEATURE_DELIVERY_CREDIT``) gives the server back credit for
  the deliveries the sink has taken in: half the window at once, or what there is after a
  linger, so the server never has more in flight to us than the window and a
  slow agent holds its events back on the server, where its tier and statistics apply.
* the **heartbeat** sends a ``ping`` every ``heartbeat_interval`` and ends the session when
  nothing at all has arrived for ``heartbeat_timeout`` (time the reader spends waiting for room
  in the inbound buffer does not count: that silence is ours, not the server's).

Every task ends the session by recording why and cancelling the others; :meth:`run` then
raises that reason, so the reconnect loop sees one plain exception, never a group.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import grpc
import grpc.aio
from anyio.abc import TaskGroup

from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc, tools_pb2, turns_pb2
from loom.runtime import BusClosed, Event, InvalidArgument
from loom.runtime.lowlevel import Inbound
from loom.runtime.tools import tool_output_sink

from ._client_config import Acceptance
from ._client_durable import DEFAULT_ACK_WAIT
from ._client_tools import outcome_from_exception
from ._convert import event_from_proto, qos_to_proto, tool_call_from_proto, tool_result_to_proto
from ._errors import ConnectionLost, PublishRejected, SubscribeRefused, WireError
from ._lane import Lane
from ._packed import checked, pack, unpack_events
from ._status import failed_outcome
from ._tool_output import Pieces, wants
from ._wire_types import ToolCallOutcome, ToolCallRequest, ToolStatus
from ._workers import Workers

if TYPE_CHECKING:
    from ._client import BridgeClient, _Subscription

__all__: list[str] = []

# A publisher that never has to wait yields once every this many publishes, so it cannot
# starve the writer (and its batches stay large: the writer sends what piled up meanwhile).
# The default max_batch_events: a saturated publisher hands the writer full batches. Every 64
# (as before) cost each hop four gRPC messages where one does, about a quarter of the CPU an
# event costs over two bridge hops and a cluster link (benchmarks/cluster.py). A publishing
# loop still lets others run every ~0.3 ms.
_YIELD_EVERY = 256
# Delivery credit goes back in one frame once half the window is owed, as TCP's window updates
# and NATS's flow control do: the server still has the other half to send from, so it never
# waits for credit while we keep up, and a stream pays one credit frame (a gRPC message on each
# side) per half window rather than per batch or per few milliseconds. Less than that goes back
# _CREDIT_LINGER seconds after the first delivery owed, so that a trickle is soon counted
# delivered on the server; the linger never holds the stream back (see above).
_CREDIT_LINGER = 0.05
# Durable settles go back together: a settle frame follows the previous one by at least
# _SETTLE_LINGER seconds unless _SETTLE_STEP acks are due (a lone one, after a quiet spell,
# goes at once). A handler returns one event at a time, and a frame per ack cost the server a
# gRPC read, a settle and a NATS flush per event (about a third of its CPU on the durable
# path, docs/performance.md); an ack a few milliseconds late changes nothing but what a
# crash in those milliseconds delivers again (marked).
_SETTLE_STEP = 64
_SETTLE_LINGER = 0.005

log = logging.getLogger("loom.bridge.client")


def _nothing() -> None:
    pass


FEATURES = (
    bridge_pb2.STREAM_FEATURE_BATCH,
    bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT,
    bridge_pb2.STREAM_FEATURE_PUBLISH_ACK,
    bridge_pb2.STREAM_FEATURE_TOOL_CANCEL,
    bridge_pb2.STREAM_FEATURE_UNROUTED,
    bridge_pb2.STREAM_FEATURE_SUPERVISION,
    bridge_pb2.STREAM_FEATURE_DURABLE_TOPICS,
    bridge_pb2.STREAM_FEATURE_TOOL_OUTPUT,
    bridge_pb2.STREAM_FEATURE_PACKED_EVENTS,
)


class Counters:
    """The client's counters: owned by the :class:`BridgeClient`, written by its sessions
    (one at a time), read by ``BridgeClient.statistics()`` into a frozen record."""

    __slots__ = (
        "delivered",
        "dropped",
        "features",
        "last_server_error",
        "lost",
        "malformed",
        "pings",
        "pongs",
        "published",
        "registrations",
        "rejected",
        "rtt_ms",
        "server_errors",
        "tools_cancelled",
        "tools_refused",
        "tools_served",
        "unrouted",
    )

    def __init__(self) -> None:
        self.registrations = 0
        self.features: tuple[str, ...] = ()
        self.published = 0
        self.dropped = 0
        self.rejected = 0
        self.unrouted = 0
        self.lost = 0
        self.delivered = 0
        self.malformed = 0
        self.tools_served = 0
        self.tools_cancelled = 0
        self.tools_refused = 0
        self.pings = 0
        self.pongs = 0
        self.rtt_ms = 0
        self.server_errors = 0
        self.last_server_error = ""

    def pong(self, timestamp_ms: int) -> None:
        """A ``pong`` answering the ping sent at ``timestamp_ms`` arrived."""
        self.pongs += 1
        self.rtt_ms = max(0, int(time.time() * 1000) - timestamp_ms)

    def server_error(self, code: str, message: str) -> None:
        """The server sent an ``Error`` frame."""
        self.server_errors += 1
        self.last_server_error = f"{code}: {message}"
        log.warning("bridge: server error frame %s: %s", code, message)


class SessionEnded(Exception):
    """Internal: the session an operation was queued on is gone; try the next one."""


class AckWaiter:
    """A publisher waiting to learn whether the server's bus accepted its publish."""

    __slots__ = ("error", "event", "outcome", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.event = anyio.Event()
        self.error: Exception | None = None
        self.outcome = Acceptance.ACCEPTED

    def settle(
        self, error: Exception | None = None, outcome: Acceptance = Acceptance.ACCEPTED
    ) -> None:
        if not self.event.is_set():
            self.error = error
            self.outcome = outcome
            self.event.set()


class Outgoing:
    """A publish waiting in the outbound queue (numbered by the writer, in wire order): a
    ``ClientEvent`` whose ``publish`` is set, so that a publish sent alone goes as it is, or
    (``STREAM_FEATURE_PACKED_EVENTS``) its packed entry (``bridge/_packed.py``)."""

    __slots__ = ("frame", "size", "topic", "waiter")

    def __init__(
        self,
        frame: bridge_pb2.ClientEvent | bytes,
        waiter: AckWaiter | None,
        size: int = 0,
        topic: str = "",
    ) -> None:
        self.frame = frame
        self.waiter = waiter
        self.size = size  # what it counts against the queue's byte bound (its event_size)
        self.topic = topic  # to name it in a rejection


def _out_size(item: OutItem) -> int:
    """What a queued frame counts against ``ClientOptions.max_buffer_bytes``: a publish its
    event's ``event_size`` (measured before it was encoded), any other frame its encoded size
    (pings and credit are a few bytes; tool results carry their output)."""
    if isinstance(item, Outgoing):
        return item.size
    size: int = item.ByteSize()
    return size


class CallWaiter:
    """A tool call made on the stream, waiting for its ``call_result``."""

    __slots__ = ("error", "event", "pieces", "result")

    def __init__(self, pieces: Pieces | None = None) -> None:
        self.event = anyio.Event()
        self.result: tools_pb2.ToolResult | None = None
        self.error: Exception | None = None
        # Its partial output on the way to the caller's sink (STREAM_FEATURE_TOOL_OUTPUT).
        self.pieces = pieces


class _SubscribeWaiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.result: bridge_pb2.SubscribeResult | None = None


OutItem = Outgoing | bridge_pb2.ClientEvent


class Session:
    """One stream of one registration. Internal to :class:`BridgeClient`."""

    def __init__(
        self,
        client: BridgeClient,
        stub: bridge_pb2_grpc.BridgeAsyncStub,
        deliver: Inbound,
        counters: Counters,
        *,
        metadata: Callable[[], tuple[tuple[str, str], ...]],
        restore: Callable[[], list[_Subscription]],
        refused: Callable[[str], None],
    ) -> None:
        self.client = client
        self.counters = counters
        # What the session needs of the client's own state, handed in by the client: the
        # metadata of the stream's RPC (made when it opens), the subscriptions a new stream
        # restores, and how to drop one the server no longer allows.
        self._metadata = metadata
        self._restore = restore
        self._refused = refused
        self.options = client.options
        self.agent_id = client.registration.agent_id
        self._stub = stub
        self._deliver = deliver
        size = self.options.outbound_buffer + self.options.max_tool_calls + 16
        # Bounded in bytes too: a queue of large publishes (or tool results) waiting for the
        # server's credit must not grow the agent's memory past max_buffer_bytes.
        self._out = Lane[OutItem](size, max_bytes=self.options.max_buffer_bytes, size=_out_size)
        self._call: grpc.aio.StreamStreamCall[bridge_pb2.ClientEvent, bridge_pb2.ServerEvent]
        self._tg: TaskGroup | None = None
        self._workers: Workers | None = None  # run pushed tool calls, one each
        self.ended = False
        self.finished = anyio.Event()
        self.end_reason: Exception | None = None
        self.closing = False
        # Negotiated features.
        self.features: frozenset[int] = frozenset()
        self._welcomed = anyio.Event()
        self.released = anyio.Event()  # the server's answer to a final report
        self.mirror = True  # the envelope goes into metadata too, until a welcome says not
        self.packed = False  # publishes go packed (STREAM_FEATURE_PACKED_EVENTS)
        self._max_batch = 1
        self._tick = 0
        self._acks = False
        self.credit = 0
        self._credit_changed = anyio.Event()
        # Delivery credit owed to the server (see the creditor).
        self._credited = False
        self._owed = 0
        self._credit_step = 1
        self._owed_any = anyio.Event()
        # Durable settles not sent yet, sent together in one durable_settle frame by the
        # settler (at most one entry per durable delivery held, plus keep-alives).
        self._settles = bridge_pb2.DurableSettle()
        self._settles_due = anyio.Event()
        self._settles_step = anyio.Event()  # _SETTLE_STEP acks are due
        self._owed_step = anyio.Event()
        self._holding = False  # the delivery being handed over is held (hold_credit)
        self._seq = 0
        self._ack_waiters: dict[int, AckWaiter] = {}
        # The topics of the publishes not yet acked, a written batch at a time with the
        # sequence of its first, in order: to name the topic of a rejected one (a deque, not
        # a dict: an ack settles a prefix of it). Per batch, not per publish: two steps per
        # event here were a tenth of a saturated publisher's bookkeeping. ``_acked``: the
        # highest sequence acked, which may fall inside the oldest batch.
        self._unacked: deque[tuple[int, list[str]]] = deque()
        self._acked = 0
        # Liveness.
        self._last_rx = time.monotonic()
        self._reader_blocked = False
        # Dynamic subscriptions and pushed tool calls in flight.
        self._subscribes: dict[str, _SubscribeWaiter] = {}
        self._request_ids = 0
        self._tools: dict[str, anyio.CancelScope] = {}
        self._calls: dict[str, CallWaiter] = {}  # calls we made, by id
        self._withdrawn: set[str] = set()

    # ------------------------------------------------------------------ running

    async def run(self, connected: Callable[[], None]) -> None:
        """Open the stream, shake hands, resubscribe, report ``connected``, then run until the
        stream ends. Raises why it ended (returns only after a graceful close)."""
        self._call = self._stub.EventStream(metadata=self._metadata())
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._workers = Workers(tg)
                tg.start_soon(self._guard, self._setup, connected)
        finally:
            self.ended = True
            lost = self.end_reason or ConnectionLost("the connection closed")
            # What the connection took with it: publishes written and never acknowledged
            # (perhaps published), and publishes still queued (never written). Each is
            # counted, and each publisher that waits is told.
            self.counters.lost += self._unacked_count()
            self._unacked.clear()
            while True:
                try:
                    item = self._out.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if isinstance(item, Outgoing):
                    self.counters.lost += 1
                    if item.waiter is not None:
                        item.waiter.settle(
                            ConnectionLost(f"connection lost before sending ({lost})")
                        )
            self._out.close_receiving()
            self._call.cancel()
            for waiter in self._ack_waiters.values():
                waiter.settle(ConnectionLost(f"connection lost before the ack ({lost})"))
            self._ack_waiters.clear()
            self._credit_changed.set()
            for sub in self._subscribes.values():
                sub.event.set()
            for made in self._calls.values():
                made.error = ConnectionLost(f"connection lost before the result ({lost})")
                made.event.set()
            self._calls.clear()
            self.finished.set()
        if self.end_reason is not None and not self.closing:
            raise self.end_reason

    async def _guard(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run one task of the session; its failure ends the session with that reason."""
        try:
            await fn(*args)
        except SessionEnded as exc:
            if not self.closing:  # while closing, a task that cannot send simply stops
                self._end(ConnectionLost(str(exc) or "the session ended"))
        except (grpc.aio.AioRpcError, ConnectionLost, WireError) as exc:
            self._end(exc)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.exception("bridge session task failed")
            self._end(exc)

    def _end(self, exc: Exception) -> None:
        if self.end_reason is None:
            self.end_reason = exc
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _setup(self, connected: Callable[[], None]) -> None:
        assert self._tg is not None
        opts = self.options
        call = self._call
        # Until this stream's welcome says otherwise, nothing is known to be durable.
        self.client.durable_topics.reset(())
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=self.agent_id)))
        await call.write(
            bridge_pb2.ClientEvent(
                hello=bridge_pb2.StreamHello(
                    features=(
                        *FEATURES,
                        *((bridge_pb2.STREAM_FEATURE_TOOL_CALLS,) if opts.stream_calls else ()),
                        *(
                            (bridge_pb2.STREAM_FEATURE_TURN_CANCEL,)
                            if self.client.turn_canceller is not None
                            else ()
                        ),
                        *(
                            (bridge_pb2.STREAM_FEATURE_DURABLE,)
                            if self.client.registration.durable
                            else ()
                        ),
                    ),
                    max_batch_events=opts.max_batch_events,
                    publish_window=opts.publish_window,
                    delivery_window=opts.delivery_window or opts.inbound_buffer,
                    delivery_window_bytes=opts.delivery_window_bytes or opts.max_buffer_bytes,
                )
            )
        )
        self._tg.start_soon(self._guard, self._reader)
        with anyio.move_on_after(opts.rpc_timeout):
            await self._welcomed.wait()
        if not self._welcomed.is_set():
            # An original-Loom server ignores the hello: go on as an old client.
            log.info("bridge: no welcome within %ss; using the original wire", opts.rpc_timeout)
        self._tg.start_soon(self._guard, self._writer)
        # Always: a welcome later than rpc_timeout still turns credit on (it idles until then).
        self._tg.start_soon(self._guard, self._creditor)
        if self.client.registration.durable:
            self._tg.start_soon(self._guard, self._settler)
        await self._resubscribe()
        self._tg.start_soon(self._guard, self._heartbeat)
        connected()

    async def _resubscribe(self) -> None:
        for sub in self._restore():
            try:
                await self.subscribe(sub)
            except SubscribeRefused as exc:
                # The server changed its mind (a lower limit after a restart, say): the
                # subscription is gone; say so loudly, carry on with the rest.
                log.error("bridge: resubscribing %r refused: %s", sub.pattern, exc)
                self._refused(sub.pattern)

    async def close_gracefully(self) -> None:
        """Send what is queued, half-close, and let the server end the stream."""
        self.closing = True
        if self._owed:
            # What we took in is credited before we go, so the server counts it delivered
            # rather than dropped with the stream (best effort: a full queue skips it).
            credit = bridge_pb2.DeliveryCredit(count=self._owed)
            with contextlib.suppress(
                anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
            ):
                self._out.send_nowait(bridge_pb2.ClientEvent(delivery_credit=credit))
                self._owed = 0
        self._out.close()  # the writer drains the queue, then half-closes

    # ------------------------------------------------------------------ the reader

    async def _reader(self) -> None:
        call = self._call
        while True:
            msg = await call.read()
            if not isinstance(msg, bridge_pb2.ServerEvent):  # grpc.aio.EOF
                if self.closing:
                    assert self._tg is not None
                    self._tg.cancel_scope.cancel()
                    return
                raise ConnectionLost("the server ended the event stream")
            self._last_rx = time.monotonic()
            kind = msg.WhichOneof("msg")
            if kind == "delivery":
                if await self._on_delivery(msg.delivery) and self._credited:
                    self._took()
            elif kind == "delivery_batch":
                batch = msg.delivery_batch
                for item in batch.deliveries:
                    if await self._on_delivery(item) and self._credited:
                        self._took()
                if batch.packed_count:
                    await self._on_packed(batch.packed, batch.packed_count)
            elif kind == "pong":
                self.counters.pong(msg.pong.timestamp_ms)
            elif kind == "tool_call":
                await self._on_tool_call(msg.tool_call)
            elif kind == "cancel_tool_call":
                self._on_cancel(msg.cancel_tool_call)
            elif kind == "cancel_turn":
                self._on_cancel_turn(msg.cancel_turn)
            elif kind == "tool_output":
                made = self._calls.get(msg.tool_output.id)
                if made is not None and made.pieces is not None:
                    made.pieces.put(msg.tool_output.text)
            elif kind == "call_result":
                made = self._calls.pop(msg.call_result.id, None)
                if made is not None:  # else withdrawn: the caller is gone
                    made.result = msg.call_result
                    made.event.set()
            elif kind == "publish_ack":
                self._on_publish_ack(msg.publish_ack)
            elif kind == "subscription":
                waiter = self._subscribes.pop(msg.subscription.request_id, None)
                if waiter is not None:
                    waiter.result = msg.subscription
                    waiter.event.set()
            elif kind == "welcome":
                self._on_welcome(msg.welcome)
            elif kind == "released":
                self.released.set()
            elif kind == "durable_patterns":
                self.client.durable_topics.add(msg.durable_patterns.patterns)
            elif kind == "err":
                self.counters.server_error(msg.err.code, msg.err.message)
            # Anything else is a frame of a newer server that we did not ask for: ignored.

    async def _on_packed(self, data: bytes, count: int) -> None:
        """The packed deliveries of a ``delivery_batch`` (``bridge/_packed.py``), in order."""
        try:
            entries = unpack_events(data, count)
        except WireError as exc:
            # Nothing of it can be handed over; all of it is credited back (the server counts
            # each entry in flight), within what can be in flight at all.
            self.counters.malformed += count
            log.warning("bridge: dropped %d malformed packed deliveries: %s", count, exc)
            if self._credited:
                for _ in range(min(count, self._credit_step * 2)):
                    self._took()
            return
        credited = self._credited
        deliver = self._deliver.deliver_inbound
        # The client's own buffer queues without a coroutine when it has room (the sink
        # that offers so; it never holds credit): most deliveries, and per event.
        offer: Callable[[str, Event], bool] | None = getattr(self._deliver, "offer", None)
        counters = self.counters
        for topic, event in entries:
            try:
                event = checked(event)
            except WireError as exc:
                counters.malformed += 1
                log.warning("bridge: dropped a malformed delivery on %r: %s", topic, exc)
                if credited:
                    self._took()
                continue
            if offer is not None and offer(topic, event):
                counters.delivered += 1
                if credited:
                    self._took()
                continue
            # _hand's work, inline (this runs per event): never durable (no delivery id).
            self._reader_blocked = True  # a wait for room in the sink is not the server's
            self._holding = False
            try:
                await deliver(topic, event)
            except InvalidArgument as exc:  # a topic the local bus refuses: drop that one
                counters.malformed += 1
                log.warning("bridge: dropped a delivery on %r: %s", topic, exc)
            except BusClosed:
                pass  # the agent's bus is closing: it takes nothing more
            else:
                counters.delivered += 1
                if self._holding:
                    continue  # the sink credits it when it hands it over
            finally:
                self._reader_blocked = False
                self._last_rx = time.monotonic()
            if credited:
                self._took()

    async def _on_delivery(self, msg: bridge_pb2.Delivery) -> bool:
        """Hand one delivery to the sink; whether it is taken in now (so owed back as credit)
        rather than held by the sink, which credits it itself (:meth:`hold_credit`)."""
        topic = msg.topic
        try:
            event = event_from_proto(msg.event)
        except WireError as exc:
            self.counters.malformed += 1
            log.warning("bridge: dropped a malformed delivery on %r: %s", topic, exc)
            return True
        return await self._hand(topic, event, msg.delivery_id)

    async def _hand(self, topic: str, event: Event, delivery_id: int) -> bool:
        """Hand ``event`` to the sink (see :meth:`_on_delivery`)."""
        # Where the sink is full (a full local mailbox) this waits for room: the stream's
        # backpressure (the server's queue for us fills, then its lossless publishers wait).
        # That wait is ours, not the server's silence: the heartbeat does not count it.
        self._reader_blocked = True
        self._holding = False
        try:
            sink = self.client.durable_sink
            if delivery_id and sink is not None:
                # For the agent's durable cell; waits while its queue is full (backpressure).
                await sink(topic, event, delivery_id, self.settle_durable)
            else:
                await self._deliver.deliver_inbound(topic, event)
        except InvalidArgument as exc:  # a topic the local bus refuses: drop that one only
            self.counters.malformed += 1
            log.warning("bridge: dropped a delivery on %r: %s", topic, exc)
            return True
        except BusClosed:
            return True  # the agent's bus is closing: it takes nothing more
        finally:
            self._reader_blocked = False
            self._last_rx = time.monotonic()
        self.counters.delivered += 1
        return not self._holding

    def hold_credit(self) -> Callable[[], None]:
        """The sink holds the delivery it is being handed (it has no consumer yet): not
        taken in, so not credited now. The server counts it in flight until the returned
        function is called, when the sink hands it over (then it is owed back, and counted
        ``delivered`` there); if the stream ends first, the server has counted it dropped
        (``closed``) and the call does nothing."""
        self._holding = True
        # Read before the welcome turned credit on, it is not counted in flight: owe nothing.
        return self._took_held if self._credited else _nothing

    def _took_held(self) -> None:
        if self._credited and not self.ended:
            self._took()

    def _took(self) -> None:
        """One more delivery taken in (handed over, or dropped as undeliverable): owed back."""
        # Per delivery, so comparisons only: the count rises one at a time from 0 (the
        # creditor resets it and both events together), so each event is set exactly once.
        owed = self._owed = self._owed + 1
        if owed == 1:
            self._owed_any.set()
        if owed == self._credit_step:
            self._owed_step.set()

    async def _creditor(self) -> None:
        while True:
            await self._owed_any.wait()
            if self._owed < self._credit_step:
                with anyio.move_on_after(_CREDIT_LINGER):
                    await self._owed_step.wait()
            count, self._owed = self._owed, 0
            self._owed_any, self._owed_step = anyio.Event(), anyio.Event()
            credit = bridge_pb2.DeliveryCredit(count=count)
            await self.send(bridge_pb2.ClientEvent(delivery_credit=credit))

    def _on_welcome(self, welcome: bridge_pb2.StreamWelcome) -> None:
        self.features = frozenset(welcome.features)
        if bridge_pb2.STREAM_FEATURE_DELIVERY_CREDIT in self.features:
            # Deliveries read from now on are credited back (the server counts from here).
            self._credited = True
            # Credit goes back at half the window (see _CREDIT_LINGER).
            self._credit_step = max(1, welcome.delivery_window // 2)
        self.mirror = False  # a server that speaks section 2 reads the typed envelope
        self.packed = bridge_pb2.STREAM_FEATURE_PACKED_EVENTS in self.features
        self._max_batch = max(1, min(welcome.max_batch_events or 1, self.options.max_batch_events))
        if bridge_pb2.STREAM_FEATURE_PUBLISH_ACK in self.features:
            self._acks = True
            self.credit = welcome.publish_window
        # The topics this server stores durably (none from one that does not say): a
        # publish on one waits for its acceptance (BridgeClient.publish).
        self.client.durable_topics.reset(
            welcome.durable_patterns
            if bridge_pb2.STREAM_FEATURE_DURABLE_TOPICS in self.features
            else ()
        )
        told = self.client.durable_ack_wait
        if told is not None and bridge_pb2.STREAM_FEATURE_DURABLE in self.features:
            # 0: an older server that does not say; its log's default then.
            told(welcome.durable_ack_wait_ms / 1000 or DEFAULT_ACK_WAIT)
        self._welcomed.set()

    def _on_publish_ack(self, ack: bridge_pb2.PublishAck) -> None:
        if ack.credit:
            self.credit += ack.credit
            changed, self._credit_changed = self._credit_changed, anyio.Event()
            changed.set()
        unacked = self._unacked
        rejected = {r.sequence: r for r in ack.rejections}
        upto = ack.sequence
        while unacked:
            first, topics = unacked[0]
            if first > upto:
                break
            end = first + len(topics)  # one past the batch's last
            if rejected:
                lo = max(first, self._acked + 1)  # what an earlier ack settled is not named
                for seq in sorted(q for q in rejected if lo <= q <= upto and q < end):
                    self._on_rejected(seq, topics[seq - first], rejected.pop(seq))
            if end - 1 > upto:
                break  # acked up to inside this batch: the rest of it waits
            unacked.popleft()
        self._acked = max(self._acked, upto)
        for rejection in rejected.values():  # not ours to name (a confused server): say so
            self.counters.rejected += 1
            log.warning("bridge: %s", PublishRejected("", rejection.code, rejection.reason))
        waiters = self._ack_waiters
        if waiters:
            for seq in list(waiters):
                if seq > ack.sequence:
                    break
                waiters.pop(seq).settle()

    def _on_rejected(self, seq: int, topic: str, rejection: bridge_pb2.PublishRejection) -> None:
        if rejection.code == "UNROUTED":  # accepted, but nobody was subscribed
            self.counters.unrouted += 1
            waiter = self._ack_waiters.pop(seq, None)
            if waiter is not None:
                waiter.settle(outcome=Acceptance.UNROUTED)
            return
        self.counters.rejected += 1
        waiter = self._ack_waiters.pop(seq, None)
        error = PublishRejected(topic, rejection.code, rejection.reason)
        if waiter is not None:
            waiter.settle(error)
        else:
            log.warning("bridge: %s", error)

    def _unacked_count(self) -> int:
        """Publishes written and not acked yet."""
        count = sum(len(topics) for _, topics in self._unacked)
        if self._unacked:
            count -= max(0, self._acked - self._unacked[0][0] + 1)
        return count

    # ------------------------------------------------------------------ the writer

    async def _writer(self) -> None:
        call = self._call
        recv = self._out
        # Only a server that answered our hello knows publish_batch (it accepts one whether
        # or not it granted BATCH, which governs what it sends); an old server gets singles.
        batching = self._welcomed.is_set()
        pending: OutItem | None = None  # what ended the last batch: it goes next
        while True:
            if pending is not None:
                item, pending = pending, None
            else:
                try:
                    item = await recv.receive()
                except anyio.EndOfStream:
                    if self.closing:
                        await call.done_writing()
                    return
            if isinstance(item, bridge_pb2.ClientEvent):
                await call.write(item)
                continue
            batch = [item]
            packed = isinstance(item.frame, bytes)
            # A packed publish goes in a batch even when the writer started before a late
            # welcome: the server that granted packing reads publish_batch.
            while (batching or packed) and len(batch) < self._max_batch:
                try:
                    more = recv.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if isinstance(more, Outgoing) and isinstance(more.frame, bytes) is packed:
                    batch.append(more)
                else:
                    pending = more
                    break
            waited = self._number(batch)
            if len(batch) == 1 and not waited and not packed:
                await call.write(batch[0].frame)  # type: ignore[arg-type]
                self.counters.published += 1
                continue
            # A publisher waits for its ack: ask for it (the server acks a steady stream only
            # every few milliseconds otherwise). A batch of one is fine. Filled in place: a
            # message handed to a constructor is copied, entries and all.
            frame = bridge_pb2.ClientEvent()
            pb = frame.publish_batch
            if packed:
                pb.packed = pack([o.frame for o in batch])  # type: ignore[misc]
                pb.packed_count = len(batch)
            else:
                pb.publishes.extend([o.frame.publish for o in batch])  # type: ignore[union-attr]
            pb.ack_requested = waited
            await call.write(frame)
            self.counters.published += len(batch)

    def _number(self, batch: list[Outgoing]) -> bool:
        """Give each publish the sequence number the server gives it (wire order); return
        whether one of them waits for its ack."""
        if not self._acks:
            for out in batch:
                if out.waiter is not None:
                    out.waiter.settle(outcome=Acceptance.SENT)  # an old server says no more
            return False
        first = self._seq + 1
        self._seq += len(batch)
        self._unacked.append((first, [out.topic for out in batch]))
        waited = False
        for i, out in enumerate(batch):
            if out.waiter is not None:
                self._ack_waiters[first + i] = out.waiter
                waited = True
        return waited

    # ------------------------------------------------------------------ sending

    async def publish(
        self,
        topic: str,
        frame: bridge_pb2.ClientEvent | bytes,
        waiter: AckWaiter | None,
        size: int = 0,
    ) -> None:
        """Queue a publish (its event measuring ``size``) once there is credit (server pace)
        and room (the local bounds, in frames and in bytes).

        Raises:
            SessionEnded: the session ended first; nothing was queued.
        """
        while self._acks and self.credit <= 0:
            if self.ended:
                raise SessionEnded
            await self._credit_changed.wait()
        if self.ended:
            raise SessionEnded
        self.credit -= 1
        out = Outgoing(frame, waiter, size, topic)
        try:
            # Queue without yielding while there is room, so a fast publisher fills the queue
            # and the writer sends it as one batch; anyio's send() would yield on every call
            # and wake the writer for a single event each time.
            try:
                self._out.send_nowait(out)
            except anyio.WouldBlock:
                await self._out.send(out)
            else:
                self._tick += 1
                if self._tick >= _YIELD_EVERY:  # a publishing loop must not starve the writer
                    self._tick = 0
                    await anyio.lowlevel.checkpoint()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SessionEnded from None

    def can_queue(self, size: int) -> bool:
        """Whether :meth:`queue_now` would queue a publish of an event measuring ``size`` now:
        the session lives, has publish credit, and its outbound queue has room."""
        return not self.ended and (self.credit > 0 or not self._acks) and self._out.fits(size)

    def queue_now(self, topic: str, frame: bridge_pb2.ClientEvent | bytes, size: int) -> bool:
        """Queue a publish that :meth:`can_queue` just allowed (no wait in between), as
        :meth:`publish` would, without its coroutine. Returns whether the publisher is due
        to yield (every ``_YIELD_EVERY`` publishes, so it cannot starve the writer)."""
        self._out.send_sized_nowait(Outgoing(frame, None, size, topic), size)  # _out_size
        self.credit -= 1
        self._tick += 1
        if self._tick < _YIELD_EVERY:
            return False
        self._tick = 0
        return True

    def publish_nowait(
        self, topic: str, frame: bridge_pb2.ClientEvent | bytes, size: int = 0
    ) -> None:
        """Queue a publish (its event measuring ``size``) if that needs no wait.

        Raises:
            anyio.WouldBlock: no credit or no room.
            SessionEnded: the session is gone.
        """
        if self.ended:
            raise SessionEnded
        if self._acks and self.credit <= 0:
            raise anyio.WouldBlock
        try:
            self._out.send_nowait(Outgoing(frame, None, size, topic))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SessionEnded from None
        self.credit -= 1

    def queued(self) -> tuple[int, int]:
        """Frames in the outbound queue, and what they measure in bytes."""
        return len(self._out), self._out.queued_bytes

    @property
    def stream_calls(self) -> bool:
        """Whether the server takes tool calls on the stream."""
        return bridge_pb2.STREAM_FEATURE_TOOL_CALLS in self.features

    @property
    def tool_output(self) -> bool:
        """Whether partial tool output crosses this stream (STREAM_FEATURE_TOOL_OUTPUT)."""
        return bridge_pb2.STREAM_FEATURE_TOOL_OUTPUT in self.features

    def start_call(self, msg: tools_pb2.ToolCall, pieces: Pieces | None = None) -> CallWaiter:
        """Queue a tool call (``msg.id`` unique among ours in flight); wait on the waiter.

        Raises:
            anyio.WouldBlock: the outbound queue is full.
            SessionEnded: the session is gone.
        """
        if self.ended:
            raise SessionEnded
        try:
            self._out.send_nowait(bridge_pb2.ClientEvent(call=msg))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SessionEnded from None
        waiter = self._calls[msg.id] = CallWaiter(pieces)
        return waiter

    def withdraw_call(self, call_id: str, reason: str) -> None:
        """Give up on a call: its result, if any comes, is ignored; the server is asked to
        cancel the tool (best effort: a full queue skips the ask, and the server's own
        timeout still ends the tool)."""
        if self._calls.pop(call_id, None) is None or self.ended:
            return
        cancel = bridge_pb2.CancelToolCall(id=call_id, reason=reason)
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._out.send_nowait(bridge_pb2.ClientEvent(cancel_call=cancel))

    async def settle_durable(self, frame: bridge_pb2.DurableSettle) -> None:
        """Queue a durable settle; the settler sends what is queued in one ``durable_settle``
        frame. Nothing once this stream has ended (the server handed its unsettled
        deliveries back then: they come again on the next stream)."""
        if self.ended:
            return
        settles = self._settles
        settles.MergeFrom(frame)
        self._settles_due.set()
        if len(settles.acks) >= _SETTLE_STEP:
            self._settles_step.set()

    async def _settler(self) -> None:
        last = -math.inf
        while True:
            await self._settles_due.wait()
            wait = last + _SETTLE_LINGER - anyio.current_time()
            if wait > 0 and len(self._settles.acks) < _SETTLE_STEP:
                with anyio.move_on_after(wait):  # more acks come meanwhile
                    await self._settles_step.wait()
            frame, self._settles = self._settles, bridge_pb2.DurableSettle()
            self._settles_due, self._settles_step = anyio.Event(), anyio.Event()
            await self.send(bridge_pb2.ClientEvent(durable_settle=frame))
            last = anyio.current_time()

    async def send(self, msg: bridge_pb2.ClientEvent) -> None:
        """Queue a control frame (in order with the publishes).

        Raises:
            SessionEnded: the session is gone.
        """
        try:
            await self._out.send(msg)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SessionEnded from None

    async def subscribe(self, sub: _Subscription) -> int:
        """Subscribe on the stream and wait for the server's answer.

        Raises:
            SubscribeRefused: the server said no.
            SessionEnded: the session ended first (or the server never answered).
        """
        request = bridge_pb2.SubscribeRequest(
            request_id=self._next_request_id(),
            pattern=sub.pattern,
            qos=qos_to_proto(sub.qos),
            event_types=sub.event_types,
            buffer_size=sub.buffer_size,
        )
        result = await self._control(request.request_id, bridge_pb2.ClientEvent(subscribe=request))
        if not result.ok:
            raise SubscribeRefused(sub.pattern, result.code, result.reason)
        return result.subscription_id

    async def unsubscribe(self, pattern: str) -> None:
        """Remove every subscription of ``pattern`` on the stream; a pattern the server does
        not hold (``NOT_FOUND``) is not an error.

        Raises:
            SubscribeRefused: the server said no for another reason.
            SessionEnded: the session ended first.
        """
        request = bridge_pb2.UnsubscribeRequest(request_id=self._next_request_id(), pattern=pattern)
        result = await self._control(
            request.request_id, bridge_pb2.ClientEvent(unsubscribe=request)
        )
        if not result.ok and result.code != "NOT_FOUND":
            raise SubscribeRefused(pattern, result.code, result.reason)

    def _next_request_id(self) -> str:
        self._request_ids += 1
        return f"s{self._request_ids}"

    async def _control(
        self, request_id: str, msg: bridge_pb2.ClientEvent
    ) -> bridge_pb2.SubscribeResult:
        waiter = self._subscribes[request_id] = _SubscribeWaiter()
        try:
            await self.send(msg)
            with anyio.move_on_after(self.options.rpc_timeout):
                await waiter.event.wait()
        finally:
            self._subscribes.pop(request_id, None)
        if waiter.result is None:
            if not self.ended:
                # A server that never answers cannot be trusted with the rest: start over.
                self._end(ConnectionLost("no answer to a subscription request"))
            raise SessionEnded
        return waiter.result

    # ------------------------------------------------------------------ heartbeats

    async def _heartbeat(self) -> None:
        opts = self.options
        while True:
            await anyio.sleep(opts.heartbeat_interval)
            now = time.monotonic()
            if self._reader_blocked:
                self._last_rx = now
            elif now - self._last_rx > opts.heartbeat_timeout:
                raise ConnectionLost(
                    f"nothing from the server for {opts.heartbeat_timeout:g}s (missed pongs)"
                )
            self.counters.pings += 1
            await self.send(
                bridge_pb2.ClientEvent(
                    ping=bridge_pb2.HeartbeatRequest(timestamp_ms=int(time.time() * 1000))
                )
            )

    # ------------------------------------------------------------------ pushed tool calls

    async def _on_tool_call(self, msg: tools_pb2.ToolCall) -> None:
        client = self.client
        try:
            request = tool_call_from_proto(msg)
        except WireError as exc:
            await self._tool_result(
                failed_outcome(msg.id, ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS", str(exc))
            )
            return
        if client.tool_handler is None:
            await self._tool_result(
                failed_outcome(request.id, ToolStatus.NOT_FOUND, "NOT_FOUND", "no tools here")
            )
            return
        if len(self._tools) >= self.options.max_tool_calls:
            self.counters.tools_refused += 1
            await self._tool_result(
                failed_outcome(
                    request.id,
                    ToolStatus.ERROR,
                    "RESOURCE_EXHAUSTED",
                    f"agent {self.agent_id} already runs {len(self._tools)} tool calls",
                )
            )
            return
        scope = anyio.CancelScope()
        if request.timeout_ms:
            # A backstop only: the capability's registry times the call out itself, with a
            # typed result; this catches a handler that ignores it.
            scope.deadline = anyio.current_time() + request.timeout_ms / 1000 + 1.0
        self._tools[request.id] = scope
        assert self._workers is not None
        self._workers.submit(functools.partial(self._serve_tool, request, scope))

    async def _serve_tool(self, request: ToolCallRequest, scope: anyio.CancelScope) -> None:
        client = self.client
        handler = client.tool_handler
        assert handler is not None
        outcome: ToolCallOutcome | None = None
        # The tool's partial output goes to the server on this stream, ahead of the result
        # (the same queue: the result cannot overtake a piece; a full queue holds it back).
        wanted = self.tool_output and wants(request.headers)
        sink = functools.partial(self._tool_output, request.id) if wanted else None
        try:
            with scope, tool_output_sink(sink):
                try:
                    outcome = await handler(request)
                except Exception as exc:
                    outcome = outcome_from_exception(request.id, exc, tool=request.name)
        finally:
            self._tools.pop(request.id, None)
        withdrawn = request.id in self._withdrawn
        self._withdrawn.discard(request.id)
        if withdrawn:
            self.counters.tools_cancelled += 1
            return  # the server discards a result sent now; send none
        if outcome is None:  # the backstop fired
            timeout_s = request.timeout_ms / 1000
            outcome = failed_outcome(
                request.id, ToolStatus.TIMEOUT, "TIMEOUT", f"timed out after {timeout_s:g} s"
            )
        self.counters.tools_served += 1
        await self._tool_result(outcome)

    def _on_cancel(self, msg: bridge_pb2.CancelToolCall) -> None:
        scope = self._tools.get(msg.id)
        if scope is not None:
            log.debug("bridge: tool call %s cancelled by the server: %s", msg.id, msg.reason)
            self._withdrawn.add(msg.id)
            scope.cancel()

    def _on_cancel_turn(self, msg: turns_pb2.CancelTurn) -> None:
        """Cancel the agent's turn in that thread (``turn_canceller``), and say how many
        (best effort: a full queue skips the answer, which only the server's log reads)."""
        canceller = self.client.turn_canceller
        cancelled = canceller(msg.thread_id, msg.reason) if canceller is not None else 0
        log.info(
            "bridge: the server cancelled %d turn(s) of thread %s: %s",
            cancelled,
            msg.thread_id,
            msg.reason or "no reason given",
        )
        done = turns_pb2.TurnCancelled(thread_id=msg.thread_id, cancelled=cancelled)
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._out.send_nowait(bridge_pb2.ClientEvent(turn_cancelled=done))

    async def _tool_output(self, call_id: str, text: str) -> None:
        """A piece of a pushed call's partial output, to the server (which relays it)."""
        if call_id in self._withdrawn:
            return  # the server gave the call up: it wants nothing more of it
        piece = tools_pb2.ToolOutput(id=call_id, text=text)
        with contextlib.suppress(SessionEnded):  # the stream is gone, and its caller with it
            await self.send(bridge_pb2.ClientEvent(tool_output=piece))

    async def _tool_result(self, outcome: ToolCallOutcome) -> None:
        try:
            msg = tool_result_to_proto(outcome)
        except WireError as exc:
            msg = tool_result_to_proto(
                failed_outcome(outcome.id, ToolStatus.ERROR, "WireError", str(exc))
            )
        await self.send(bridge_pb2.ClientEvent(tool_result=msg))
