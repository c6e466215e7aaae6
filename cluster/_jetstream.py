"""The runtime's durable log (``loom.runtime.DurableLog``) on NATS JetStream.

What it makes in JetStream (``docs/durability.md``, "What Loom creates in JetStream"):

* one stream, ``LOOM_EVENTS``, on the one subject space ``loom.stored.>``: the stored event of
  topic ``t`` is a message on ``loom.stored.t``. One catch-all subject rather than one per
  durable pattern, because JetStream refuses subjects that overlap in any way, within a stream
  as across streams (``a.>`` and ``a.b``, even ``a.*.c`` and ``a.b.*``): the bus decides what
  is stored, the stream just holds it. The prefix keeps Loom's topics away from other users
  of the server and from NATS's reserved ``$JS`` / ``$SYS`` subjects.
* one durable pull consumer per durable name, filtered on its patterns' subjects.
* a core subscription to the server's consumer-created advisories on that stream, so that a
  durable name another process makes is stored for here from moments later, not from the
  next start (``docs/durability.md``, "Which publishes are stored").

It takes a connected nats-py client from its caller (``loom serve`` makes it) and never owns
the connection. asyncio only, as nats-py is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.client import JetStreamContext

from loom.runtime import (
    SEQUENCE_KEY,
    ConsumerStats,
    Delivery,
    DurableMessage,
    DurableStats,
    DurableUnavailable,
    Event,
    InvalidArgument,
    InvalidTopic,
    Position,
)
from loom.runtime.lowlevel import DurableConsumer, mark_delivery

from ._available import until_available
from ._replicas import with_replicas

__all__ = ["JetStreamLog", "consumer_name", "subject_of", "topic_of"]

STREAM: Final = "LOOM_EVENTS"
PREFIX: Final = "loom.stored"
# The server announces every consumer made on the stream here (no announcement for a changed
# config, and none carries the config: the consumer's info is asked for).
CREATED: Final = f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{STREAM}.*"
# How long open_consumer waits to see its own announcement come back (below): the server
# sends advisories within microseconds; past this, it goes on rather than block a start.
_ECHO_WAIT: Final = 2.0

# Stores started ahead (store_ahead) and not yet taken by their append, at most: beyond it the
# oldest is given up (its append stores the event itself). Below nats-py's own bound on
# pending async publishes (set to twice this), so starting one never stalls.
_AHEAD_MAX: Final = 1024

# How long after a store ahead started its append waits for the answer before storing the
# event itself (the same message id: stored once).
_AHEAD_WAIT: Final = 5.0

# What JetStream answers while it is away for a moment: not up yet ("no responders"), or, on
# a NATS cluster, a stream whose replicas elect a leader after a server died (503: "no
# response from stream", "JetStream system temporarily unavailable"). Worth asking again.
_UNAVAILABLE: Final = (
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


class _Stored(msgspec.Struct):
    """JetStream's answer to a store (its ``PubAck``), or the error it sent instead."""

    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_stored_decoder = msgspec.json.Decoder(_Stored)


class _Ahead:
    """A store started ahead: its reply token, its answer, when its append stops waiting for
    that answer, and the connection's reconnect count when it was sent."""

    __slots__ = ("deadline", "future", "reconnects", "token")

    def __init__(
        self, token: str, future: asyncio.Future[_Stored], deadline: float, reconnects: int
    ) -> None:
        self.token = token
        self.future = future
        self.deadline = deadline
        self.reconnects = reconnects


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Event)

# Characters NATS refuses in a subject; Loom's topics never have them (validate_topic refuses
# every whitespace and control character), checked again here because a subject that carried
# one would split the protocol line.
_SUBJECT_FORBIDDEN = frozenset(" \t\r\n\f\v\x00")
_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def subject_of(topic: str) -> str:
    """The NATS subject of a Loom topic or pattern (``*`` and ``>`` mean the same in both)."""
    if not _SUBJECT_FORBIDDEN.isdisjoint(topic):
        raise InvalidTopic(topic, "contains a character a NATS subject cannot carry")
    return f"{PREFIX}.{topic}"


