"""Barriers: wait until N participants have arrived on a thread.

One :class:`BarrierCoordinator` per bus owns the arrival state; participants talk to it only
through bus events (an ``arrive`` request it answers when the barrier completes, a ``leave``
when they give up), so a remote agent can take part through a bridge like a local one.
"""

from __future__ import annotations

import contextlib
import heapq
from types import TracebackType
from typing import Final

import anyio
import msgspec
from anyio.abc import TaskGroup

from .._bus import EventBus
from .._errors import BusClosed, InvalidArgument, SubscriptionClosed, WouldBlock
from .._event import Envelope, Event, reply_envelope, reply_topic
from .._ids import new_id
from .._qos import QoS
from .._subscription import Subscription
from .._topics import validate_topic
from ._base import (
    INBOX_SLACK,
    check_name,
    check_sender,
    check_timeout,
    inbox_topic,
    outgoing,
    publish_routed,
)
from ._errors import BarrierAborted, BarrierMismatch, NoResponders

__all__ = [
    "BARRIER_PREFIX",
    "BarrierCoordinator",
    "BarrierResult",
    "BarrierStats",
    "arrive",
]

BARRIER_PREFIX: Final = "loom.barrier"
"""Barrier ``name`` lives on the topic ``loom.barrier.{name}``."""

ARRIVE: Final = "barrier.arrive"
LEAVE: Final = "barrier.leave"
RELEASE: Final = "barrier.release"
LEFT: Final = "barrier.left"
UNKNOWN: Final = "barrier.unknown"
REFUSED: Final = "barrier.refused"
ABORTED: Final = "barrier.aborted"

# How long a participant that timed out (or was cancelled) waits for its ``leave`` to be
# answered: only a coordinator that has stopped answering makes it wait this long.
_LEAVE_GRACE: Final = 1.0

_names = msgspec.json.Encoder()
_read_names = msgspec.json.Decoder(tuple[str, ...])


class BarrierResult(msgspec.Struct, frozen=True, kw_only=True):
    """How an arrival at a barrier ended.

    Attributes:
        barrier: the barrier's name.
        thread_id: the thread it ran on.
        parties: how many participants it waited for.
        arrived: the participants that had arrived, in arrival order: all of them when
            complete; on a timeout, those present when this one left (itself included), or
            empty if the coordinator did not say.
        complete: whether the barrier was released with every party present.
        timed_out: whether this participant gave up at its timeout.
    """

    barrier: str
    thread_id: str
    parties: int
    arrived: tuple[str, ...]
    complete: bool
    timed_out: bool


class BarrierStats(msgspec.Struct, frozen=True, kw_only=True):
    """A coordinator's counters.

    Attributes:
        open_barriers: barriers with at least one participant waiting.
        waiting: participants waiting, over all barriers.
        released: barriers released complete.
        left: arrivals withdrawn by their participant (timeout or cancellation).
        expired: arrivals dropped because their participant outlived its timeout silently.
        refused: arrivals refused (mismatched or malformed).
    """

    open_barriers: int
    waiting: int
    released: int
    left: int
    expired: int
    refused: int


class _Barrier:
    __slots__ = ("arrivals", "parties")

    def __init__(self, parties: int) -> None:
        self.parties = parties
        # participant -> its pending arrive requests (a retry adds one); insertion order is
        # arrival order.
        self.arrivals: dict[str, list[Event]] = {}


def _key(prefix: str, topic: str, event: Event) -> tuple[str, str]:
    return topic[len(prefix) + 1 :], event.envelope.thread_id


