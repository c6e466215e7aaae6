"""The argument parsers of ``loom run``, ``agents``, ``topics``, ``tail``, ``publish`` and
``call``, and the step from parsed flags to the objects the commands take.

``cli.py`` owns the command line: it registers these parsers with :func:`add_commands`, reads
``LOOM_BRIDGE_ADDR`` / ``LOOM_TOKEN`` from the environment and hands them to
:func:`run_command`, which builds a :class:`~loom.cli._commands.Connection` (flags win over the
environment) and calls ``anyio.run``. Nothing here reads the environment itself.
"""

from __future__ import annotations

import argparse
import functools
import math
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from loom.bridge import ClientTLS, ConnectFailed
from loom.runtime import LoomError, QoS

from . import _commands as commands
from . import _durable_commands as durable
from ._approval_commands import add_approval_parsers, approval_command
from ._runner import RunConfig, run

__all__ = ["COMMANDS", "EPILOG", "add_commands", "add_log_flags", "run_command"]

COMMANDS = (
    *("run", "status", "agents", "tools", "topics", "tail", "publish", "ask", "call"),
    *("replay", "dlq", "approvals", "approve", "deny", "answer", "version"),
)

EPILOG = """\
  loom run agents/                   # every agent file in agents/, supervised
  loom status                        # is the server up: version, uptime, counts
  loom agents                        # who is connected (LOOM_BRIDGE_ADDR, else :50051)
  loom tools                         # every tool the server can call
  loom topics                        # what is published where, delivered, dropped
  loom tail 'orders.>'               # print events as they are published
  loom tail 'orders.>' --since 10m   # the stored ones of the last 10 minutes
  loom replay 'orders.>' --since 1h --to orders.redo   # stored events, again
  loom dlq list                      # dead letters of durable subscriptions
  loom approvals                     # tool calls waiting for a human
  loom approve ID --note 'checked'   # let one run (loom deny ID: refuse it)
  loom answer ID 'Lyon'              # answer a turn's question to the user
  loom publish orders.new '{"id": 7}' --type order.created
  loom ask upperer 'hello'             # a request to an agent, and its reply
  loom call fs.read '{"path": "README.md"}'
  loom version
"""

_QOS = {q.name.lower(): q for q in QoS}
_RAW = argparse.RawDescriptionHelpFormatter


def add_log_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help=f"level of {what} (default info; debug shows Loom's own decisions)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help=f"format of {what}: text lines, or one JSON object per line (default text)",
    )


def _examples(text: str) -> str:
    return "examples:\n" + text


def _connection_flags(*, address_help: str) -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("connection")
    group.add_argument("-a", "--address", metavar="HOST:PORT", help=address_help)
    group.add_argument("--token", help="bearer token the server requires (default: $LOOM_TOKEN)")
    group.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    group.add_argument("--ca", type=Path, metavar="PEM", help="CA bundle to trust (implies --tls)")
    group.add_argument("--cert", type=Path, metavar="PEM", help="client certificate (mutual TLS)")
    group.add_argument("--key", type=Path, metavar="PEM", help="client key (mutual TLS)")
    group.add_argument(
        "--server-name", metavar="NAME", help="name to check the server's certificate against"
    )
    return flags


