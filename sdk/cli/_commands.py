"""The client commands of the CLI: ``loom agents``, ``topics``, ``tail``, ``publish``, ``call``.

Each is an async function taking a :class:`Connection` (built by ``cli.py`` from flags and
``LOOM_BRIDGE_ADDR`` / ``LOOM_TOKEN``; nothing here reads the environment or ``sys.argv``)
and printing to ``out``. Failures are Loom errors with a message meant for a person; the CLI
prints ``loom <command>: <message>`` and exits with :func:`exit_code_of` the error.

Nothing waits forever: every call has a deadline (``Connection.timeout``), and a server that
cannot be reached fails the first call at once (:class:`~loom.bridge._errors.ConnectFailed`).
"""

from __future__ import annotations

import base64
import math
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import anyio
import msgspec

from loom.bridge import AdminClient, ClientTLS, ToolStatus, decode_output, error_from_outcome
from loom.runtime import AgentInfo, BusStats, Delivery, Event, InvalidArgument, LoomError, QoS
from loom.runtime.lowlevel import mailbox_topic

__all__ = [
    "DEFAULT_ADDRESS",
    "Connection",
    "UsageError",
    "agents",
    "call",
    "exit_code_of",
    "parse_arguments",
    "publish",
    "read_data",
    "tail",
    "topics",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where ``loom serve`` listens by default, so a client command needs no flag beside it."""

_encoder = msgspec.json.Encoder()
_PREVIEW = 60  # characters of payload a tail line shows


class UsageError(InvalidArgument):
    """The command line itself is wrong (bad JSON, unreadable ``@file``): exit code 2."""


def exit_code_of(exc: BaseException) -> int:
    """2 for a usage error, 1 for everything else that went wrong."""
    return 2 if isinstance(exc, UsageError) else 1


class Connection(msgspec.Struct, frozen=True, kw_only=True):
    """Where a client command connects and how.

    Attributes:
        address: ``host:port`` of the server.
        token: the bearer token, if the server wants one.
        tls: TLS settings; ``None`` for a plaintext channel.
        timeout: seconds any one call may take before the command gives up.
    """

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    tls: ClientTLS | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise UsageError(f"--timeout must be a positive number of seconds, not {self.timeout}")

    def client(self) -> AdminClient:
        return AdminClient(self.address, token=self.token, tls=self.tls, timeout=self.timeout)


# ------------------------------------------------------------------ input


def read_data(spec: str, stdin: TextIO | None = None) -> bytes:
    """``DATA`` of ``loom publish``: the text itself, ``@path`` for a file's bytes, ``-`` for
    standard input (read to its end).

    Raises:
        UsageError: the file cannot be read.
    """
    if spec == "-":
        stream = sys.stdin if stdin is None else stdin
        return stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {path!r}: {exc.strerror}") from None
    return spec.encode()


def parse_arguments(text: str) -> str:
    """``JSON`` of ``loom call``: checked to be a JSON object; returned as compact JSON text.

    Raises:
        UsageError: it is not JSON, or not an object.
    """
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise UsageError(f"the arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(
            f'the arguments must be a JSON object like \'{{"path": "a.txt"}}\', '
            f"not {type(value).__name__}"
        )
    return _encoder.encode(value).decode()


def parse_metadata(pairs: Iterable[str]) -> dict[str, str]:
    """``--meta key=value`` flags as a dict.

    Raises:
        UsageError: a pair has no ``=``.
    """
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta takes key=value, not {pair!r}")
        metadata[key] = value
    return metadata


# ------------------------------------------------------------------ output helpers


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def _ago(ms: int, now_ms: int) -> str:
    seconds = max(0, now_ms - ms) // 1000
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _json_line(value: Any, out: TextIO) -> None:
    out.write(_encoder.encode(value).decode())
    out.write("\n")


def _payload_fields(payload: bytes) -> dict[str, str]:
    try:
        return {"payload": payload.decode()}
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(payload).decode()}


def preview(payload: bytes, width: int = _PREVIEW) -> str:
    """A one-line view of a payload: its text (escaped, cut to ``width``), or its size."""
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return f"<{len(payload)} bytes>"
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------ commands


async def agents(
    conn: Connection,
    *,
    capability: str = "",
    topic: str = "",
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``loom agents``: the server's directory, one agent a line."""
    async with conn.client() as admin:
        found = await admin.list_agents(capability=capability, topic=topic)
    if as_json:
        for info in found:
            _json_line(msgspec.to_builtins(info), out)
        return 0
    if not found:
        print("no agents", file=out)
        return 0
    now = time.time_ns() // 1_000_000
    rows = [["ID", "STATUS", "WHERE", "DEPTH", "RUNNING", "RESTARTS", "SEEN", "TOPICS", "TOOLS"]]
    rows += [_agent_row(info, now) for info in found]
    _table(rows, out)
    return 0


def _agent_row(info: AgentInfo, now_ms: int) -> list[str]:
    topics = [p for p in info.patterns if p != mailbox_topic(info.id)]
    return [
        info.id,
        info.status.value,
        "remote" if info.remote else "local",
        str(info.mailbox_depth),
        str(info.in_flight),
        str(info.restarts),
        _ago(info.last_heartbeat_ms, now_ms),
        ",".join(topics) or "-",
        ",".join(info.capabilities) or "-",
    ]


async def topics(
    conn: Connection,
    *,
    subscriptions: bool = False,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``loom topics``: the server bus's per-topic counters (and subscriptions, if asked)."""
    async with conn.client() as admin:
        stats = await admin.statistics(topics=True, subscriptions=subscriptions)
    if as_json:
        _json_line(msgspec.to_builtins(stats), out)
        return 0
    _print_stats(stats, subscriptions, out)
    return 0


def _print_stats(stats: BusStats, subscriptions: bool, out: TextIO) -> None:
    d = stats.dropped
    print(
        f"bus: {stats.published} published, {stats.delivered} delivered, "
        f"{d.total} dropped ({d.overflow} overflow, {d.closed} closed), "
        f"{stats.unrouted} unrouted{' (closed)' if stats.closed else ''}",
        file=out,
    )
    if stats.topics:
        rows = [["TOPIC", "PUBLISHED", "DELIVERED", "DROPPED", "UNROUTED"]]
        for t in sorted(stats.topics, key=lambda t: t.topic):
            row = [t.topic, str(t.published), str(t.delivered), str(t.dropped.total)]
            rows.append([*row, str(t.unrouted)])
        print(file=out)
        _table(rows, out)
    if subscriptions and stats.subscriptions:
        rows = [
            [
                "SUB",
                "PATTERN",
                "QOS",
                "QUEUED",
                "CAPACITY",
                "IN_FLIGHT",
                "DELIVERED",
                "DROPPED",
                "WAITING",
            ]
        ]
        for s in stats.subscriptions:
            rows.append(
                [
                    str(s.id),
                    s.pattern,
                    s.qos.name.lower(),
                    str(s.queued),
                    str(s.capacity),
                    str(s.in_flight),
                    str(s.delivered),
                    str(s.dropped.total),
                    str(s.waiting_publishers),
                ]
            )
        print(file=out)
        _table(rows, out)


async def tail(
    conn: Connection,
    pattern: str,
    *,
    qos: QoS = QoS.REALTIME,
    event_types: Sequence[str] = (),
    as_json: bool = False,
    count: int = 0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``loom tail``: print events on ``pattern`` as they are published, until SIGINT/SIGTERM
    (or ``count`` events, if not 0). Exits 0 when stopped so."""
    if count < 0:
        raise UsageError(f"--count must be >= 0, not {count}")
    failed: list[LoomError] = []  # raised as itself below, not inside an exception group
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

            async def consume() -> None:
                try:
                    async with (
                        conn.client() as admin,
                        admin.subscribe(pattern, qos=qos, event_types=event_types) as deliveries,
                    ):
                        # On stderr, so stdout holds only events (pipe --json into jq).
                        print(
                            f"tailing {pattern} on {conn.address} (Ctrl-C to stop)",
                            file=err,
                            flush=True,
                        )
                        seen = 0
                        async for delivery in deliveries:
                            _print_delivery(delivery, as_json, out)
                            seen += 1
                            if seen == count:
                                break
                except LoomError as exc:
                    failed.append(exc)
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(stop_on_signal)
            tg.start_soon(consume)
    if failed:
        raise failed[0]
    return 0


def _print_delivery(delivery: Delivery, as_json: bool, out: TextIO) -> None:
    event = delivery.event
    if as_json:
        record: dict[str, Any] = {
            "topic": delivery.topic,
            "id": event.id,
            "type": event.type,
            "timestamp_ms": event.timestamp_ms,
            "source": event.source,
            "metadata": event.metadata,
            **_payload_fields(event.payload),
        }
        sender = event.envelope.sender
        if sender:
            record["sender"] = sender
        _json_line(record, out)
    else:
        print(delivery.topic, event.type or "-", event.id, preview(event.payload), file=out)
    out.flush()


async def publish(
    conn: Connection,
    topic: str,
    data: bytes,
    *,
    type: str = "message",
    qos: QoS = QoS.BATCHED,
    source: str = "loom-cli",
    metadata: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """``loom publish``: one event on ``topic`` through ``EventBus.Publish``.

    The tier says how long the server may hold the publish back while a lossless subscriber
    is full: ``BATCHED`` and ``BACKGROUND`` wait up to the connection's timeout; ``REALTIME``
    gives up after one second rather than wait (the event may then have reached the
    subscribers that had room and not the others, as a cancelled ``EventBus.publish`` does).
    """
    event = Event(type=type, source=source, payload=data, metadata=dict(metadata or {}))
    limit = min(conn.timeout, 1.0) if qos is QoS.REALTIME else conn.timeout
    async with conn.client() as admin:
        outcome = await admin.publish(topic, [event], timeout=limit)
    if outcome.rejections:
        r = outcome.rejections[0]
        raise LoomError(f"not published: {r.code}: {r.reason}")
    print(f"published {event.id} to {topic} ({len(data)} bytes)", file=out)
    return 0


async def call(
    conn: Connection,
    tool: str,
    arguments: str,
    *,
    timeout: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """``loom call``: call a tool through ``ToolService.Call`` and print its output (as
    indented JSON, or as text when the output is not JSON).

    Raises:
        ToolError: the call ended with any status but ``TOOL_OK``: the runtime's own tool
            error for it (``ToolNotFound``, ``InvalidToolArguments``, ``ToolTimeout``,
            ``ToolPermissionDenied``, ``ToolFailed``), as every client rebuilds it.
    """
    async with conn.client() as admin:
        outcome = await admin.call_tool(tool, arguments, timeout=timeout)
    if outcome.status is not ToolStatus.OK:
        raise error_from_outcome(
            outcome, tool=tool, timeout=math.inf if timeout is None else timeout
        )
    value = decode_output(outcome.output)
    if isinstance(value, str) and value == outcome.output:
        print(value, file=out)  # plain text from an old agent
    else:
        print(msgspec.json.format(_encoder.encode(value), indent=2).decode(), file=out)
    return 0