class BarrierCoordinator:
    """Keeps the arrival state of every barrier on a bus and releases complete ones.

    Run exactly one per bus (or per cluster, behind a bridge), as an async context manager::

        async with BarrierCoordinator(bus):
            ...  # participants call arrive(bus, barrier=..., ...)

    It owns one ``BATCHED`` subscription on ``{prefix}.>`` and one task in its own task group.
    Barriers are keyed by name and thread id. Semantics:

    * An arrival is counted once per participant; an arrival of a participant already
      present (a retry) is answered together with its first one.
    * The first arrival fixes ``parties``; an arrival naming another number is refused
      (the participant gets :class:`BarrierMismatch`) and not counted.
    * When ``parties`` participants are present every pending arrival is answered with the
      arrival list and the barrier's state is removed: the name and thread can be used again
      for a new round.
    * A participant that gives up sends ``leave`` and is no longer counted. One that vanishes
      without doing so (a crashed process) is dropped ``expiry_grace`` seconds after its own
      timeout, so state cannot grow without bound.
    * Closing the coordinator answers every waiting participant with :class:`BarrierAborted`.

    Args:
        bus: the bus to serve.
        prefix: the topic prefix barriers live under.
        sender: the agent id the coordinator's replies carry.
        expiry_grace: seconds past a participant's timeout after which its silent arrival
            is dropped.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        prefix: str = BARRIER_PREFIX,
        sender: str = "barrier",
        expiry_grace: float = 1.0,
    ) -> None:
        validate_topic(prefix)
        check_timeout(expiry_grace, "expiry_grace")
        self._bus = bus
        self._prefix = prefix
        self._sender = sender
        self._grace = expiry_grace
        self._barriers: dict[tuple[str, str], _Barrier] = {}
        # (expires_at, seq, key, participant, correlation id); stale entries are skipped.
        self._expiry: list[tuple[float, int, tuple[str, str], str, str]] = []
        self._seq = 0
        self._tg: TaskGroup | None = None
        self._sub: Subscription | None = None
        self._released = self._left = self._expired = self._refused = 0
        self._closed = False
        self._loop_scope = anyio.CancelScope()

    async def __aenter__(self) -> BarrierCoordinator:
        if self._sub is not None:
            raise InvalidArgument("a BarrierCoordinator can be entered once")
        self._sub = self._bus.subscribe(f"{self._prefix}.>", qos=QoS.BATCHED)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._run, self._sub)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop serving: answer every waiting participant (and arrivals still queued) with
        ``aborted``, within a shielded grace of one second. Idempotent.

        May be called from inside the ``async with`` block; its task group is left when the
        block is.
        """
        tg, sub = self._tg, self._sub
        if tg is None or sub is None or self._closed:
            return
        self._closed = True
        # Only the loop's own scope: the task group's scope also covers the caller's block.
        self._loop_scope.cancel()
        pending = [r for b in self._barriers.values() for rs in b.arrivals.values() for r in rs]
        while True:
            try:
                queued = sub.receive_nowait().event
            except (WouldBlock, SubscriptionClosed):
                break
            if queued.type == ARRIVE:
                pending.append(queued)
        sub.close()
        self._barriers.clear()
        self._expiry.clear()
        with anyio.move_on_after(_LEAVE_GRACE, shield=True):
            for req in pending:
                await self._answer(req, ABORTED)

    def statistics(self) -> BarrierStats:
        """The coordinator's counters, as a frozen record."""
        return BarrierStats(
            open_barriers=len(self._barriers),
            waiting=sum(len(b.arrivals) for b in self._barriers.values()),
            released=self._released,
            left=self._left,
            expired=self._expired,
            refused=self._refused,
        )

    # ------------------------------------------------------------------ the loop

    async def _run(self, sub: Subscription) -> None:
        with self._loop_scope:
            await self._serve(sub)

    async def _serve(self, sub: Subscription) -> None:
        while True:
            delivery = None
            try:
                if self._expiry:
                    # Wake for the earliest expiry; only the wait is bounded, never handling.
                    with anyio.move_on_at(self._expiry[0][0]):
                        delivery = await sub.receive()
                else:
                    delivery = await sub.receive()
            except SubscriptionClosed:
                return
            if delivery is not None:
                await self._handle(delivery.topic, delivery.event)
            if self._expiry:
                self._expire(anyio.current_time())

    async def _handle(self, topic: str, event: Event) -> None:
        if event.type == ARRIVE:
            await self._arrive(topic, event)
        elif event.type == LEAVE:
            await self._leave(topic, event)
        # Anything else under the prefix (our own replies never are: they go to inboxes) is
        # not for us.

    async def _arrive(self, topic: str, event: Event) -> None:
        key = _key(self._prefix, topic, event)
        meta = event.metadata
        participant = meta.get("participant", "")
        try:
            parties = int(meta.get("parties", ""))
            timeout = float(meta.get("timeout", "inf"))
        except ValueError:
            parties, timeout = 0, 0.0
        if not participant or parties < 1 or not timeout > 0:
            self._refused += 1
            await self._answer(event, REFUSED, reason="malformed arrival")
            return
        barrier = self._barriers.get(key)
        if barrier is None:
            barrier = self._barriers[key] = _Barrier(parties)
        elif barrier.parties != parties:
            self._refused += 1
            await self._answer(event, REFUSED, reason="parties", parties=str(barrier.parties))
            return
        barrier.arrivals.setdefault(participant, []).append(event)
        if timeout != float("inf"):
            self._seq += 1
            expires = anyio.current_time() + timeout + self._grace
            entry = (expires, self._seq, key, participant, event.envelope.correlation_id)
            heapq.heappush(self._expiry, entry)
        if len(barrier.arrivals) >= barrier.parties:
            del self._barriers[key]
            self._released += 1
            names = _names.encode(list(barrier.arrivals))
            # The state is gone already: finish the release even if the coordinator is being
            # closed, or these participants would be told nothing.
            with anyio.move_on_after(_LEAVE_GRACE, shield=True):
                for reqs in barrier.arrivals.values():
                    for req in reqs:
                        await self._answer(req, RELEASE, payload=names)

    async def _leave(self, topic: str, event: Event) -> None:
        key = _key(self._prefix, topic, event)
        participant = event.metadata.get("participant", "")
        barrier = self._barriers.get(key)
        reqs = None if barrier is None else barrier.arrivals.get(participant)
        corr = event.envelope.correlation_id
        if barrier is None or not reqs or not any(r.envelope.correlation_id == corr for r in reqs):
            await self._answer(event, UNKNOWN)
            return
        names = _names.encode(list(barrier.arrivals))
        self._drop(key, barrier, participant, corr)
        self._left += 1
        await self._answer(event, LEFT, payload=names)

    def _drop(self, key: tuple[str, str], barrier: _Barrier, participant: str, corr: str) -> None:
        reqs = barrier.arrivals[participant]
        reqs[:] = [r for r in reqs if r.envelope.correlation_id != corr]
        if not reqs:
            del barrier.arrivals[participant]
            if not barrier.arrivals:
                del self._barriers[key]

    def _expire(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, key, participant, corr = heapq.heappop(heap)
            barrier = self._barriers.get(key)
            reqs = None if barrier is None else barrier.arrivals.get(participant)
            if (
                barrier is not None
                and reqs
                and any(r.envelope.correlation_id == corr for r in reqs)
            ):
                self._drop(key, barrier, participant, corr)
                self._expired += 1

    async def _answer(self, request: Event, kind: str, payload: bytes = b"", **meta: str) -> None:
        try:
            topic = reply_topic(request)
        except ValueError:
            return  # an arrival with nowhere to answer: nothing to tell anyone
        envelope = reply_envelope(request, sender=self._sender)
        await self._bus.publish(
            topic,
            Event(
                type=kind, source=self._sender, payload=payload, metadata=meta, envelope=envelope
            ),
        )


async def arrive(
    bus: EventBus,
    *,
    barrier: str,
    participant: str,
    parties: int,
    timeout: float,
    thread_id: str = "",
    parent: Event | None = None,
    sender: str = "",
    prefix: str = BARRIER_PREFIX,
) -> BarrierResult:
    """Arrive at a barrier and wait until ``parties`` participants have arrived on the thread.

    Needs a :class:`BarrierCoordinator` on the bus (or behind its bridge). The thread is
    ``thread_id``, else the parent's, else none: every participant must name the same one.

    On the timeout the participant withdraws (a ``leave`` the coordinator answers with who was
    there), so it is no longer counted and the others keep waiting for a full set. If the
    barrier completed at the same moment, the release wins and the result is complete.
    Cancelled, it withdraws too, shielded, within one second, and re-raises.

    Args:
        bus: the bus to use.
        barrier: the barrier's name (one or more topic segments).
        participant: who is arriving; counted once however often it arrives.
        parties: how many participants the barrier waits for; all must agree.
        timeout: seconds to wait for the others.
        thread_id: the thread the barrier runs on.
        parent: the event being handled, when called from a handler.
        sender: the arriving agent's id (one topic segment); names the inbox.
        prefix: the coordinator's topic prefix.

    Returns:
        A :class:`BarrierResult`: complete, or timed out with who had arrived.

    Raises:
        NoResponders: no coordinator is subscribed.
        BarrierMismatch: the barrier was opened with another number of parties.
        BarrierAborted: the coordinator closed while this participant waited.
        InvalidArgument: a bad name, participant, ``parties``, ``timeout`` or ``sender``.
    """
    check_name(participant, "participant")
    check_name(barrier, "barrier")
    check_sender(sender)
    check_timeout(timeout)
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise InvalidArgument(f"parties must be an int >= 1, not {parties!r}")
    topic = f"{prefix}.{barrier}"
    validate_topic(topic)
    thread = thread_id or (parent.envelope.thread_id if parent is not None else "")
    corr = new_id()
    inbox = inbox_topic(sender, corr)
    meta = {"participant": participant, "parties": str(parties), "timeout": repr(float(timeout))}
    body = Event(type=ARRIVE, metadata=meta, envelope=Envelope(thread_id=thread))
    request = outgoing(
        body,
        type=ARRIVE,
        sender=sender,
        correlation_id=corr,
        reply_to=inbox,
        parent=parent,
        new_thread=False,
    )

    def result(arrived: tuple[str, ...], *, complete: bool, timed_out: bool) -> BarrierResult:
        return BarrierResult(
            barrier=barrier,
            thread_id=thread,
            parties=parties,
            arrived=arrived,
            complete=complete,
            timed_out=timed_out,
        )

    leave = Event(
        type=LEAVE,
        source=sender,
        metadata={"participant": participant},
        envelope=request.envelope,
    )
    async with bus.subscribe(inbox, qos=QoS.BATCHED, buffer_size=INBOX_SLACK) as inbox_sub:
        try:
            with anyio.move_on_after(timeout):
                if not await publish_routed(bus, topic, request):
                    raise NoResponders(topic, corr)
                while True:
                    answer = await _next_answer(inbox_sub, corr)
                    if answer.type == RELEASE:
                        return result(
                            _read_names.decode(answer.payload), complete=True, timed_out=False
                        )
                    if answer.type == REFUSED:
                        if answer.metadata.get("reason") == "parties":
                            have = int(answer.metadata.get("parties", "0"))
                            raise BarrierMismatch(barrier, thread, have, parties)
                        raise InvalidArgument(
                            f"the coordinator refused the arrival: {answer.metadata}"
                        )
                    if answer.type == ABORTED:
                        raise BarrierAborted(barrier, thread)
            # Timed out: withdraw, and learn who was there. The inbox stays open, so a release
            # that crossed our leave is still seen.
            with anyio.move_on_after(_LEAVE_GRACE):
                if not await publish_routed(bus, topic, leave):
                    return result((), complete=False, timed_out=True)
                while True:
                    answer = await _next_answer(inbox_sub, corr)
                    if answer.type == RELEASE:
                        return result(
                            _read_names.decode(answer.payload), complete=True, timed_out=False
                        )
                    if answer.type == LEFT:
                        return result(
                            _read_names.decode(answer.payload), complete=False, timed_out=True
                        )
                    if answer.type in (UNKNOWN, ABORTED):
                        break
            return result((), complete=False, timed_out=True)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(_LEAVE_GRACE, shield=True), contextlib.suppress(BusClosed):
                await bus.publish(topic, leave)
            raise


async def _next_answer(sub: Subscription, corr: str) -> Event:
    while True:
        try:
            answer = (await sub.receive()).event
        except SubscriptionClosed:
            raise BusClosed("the bus closed while waiting at a barrier") from None
        if answer.envelope.correlation_id == corr:
            return answer