def _client_flags() -> argparse.ArgumentParser:
    flags = _connection_flags(
        address_help="server address (default: $LOOM_BRIDGE_ADDR, else 127.0.0.1:50051)"
    )
    flags.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up when the server has not answered in this long (default 5; call: 30)",
    )
    return flags


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    examples: str,
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        # Raw formatting keeps the examples' layout, so the prose is wrapped here.
        description=textwrap.fill(description, 79),
        epilog=_examples(examples),
        formatter_class=_RAW,
        parents=parents,
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the parsers of :data:`COMMANDS` on ``loom``'s subparsers."""
    client = _client_flags()

    p = _add(
        sub,
        "run",
        help="run agent files as supervised subprocesses",
        description=(
            "Run the agents of PATH (a .py file, or a folder of them: its *.py files not "
            "starting with '_') in one subprocess each, connected to the server at --address "
            "(default: $LOOM_BRIDGE_ADDR, else 127.0.0.1:50051, where `loom serve` listens), "
            "or with --embedded to a server started here. An agent is a module-level "
            "variable bound to an Agent instance (names starting with '_' are skipped; the "
            "file's `if __name__ == '__main__'` block does not run). Each agent retries its "
            "first connection until the server is up (--connect-timeout; default forever). "
            "Output lines are prefixed with the time and [agent-id]; a crashed agent is "
            "restarted with capped, jittered backoff, but one the server refuses for good "
            "(wrong token, not permitted) or whose file cannot be loaded stops the run with "
            "exit code 1. SIGINT/SIGTERM stops every agent cleanly: it takes no new events or "
            "calls, those in progress get --grace seconds, then it disconnects (killed 2 s "
            "after the grace if still running)."
        ),
        examples=(
            "  loom run agents/                        # to loom serve on 127.0.0.1:50051\n"
            "  loom run echo.py planner.py --embedded --port 50052\n"
            "  loom run agents/ -a 10.0.0.5:50051 --token $TOKEN --tls\n"
            "  loom run agents/ --log-format json --grace 30\n"
            "\n"
            "  # agents/echo.py\n"
            "  from loom import Agent\n"
            "\n"
            "  async def on_event(ctx, topic, event):\n"
            "      print('got', event.payload)\n"
            "\n"
            "  echo = Agent('echo', topics=['demo.*'], on_event=on_event)\n"
        ),
        parents=[
            _connection_flags(
                address_help="server address (default: $LOOM_BRIDGE_ADDR, else 127.0.0.1:50051)"
            )
        ],
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="agent file or folder")
    p.add_argument(
        "--embedded",
        action="store_true",
        help="start a server in this process instead of connecting to one (memory only: "
        "no NATS, so durable agents are refused; use loom serve for those)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="with --embedded: the server's port (default 0: a free one, printed)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds a stopping agent gives the handler and tool calls in progress (default 5)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on an agent's first connection after this long (default: never)",
    )
    p.add_argument(
        "--id-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long an agent waits for its id while a live connection has it (another "
        "process of it) before giving up (default 30; an id the server still holds for an "
        "ended connection is waited for until the server frees it)",
    )
    add_log_flags(p, "the agents' log")
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="the agents export traces over OTLP/gRPC there (default "
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )
    p.add_argument(
        "--trace-sample",
        type=float,
        metavar="RATIO",
        help="the share of new traces the agents keep, 0..1 (default $OTEL_TRACES_SAMPLER)",
    )
    p.add_argument(
        "--traceback",
        action="store_true",
        help="log the traceback of each failure in an agent's code (else only at debug)",
    )

    p = _add(
        sub,
        "agents",
        help="list the server's agents",
        description="List the agents the server knows, local and remote, with their status, "
        "mailbox depth, running tool calls, restarts, last heartbeat, topics and tools.",
        examples=(
            "  loom agents\n"
            "  loom agents --capability fs.read      # who offers the tool fs.read\n"
            "  loom agents --topic orders.eu.new     # who would receive that topic\n"
            "  loom agents --json | jq .status\n"
            "  loom agents release worker-1 --token $LOOM_ADMIN_TOKEN   # free the id\n"
        ),
        parents=[client],
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("release",),
        help="release ID: free a remote agent's id (ends its stream; needs the admin token)",
    )
    p.add_argument("agent_id", nargs="?", metavar="ID", help="the agent id to release")
    p.add_argument("--capability", default="", metavar="TOOL", help="only agents offering TOOL")
    p.add_argument("--topic", default="", help="only agents that would receive TOPIC")
    p.add_argument(
        "--all",
        dest="everyone",
        action="store_true",
        help="also agents disconnected for longer than the server's liveness window",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = _add(
        sub,
        "status",
        help="show whether the server answers, its version, uptime and counts",
        description="Ask the server how it is: its version and uptime, how many agents it "
        "knows (and how many are connected remotely), topics and subscriptions on its bus, "
        "events published, dropped and unrouted, and tool calls done, running and waiting. "
        "Exits 1 with the reason when no server answers.",
        examples="  loom status\n  loom status --json | jq .uptime_s\n",
        parents=[client],
    )
    p.add_argument("--json", action="store_true", help="the status as one JSON object")

    p = _add(
        sub,
        "tools",
        help="list every tool the server can call",
        description="List the tools the server can call: its runtime's own, its MCP "
        "servers', and the capabilities of connected agents (FROM names the agent). "
        "With --json, one object per tool with its JSON Schema.",
        examples=("  loom tools\n  loom tools --prefix fs.\n  loom tools --json | jq -r .name\n"),
        parents=[client],
    )
    p.add_argument("--prefix", default="", help="only tools whose name starts with PREFIX")
    p.add_argument("--json", action="store_true", help="one JSON object per tool, with schema")

    _add(
        sub,
        "version",
        help="print loom's version",
        description="Print the installed loom's version, and the Python and grpcio it runs on.",
        examples="  loom version\n  loom --version\n",
        parents=[],
    )

    p = _add(
        sub,
        "topics",
        help="show the bus's per-topic statistics",
        description="Show the server bus's counters: totals, then per topic published, "
        "delivered, dropped and unrouted events (and, with --subscriptions, every "
        "subscription's queue).",
        examples="  loom topics\n  loom topics --subscriptions\n  loom topics --json\n",
        parents=[client],
    )
    p.add_argument("--subscriptions", action="store_true", help="also list subscriptions")
    p.add_argument("--json", action="store_true", help="the statistics as one JSON object")

    p = _add(
        sub,
        "tail",
        help="print events on a topic pattern as they are published",
        description="Subscribe to PATTERN ('*' one segment, '>' the rest) and print one line "
        "per event (topic, type, id, payload preview) until Ctrl-C. Events published before "
        "the subscription is live are not shown. With --since, print the events the server "
        "stored (durable topics, with `loom serve`'s NATS) from then on instead, and exit; "
        "add --follow to go on with live ones.",
        examples=(
            "  loom tail 'orders.>'\n"
            "  loom tail 'agent.*.replies' --type reply\n"
            "  loom tail '>' --json --count 10 | jq .payload\n"
            "  loom tail 'orders.>' --follow          # across server restarts\n"
            "  loom tail 'orders.>' --since 10m       # stored events of the last 10 minutes\n"
            "  loom tail 'orders.>' --since 2026-12-04T10:00 --follow\n"
        ),
        parents=[client],
    )
    p.add_argument("pattern", metavar="PATTERN", help="topic pattern")
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        default=[],
        metavar="TYPE",
        help="only events of this type (repeatable)",
    )
    p.add_argument(
        "--qos",
        choices=list(_QOS),
        default="realtime",
        help="tier of the subscription: realtime (default) drops when tail falls behind; "
        "batched and background hold publishers back instead",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--count", type=int, default=0, help="exit after N events (default: never)")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep going when the server goes away: subscribe again once it is back "
        "(with --since: go on with live events after the stored ones)",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="first print the stored events from WHEN: a duration ago (10m, 2h, 7d), a "
        "moment (2026-12-04T10:00, local time) or a log sequence (1234)",
    )

    p = _add(
        sub,
        "replay",
        help="publish stored events again on another topic, for reprocessing",
        description="Publish every event the server stored on PATTERN (from --since to "
        "--until, oldest first) again on TOPIC, each under a new id with metadata "
        "loom.replayed_from (the topic it was stored on) and loom.replay_of (its id). "
        "Needs the server's durable log (not `loom serve --nats off`).",
        examples=(
            "  loom replay 'orders.>' --since 1h --to orders.reprocess\n"
            "  loom replay orders.eu --since 1200 --until 1300 --to orders.reprocess\n"
        ),
        parents=[client],
    )
    p.add_argument("pattern", metavar="PATTERN", help="topic pattern of the stored events")
    p.add_argument("--to", required=True, metavar="TOPIC", help="the topic to publish them on")
    p.add_argument("--since", metavar="WHEN", help="from (as for tail; default: the oldest)")
    p.add_argument("--until", metavar="WHEN", help="to, inclusive (default: the newest now)")

    p = _add(
        sub,
        "dlq",
        help="list, show, retry or drop dead letters",
        description="The dead letters of durable subscriptions (events given up after their "
        "last attempt, stored on loom.dlq.NAME). list: all of them (or one durable name's), "
        "with the ID the other actions take; show ID: one, with its original event, reason, "
        "attempts and last error; retry ID: publish the original event again on its original "
        "topic (metadata loom.retry_of) and drop the dead letter; drop ID: delete it. retry "
        "and drop need the server's admin token as --token when it has one.",
        examples=(
            "  loom dlq list\n"
            "  loom dlq list billing --json\n"
            "  loom dlq show 42\n"
            '  loom dlq retry 42 --token "$LOOM_ADMIN_TOKEN"\n'
            "  loom dlq drop 42\n"
        ),
        parents=[client],
    )
    p.add_argument("action", choices=("list", "show", "retry", "drop"), help="what to do")
    p.add_argument(
        "target",
        nargs="?",
        default="",
        metavar="ID|DURABLE",
        help="the dead letter's ID (show, retry, drop); a durable name (list, optional)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per dead letter")

    add_approval_parsers(sub, _add, client)

    p = _add(
        sub,
        "publish",
        help="publish one event",
        description="Publish one event on TOPIC. DATA is the payload: the text itself, "
        "@PATH for a file's bytes, or - for standard input.",
        examples=(
            "  loom publish orders.new '{\"id\": 7}' --type order.created\n"
            "  loom publish reports.daily @report.pdf --meta lang=en\n"
            "  echo hello | loom publish demo.greetings -\n"
        ),
        parents=[client],
    )
    p.add_argument("topic", metavar="TOPIC", help="concrete topic (no wildcards)")
    p.add_argument("data", metavar="DATA", help="payload: text, @file, or - for stdin")
    p.add_argument("--type", default="message", help="the event's type (default: message)")
    p.add_argument(
        "--qos",
        choices=list(_QOS),
        default="batched",
        help="batched/background (default): wait up to --timeout while a lossless subscriber "
        "is full; realtime: give up after 1 s instead",
    )
    p.add_argument("--source", default="loom-cli", help="the event's source (default: loom-cli)")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a metadata entry (repeatable)",
    )

    p = _add(
        sub,
        "ask",
        help="send a request to an agent or a topic and print the reply",
        description="Send TEXT as a request to TARGET: an agent's id (its mailbox) or a "
        "topic, and print the reply. A cognitive agent's answer streams as it is written, "
        "then the reply ends it. Exits 1 when no agent receives TARGET, no reply comes "
        "within --timeout, or the reply is not an answer (agent.error, agent.cancelled, ...). "
        "TEXT may be @PATH for a file, or - for standard input.",
        examples=(
            "  loom ask upperer 'hello'\n"
            "  loom ask assistant 'What is in README.md?' --thread docs\n"
            "  loom ask questions.general @question.txt --timeout 120\n"
            "  loom ask assistant 'hi' --json | jq -r .payload\n"
        ),
        parents=[client],
    )
    p.add_argument("target", metavar="TARGET", help="an agent's id, or a topic")
    p.add_argument("text", metavar="TEXT", help="the request: text, @file, or - for stdin")
    p.add_argument(
        "--thread", default="", help="the conversation it belongs to (default: a new one)"
    )
    p.add_argument("--no-stream", dest="stream", action="store_false", help="print the reply only")
    p.add_argument("--json", action="store_true", help="the reply as one JSON object")

    p = _add(
        sub,
        "call",
        help="call a tool and print its output",
        description="Call TOOL with JSON arguments (an object; default {}) through the "
        "server: a tool of its runtime, of an MCP server or of a connected agent. Prints the "
        "output; on failure prints the status (TOOL_NOT_FOUND, TOOL_INVALID_ARGUMENTS, "
        "TOOL_TIMEOUT, TOOL_ERROR) and the message, and exits 1. A tool that streams "
        "partial output (a remote A2A agent, say) has its pieces printed as they come, "
        "then the output on a line of its own; --no-stream prints the output only.",
        examples=(
            "  loom call clock.now                    # on every loom serve\n"
            '  loom call fs.read \'{"path": "README.md"}\'   # with [tools.fs] in loom.toml\n'
            "  loom call text.upper @args.json --timeout 60   # an agent's capability\n"
            '  loom call a2a.helper \'{"message": "hi"}\'   # its pieces, then its output\n'
            '  loom call a2a.helper \'{"message": "hi"}\' --no-stream   # the output only\n'
        ),
        parents=[client],
    )
    p.add_argument("tool", metavar="TOOL", help="the tool's name")
    p.add_argument("arguments", nargs="?", default="{}", metavar="JSON", help="object, @file, or -")
    p.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="print the output only, not the partial output that streams before it",
    )


