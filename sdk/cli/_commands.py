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
import contextlib
import math
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import anyio
import msgspec

from loom.bridge import (
    AdminClient,
    Backoff,
    ClientTLS,
    ConnectFailed,
    ConnectionLost,
    LLMCacheTotals,
    ServerStatus,
    ToolStatus,
    decode_output,
    error_from_outcome,
    loom_version,
)
from loom.runtime import (
    AgentInfo,
    AgentStatus,
    BusStats,
    DeadlineExceeded,
    Delivery,
    DurableStats,
    Envelope,
    Event,
    InvalidArgument,
    LoomError,
    QoS,
)
from loom.runtime.lowlevel import mailbox_topic, new_id

from .._process import DEFAULT_ADDRESS as _DEFAULT_ADDRESS
from ._cluster_status import cluster_lines

__all__ = [
    "DEFAULT_ADDRESS",
    "Connection",
    "UsageError",
    "agents",
    "ask",
    "call",
    "exit_code_of",
    "parse_arguments",
    "publish",
    "read_data",
    "release",
    "status",
    "tail",
    "tools",
    "topics",
    "version",
]

DEFAULT_ADDRESS = _DEFAULT_ADDRESS
"""Where ``loom serve`` listens by default, so a client command needs no flag beside it."""

_encoder = msgspec.json.Encoder()
# What a restarting or unreachable server looks like to a client; `tail --follow` retries it.
_RETRYABLE = (ConnectFailed, ConnectionLost, DeadlineExceeded)
_FOLLOW_BACKOFF = Backoff(initial=0.2, maximum=5.0)
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
    everyone: bool = False,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``loom agents``: the server's directory, one agent a line.

    Agents disconnected for longer than the server's liveness window (its ``stale_after``)
    are left out unless ``everyone``; the table says how many were.
    """
    async with conn.client() as admin:
        found = await admin.list_agents(capability=capability, topic=topic)
        window_ms = 0 if everyone else round((await admin.status()).stale_after_s * 1000)
    now = time.time_ns() // 1_000_000
    shown = [info for info in found if everyone or not _gone(info, now, window_ms)]
    hidden = len(found) - len(shown)
    if as_json:
        for info in shown:
            _json_line(msgspec.to_builtins(info), out)
        return 0
    if not shown:
        print("no agents", file=out)
    else:
        rows = [
            ["ID", "STATUS", "WHERE", "DEPTH", "RUNNING", "RESTARTS", "SEEN", "TOPICS", "TOOLS"]
        ]
        rows += [_agent_row(info, now) for info in shown]
        if any(info.node for info in shown):
            # A server in a cluster (loom serve --node): which node each agent lives on.
            rows = [
                [*row[:3], node, *row[3:]] for row, node in zip(rows, _nodes(shown), strict=True)
            ]
        _table(rows, out)
    if hidden:
        gone = "agent" if hidden == 1 else "agents"
        print(
            f"({hidden} {gone} disconnected for over {window_ms / 1000:g} s not shown; --all shows "
            f"{'it' if hidden == 1 else 'them'})",
            file=out,
        )
    return 0


_AGENT_COLUMNS = [
    "ID",
    "STATUS",
    "WHERE",
    "DEPTH",
    "RUNNING",
    "RESTARTS",
    "SEEN",
    "TOPICS",
    "TOOLS",
]


def _gone(info: AgentInfo, now_ms: int, window_ms: int) -> bool:
    """Disconnected for longer than the liveness window."""
    return info.status is AgentStatus.DISCONNECTED and now_ms - info.last_heartbeat_ms > window_ms


async def release(conn: Connection, agent_id: str, *, out: TextIO = sys.stdout) -> int:
    """``loom agents release ID``: free a remote agent's id (the admin token as ``--token``)."""
    async with conn.client() as admin:
        released = await admin.release_agent(agent_id)
    print(f"released {agent_id}" if released else f"{agent_id} was not registered", file=out)
    return 0


def _nodes(shown: list[AgentInfo]) -> list[str]:
    return ["NODE", *(info.node or "-" for info in shown)]


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
        durable = await admin.durable_statistics()
    if as_json:
        record = msgspec.to_builtins(stats)
        if durable is not None:
            record["durable"] = msgspec.to_builtins(durable)
        _json_line(record, out)
        return 0
    _print_stats(stats, subscriptions, out)
    if durable is not None:
        _print_durable(durable, out)
    return 0


