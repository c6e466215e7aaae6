"""The CLI's commands on the durable log: ``loom tail --since``, ``loom replay``, ``loom dlq``.

They read the server's stored events through ``EventBus.Replay`` (``AdminClient.replay``): only
what was published on a durable topic is there (and every dead letter, ``loom.dlq.>``). A server
without a durable log (``loom serve --nats off``) answers with ``DurabilityUnavailable``, which
the CLI prints as one line and exits 1. ``docs/cli.md`` and ``docs/durability.md`` have the
semantics.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TextIO

import msgspec

from loom.bridge import ConnectionLost
from loom.runtime import (
    ATTEMPT_KEY,
    DLQ_PREFIX,
    REDELIVERED_KEY,
    SEQUENCE_KEY,
    Delivery,
    Event,
    LoomError,
    Position,
    QoS,
)
from loom.runtime.lowlevel import new_id, validate_topic

from ._commands import (
    _FOLLOW_BACKOFF,
    Connection,
    UsageError,
    _json_line,
    _print_delivery,
    _table,
    follow_attempts,
    preview,
)

__all__ = [
    "REPLAYED_FROM_KEY",
    "REPLAY_OF_KEY",
    "dlq_drop",
    "dlq_list",
    "dlq_retry",
    "dlq_show",
    "parse_position",
    "replay",
    "tail_stored",
]

REPLAYED_FROM_KEY: Final = "loom.replayed_from"
"""Metadata of an event ``loom replay`` published again: the topic it was stored on."""
REPLAY_OF_KEY: Final = "loom.replay_of"
"""Metadata of an event ``loom replay`` published again: the stored event's id (the copy has
an id of its own, so an idempotent handler does not take it for the original)."""

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SEEN_BOUND = 10_000  # ids of stored events remembered to skip their live copies (tail -f)
_BATCH = 100  # events per EventBus.Publish call of `loom replay`
_DEAD = "dead_letter."


def parse_position(text: str, flag: str) -> Position:
    """``--since`` / ``--until``: a log sequence (``1234``), a duration ago (``90s``, ``10m``,
    ``2h``, ``7d``) or an ISO 8601 moment (``2026-12-04T10:00``, local time unless it names
    a zone).

    Raises:
        UsageError: none of those.
    """
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise UsageError(f"{flag}: a log sequence starts at 1, not {text}")
        return int(text)
    ago = _AGO.fullmatch(text)
    if ago:
        return timedelta(seconds=float(ago.group(1)) * _UNIT[ago.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: give a sequence (1234), a duration ago (10m, 2h, 7d) or a "
            "moment (2026-12-04T10:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _sequence(delivery: Delivery) -> int:
    return int(delivery.event.metadata.get(SEQUENCE_KEY, "0"))


# ------------------------------------------------------------------ tail --since


async def tail_stored(
    conn: Connection,
    pattern: str,
    since: Position,
    *,
    qos: QoS = QoS.REALTIME,
    event_types: Sequence[str] = (),
    as_json: bool = False,
    count: int = 0,
    follow: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``loom tail PATTERN --since X``: print the stored events on ``pattern`` from ``X``;
    with ``follow``, then go on with events as they are published until SIGINT/SIGTERM (or
    ``count`` events).

    For ``follow`` the live subscription is opened before the stored events are read, so
    nothing published in between is missed; a stored event that also arrives live is shown
    once. A lost server is retried (as ``loom tail --follow``), and on return the stored
    events after the last one shown are read first: on durable topics nothing is missed.
    """
    if count < 0:
        raise UsageError(f"--count must be >= 0, not {count}")
    types = frozenset(event_types)
    seen = 0
    cursor: Position = since

    def show(delivery: Delivery) -> bool:
        nonlocal seen
        if types and delivery.event.type not in types:
            return False
        _print_delivery(delivery, as_json, out)
        seen += 1
        return seen == count

    async def stored(admin: Any, printed: deque[str]) -> bool:
        nonlocal cursor
        async for delivery in admin.replay(pattern, since=cursor):
            sequence = _sequence(delivery)
            if sequence:
                cursor = sequence + 1  # where a reconnect's replay starts
            printed.append(delivery.event.id)
            if show(delivery):
                return True
        return False

    async def attempt(connected: Callable[[], None]) -> None:
        printed: deque[str] = deque(maxlen=_SEEN_BOUND)
        async with conn.client() as admin:
            if not follow:
                await stored(admin, printed)
                return
            async with admin.subscribe(pattern, qos=qos, event_types=event_types) as live:
                if await stored(admin, printed):
                    return
                connected()
                async for delivery in live:
                    if delivery.event.id in printed:
                        continue  # shown from the log already
                    if show(delivery):
                        return
        raise ConnectionLost(f"{conn.address} ended the subscription")

    await follow_attempts(
        attempt,
        conn=conn,
        pattern=pattern,
        follow=follow,
        announce=f"stored events shown; tailing {pattern} on {conn.address}",
        lost_note="",
        backoff=_FOLLOW_BACKOFF,
        err=err,
    )
    return 0


# ------------------------------------------------------------------ replay


def _replayed(delivery: Delivery) -> Event:
    metadata = {k: v for k, v in delivery.event.metadata.items() if k != SEQUENCE_KEY}
    metadata[REPLAYED_FROM_KEY] = delivery.topic
    metadata[REPLAY_OF_KEY] = delivery.event.id
    return msgspec.structs.replace(delivery.event, id=new_id(), metadata=metadata)