def _tls(args: argparse.Namespace) -> ClientTLS | None:
    if (args.cert is None) != (args.key is None):
        raise commands.UsageError("--cert and --key go together (mutual TLS)")
    if not (args.tls or args.ca or args.cert):
        return None

    def read(path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise commands.UsageError(
                f"cannot read the {what} {str(path)!r}: {exc.strerror}"
            ) from None

    return ClientTLS(
        root_certificates=read(args.ca, "CA bundle"),
        certificate_chain=read(args.cert, "client certificate"),
        private_key=read(args.key, "client key"),
        server_name=args.server_name,
    )


def _connection(
    args: argparse.Namespace, env_address: str | None, env_token: str | None, timeout: float
) -> commands.Connection:
    return commands.Connection(
        address=args.address or env_address or commands.DEFAULT_ADDRESS,
        token=args.token or env_token or None,
        tls=_tls(args),
        timeout=args.timeout if args.timeout is not None else timeout,
    )


def _build(
    args: argparse.Namespace, env_address: str | None, env_token: str | None
) -> Callable[[], Awaitable[int]]:
    if args.command == "run":
        if args.embedded and args.address:
            raise commands.UsageError("--embedded starts a server here: leave out --address")
        if args.port and not args.embedded:
            raise commands.UsageError("--port is the embedded server's: add --embedded")
        if not (args.grace >= 0 and math.isfinite(args.grace)):
            raise commands.UsageError(f"--grace must be >= 0 seconds, not {args.grace}")
        if args.connect_timeout is not None and not args.connect_timeout > 0:
            raise commands.UsageError(
                f"--connect-timeout must be > 0 seconds, not {args.connect_timeout}"
            )
        if not (args.id_wait >= 0 and math.isfinite(args.id_wait)):
            raise commands.UsageError(f"--id-wait must be >= 0 seconds, not {args.id_wait}")
        if args.trace_sample is not None and not 0 <= args.trace_sample <= 1:
            raise commands.UsageError(
                f"--trace-sample must be within 0..1, not {args.trace_sample}"
            )
        config = RunConfig(
            paths=tuple(args.paths),
            address=args.address or env_address or commands.DEFAULT_ADDRESS,
            embedded=args.embedded,
            token=args.token or env_token or None,
            tls=_tls(args),
            port=args.port,
            grace=args.grace,
            connect_timeout=args.connect_timeout,
            id_wait=args.id_wait,
            log_level=args.log_level,
            log_format=args.log_format,
            traceback=args.traceback,
            otlp_endpoint=args.otlp_endpoint,
            trace_sample=args.trace_sample,
        )
        return functools.partial(run, config)
    if args.command == "version":
        return _sync(commands.version)
    waits = {"call": 30.0, "ask": 60.0}  # a tool or a model may take a while
    conn = _connection(args, env_address, env_token, waits.get(args.command, 5.0))
    match args.command:
        case "agents" if args.action == "release":
            if not args.agent_id:
                raise commands.UsageError("loom agents release needs the agent ID")
            return functools.partial(commands.release, conn, args.agent_id)
        case "status":
            return functools.partial(commands.status, conn, as_json=args.json)
        case "approvals" | "approve" | "deny" | "answer":
            return approval_command(conn, args)
        case "tools":
            return functools.partial(commands.tools, conn, prefix=args.prefix, as_json=args.json)
        case "agents":
            if args.agent_id:
                raise commands.UsageError(f"unexpected argument {args.agent_id!r}")
            return functools.partial(
                commands.agents,
                conn,
                capability=args.capability,
                topic=args.topic,
                everyone=args.everyone,
                as_json=args.json,
            )
        case "topics":
            return functools.partial(
                commands.topics, conn, subscriptions=args.subscriptions, as_json=args.json
            )
        case "tail" if args.since:
            return functools.partial(
                durable.tail_stored,
                conn,
                args.pattern,
                durable.parse_position(args.since, "--since"),
                qos=_QOS[args.qos],
                event_types=tuple(args.types),
                as_json=args.json,
                count=args.count,
                follow=args.follow,
            )
        case "replay":
            return functools.partial(
                durable.replay,
                conn,
                args.pattern,
                args.to,
                since=None if args.since is None else durable.parse_position(args.since, "--since"),
                until=None if args.until is None else durable.parse_position(args.until, "--until"),
            )
        case "dlq":
            return _dlq(conn, args)
        case "tail":
            return functools.partial(
                commands.tail,
                conn,
                args.pattern,
                qos=_QOS[args.qos],
                event_types=tuple(args.types),
                as_json=args.json,
                count=args.count,
                follow=args.follow,
            )
        case "publish":
            return functools.partial(
                commands.publish,
                conn,
                args.topic,
                commands.read_data(args.data),
                type=args.type,
                qos=_QOS[args.qos],
                source=args.source,
                metadata=commands.parse_metadata(args.meta),
            )
        case "ask":
            return functools.partial(
                commands.ask,
                conn,
                args.target,
                commands.read_data(args.text),
                thread=args.thread,
                stream=args.stream,
                as_json=args.json,
                timeout=conn.timeout,
            )
        case "call":
            text = args.arguments
            if text == "-" or text.startswith("@"):
                text = commands.read_data(text).decode(errors="replace")
            return functools.partial(
                commands.call,
                conn,
                args.tool,
                commands.parse_arguments(text),
                timeout=conn.timeout,
                stream=args.stream,
            )
    raise AssertionError(f"not a client command: {args.command}")


def _dlq(conn: commands.Connection, args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    if args.action == "list":
        return functools.partial(durable.dlq_list, conn, args.target, as_json=args.json)
    if not args.target.isdigit():
        raise commands.UsageError(
            f"loom dlq {args.action} needs the dead letter's ID (a number; see `loom dlq list`)"
        )
    sequence = int(args.target)
    if args.action == "show":
        return functools.partial(durable.dlq_show, conn, sequence, as_json=args.json)
    if args.action == "retry":
        return functools.partial(durable.dlq_retry, conn, sequence)
    return functools.partial(durable.dlq_drop, conn, sequence)


def _sync(fn: Callable[[], int]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return fn()

    return run


def run_command(args: argparse.Namespace, *, env_address: str | None, env_token: str | None) -> int:
    """Build the command ``args`` names, run it, and return the process's exit code.

    A Loom error (an unreachable server, a refused call, bad input) is printed as one line
    on stderr, ``loom <command>: <message>``, with exit code 1 (2 for bad input), never a
    traceback.
    """
    if args.command == "run":
        # Until its own signal handling is up (discovery imports the agent files first), a
        # SIGTERM stops `loom run` as a Ctrl-C does: quietly, nothing started is left.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main = _build(args, env_address, env_token)
        return anyio.run(main)
    except LoomError as exc:
        message = str(exc)
        if isinstance(exc, ConnectFailed):
            message += " (is `loom serve` running there? set --address or LOOM_BRIDGE_ADDR)"
        print(f"loom {args.command}: {message}", file=sys.stderr)
        return commands.exit_code_of(exc)
    except KeyboardInterrupt:  # a Ctrl-C before the command's own signal handling is up
        return 0 if args.command == "run" else 130
