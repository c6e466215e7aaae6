"""Fan-out/fan-in: ask several targets (or one broadcast topic) and collect replies until a
mode is satisfied, the deadline passes, or satisfying it has become impossible."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Generic, TypeAlias, TypeVar, overload

import anyio
import msgspec

from .._bus import EventBus
from .._errors import BusClosed, InvalidArgument, SubscriptionClosed, WouldBlock
from .._event import Event
from .._ids import new_id
from .._qos import QoS
from .._subscription import Subscription
from ._base import (
    INBOX_SLACK,
    check_sender,
    check_timeout,
    inbox_topic,
    outgoing,
)

__all__ = ["All", "FirstK", "GatherMode", "GatherReply", "GatherResult", "Quorum", "gather"]

T = TypeVar("T")


class All(msgspec.Struct, frozen=True, kw_only=True):
    """Satisfied when every expected reply has arrived."""

    def required(self, expected: int) -> int:
        return expected


class FirstK(msgspec.Struct, frozen=True):
    """Satisfied by the first ``k`` replies; the call returns as soon as they are in."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise InvalidArgument(f"FirstK needs k >= 1, not {self.k!r}")

    def required(self, expected: int) -> int:
        if self.k > expected:
            raise InvalidArgument(f"FirstK({self.k}) can never be met by {expected} replies")
        return self.k


class Quorum(msgspec.Struct, frozen=True):
    """Satisfied by ``size`` replies: an int is a count, a float in (0, 1] a fraction of the
    expected replies, rounded up (``Quorum(0.5)`` of 5 needs 3; ``Quorum(2)`` needs 2)."""

    size: int | float

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, bool) or not isinstance(size, (int, float)):
            raise InvalidArgument(f"Quorum size must be an int or a float, not {size!r}")
        if isinstance(size, int) and size < 1:
            raise InvalidArgument(f"Quorum count must be >= 1, not {size}")
        if isinstance(size, float) and not 0.0 < size <= 1.0:
            raise InvalidArgument(f"Quorum fraction must be in (0, 1], not {size!r}")

    def required(self, expected: int) -> int:
        if isinstance(self.size, float):
            # Through the decimal text, so that 0.1 * 10 is exactly 1, not 1.0000000000000002.
            return max(1, math.ceil(Fraction(repr(self.size)) * expected))
        if self.size > expected:
            raise InvalidArgument(f"Quorum({self.size}) can never be met by {expected} replies")
        return self.size


GatherMode: TypeAlias = All | FirstK | Quorum
"""When a gather is satisfied: :class:`All`, :class:`FirstK` or :class:`Quorum`."""


class GatherReply(msgspec.Struct, frozen=True, kw_only=True):
    """One reply of a gather.

    Attributes:
        target: the topic the request went to (the broadcast topic, for a broadcast).
        sender: the replying agent, from the reply's envelope.
        event: the reply.
    """

    target: str
    sender: str
    event: Event