async def replay(
    conn: Connection,
    pattern: str,
    to: str,
    *,
    since: Position | None = None,
    until: Position | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """``loom replay PATTERN --to TOPIC``: publish every stored event on ``pattern`` (from
    ``since`` to ``until``) again on ``to``, in log order, each under a new id with metadata
    ``loom.replayed_from`` (its stored topic) and ``loom.replay_of`` (its id). Exits 1 when
    the server rejects one; those before it stay published."""
    try:
        validate_topic(to)
    except LoomError as exc:
        raise UsageError(f"--to: {exc}") from None
    total = 0
    async with conn.client() as admin:
        batch: list[Event] = []

        async def flush() -> None:
            nonlocal total
            outcome = await admin.publish(to, batch)
            total += outcome.accepted
            if outcome.rejections:
                first = outcome.rejections[0]
                raise LoomError(
                    f"{total} events replayed to {to}, then one was rejected: "
                    f"{first.code}: {first.reason}"
                )
            batch.clear()

        async for delivery in admin.replay(pattern, since=since, until=until):
            batch.append(_replayed(delivery))
            if len(batch) >= _BATCH:
                await flush()
        if batch:
            await flush()
    print(f"replayed {total} events from {pattern} to {to}", file=out)
    return 0


# ------------------------------------------------------------------ dlq


class _Letter(msgspec.Struct, frozen=True, kw_only=True):
    sequence: int
    durable: str
    topic: str
    reason: str
    attempts: str
    error: str
    event: Event


def _letter(delivery: Delivery) -> _Letter | None:
    meta = delivery.event.metadata
    if _DEAD + "topic" not in meta:
        return None  # published on loom.dlq.> by something else than a durable subscription
    hidden = (ATTEMPT_KEY, REDELIVERED_KEY, SEQUENCE_KEY)
    original = {k: v for k, v in meta.items() if not k.startswith(_DEAD) and k not in hidden}
    return _Letter(
        sequence=_sequence(delivery),
        durable=meta.get(_DEAD + "durable", delivery.topic[len(DLQ_PREFIX) + 1 :]),
        topic=meta[_DEAD + "topic"],
        reason=meta.get(_DEAD + "reason", ""),
        attempts=meta.get(_DEAD + "attempts", ""),
        error=meta.get(_DEAD + "error", ""),
        event=msgspec.structs.replace(delivery.event, metadata=original),
    )


async def _letters(
    conn: Connection, durable: str, since: Position | None = None, until: Position | None = None
) -> AsyncIterator[_Letter]:
    pattern = f"{DLQ_PREFIX}.{durable}" if durable else f"{DLQ_PREFIX}.>"
    async with conn.client() as admin:
        async for delivery in admin.replay(pattern, since=since, until=until):
            letter = _letter(delivery)
            if letter is not None:
                yield letter


def _letter_json(letter: _Letter) -> dict[str, Any]:
    record: dict[str, Any] = msgspec.to_builtins(letter)
    event = letter.event
    record["event"] = {
        "id": event.id,
        "type": event.type,
        "timestamp_ms": event.timestamp_ms,
        "source": event.source,
        "metadata": event.metadata,
        "payload": preview(event.payload, 1 << 20),
    }
    return record


async def dlq_list(
    conn: Connection, durable: str = "", *, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    """``loom dlq list [DURABLE]``: the stored dead letters (of one durable name, or all),
    oldest first; ``ID`` is the sequence ``show``, ``retry`` and ``drop`` take."""
    rows = [["ID", "DURABLE", "TOPIC", "TYPE", "ATTEMPTS", "REASON", "ERROR"]]
    async for letter in _letters(conn, durable):
        if as_json:
            _json_line(_letter_json(letter), out)
            continue
        event = letter.event
        row = [str(letter.sequence), letter.durable, letter.topic, event.type or "-"]
        rows.append([*row, letter.attempts, letter.reason, preview(letter.error.encode(), 50)])
    if not as_json:
        if len(rows) == 1:
            print("no dead letters", file=out)
        else:
            _table(rows, out)
    return 0


async def dlq_show(
    conn: Connection, sequence: int, *, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    """``loom dlq show ID``: one dead letter, with its original event, why it was given up,
    after how many attempts, and the last error."""
    async for letter in _letters(conn, "", since=sequence, until=sequence):
        if letter.sequence != sequence:
            continue
        if as_json:
            _json_line(_letter_json(letter), out)
            return 0
        event = letter.event
        fields = [
            ("id", str(letter.sequence)),
            ("durable", letter.durable),
            ("topic", letter.topic),
            ("reason", letter.reason),
            ("attempts", letter.attempts),
            ("last error", letter.error),
            ("event id", event.id),
            ("type", event.type or "-"),
            ("source", event.source or "-"),
            ("sender", event.envelope.sender or "-"),
            ("metadata", ", ".join(f"{k}={v}" for k, v in sorted(event.metadata.items())) or "-"),
            ("payload", preview(event.payload, 1000)),
        ]
        for name, value in fields:
            print(f"{name + ':':<12}{value}", file=out)
        return 0
    raise LoomError(f"no dead letter with ID {sequence} (see `loom dlq list`)")


async def dlq_retry(conn: Connection, sequence: int, *, out: TextIO = sys.stdout) -> int:
    """``loom dlq retry ID``: publish the original event again on its original topic (a new
    id, metadata ``loom.retry_of``), then drop the dead letter."""
    async with conn.client() as admin:
        topic, event_id = await admin.retry_dead_letter(sequence)
    print(f"dead letter {sequence} retried: event {event_id} on {topic}", file=out)
    return 0


async def dlq_drop(conn: Connection, sequence: int, *, out: TextIO = sys.stdout) -> int:
    """``loom dlq drop ID``: delete the dead letter from the log."""
    async with conn.client() as admin:
        await admin.drop_dead_letter(sequence)
    print(f"dead letter {sequence} dropped", file=out)
    return 0
