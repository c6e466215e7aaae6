"""The ``loom`` command line: parse, build the config, run. Nothing else lives here."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from loom.bridge import BridgeError
from loom.runtime import ConfigError, InvalidArgument

from ._config import load_config, load_tables
from ._parsers import EPILOG as _COMMANDS_EPILOG
from ._parsers import add_commands, run_command
from ._serve import serve

__all__ = ["main"]

_EPILOG = """\
examples:
  loom serve                         # 127.0.0.1:50051, data in ./.loom
  loom serve --port 0 --log-level debug
  LOOM_DATA_DIR=/var/lib/loom loom serve --config /etc/loom/loom.toml
  LOOM_TOKEN=$(cat /run/secrets/loom) loom serve --host 0.0.0.0 \\
      --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem \\
      --tls-bind-agent-ids            # each agent's certificate names it (CN or DNS SAN)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Loom: an event-driven runtime for AI agents.",
        epilog=_EPILOG + _COMMANDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser(
        "serve",
        help="run a Loom server until SIGINT/SIGTERM",
        description=(
            "Run a Loom server: the event bus and everything on it. Settings come from "
            "loom.toml ([serve]), then LOOM_* environment variables, then these flags."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--config",
        type=Path,
        default=None,
        help="loom.toml to read (default: ./loom.toml if present)",
    )
    s.add_argument("--host", help="address to bind (LOOM_HOST; default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (LOOM_PORT; default 50051, 0 picks one)")
    s.add_argument("--data-dir", help="durable state directory (LOOM_DATA_DIR; default .loom)")
    s.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="LOOM_LOG_LEVEL"
    )
    s.add_argument(
        "--drain-grace", type=float, dest="drain_grace_s", help="seconds to drain on stop"
    )
    sec = s.add_argument_group(
        "security", "A non-loopback --host needs a token, TLS, or both (else loom refuses)."
    )
    sec.add_argument(
        "--token", help="bearer token every call must carry (LOOM_TOKEN; prefer the variable)"
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
    add_commands(sub)  # run, agents, topics, tail, publish, call (sdk/cli/_parsers.py)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``loom`` script."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        sys.exit(
            run_command(
                args,
                env_address=os.environ.get("LOOM_BRIDGE_ADDR"),
                env_token=os.environ.get("LOOM_TOKEN"),
            )
        )
    if args.command == "serve":
        toml_path = args.config if args.config is not None else Path("loom.toml")
        if args.config is not None and not args.config.exists():
            sys.exit(f"loom: config file not found: {args.config}")
        try:
            config = load_config(
                toml_path=toml_path,
                environ=os.environ,
                overrides={
                    "host": args.host,
                    "port": args.port,
                    "data_dir": args.data_dir,
                    "log_level": args.log_level,
                    "drain_grace_s": args.drain_grace_s,
                    "token": args.token,
                    "tls_cert_file": args.tls_cert_file,
                    "tls_key_file": args.tls_key_file,
                    "tls_client_ca_file": args.tls_client_ca_file,
                    "tls_bind_agent_ids": args.tls_bind_agent_ids,
                    "max_message_bytes": args.max_message_bytes,
                    "max_topics_per_agent": args.max_topics_per_agent,
                    "max_pending_tool_calls": args.max_pending_tool_calls,
                    "max_agents": args.max_agents,
                    "max_buffer_bytes": args.max_buffer_bytes,
                },
            )
            tables = load_tables(toml_path=toml_path, environ=os.environ)
        except ConfigError as exc:
            sys.exit(f"loom: {exc}")
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        try:
            anyio.run(functools.partial(serve, config, tables=tables, environ=os.environ))
        except (BridgeError, InvalidArgument) as exc:  # cannot bind, unreadable TLS files
            sys.exit(f"loom: {exc}")