class GatherResult(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a gather collected.

    Attributes:
        replies: the accepted replies, in arrival order.
        missing: one entry per expected reply that did not come, naming its target (a
            broadcast topic appears once per missing reply). Includes the unrouted ones.
        unrouted: targets the request reached no subscriber on (they were never asked).
        expected: how many replies were expected.
        required: how many the mode needed.
        satisfied: whether ``required`` replies arrived.
        timed_out: whether the deadline ended the call (False when it ended early).
        value: the reducer's value over the replies' events, ``None`` without a reducer.
        ignored: replies that reached the inbox but were not accepted (another correlation
            id, or a second reply from the same target or sender).
    """

    replies: tuple[GatherReply, ...]
    missing: tuple[str, ...]
    unrouted: tuple[str, ...]
    expected: int
    required: int
    satisfied: bool
    timed_out: bool
    value: T | None = None
    ignored: int = 0

    @property
    def events(self) -> tuple[Event, ...]:
        """The accepted replies' events, in arrival order."""
        return tuple(r.event for r in self.replies)


class _Collector:
    """Accepts replies: by correlation id (one per target), or on a broadcast by sender."""

    __slots__ = (
        "answered",
        "broadcast",
        "by_corr",
        "expected",
        "ignored",
        "replies",
        "required",
        "senders",
        "targets",
        "unrouted",
    )

    def __init__(
        self, targets: list[str], corrs: list[str], expected: int, required: int, broadcast: bool
    ) -> None:
        self.targets = targets
        self.broadcast = broadcast
        self.by_corr = {c: i for i, c in enumerate(corrs)}
        self.answered = [False] * len(targets)
        self.senders: set[str] = set()
        self.expected = expected
        self.required = required
        self.replies: list[GatherReply] = []
        self.unrouted: list[int] = []
        self.ignored = 0

    @property
    def done(self) -> bool:
        got = len(self.replies)
        if got >= self.required:
            return True
        # Unrouted targets will never answer; stop as soon as the rest cannot make it.
        lost = self.expected if self.broadcast and self.unrouted else len(self.unrouted)
        return self.expected - lost < self.required

    def take(self, event: Event) -> None:
        env = event.envelope
        i = self.by_corr.get(env.correlation_id)
        if i is None:
            self.ignored += 1
            return
        if self.broadcast:
            if env.sender and env.sender in self.senders:
                self.ignored += 1
                return
            self.senders.add(env.sender)
        elif self.answered[i]:
            self.ignored += 1
            return
        self.answered[i] = True
        self.replies.append(GatherReply(target=self.targets[i], sender=env.sender, event=event))

    async def collect(self, sub: Subscription) -> None:
        while not self.done:
            try:
                self.take((await sub.receive()).event)
            except SubscriptionClosed:
                raise BusClosed("the bus closed during a gather") from None

    def missing(self) -> tuple[str, ...]:
        if self.broadcast:
            return (self.targets[0],) * (self.expected - len(self.replies))
        return tuple(t for t, ok in zip(self.targets, self.answered, strict=True) if not ok)


async def _push(bus: EventBus, requests: list[tuple[str, Event]]) -> None:
    # A closing bus also ends the collecting side, which reports it; not twice.
    with contextlib.suppress(BusClosed):
        for topic, event in requests:
            await bus.publish(topic, event)


@overload
async def gather(
    bus: EventBus,
    targets: Sequence[str] | str,
    payload: bytes | Event = ...,
    *,
    timeout: float,
    mode: GatherMode = ...,
    reducer: Callable[[Sequence[Event]], T],
    expected: int | None = ...,
    sender: str = ...,
    parent: Event | None = ...,
    type: str = ...,
) -> GatherResult[T]: ...


@overload
async def gather(
    bus: EventBus,
    targets: Sequence[str] | str,
    payload: bytes | Event = ...,
    *,
    timeout: float,
    mode: GatherMode = ...,
    reducer: None = ...,
    expected: int | None = ...,
    sender: str = ...,
    parent: Event | None = ...,
    type: str = ...,
) -> GatherResult[None]: ...


async def gather(
    bus: EventBus,
    targets: Sequence[str] | str,
    payload: bytes | Event = b"",
    *,
    timeout: float,
    mode: GatherMode = All(),  # noqa: B008 -- frozen, so one shared default is safe
    reducer: Callable[[Sequence[Event]], T] | None = None,
    expected: int | None = None,
    sender: str = "",
    parent: Event | None = None,
    type: str = "request",
) -> GatherResult[T] | GatherResult[None]:
    """Send one request to each target topic, or one to a broadcast topic, and collect replies.

    With a sequence of topics each gets its own correlation id, so every reply is known to come
    from its target and a second reply from one target is ignored. With one topic as a ``str``
    the request is broadcast once and ``expected`` replies are awaited, told apart by their
    envelope's sender (a second reply from the same non-empty sender is ignored).

    The call returns as soon as ``mode`` is satisfied, as soon as it can no longer be (targets
    the request reached no subscriber on count as missing at once), or at the deadline. All
    replies share one inbox subscription, closed when the call returns; replies that come
    later reach no subscriber and are counted ``unrouted`` by the bus.

    Requests that do not have to wait for room go out first. Targets whose subscription is full
    are then waited for one by one in a child task (the only task a collaboration call ever
    starts, and only on this path), within the deadline, while the replies are collected, so a
    slow target holds back neither the others' requests nor an early finish.

    Args:
        bus: the bus to use.
        targets: the topics to ask, or one broadcast topic (then ``expected`` is required).
        payload: the request body, or a whole :class:`Event`.
        timeout: seconds the whole call may take.
        mode: when the gather is satisfied; :class:`All` by default.
        reducer: called with the accepted replies' events, in arrival order, once the call
            is over (also when unsatisfied); its return value is the result's ``value``.
        expected: for a broadcast, how many replies to wait for; must be omitted or equal to
            ``len(targets)`` otherwise.
        sender: the requesting agent's id; names the inbox.
        parent: the event being handled, when called from a handler.
        type: the event type of requests built from bytes.

    Raises:
        InvalidArgument: no targets, a bad ``expected``, a mode that ``expected`` replies can
            never meet, a bad ``timeout`` or ``sender``.
        BusClosed: the bus closed during the call.
        InvalidTopic: a target is malformed.
    """
    check_timeout(timeout)
    check_sender(sender)
    if isinstance(targets, str):
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 1:
            raise InvalidArgument(f"a broadcast needs expected >= 1, not {expected!r}")
        topics = [targets]
    else:
        topics = list(targets)
        if not topics:
            raise InvalidArgument("gather needs at least one target")
        if expected is not None and expected != len(topics):
            raise InvalidArgument(
                f"expected={expected!r} disagrees with the {len(topics)} targets given"
            )
        expected = len(topics)
    if not isinstance(mode, (All, FirstK, Quorum)):
        raise InvalidArgument(f"mode must be All, FirstK or Quorum, not {mode!r}")
    required = mode.required(expected)

    token = new_id()
    inbox = inbox_topic(sender, token)
    corrs = [token] if len(topics) == 1 else [new_id() for _ in topics]
    first = outgoing(
        payload, type=type, sender=sender, correlation_id=corrs[0], reply_to=inbox, parent=parent
    )
    # Every target's request shares the first one's thread (new or inherited) and fields.
    requests = [first]
    for corr in corrs[1:]:
        envelope = msgspec.structs.replace(first.envelope, correlation_id=corr)
        requests.append(msgspec.structs.replace(first, envelope=envelope))
    got = _Collector(topics, corrs, expected, required, isinstance(targets, str))
    size = expected + INBOX_SLACK
    async with bus.subscribe(inbox, qos=QoS.BATCHED, buffer_size=size) as inbox_sub:
        with anyio.move_on_after(timeout) as scope:
            blocked: list[int] = []
            for i, topic in enumerate(topics):
                try:
                    reached = bus.publish_nowait(topic, requests[i])
                except WouldBlock:
                    blocked.append(i)
                    continue
                # With a transport, an event that reached nobody here may reach another process.
                if not reached and not bus.plumbing.has_transport:
                    got.unrouted.append(i)
            if not blocked:
                await got.collect(inbox_sub)
            else:
                # Rare path: some target is full. Wait for its room in a child task, so that
                # the replies of the others can satisfy the mode (and end the call) meanwhile.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_push, bus, [(topics[i], requests[i]) for i in blocked])
                    await got.collect(inbox_sub)
                    tg.cancel_scope.cancel()
    events = [r.event for r in got.replies]
    return GatherResult(
        replies=tuple(got.replies),
        missing=got.missing(),
        unrouted=tuple(topics[i] for i in got.unrouted),
        expected=expected,
        required=required,
        satisfied=len(got.replies) >= required,
        timed_out=scope.cancelled_caught,
        value=None if reducer is None else reducer(events),
        ignored=got.ignored,
    )