def topic_of(subject: str) -> str:
    """The Loom topic of a stored message's subject."""
    return subject[len(PREFIX) + 1 :]


def consumer_name(name: str) -> str:
    """The JetStream consumer name of a durable name: letters, digits and ``-`` kept, every
    other byte written ``_XX`` (hex), so it is reversible and never holds the ``.``, ``*``,
    ``>`` or path separators a consumer name may not."""
    out: list[str] = []
    for ch in name:
        if ch in _NAME_OK:
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode())
    return "".join(out)


def _name_of(consumer: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(consumer):
        if consumer[i] == "_":
            raw.append(int(consumer[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(consumer[i].encode())
            i += 1
    return raw.decode()


def _msg_id(topic: str, event: Event) -> str:
    # The topic is part of the id: the same event forwarded on another durable topic is a
    # new message, not a duplicate. A space cannot occur in a topic, so this is one-to-one.
    if "\r" in event.id or "\n" in event.id:
        raise InvalidArgument(f"event id {event.id!r} has a line break; it cannot be stored")
    return f"{topic} {event.id}"


def _delivery_of(msg: Msg) -> tuple[int, int]:
    """A delivery's attempt and stream sequence, read from its ack subject. Read directly in
    the two token layouts JetStream uses (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>...``, 9 tokens; with domain and account hash, ``$JS.ACK.<domain>.<hash>.<stream>
    .<consumer>.<delivered>.<stream seq>...``, 12 or more); nats-py's ``msg.metadata`` builds
    dataclasses and a datetime per message that nothing here reads (about a tenth of the
    server's CPU per durable delivery). Anything else goes through nats-py."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:
            return int(tokens[4]), int(tokens[5])
        if len(tokens) >= 12:
            return int(tokens[6]), int(tokens[7])
    meta = msg.metadata
    return meta.num_delivered, meta.sequence.stream


class _Message:
    """One JetStream delivery as a :class:`DurableMessage`."""

    __slots__ = ("_msg", "attempt", "event", "sequence", "topic")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.topic = topic_of(msg.subject)
        self.attempt, self.sequence = _delivery_of(msg)
        self.event = mark_delivery(_decoder.decode(msg.data), self.attempt)

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float = 0.0) -> None:
        await self._msg.nak(delay=delay if delay > 0 else None)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


def _queued_first(psub: JetStreamContext.PullSubscription) -> None:
    """Make ``psub``'s fetch take a message that is already in its queue without a task.

    nats-py's fetch reads each message of a batch through ``Subscription.next_msg``, which
    makes a uuid4 name, a task and a ``wait_for`` (another task) per message, even when the
    whole batch arrived in one socket read and waits in the queue: about a tenth of
    ``loom serve``'s CPU per remote durable delivery (docs/performance.md). The protocol
    (requests, statuses, timeouts) stays nats-py's; only a message already queued is taken
    at once, with nats-py's own accounting. (A nats-py without these internals keeps its
    own path.)"""
    sub = getattr(psub, "_sub", None)
    queue = getattr(sub, "_pending_queue", None)
    slow = getattr(sub, "next_msg", None)
    if sub is None or not isinstance(queue, asyncio.Queue) or slow is None:
        return
    conn = sub._conn

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if not queue.empty() and not conn.is_closed:
            msg: Msg = queue.get_nowait()
            sub._pending_size -= len(msg.data)
            queue.task_done()
            return msg
        waited: Msg = await slow(timeout)
        return waited

    sub.next_msg = next_msg


class _Consumer:
    __slots__ = ("_sub", "ack_wait")

    def __init__(self, sub: JetStreamContext.PullSubscription, ack_wait: float) -> None:
        _queued_first(sub)
        self._sub = sub
        self.ack_wait = ack_wait

    async def fetch(self, batch: int, timeout: float) -> list[DurableMessage]:
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except TimeoutError:  # nats-py raises its own and asyncio's, both TimeoutErrors
            return []
        except nats.errors.ConnectionClosedError:
            # The caller's connection is gone for good: nothing more will come. Wait out the
            # poll rather than spin; closing the subscription ends the loop.
            await anyio.sleep(timeout)
            return []
        except _UNAVAILABLE:
            # JetStream away for a moment (a NATS server of the cluster died and the
            # stream's replicas elect a leader): nothing now, the next poll asks again. The
            # position is the server's, so nothing is skipped.
            await anyio.sleep(min(timeout, 0.25))
            return []
        return [_Message(m) for m in msgs]

    async def aclose(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


class JetStreamLog:
    """Durable subscriptions and replay on a JetStream stream (``loom.runtime.DurableLog``).

    Use it as an async context manager around the bus that uses it::

        nc = await nats.connect(url)
        async with JetStreamLog(nc) as log, EventBus(durable_log=log) as bus:
            ...

    Args:
        client: a connected nats-py client; the caller owns (and closes) it.
        max_age: seconds a stored event is kept, acknowledged or not (default 7 days).
        max_bytes: the stream's size bound (default 1 GiB); the oldest events go first.
            An event dropped by either limit before a durable name acknowledged it is lost
            to that name and counted in its ``overflow``.
        duplicate_window: seconds within which a second append of the same event on the
            same topic is recognised and stored once (default 2 minutes).
        ack_wait: seconds a delivery may stay unsettled before it is delivered again (a
            crashed or hung handler); default 30.
        publish_timeout: how long an append keeps trying (the server down or restarting)
            before it raises :class:`DurableUnavailable`; default 30 seconds.
    """

    def __init__(
        self,
        client: Client,
        *,
        max_age: float = 7 * 24 * 3600.0,
        max_bytes: int = 1 << 30,
        duplicate_window: float = 120.0,
        ack_wait: float = 30.0,
        publish_timeout: float = 30.0,
    ) -> None:
        for label, value in (
            ("max_age", max_age),
            ("max_bytes", max_bytes),
            ("duplicate_window", duplicate_window),
            ("ack_wait", ack_wait),
            ("publish_timeout", publish_timeout),
        ):
            if value <= 0:
                raise InvalidArgument(f"{label} must be > 0, not {value!r}")
        self._nc = client
        self._js = client.jetstream()
        # The stores started ahead: each a publish with a reply subject of this log's own
        # (its inbox, then a number), written in call order on the one connection, so
        # stored in that order; the answer resolves its future (_on_stored). Not nats-py's
        # publish_async, which costs a semaphore, a random token and a callback per store
        # (docs/performance.md). By message id.
        self._ahead: OrderedDict[str, _Ahead] = OrderedDict()
        self._answers: dict[str, asyncio.Future[_Stored]] = {}  # by reply token
        self._reply_prefix = ""  # the inbox (set by start), then "."
        self._reply_sub: Subscription | None = None
        self._tokens = 0
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._window = duplicate_window
        self.ack_wait = ack_wait
        self._timeout = publish_timeout
        self._patterns: dict[str, tuple[str, ...]] = {}  # durable name -> its patterns
        self._known: frozenset[str] = frozenset()
        # Where a durable name made now starts: after the newest sequence this log has seen.
        # Never later than its registration, so nothing stored after it is missed; it may
        # start a little earlier (another process's appends), which only delivers more.
        self._last_seq = 0
        self._start: dict[str, int] = {}
        self._appended = 0
        self._duplicates = 0
        self._listeners: list[Callable[[Iterable[str]], None]] = []
        self._advisory_sub: Subscription | None = None
        self._echo: dict[str, anyio.Event] = {}  # consumer name -> its advisory was applied
        self._learnt = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> JetStreamLog:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The connection is the caller's; the stream and consumers persist by design.
        for sub in (self._advisory_sub, self._reply_sub):
            if sub is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        self._advisory_sub = self._reply_sub = None
        for ahead in self._ahead.values():
            ahead.future.cancel()
        self._ahead.clear()
        self._answers.clear()

    async def start(self) -> None:
        """Make or update the stream, and learn the durable names it already has (their
        patterns are stored from now on even while nobody consumes them), then follow the
        ones other processes make (the server's consumer-created advisories)."""
        # Listening first, listing second: a name made in between is seen by one or both.
        self._advisory_sub = await self._nc.subscribe(CREATED, cb=self._on_created)
        inbox = self._nc.new_inbox()
        self._reply_sub = await self._nc.subscribe(f"{inbox}.*", cb=self._on_stored)
        self._reply_prefix = f"{inbox}."
        await self._nc.flush()

        async def make(replicas: int) -> api.StreamInfo:
            config = api.StreamConfig(
                name=STREAM,
                subjects=[f"{PREFIX}.>"],
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=self._max_age,
                max_bytes=self._max_bytes,
                duplicate_window=self._window,
                storage=api.StorageType.FILE,
                # Three copies on a NATS cluster: the stored events survive any one server.
                num_replicas=replicas,
            )
            try:
                await self._js.stream_info(STREAM)
            except nats.js.errors.NotFoundError:
                return await self._js.add_stream(config)
            # An existing stream takes the replicas too (JetStream scales it up in place).
            return await self._js.update_stream(config)

        async def made() -> tuple[api.StreamInfo, list[api.ConsumerInfo]]:
            info = await with_replicas(self._nc, f"the durable events' stream {STREAM}", make)
            return info, await self._js.consumers_info(STREAM)

        # A NATS cluster starting with this node may not have elected the stream's leader
        # yet: wait for it, bounded (_available.py).
        info, consumers = await until_available(f"the durable events' stream {STREAM}", made)
        self._last_seq = info.state.last_seq
        for consumer in consumers:
            cfg = consumer.config
            if cfg.durable_name is None:
                continue  # a replay's ephemeral consumer
            subjects = cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else [])
            self._patterns[_name_of(cfg.durable_name)] = tuple(topic_of(s) for s in subjects)
        self._refresh_known()

    def _refresh_known(self) -> None:
        self._known = frozenset(p for ps in self._patterns.values() for p in ps)

    def watch(self, listener: Callable[[Iterable[str]], None]) -> None:
        """Call ``listener`` with the patterns of every durable name learnt from now on that
        was made elsewhere (another process sharing the server)."""
        self._listeners.append(listener)

    async def _on_created(self, msg: Msg) -> None:
        # Runs in nats-py's task for this subscription, one advisory at a time, in order.
        try:
            durable = json.loads(msg.data)["consumer"]
            info = await self._js.consumer_info(STREAM, durable)
        except (ValueError, KeyError, nats.errors.Error):
            return  # not ours to read, or already deleted again: nothing to store for
        cfg = info.config
        if cfg.durable_name is not None:
            subjects = cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else [])
            patterns = tuple(topic_of(s) for s in subjects if s.startswith(PREFIX + "."))
            name = _name_of(cfg.durable_name)
            merged = tuple(dict.fromkeys((*self._patterns.get(name, ()), *patterns)))
            if merged != self._patterns.get(name):
                self._patterns[name] = merged
                self._refresh_known()
                self._learnt += 1
                for listener in self._listeners:
                    listener(patterns)
        echo = self._echo.pop(durable, None)
        if echo is not None:
            echo.set()

    # ------------------------------------------------------------------ DurableLog

    def patterns(self) -> frozenset[str]:
        return self._known

    def register(self, name: str, patterns: Collection[str]) -> None:
        for pattern in patterns:
            subject_of(pattern)
        self._start.setdefault(name, self._last_seq + 1)
        merged = tuple(dict.fromkeys((*self._patterns.get(name, ()), *patterns)))
        self._patterns[name] = merged
        self._refresh_known()

    async def store_ahead(self, topic: str, event: Event) -> None:
        """Start storing ``event`` (``PipelinedLog``): its :meth:`append` then waits for this
        store rather than making one (and makes its own if this one failed or is late)."""
        msg_id = _msg_id(topic, event)
        if msg_id in self._ahead or not self._reply_prefix:
            return
        try:
            subject = subject_of(topic)
        except InvalidArgument:
            return  # not started: its append says what is wrong
        self._tokens += 1
        token = str(self._tokens)
        future: asyncio.Future[_Stored] = asyncio.get_running_loop().create_future()
        self._answers[token] = future
        self._ahead[msg_id] = _Ahead(
            token, future, time.monotonic() + _AHEAD_WAIT, self._nc.stats["reconnects"]
        )
        try:
            await self._nc.publish(
                subject,
                _encoder.encode(event),
                reply=self._reply_prefix + token,
                # No Nats-Expected-Stream: only LOOM_EVENTS can hold loom.stored.> (JetStream
                # refuses overlapping subjects across streams), and the header would be
                # stored with every event and parsed again at every delivery.
                headers={"Nats-Msg-Id": msg_id},
            )
        except nats.errors.Error:
            self._give_up(msg_id)  # not started: its append stores it
            return
        while len(self._ahead) > _AHEAD_MAX:
            # The oldest given up: its append (if it ever comes) stores it; stored once by id.
            self._give_up(next(iter(self._ahead)))

    def _give_up(self, msg_id: str) -> None:
        ahead = self._ahead.pop(msg_id)
        self._answers.pop(ahead.token, None)
        ahead.future.cancel()

    async def _on_stored(self, msg: Msg) -> None:
        """The server's answer to a store started ahead (in nats-py's task for the
        subscription): a PubAck, an API error, or a "no responders" status (JetStream down)."""
        future = self._answers.pop(msg.subject[len(self._reply_prefix) :], None)
        if future is None or future.done():
            return  # given up already
        try:
            stored = _stored_decoder.decode(msg.data) if msg.data else None
        except msgspec.DecodeError:
            stored = None
        if stored is None or stored.error is not None or stored.seq <= 0:
            future.set_exception(nats.errors.Error(f"not stored: {stored or msg.headers}"))
        else:
            future.set_result(stored)

    async def _ahead_ack(self, msg_id: str) -> _Stored | None:
        """The answer to the store started ahead for ``msg_id``; ``None`` when there is none,
        it failed, or it is not in within 5 s of the store's start (the server away: append
        retries it), or the connection was lost and made again since the store started."""
        ahead = self._ahead.get(msg_id)
        if ahead is None:
            return None
        future = ahead.future
        # A store sent to a server that died before it answered is never answered: a
        # reconnection since it started means its answer may be lost, so it is asked again
        # at once (same message id: stored once). And the wait runs from the store's start,
        # not from this call: answers lost together cost one wait, not one per store in turn
        # (256 stores ahead, 5 s each, held a publisher for twenty minutes with nothing said).
        if not future.done() and self._nc.stats["reconnects"] == ahead.reconnects:
            # (Often answered already: the stores ahead went together.)
            # Waits without taking the future's outcome as its own: a future given up
            # (cancelled) or failed is not this task's cancellation or error. asyncio's own
            # timeout, not a cancel scope: this runs once per durable publish, and the scope
            # was a measurable share of the remote durable path (docs/performance.md).
            left = min(self._timeout, ahead.deadline - time.monotonic())
            if left > 0:
                await asyncio.wait((future,), timeout=left)
        if future.done() and not future.cancelled() and future.exception() is None:
            del self._ahead[msg_id]
            return future.result()
        # Failed (the server refused or went away), given up, or late: the append makes its
        # own store (the same id: stored once).
        if msg_id in self._ahead:
            self._give_up(msg_id)
        return None

    async def append(self, topic: str, event: Event) -> int:
        subject = subject_of(topic)
        msg_id = _msg_id(topic, event)
        headers = {"Nats-Msg-Id": msg_id}
        # One deadline for the store ahead's answer and the retries after it.
        deadline = time.monotonic() + self._timeout
        if self._ahead and (stored := await self._ahead_ack(msg_id)) is not None:
            self._appended += 1
            if stored.duplicate:
                self._duplicates += 1
            self._last_seq = max(self._last_seq, stored.seq)
            return stored.seq
        data = _encoder.encode(event)
        delay = 0.05
        last: Exception | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DurableUnavailable(
                    f"event {event.id} on {topic!r} not stored within {self._timeout:g}s: {last!r}"
                )
            try:
                # (No stream=: see store_ahead on Nats-Expected-Stream.)
                ack = await self._js.publish(subject, data, timeout=min(left, 5.0), headers=headers)
            except (nats.errors.TimeoutError, *_UNAVAILABLE) as exc:
                # The server is down or restarting (a JetStream that is not up answers "no
                # responders"), or, on a NATS cluster, the stream's replicas are electing a
                # leader after a server died (503, "no response from stream"): retrying the
                # same message id is safe, it is stored once.
                last = exc
            except nats.errors.ConnectionClosedError as exc:
                raise DurableUnavailable(f"event {event.id} not stored: {exc!r}") from exc
            else:
                self._appended += 1
                if ack.duplicate:
                    self._duplicates += 1
                self._last_seq = max(self._last_seq, ack.seq)
                return ack.seq
            await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    async def open_consumer(
        self, name: str, patterns: Collection[str], *, max_deliver: int, max_ack_pending: int
    ) -> DurableConsumer:
        durable = consumer_name(name)
        subjects = [subject_of(p) for p in patterns]
        if not subjects:  # no filter would mean every stored event
            raise InvalidArgument(f"durable name {name!r} needs at least one pattern")
        # One more delivery than max_deliver: the extra one is seen only when the holder of
        # the last attempt died without settling it, and it is dead-lettered then instead
        # of being left stuck on the server.
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_deliver=max_deliver + 1,
            max_ack_pending=max_ack_pending,
            ack_wait=self.ack_wait,
            filter_subjects=subjects,
        )
        try:
            existing = await self._js.consumer_info(STREAM, durable)
        except nats.js.errors.NotFoundError:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self._start.get(name, self._last_seq + 1)
            # Made here: return only once this process has itself received and applied the
            # server's announcement of it. The server sends one advisory to every listener
            # at once, so by then every other bus on this server has it on its way too: the
            # window in which another process may still publish unstored is its own
            # delivery and handling of that message (docs/durability.md, measured).
            echo = self._echo[durable] = anyio.Event()
            await self._js.add_consumer(STREAM, config)
            with anyio.move_on_after(_ECHO_WAIT):
                await echo.wait()
            self._echo.pop(durable, None)
        else:
            # The position is kept; the settings follow the code (an updated max_deliver or
            # pattern list applies from now on).
            old = existing.config
            config.deliver_policy = old.deliver_policy
            config.opt_start_seq = old.opt_start_seq
            config.opt_start_time = old.opt_start_time
            await self._js.add_consumer(STREAM, config)
        self._patterns[name] = tuple(patterns)
        self._refresh_known()
        sub = await self._js.pull_subscribe_bind(durable=durable, stream=STREAM)
        return _Consumer(sub, self.ack_wait)

    async def delete(self, name: str) -> None:
        """Forget the durable name ``name``: its position and what it had not taken.
        (Publishes on its patterns are still stored until the bus is made again.)"""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(STREAM, consumer_name(name))
        self._patterns.pop(name, None)
        self._refresh_known()

    async def replay(
        self, pattern: str, *, since: Position | None, until: Position | None
    ) -> AsyncIterator[Delivery]:
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject_of(pattern),
            mem_storage=True,
            inactive_threshold=30.0,  # gone by itself if this process dies mid-replay
        )
        match since:
            case None:
                config.deliver_policy = api.DeliverPolicy.ALL
            case int():
                config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = max(1, since)
            case _:
                config.deliver_policy = api.DeliverPolicy.BY_START_TIME
                config.opt_start_time = _moment(since)
        end_seq = until if isinstance(until, int) else None
        end_time = None if until is None or isinstance(until, int) else _moment(until)
        replayed = 0

        def interrupted(exc: BaseException) -> DurableUnavailable:
            # The server went away (killed, restarting: the replay's consumer, kept in its
            # memory, is gone with it) or stopped answering. Said, never a silent end: the
            # caller would take a cut replay for the whole of it.
            return DurableUnavailable(
                f"replay of {pattern!r} interrupted after {replayed} events: the durable "
                f"log's server did not answer ({exc!r}); replay again (since= the last "
                "log.sequence seen + 1) once it is back"
            )

        try:
            sub = await self._js.pull_subscribe(subject_of(pattern), stream=STREAM, config=config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise interrupted(exc) from exc
        name = ""
        try:
            try:
                info = await sub.consumer_info()
            except (nats.errors.Error, TimeoutError) as exc:
                raise interrupted(exc) from exc
            name, pending = info.name, info.num_pending
            while pending:
                try:
                    msgs = await sub.fetch(min(pending, 256), timeout=5.0)
                except (nats.errors.Error, TimeoutError) as exc:
                    # Nothing within the fetch's wait: either the rest expired meanwhile (a
                    # limit removed it: the consumer has nothing pending) or the server is
                    # gone or stuck (asking the consumer fails too).
                    try:
                        info = await sub.consumer_info()
                    except (nats.errors.Error, TimeoutError) as gone:
                        raise interrupted(gone) from exc
                    if not info.num_pending:
                        return
                    raise interrupted(exc) from exc
                for msg in msgs:
                    meta = msg.metadata
                    if end_seq is not None and meta.sequence.stream > end_seq:
                        return
                    if end_time is not None and meta.timestamp > end_time:
                        return
                    event = _decoder.decode(msg.data)
                    metadata = {**event.metadata, SEQUENCE_KEY: str(meta.sequence.stream)}
                    event = msgspec.structs.replace(event, metadata=metadata)
                    yield Delivery(topic_of(msg.subject), event)
                    replayed += 1
                    pending = meta.num_pending
                    if not pending:
                        return
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
                if name:
                    await self._js.delete_consumer(STREAM, name)

    async def remove(self, sequence: int) -> bool:
        try:
            return await self._js.delete_msg(STREAM, sequence)
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as exc:
            # JetStream answers "no message found" (10037) for a sequence removed already,
            # and "stream store EOF" (10057) for one past the last: the same to the caller.
            if exc.err_code in (10037, 10057):
                return False
            raise

    async def statistics(self) -> DurableStats:
        info = await self._js.stream_info(STREAM)
        state = info.state
        first = state.first_seq if state.messages else state.last_seq + 1
        records = []
        for consumer in await self._js.consumers_info(STREAM):
            cfg = consumer.config
            if cfg.durable_name is None:
                continue
            name = _name_of(cfg.durable_name)
            floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
            if not consumer.num_ack_pending and consumer.delivered:
                floor = max(floor, consumer.delivered.stream_seq)  # all it took is settled
            floor = max(floor, (cfg.opt_start_seq or 1) - 1)
            records.append(
                ConsumerStats(
                    name=name,
                    patterns=self._patterns.get(name, ()),
                    pending=consumer.num_pending or 0,
                    in_flight=consumer.num_ack_pending or 0,
                    redelivered=consumer.num_redelivered or 0,
                    # Stream sequences below the stream's first that this name had not
                    # acknowledged: removed by a limit before it took them.
                    overflow=max(0, first - 1 - floor),
                )
            )
        return DurableStats(
            stored=state.messages,
            bytes=state.bytes,
            first_sequence=state.first_seq if state.messages else 0,
            last_sequence=state.last_seq,
            appended=self._appended,
            duplicates=self._duplicates,
            consumers=tuple(records),
        )


def _moment(position: datetime | timedelta) -> datetime:
    if isinstance(position, timedelta):
        return datetime.now(UTC) - position
    return position if position.tzinfo is not None else position.astimezone(UTC)
