"""The ``loom`` command line: parse, build the config, run. Nothing else lives here."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from loom.bridge import BridgeError, loom_version
from loom.cluster import NatsError
from loom.runtime import ConfigError, InvalidArgument
from loom.web import WebError

from .._logging import configure_logging
from ._config import SERVE_KEYS, load_config, load_tables, show_config
from ._parsers import EPILOG as _COMMANDS_EPILOG
from ._parsers import add_commands, run_command
from ._serve import serve

__all__ = ["main"]

_EPILOG = """\
examples:
  loom serve                         # 127.0.0.1:50051, data in ./.loom
  LOOM_BRIDGE_ADDR=127.0.0.1:6000 loom serve   # where clients with that variable look
  loom serve --port 0 --log-level debug
  loom serve --log-format json       # one JSON object per log line
  loom serve --nats off              # memory only: no nats-server, nothing durable
  loom serve --no-metrics            # no meters; /metrics answers 404
  LOOM_NATS_TOKEN=... loom serve --nats nats://10.0.0.7:4222   # an existing NATS server
  loom config                        # what loom serve would run with, and where each is from
  LOOM_DATA_DIR=/var/lib/loom loom serve --config /etc/loom/loom.toml
  LOOM_TOKEN=$(cat /run/secrets/loom) loom serve --host 0.0.0.0 \\
      --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem \\
      --tls-bind-agent-ids            # each agent's certificate names it (CN or DNS SAN)
