"""What the dashboard knows beyond a snapshot: rates over the last minute, who publishes
where, each agent's recent events, the turns of cognitive agents, the dead letters.

One :class:`Observer` per server. From the first time a page asks (:meth:`wake`) it holds
two bounded Realtime subscriptions: ``loom.>`` (lifecycle events, dead letters) and
``agent.*.stream`` (the ``turn.*`` events a cognitive agent publishes), so a turn's timeline
and the dead letters are there when a page opens again. Not before: a server nobody watches
has no subscription of the dashboard's (``loom topics`` lists none, nothing changes what is
routed). Everything else is on demand: a ``>`` tap is held only while a page that
needs it (Topology, an agent's events) has asked within the last ``lease_s`` seconds,
because a subscription on every topic makes every publish routable (``unrouted`` stays 0,
the settle window holds nothing) and, in a cluster, draws every event across. Realtime: a
busy bus drops the dashboard's copies (counted in ``dropped``), never waits for it.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any

import anyio
import msgspec

from loom.runtime import DEAD_LETTER_PREFIX, BusClosed, Delivery, EventBus, QoS, Subscription

__all__ = ["Observer", "event_json"]

_SPARK = 60
"""Rate samples kept per topic: one a second, the last minute."""


def event_json(delivery: Delivery, *, max_payload: int = 2048) -> dict[str, Any]:
    """An event as the pages show it (payload as text, cut at ``max_payload`` bytes)."""
    event = delivery.event
    payload = event.payload[:max_payload].decode("utf-8", errors="replace")
    return {
        "topic": delivery.topic,
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "sender": event.envelope.sender,
        "thread_id": event.envelope.thread_id,
        "timestamp_ms": event.timestamp_ms,
        "metadata": dict(event.metadata),
        "payload": payload,
        "truncated": len(event.payload) > max_payload,
    }


class _Turn:
    """The events of one turn, in arrival order, with the moment each arrived."""

    __slots__ = ("agent", "ended", "events", "key", "started_ms")

    def __init__(self, key: str, agent: str, started_ms: int) -> None:
        self.key = key
        self.agent = agent
        self.started_ms = started_ms
        self.ended = False
        self.events: list[dict[str, Any]] = []


class Observer:
    """The dashboard's memory of a bus (all bounded: see the constructor).

    Args:
        bus: the bus to watch.
        buffer_size: each of its subscriptions' buffer (Realtime: beyond it, dropped).
        recent: events kept per agent, and dead letters kept.
        turns: turns kept (the oldest forgotten first).
        lease_s: how long the ``>`` tap stays after the last page asked for it.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        buffer_size: int = 1024,
        recent: int = 100,
        turns: int = 200,
        lease_s: float = 30.0,
    ) -> None:
        self.bus = bus
        self.buffer_size = buffer_size
        self.lease_s = lease_s
        self._recent_n = recent
        self._turns_n = turns
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=recent)
        self.turns: dict[str, _Turn] = {}
        self.publishers: dict[tuple[str, str], int] = {}
        """(sender, topic) -> events seen while the tap was on."""
        self.rates: dict[str, deque[float]] = {}
        self._last: dict[str, int] = {}
        self._own: set[int] = set()
        self._tap_until = 0.0
        self._tap_wanted = anyio.Event()
        self._woken = anyio.Event()
        self.dropped = 0

    def wake(self) -> None:
        """A page was opened: start watching (once; it goes on until the server stops)."""
        self._woken.set()

    def own(self, sub: Subscription) -> None:
        """Mark a subscription as the dashboard's (hidden from its own pages)."""
        self._own.add(sub.id)

    def disown(self, sub: Subscription) -> None:
        self._own.discard(sub.id)

    def is_own(self, sub_id: int) -> bool:
        return sub_id in self._own

    def want_tap(self) -> None:
        """A page needs the ``>`` tap: keep (or open) it for ``lease_s`` more seconds."""
        self._tap_until = time.monotonic() + self.lease_s
        self._tap_wanted.set()
        self.wake()

    @property
    def tapping(self) -> bool:
        return time.monotonic() < self._tap_until

    async def run(self) -> None:
        """From the first :meth:`wake`, watch until cancelled (or the bus closes)."""
        await self._woken.wait()
        async with anyio.create_task_group() as tg:
            for pattern in ("loom.>", "agent.*.stream"):
                tg.start_soon(self._watch, pattern, False)
            tg.start_soon(self._tap)
            tg.start_soon(self._sample)

    async def _watch(self, pattern: str, tap: bool) -> None:
        with contextlib.suppress(BusClosed):
            sub = self.bus.subscribe(pattern, qos=QoS.REALTIME, buffer_size=self.buffer_size)
            self.own(sub)
            try:
                async for delivery in sub:
                    self._note(delivery, tap)
            finally:
                self.disown(sub)
                sub.close()

    async def _tap(self) -> None:
        while True:
            await self._tap_wanted.wait()
            self._tap_wanted = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, ">", True)
                # The lease is renewed by each page's poll: look again when it would end.
                await self._lease_ends()
                tg.cancel_scope.cancel()

    async def _lease_ends(self) -> None:
        """Return once no page has renewed the tap's lease for ``lease_s``."""
        left = self._tap_until - time.monotonic()
        while left > 0:
            await anyio.sleep(left)
            left = self._tap_until - time.monotonic()

    async def _sample(self) -> None:
        """Each second, the events published on each topic since the last: the rates."""
        while True:
            stats = self.bus.statistics()
            seen = set()
            for topic in stats.topics:
                seen.add(topic.topic)
                before = self._last.get(topic.topic, topic.published)
                self._last[topic.topic] = topic.published
                spark = self.rates.setdefault(topic.topic, deque([0.0] * _SPARK, maxlen=_SPARK))
                spark.append(float(topic.published - before))
            for gone in set(self.rates) - seen:  # evicted from the bus's tracked topics
                del self.rates[gone]
                self._last.pop(gone, None)
            self.dropped = sum(s.dropped.total for s in stats.subscriptions if s.id in self._own)
            await anyio.sleep(1.0)

    def _note(self, delivery: Delivery, tap: bool) -> None:
        topic, event = delivery.topic, delivery.event
        if tap:
            sender = event.envelope.sender or event.source
            if sender:
                key = (sender, topic)
                if key in self.publishers or len(self.publishers) < 10_000:
                    self.publishers[key] = self.publishers.get(key, 0) + 1
                self._remember(sender, delivery)
            return
        if topic.startswith((DEAD_LETTER_PREFIX + ".", "loom.dlq.")):
            self.dead_letters.appendleft(event_json(delivery))
        elif topic.startswith("agent.") and topic.endswith(".stream"):
            self._turn_event(topic.split(".")[1], delivery)
        if not self.tapping:  # else the tap has it too
            agent = event.envelope.sender or event.source
            if agent:
                self._remember(agent, delivery)

    def _remember(self, agent: str, delivery: Delivery) -> None:
        ring = self.recent.get(agent)
        if ring is None:
            if len(self.recent) >= 10_000:
                return
            ring = self.recent[agent] = deque(maxlen=self._recent_n)
        ring.appendleft(event_json(delivery, max_payload=512))

    def _turn_event(self, agent: str, delivery: Delivery) -> None:
        event = delivery.event
        key = f"{agent}/{event.metadata.get('event_id', '')}"
        turn = self.turns.get(key)
        if turn is None:
            if len(self.turns) >= self._turns_n:
                del self.turns[next(iter(self.turns))]
            # The turn began when the event it answers was made: that event's id is a UUIDv7,
            # whose first 48 bits are its Unix ms (the first update's time when it is not).
            started = _uuid7_ms(event.metadata.get("event_id", "")) or event.timestamp_ms
            turn = self.turns[key] = _Turn(key, agent, min(started, event.timestamp_ms))
        try:
            payload = msgspec.json.decode(event.payload)
        except msgspec.DecodeError:
            payload = None
        turn.events.append({"type": event.type, "at_ms": event.timestamp_ms, "payload": payload})
        if event.type == "turn.end":
            turn.ended = True

    def turn(self, key: str) -> _Turn | None:
        return self.turns.get(key)


def _uuid7_ms(uuid: str) -> int:
    """The Unix ms a UUIDv7 was made at (0 when it is not one)."""
    hexa = uuid.replace("-", "")
    if len(hexa) != 32 or hexa[12:13] != "7":
        return 0
    try:
        return int(hexa[:12], 16)
    except ValueError:
        return 0