def _print_durable(stats: DurableStats, out: TextIO) -> None:
    print(
        f"\ndurable log: {stats.stored} events stored ({stats.bytes} bytes), "
        f"sequences {stats.first_sequence}-{stats.last_sequence}",
        file=out,
    )
    if stats.consumers:
        # OVERFLOW: stored events the log's age or size limit removed before this durable
        # name took them: lost to it (docs/durability.md).
        rows = [["DURABLE", "PATTERNS", "PENDING", "IN_FLIGHT", "REDELIVERED", "OVERFLOW"]]
        for c in sorted(stats.consumers, key=lambda c: c.name):
            rows.append(
                [
                    c.name,
                    ",".join(c.patterns) or "-",
                    str(c.pending),
                    str(c.in_flight),
                    str(c.redelivered),
                    str(c.overflow),
                ]
            )
        print(file=out)
        _table(rows, out)


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
                "PATTERNS",
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
                    ",".join(s.patterns or (s.pattern,)),
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
    follow: bool = False,
    backoff: Backoff = _FOLLOW_BACKOFF,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``loom tail``: print events on ``pattern`` as they are published, until SIGINT/SIGTERM
    (or ``count`` events, if not 0). Exits 0 when stopped so.

    With ``follow``, a lost server (stopped, restarted, unreachable) is not the end: tail says
    so once on ``err``, subscribes again with ``backoff`` until the server is back, and says
    when it is. Events published while it was away are not shown (a tail is an observer, not
    a durable consumer). Errors a retry cannot fix (a wrong token, a malformed pattern) end it
    either way.
    """
    if count < 0:
        raise UsageError(f"--count must be >= 0, not {count}")
    seen = 0

    async def attempt(connected: Callable[[], None]) -> None:
        nonlocal seen
        async with (
            conn.client() as admin,
            admin.subscribe(pattern, qos=qos, event_types=event_types) as deliveries,
        ):
            connected()
            async for delivery in deliveries:
                _print_delivery(delivery, as_json, out)
                seen += 1
                if seen == count:
                    return
        raise ConnectionLost(f"{conn.address} ended the subscription")

    await follow_attempts(
        attempt,
        conn=conn,
        pattern=pattern,
        follow=follow,
        announce=f"tailing {pattern} on {conn.address} (Ctrl-C to stop)",
        lost_note=" (events published meanwhile are not shown)",
        backoff=backoff,
        err=err,
    )
    return 0


async def follow_attempts(
    attempt: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    conn: Connection,
    pattern: str,
    follow: bool,
    announce: str,
    lost_note: str,
    backoff: Backoff,
    err: TextIO,
) -> None:
    """Run ``attempt`` (a tail's subscription) until it returns or SIGINT/SIGTERM comes.

    ``attempt`` calls the function it is given once it is connected: that says ``announce``
    on ``err`` (so stdout holds only events), or after a loss that it is back. Without
    ``follow`` its first failure is raised; with it, a lost server is said once on ``err``
    (with ``lost_note``) and retried with ``backoff`` until it is back. Errors a retry cannot
    fix (a wrong token, a malformed pattern) end it either way, raised as themselves (not
    inside an exception group).
    """
    failed: list[LoomError] = []
    failures = 0  # consecutive failed attempts
    said = announce

    def connected() -> None:
        nonlocal failures
        print(said, file=err, flush=True)
        failures = 0

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

            async def consume() -> None:
                nonlocal failures, said
                try:
                    while True:
                        try:
                            await attempt(connected)
                            return
                        except _RETRYABLE as exc:
                            if not follow:
                                raise
                            failures += 1
                            if failures == 1:
                                print(
                                    f"lost {conn.address} ({_one_line(exc)}); reconnecting"
                                    + lost_note,
                                    file=err,
                                    flush=True,
                                )
                                said = f"reconnected: tailing {pattern} on {conn.address}"
                            await anyio.sleep(backoff.delay(failures))
                except LoomError as exc:
                    failed.append(exc)
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(stop_on_signal)
            tg.start_soon(consume)
    if failed:
        raise failed[0]


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
    err: TextIO = sys.stderr,
) -> int:
    """``loom publish``: one event on ``topic`` through ``EventBus.Publish``; a note on
    ``err`` when no subscription on the server matched it (nobody received it).

    The tier says how long the server may hold the publish back while a lossless subscriber
    is full: ``BATCHED`` and ``BACKGROUND`` wait up to the connection's timeout; ``REALTIME``
    gives up after one second rather than wait (the event may then have reached the
    subscribers that had room and not the others, as a cancelled ``EventBus.publish`` does).
    """
    event = Event(type=type, source=source, payload=data, metadata=dict(metadata or {}))
    limit = min(conn.timeout, 1.0) if qos is QoS.REALTIME else conn.timeout
    async with conn.client() as admin:
        before = _unrouted(await admin.statistics(topics=True), topic)
        outcome = await admin.publish(topic, [event], timeout=limit)
        if outcome.rejections:
            r = outcome.rejections[0]
            raise LoomError(f"not published: {r.code}: {r.reason}")
        after = _unrouted(await admin.statistics(topics=True), topic)
    print(f"published {event.id} to {topic} ({len(data)} bytes)", file=out)
    if after > before:
        # The publish reply carries no delivery count; the bus's per-topic counters do.
        # Another publisher to the same topic at the same instant could make this say so
        # wrongly, never the other way round.
        print(
            f"note: no subscription matched {topic}: nobody received it "
            "(see `loom agents` and `loom topics --subscriptions`)",
            file=err,
        )
    return 0


def _unrouted(stats: BusStats, topic: str) -> int:
    """How many events published on ``topic`` matched no subscription, so far."""
    return next((t.unrouted for t in stats.topics if t.topic == topic), 0)


async def call(
    conn: Connection,
    tool: str,
    arguments: str,
    *,
    timeout: float | None = None,
    stream: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    """``loom call``: call a tool through ``ToolService.Call`` and print its output (as
    indented JSON, or as text when the output is not JSON).

    With ``stream`` (``ToolService.CallStream``), the pieces of a streaming tool's partial
    output are printed as they come, as they are (no separator added), then the output on a
    line of its own; a server that predates it sends the output only.

    Raises:
        ToolError: the call ended with any status but ``TOOL_OK``: the runtime's own tool
            error for it (``ToolNotFound``, ``InvalidToolArguments``, ``ToolTimeout``,
            ``ToolPermissionDenied``, ``ToolFailed``), as every client rebuilds it.
    """
    printed = False  # some partial output is on the line (the output starts a new one)

    async def show(piece: str) -> None:
        nonlocal printed
        out.write(piece)
        out.flush()
        printed = not piece.endswith("\n")

    async with conn.client() as admin:
        outcome = await admin.call_tool(
            tool, arguments, timeout=timeout, on_output=show if stream else None
        )
    if printed:
        out.write("\n")
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


async def tools(
    conn: Connection,
    *,
    prefix: str = "",
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``loom tools``: every tool the server can call (its runtime's, its MCP servers', its
    agents' capabilities), one a line; with ``as_json`` one object a line, schema included."""
    async with conn.client() as admin:
        found = await admin.list_tools(prefix=prefix)
    if as_json:
        for tool in found:
            record = msgspec.to_builtins(tool)
            record["provider"] = tool.provider.name.lower()
            with contextlib.suppress(msgspec.DecodeError):  # the schema as JSON, not as text
                record["parameters_schema"] = msgspec.json.decode(tool.parameters_schema or "{}")
            _json_line(record, out)
        return 0
    if not found:
        print("no tools" + (f" starting with {prefix!r}" if prefix else ""), file=out)
        return 0
    clustered = any("loom.node" in tool.metadata for tool in found)
    rows = [
        ["TOOL", "FROM", "NODE", "DESCRIPTION"] if clustered else ["TOOL", "FROM", "DESCRIPTION"]
    ]
    for tool in found:
        agent = tool.metadata.get("loom.agent")
        where = f"agent {agent}" if agent else "server"
        node = [tool.metadata.get("loom.node", "-")] if clustered else []
        rows.append([tool.name, where, *node, _first_line(tool.description, 60)])
    _table(rows, out)
    return 0


def _first_line(text: str, width: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "-"
    return line if len(line) <= width else line[: width - 1] + "…"


async def status(conn: Connection, *, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """``loom status``: whether the server answers, its version and uptime, and the counts of
    agents, topics, tool calls and drops. Exits 1 (with the reason) when it does not answer."""
    async with conn.client() as admin:
        state = await admin.status()
    if as_json:
        _json_line({"address": conn.address, "serving": True, **msgspec.to_builtins(state)}, out)
        return 0
    for label, value in _status_lines(conn.address, state):
        print(f"{label + ':':<12} {value}", file=out)
    return 0


def _status_lines(address: str, s: ServerStatus) -> list[tuple[str, str]]:
    return [
        ("server", f"{address}: serving, loom {s.version}"),
        ("uptime", f"{_duration(s.uptime_s)} (since {_utc(s.started_ms)})"),
        ("agents", f"{s.agents} ({s.connected} connected remotely)"),
        ("bus", f"{s.topics} topics, {s.subscriptions} subscriptions"),
        ("events", f"{s.published} published, {s.dropped} dropped, {s.unrouted} unrouted"),
        (
            "tool calls",
            f"{s.tool_calls} done, {s.tool_calls_running} running, "
            f"{s.pending_tool_calls} waiting on remote agents",
        ),
        (
            "in flight",
            f"{s.in_flight} deliveries to remote agents, not yet taken in ({s.in_flight_bytes} "
            "bytes)",
        ),
        ("nats", _nats_line(s)),
        *([("llm cache", _cache_line(s))] if s.llm_cache != LLMCacheTotals() else []),
        (
            "approvals",
            f"{s.approvals_pending} waiting (since start: {s.approvals_approved} approved, "
            f"{s.approvals_denied} denied, {s.approvals_expired} expired"
            + (f", {s.approvals_answered} answered)" if s.approvals_answered else ")"),
        ),
        ("budgets", _budget_line(s)),
        *cluster_lines(s.cluster),
        # Counts above are of the namespace only, for a tenant's token: say so.
        *([("namespace", f"{s.namespace} (the counts above are its own)")] if s.namespace else []),
    ]


def _cache_line(s: ServerStatus) -> str:
    c = s.llm_cache
    return (
        f"{c.hits} hits, {c.misses} misses, {c.saved_tokens} tokens saved; "
        f"{c.entries} answers held ({c.bytes} bytes)"
    )


def _budget_line(s: ServerStatus) -> str:
    if not s.budget_window_s:
        return "not reported (an older server)"
    line = f"{s.budget_tokens} tokens, ${s.budget_cost_usd:.4f} spent"
    if s.budget_remote_calls:
        line += (
            f" ({s.budget_remote_tokens} tokens, ${s.budget_remote_cost_usd:.4f} by agents "
            "in their own process)"
        )
    if not s.namespace:
        line += f", {s.budget_exhausted} calls refused"
    if s.budget_top:
        top = s.budget_top[0]
        line += f"; most in the last {_duration(s.budget_window_s)}: {top.kind} {top.key} "
        line += f"({top.tokens} tokens)"
    return line


def _nats_line(s: ServerStatus) -> str:
    if s.nats == "embedded":
        restarts = f", {s.nats_restarts} restarts" if s.nats_restarts else ""
        state = "connected" if s.nats_connected else "disconnected"
        return f"embedded at {s.nats_url} ({state}{restarts}), store {s.nats_store_dir}"
    if s.nats == "external":
        return f"external at {s.nats_url} ({'connected' if s.nats_connected else 'disconnected'})"
    if s.nats == "off":
        return "off (memory only: durable subscriptions refused)"
    return "not reported (an older server)"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{seconds:.1f}s"


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def version(*, out: TextIO = sys.stdout) -> int:
    """``loom version``: this installation's version and what it runs on."""
    import grpc

    print(
        f"loom {loom_version()} (Python {platform.python_version()}, grpcio {grpc.__version__})",
        file=out,
    )
    return 0


_ANSWER = "agent.answer"
_STREAM_TAIL_S = 5.0  # how long a streamed answer's last pieces may trail its reply


async def ask(
    conn: Connection,
    target: str,
    text: bytes,
    *,
    thread: str = "",
    stream: bool = True,
    as_json: bool = False,
    timeout: float = 60.0,
    out: TextIO = sys.stdout,
) -> int:
    """``loom ask``: send ``text`` to an agent (by id: to its mailbox) or a topic, as a request,
    and print the reply.

    While a cognitive agent works on it, the pieces of its answer (``turn.text`` on the
    agent's ``agent.{id}.stream``, or any agent's for a topic) are printed as they come; the
    reply then ends the line (or, when it differs from what streamed, follows it). With
    ``as_json``, nothing streams and the reply prints as one JSON object.

    Raises:
        LoomError: no agent receives the target, the reply did not come within ``timeout``,
            or it is not an answer (``agent.error``, ``agent.cancelled``, ...): the message
            says which and why.
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout}")
    async with conn.client() as admin:
        # A tenant's token reads only inside its namespace, so its inbox is there too (a
        # server that predates tenants says "": the inbox is the old one).
        namespace = (await admin.status()).namespace
        prefix = f"{namespace}.cli" if namespace else "loom.cli"
        reply_to = f"{prefix}.ask.{new_id()}"  # this call's own inbox
        request = Event(
            type="request",
            source="loom-cli",
            payload=text,
            envelope=Envelope(thread_id=thread or new_id(), reply_to=reply_to),
        )
        known = {info.id for info in await admin.list_agents()}
        topic = mailbox_topic(target) if target in known else target
        if not await admin.list_agents(topic=topic):
            raise LoomError(f"no agent receives {target!r} (loom agents lists who is there)")
        pieces: list[str] = []
        reply: Event | None = None
        failure: LoomError | None = None
        turn_ended = anyio.Event()
        async with (
            admin.subscribe(reply_to, qos=QoS.BATCHED) as replies,
            # A tenant may not read every agent's stream ("*"): only a known agent's then.
            _stream_of(
                admin,
                target if target in known else "*",
                stream and not as_json and (target in known or not namespace),
            ) as parts,
            anyio.create_task_group() as tg,
        ):

            async def print_pieces() -> None:
                with contextlib.suppress(LoomError):  # a lost stream costs the preview only
                    await print_each(parts)

            async def print_each(parts: AsyncIterator[Delivery]) -> None:
                async for delivery in parts:
                    event = delivery.event
                    if event.metadata.get("event_id") != request.id:
                        continue  # another request's turn
                    if event.type == "turn.end":
                        turn_ended.set()
                        return
                    with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
                        piece = msgspec.json.decode(event.payload)["text"]
                        pieces.append(piece)
                        out.write(piece)
                        out.flush()

            tg.start_soon(print_pieces)
            # Raised after the task group, as itself rather than inside an exception group.
            try:
                outcome = await admin.publish(topic, [request], timeout=timeout)
                if outcome.rejections:
                    r = outcome.rejections[0]
                    failure = LoomError(f"not sent: {r.code}: {r.reason}")
                else:
                    with anyio.move_on_after(timeout):
                        async for delivery in replies:
                            if delivery.event.envelope.correlation_id == request.id:
                                reply = delivery.event
                                break
                    if reply is not None and pieces:
                        # The stream and the reply come on two subscriptions, so the reply may
                        # overtake the last pieces; the turn's end comes before its reply.
                        with anyio.move_on_after(_STREAM_TAIL_S):
                            await turn_ended.wait()
            except LoomError as exc:
                failure = exc
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if reply is None:
        if pieces:
            out.write("\n")
        raise DeadlineExceeded(f"no reply from {target!r} within {timeout:g} s")
    return _print_reply(target, reply, "".join(pieces), as_json, out)


@contextlib.asynccontextmanager
async def _stream_of(
    admin: AdminClient, agent: str, wanted: bool
) -> AsyncIterator[AsyncIterator[Delivery]]:
    """The ``turn.text`` and ``turn.end`` events of ``agent``'s stream (``*``: any agent's),
    or nothing."""
    if not wanted:
        yield _nothing()
        return
    pattern = f"agent.{agent}.stream"
    kinds = ("turn.text", "turn.end")
    async with admin.subscribe(pattern, qos=QoS.BATCHED, event_types=kinds) as parts:
        yield parts


async def _nothing() -> AsyncIterator[Delivery]:
    return
    yield


def _print_reply(target: str, reply: Event, streamed: str, as_json: bool, out: TextIO) -> int:
    answer = reply.payload.decode(errors="replace")
    if as_json:
        _json_line(
            {
                "type": reply.type,
                "source": reply.source,
                "thread_id": reply.envelope.thread_id,
                "metadata": reply.metadata,
                **_payload_fields(reply.payload),
            },
            out,
        )
    elif streamed:
        out.write("\n" if answer == streamed else f"\n{answer}\n")
    else:
        print(answer, file=out)
    out.flush()
    if reply.type.startswith("agent.") and reply.type != _ANSWER:
        why = reply.metadata.get("error") or reply.type.removeprefix("agent.").replace("_", " ")
        raise LoomError(f"{target} did not answer: {reply.type}: {why}")
    return 0