"""


def _serve_flags() -> argparse.ArgumentParser:
    """The flags of ``loom serve``, shared with ``loom config`` (which shows what they make)."""
    s = argparse.ArgumentParser(add_help=False)
    s.add_argument(
        "--config",
        type=Path,
        default=None,
        help="loom.toml to read (default: ./loom.toml if present)",
    )
    s.add_argument(
        "--host", help="address to bind (LOOM_HOST; default: of LOOM_BRIDGE_ADDR, else 127.0.0.1)"
    )
    s.add_argument(
        "--port",
        type=int,
        help="port (LOOM_PORT; default: of LOOM_BRIDGE_ADDR, else 50051; 0 picks one)",
    )
    s.add_argument("--data-dir", help="durable state directory (LOOM_DATA_DIR; default .loom)")
    s.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="LOOM_LOG_LEVEL; default info (debug shows Loom's own decisions)",
    )
    s.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="LOOM_LOG_FORMAT: text lines (default) or one JSON object per line",
    )
    s.add_argument(
        "--drain-grace", type=float, dest="drain_grace_s", help="seconds to drain on stop"
    )
    s.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export traces over OTLP/gRPC there (http://host:4317; default "
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )
    s.add_argument(
        "--trace-sample",
        type=float,
        metavar="RATIO",
        help="keep this share of new traces, 0..1 (parent-based; default $OTEL_TRACES_SAMPLER)",
    )
    s.add_argument(
        "--settle",
        type=float,
        dest="settle_s",
        help="seconds after start that publishes nobody is subscribed to wait for agents to "
        "reattach (LOOM_SETTLE; default 2, 0: off)",
    )
    s.add_argument(
        "--stale-after",
        type=float,
        dest="stale_after_s",
        help="seconds of silence after which an agent is stale and its pending tool calls "
        "fail with AGENT_UNRESPONSIVE (LOOM_STALE_AFTER; default 15)",
    )
    sec = s.add_argument_group(
        "security", "A non-loopback --host needs a token, TLS, or both (else loom refuses)."
    )
    sec.add_argument(
        "--token", help="bearer token every call must carry (LOOM_TOKEN; prefer the variable)"
    )
    sec.add_argument(
        "--admin-token",
        help="operator token: reads every mailbox, releases agent ids (LOOM_ADMIN_TOKEN; "
        "prefer the variable)",
    )
    sec.add_argument("--tls-cert", dest="tls_cert_file", help="TLS certificate chain, PEM")
    sec.add_argument("--tls-key", dest="tls_key_file", help="TLS private key, PEM")
    sec.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        help="CA for client certificates: turns on mutual TLS",
    )
    sec.add_argument(
        "--tls-bind-agent-ids",
        dest="tls_bind_agent_ids",
        action="store_true",
        default=None,
        help="with --tls-client-ca: a client acts only as an agent its certificate names "
        "(common name or DNS name; LOOM_TLS_BIND_AGENT_IDS)",
    )
    nats = s.add_argument_group(
        "durability (NATS JetStream)",
        "By default loom serve starts its own nats-server (JetStream under DATA_DIR/nats).",
    )
    nats.add_argument(
        "--nats",
        metavar="embedded|off|URL",
        help="embedded (default): a nats-server child; off: memory only, durable "
        "subscriptions refused; URL: an existing server or cluster, e.g. nats://host:4222, "
        "comma-separated (LOOM_NATS_URL)",
    )
    nats.add_argument("--nats-token", help="with --nats URL: its token (LOOM_NATS_TOKEN)")
    nats.add_argument("--nats-user", help="with --nats URL: user name (LOOM_NATS_USER)")
    nats.add_argument(
        "--nats-password", help="with --nats-user: password (LOOM_NATS_PASSWORD; prefer it)"
    )
    nats.add_argument(
        "--nats-creds", dest="nats_creds_file", help="with --nats URL: credentials file"
    )
    nats.add_argument(
        "--nats-tls-ca", dest="nats_tls_ca_file", help="with --nats URL: CA of the server (PEM)"
    )
    nats.add_argument(
        "--nats-tls-cert", dest="nats_tls_cert_file", help="client certificate (mutual TLS)"
    )
    nats.add_argument("--nats-tls-key", dest="nats_tls_key_file", help="its private key (PEM)")
    nats.add_argument(
        "--node",
        help="this server's name among the loom serve nodes sharing one NATS: with --nats URL "
        "they form one cluster, docs/cluster.md (default: the host's name; LOOM_NODE)",
    )
    nats.add_argument(
        "--cluster-heartbeat",
        type=float,
        dest="cluster_heartbeat_s",
        help="with NATS URLs: seconds between this node's heartbeats; silent 1.5 times that, "
        "a node is dead to the others (LOOM_CLUSTER_HEARTBEAT; default 2)",
    )
    nats.add_argument(
        "--cluster-hold",
        type=float,
        dest="cluster_hold_s",
        help="with NATS URLs: seconds a node silent for three heartbeats keeps its lossless "
        "link here (heard again within them, it loses nothing; LOOM_CLUSTER_HOLD; default 30)",
    )
    nats.add_argument(
        "--cluster-hold-bytes",
        type=int,
        dest="cluster_hold_bytes",
        help="the most lossless payload held for one silent node; past it the node is dropped "
        "(LOOM_CLUSTER_HOLD_BYTES; default 16777216)",
    )
    web = s.add_argument_group(
        "HTTP (health, metrics, the dashboard)",
        "Its own port; a non-loopback address needs the token or TLS, as --host does.",
    )
    web.add_argument(
        "--http",
        metavar="HOST:PORT|off",
        help="where the HTTP port listens, or off (LOOM_HTTP; default 127.0.0.1:50052, "
        "a free port with --port 0)",
    )
    web.add_argument("--http-host", help="its address alone (LOOM_HTTP_HOST; default 127.0.0.1)")
    web.add_argument("--http-port", type=int, help="its port alone (LOOM_HTTP_PORT; default 50052)")
    web.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep metrics (/metrics, OTLP export; the default); --no-metrics: none at all, "
        "/metrics answers 404 (LOOM_METRICS; [serve] metrics)",
    )
    lim = s.add_argument_group("limits")
    lim.add_argument("--max-message-bytes", type=int, help="largest gRPC message (4 MiB)")
    lim.add_argument("--max-topics-per-agent", type=int, help="patterns per agent (256)")
    lim.add_argument("--max-pending-tool-calls", type=int, help="unanswered calls per agent (1024)")
    lim.add_argument("--max-agents", type=int, help="registered agents (10000)")
    lim.add_argument(
        "--max-buffer-bytes",
        type=int,
        help="byte bound of each subscription buffer and stream queue (16 MiB)",
    )
    return s


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Loom: an event-driven runtime for AI agents.",
        epilog=_EPILOG + _COMMANDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"loom {loom_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_flags = _serve_flags()
    sub.add_parser(
        "serve",
        help="run a Loom server until SIGINT/SIGTERM",
        description=(
            "Run a Loom server: the event bus and everything on it. Settings come from "
            "loom.toml ([serve]), then LOOM_* environment variables, then these flags. "
            "It listens on $LOOM_BRIDGE_ADDR (the address clients and agents use) when set, "
            "unless LOOM_HOST/LOOM_PORT or --host/--port say otherwise."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[serve_flags],
    )
    c = sub.add_parser(
        "config",
        help="show the configuration loom serve would run with, and where each value is from",
        description=(
            "Print the configuration `loom serve` would run with given the same loom.toml, "
            "LOOM_* variables and flags, one setting a line with its source: flag, "
            "environment, loom.toml or default. Secrets are shown as ***. Exits 2 when the "
            "configuration is invalid, with the reason."
        ),
        epilog=(
            "examples:\n"
            "  loom config\n"
            "  LOOM_PORT=6000 loom config --port 7000     # the flag wins\n"
            "  loom config --json | jq .port.value\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[serve_flags],
    )
    c.add_argument("--json", action="store_true", help="one JSON object: key -> value, source")
    add_commands(sub)  # run, agents, topics, tail, publish, call (sdk/cli/_parsers.py)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings the flags of ``serve``/``config`` set (``None``: not given)."""
    return {key: getattr(args, key, None) for key in SERVE_KEYS}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``loom`` script."""
    args = _parser().parse_args(argv)
    if args.command not in ("serve", "config"):
        sys.exit(
            run_command(
                args,
                env_address=os.environ.get("LOOM_BRIDGE_ADDR"),
                env_token=os.environ.get("LOOM_TOKEN"),
            )
        )
    toml_path = args.config if args.config is not None else Path("loom.toml")
    if args.config is not None and not args.config.exists():
        sys.exit(f"loom: config file not found: {args.config}")
    if args.command == "config":
        sys.exit(show_config(toml_path, os.environ, _overrides(args), as_json=args.json))
    try:
        config = load_config(toml_path=toml_path, environ=os.environ, overrides=_overrides(args))
        tables = load_tables(toml_path=toml_path, environ=os.environ)
    except ConfigError as exc:
        sys.exit(f"loom: {exc}")
    configure_logging(config.log_level, config.log_format)
    try:
        anyio.run(functools.partial(serve, config, tables=tables, environ=os.environ))
    # Cannot bind, unreadable TLS files, no nats-server, NATS refuses the credentials.
    except (BridgeError, InvalidArgument, NatsError, WebError) as exc:
        sys.exit(f"loom: {exc}")
