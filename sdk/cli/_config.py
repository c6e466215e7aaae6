"""One configuration object, built from ``loom.toml``, ``LOOM_*`` environment variables and
command-line flags (later sources win), and handed down. Nothing below the CLI reads
``os.environ`` or ``sys.argv``.
"""

from __future__ import annotations

import re
import socket
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import msgspec

from loom.bridge import Limits, Tenant, TLSConfig, is_loopback, token_weakness
from loom.cluster import NatsMode, NatsSettings, parse_nats, redact_url
from loom.runtime import ConfigError, InvalidArgument
from loom.runtime.llm import LLMConfig, LLMConfigError, load_llm_config
from loom.runtime.tools import McpConfigError, McpServerConfig, load_mcp_config
from loom.web import A2AAgent

from ._config_a2a import decode_a2a_cards, decode_a2a_expose
from ._config_a2a_remote import A2ARemote, decode_a2a_remote
from ._config_approvals import ApprovalsTable, decode_approvals
from ._config_budget import BudgetTable, decode_budget
from ._config_policy import (
    PolicyTables,
    check_llm_policies,
    decode_policy_tables,
    without_policy,
)
from ._hosted import AgentTable, ToolsTable, decode_agents, decode_tools
from ._tokens import decode_tokens

__all__ = [
    "SERVE_KEYS",
    "ServeConfig",
    "ServiceTables",
    "explain_config",
    "load_config",
    "load_tables",
    "show_config",
]

_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")


class ServeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``loom serve`` runs with.

    Attributes:
        host: address to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        data_dir: where durable state lives (created if missing).
        log_level: debug, info, warning or error.
        log_format: text or json (one object per line).
        drain_grace_s: seconds a shutdown waits for queued events to drain (and for calls in
            flight on the bridge to finish).
        settle_s: the settle window after the server starts: for at most this long,
            publishes that no subscription matches wait for agents to reattach (after a
            restart, publishers often reconnect before their subscribers); closes early after
            half of it with no agent registering or subscribing. 0 turns it off.
        stale_after_s: a remote agent silent this long is stale, and the tool calls pending
            on it fail with ``AGENT_UNRESPONSIVE``.
        token: bearer token every gRPC call must carry (``authorization: Bearer <token>``).
        admin_token: a second token, accepted wherever ``token`` is, that makes its caller the
            operator (reads every mailbox, ``loom agents release``).
        tls_cert_file: the server's TLS certificate chain (PEM); TLS is on when set.
        tls_key_file: its private key (PEM).
        tls_client_ca_file: CA bundle that client certificates must chain to (mutual TLS).
        tls_bind_agent_ids: (mutual TLS) a client acts only as an agent its certificate names
            (common name or DNS subject alternative name).
        max_message_bytes: largest gRPC message accepted or sent.
        max_topics_per_agent: topic patterns one agent may hold.
        max_pending_tool_calls: tool calls pushed to one agent and not yet answered.
        max_agents: registered agents.
        max_buffer_bytes: the byte bound of every subscription's buffer on the server's bus
            (agents' mailboxes included) and of each stream's own queues, next to their
            count bounds: a Realtime subscription drops beyond it (``bytes``), the others
            hold the publisher back.
        nats: where durable delivery lives: ``embedded`` (a ``nats-server`` child with
            JetStream under ``data_dir/nats``, the default), ``off`` (memory only: durable
            subscriptions are refused), or the URLs of an existing server or cluster
            (``nats://host:4222``, comma-separated).
        nats_token: with NATS URLs: the server's authorization token.
        nats_user: with NATS URLs: a user name (with ``nats_password``).
        nats_password: its password.
        nats_creds_file: with NATS URLs: a credentials file (JWT and NKey seed).
        nats_tls_ca_file: with NATS URLs: the CA that the server's certificate chains to.
        nats_tls_cert_file: with NATS URLs: a client certificate (mutual TLS) ...
        nats_tls_key_file: ... and its key.
        node: this server's name among the nodes sharing one NATS (``--node``); empty means
            the host's name. One NATS subject token: letters, digits, ``_`` and ``-``.
        otlp_endpoint: export traces over OTLP/gRPC to this URL (``--otlp-endpoint``); empty
            means the standard ``OTEL_EXPORTER_OTLP_*`` variables decide (none: no tracing).
        trace_sample: the share of new traces kept, 0..1 (``--trace-sample``); unset means
            ``OTEL_TRACES_SAMPLER`` decides (default: all). ``docs/observability.md``.
        cluster_heartbeat_s: with NATS URLs (a cluster): how often this node tells the
            others it is alive; a node silent for 1.5 times it is dead to them, its agents
            leave their directories and calls to them fail (``docs/cluster.md``).
        cluster_hold_s: how long a node silent for three heartbeats keeps its lossless link
            here (what is in flight to it, and what is published for it meanwhile): heard
            again in the same life within it (its NATS server hung), it gets all of it; past
            it, it is dropped and that is lost, counted (``docs/cluster.md``).
        cluster_hold_bytes: the most lossless payload held for one silent node; past it the
            node is dropped as past ``cluster_hold_s``.
        http: the HTTP port (health, metrics, the dashboard; ``docs/serve.md``) as one
            ``host:port``, or ``off``; empty means ``http_host`` and ``http_port`` say.
        http_host: the HTTP port's address (default ``127.0.0.1``); replaces ``http``'s.
        http_port: its port, replacing ``http``'s (default 50052; with ``port = 0``, a free
            one as well, so a server asked for any free port never collides on the fixed
            HTTP one).
        metrics: keep metrics (``/metrics`` and their OTLP export; ``--metrics``,
            ``--no-metrics``). ``false``: no meters at all, and ``/metrics`` answers 404
            (``docs/observability.md``, "Running without metrics").
    """

    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = ".loom"
    log_level: str = "info"
    log_format: str = "text"
    drain_grace_s: float = 5.0
    settle_s: float = 2.0
    stale_after_s: float = 15.0
    token: str | None = None
    admin_token: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    tls_bind_agent_ids: bool = False
    max_message_bytes: int = Limits().max_message_bytes
    max_topics_per_agent: int = Limits().max_topics_per_agent
    max_pending_tool_calls: int = Limits().max_pending_tool_calls
    max_agents: int = Limits().max_agents
    max_buffer_bytes: int = Limits().max_buffer_bytes
    nats: str = "embedded"
    nats_token: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    node: str = ""
    otlp_endpoint: str = ""
    trace_sample: float | None = None
    cluster_heartbeat_s: float = 2.0
    cluster_hold_s: float = 30.0
    cluster_hold_bytes: int = 16 * 1024 * 1024
    http: str = ""
    http_host: str | None = None
    http_port: int | None = None
    metrics: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.log_format not in _LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(_LOG_FORMATS)}")
        if self.drain_grace_s < 0:
            raise ConfigError(f"drain_grace_s must be >= 0, not {self.drain_grace_s}")
        if self.trace_sample is not None and not 0 <= self.trace_sample <= 1:
            raise ConfigError(f"trace_sample must be within 0..1, not {self.trace_sample}")
        if not 0 <= self.settle_s < float("inf"):
            raise ConfigError(f"settle_s must be >= 0 seconds, not {self.settle_s}")
        if not 0 < self.stale_after_s < float("inf"):
            raise ConfigError(f"stale_after_s must be > 0 seconds, not {self.stale_after_s}")
        if not 0.05 <= self.cluster_heartbeat_s <= 60:
            raise ConfigError(
                f"cluster_heartbeat_s must be 0.05..60 seconds, not {self.cluster_heartbeat_s}"
            )
        if not 0 <= self.cluster_hold_s <= 3600:
            raise ConfigError(f"cluster_hold_s must be 0..3600 seconds, not {self.cluster_hold_s}")
        if self.cluster_hold_bytes < 0:
            raise ConfigError(f"cluster_hold_bytes must be >= 0, not {self.cluster_hold_bytes}")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty (leave it unset for none)")
        if self.admin_token is not None and not self.admin_token:
            raise ConfigError("admin_token must not be empty (leave it unset for none)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file, tls_key_file")
        if self.tls_bind_agent_ids and self.tls_client_ca_file is None:
            raise ConfigError(
                "tls_bind_agent_ids needs mutual TLS: set tls_client_ca_file (the CA of the "
                "client certificates that name the agents)"
            )
        self._check_exposed("host", self.host)
        http = self.http_address()  # raises on a malformed one
        if http is not None:
            # The dashboard shows every agent and event: the gRPC port's rules, same token.
            self._check_exposed("http_host", http[0])
        try:
            self.limits()
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        self._check_nats()
        if self.node and _NODE_NAME.fullmatch(self.node) is None:
            raise ConfigError(
                f"node must be 1-64 letters, digits, '_' or '-' (one NATS subject token), "
                f"not {self.node!r}"
            )

    def _check_exposed(self, what: str, host: str) -> None:
        """A non-loopback ``host`` needs a token or TLS, and strong tokens."""
        if not is_loopback(host) and self.token is None and self.tls_cert_file is None:
            raise ConfigError(
                f"{what} {host!r} is not a loopback address: set a token or TLS "
                "(token, tls_cert_file/tls_key_file), or bind 127.0.0.1"
            )
        if not is_loopback(host):
            for name, value in (("token", self.token), ("admin_token", self.admin_token)):
                why = None if value is None else token_weakness(value)
                if why is not None:
                    raise ConfigError(
                        f"{what} {host!r} is not a loopback address and the {name} is too "
                        f"weak: {why}. Use at least 16 characters from a random source, e.g. "
                        'python -c "import secrets; print(secrets.token_urlsafe(32))"'
                    )

    def http_address(self) -> tuple[str, int] | None:
        """Where the HTTP port listens, or ``None`` when it is ``off``: ``http``'s host and
        port, each replaced by ``http_host``/``http_port`` when those are set.

        Raises:
            ConfigError: ``http`` is not ``host:port`` or ``off``, or the port is out of range.
        """
        if self.http == "off":
            return None
        host, port = "127.0.0.1", None
        if self.http:
            text, sep, port_text = self.http.rpartition(":")
            if not sep or not text or not port_text.isdigit():
                raise ConfigError(f"http is host:port or off, not {self.http!r}")
            host, port = text.removeprefix("[").removesuffix("]"), int(port_text)
        host = host if self.http_host is None else self.http_host
        port = port if self.http_port is None else self.http_port
        if port is None:
            port = 0 if self.port == 0 else _HTTP_PORT
        if not 0 <= port <= 65535:
            raise ConfigError(f"http port must be 0..65535, not {port}")
        return host, port

    def node_name(self) -> str:
        """This node's name: ``node``, else the host's name made into a subject token."""
        if self.node:
            return self.node
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64]
        return host or "loom"

    def _check_nats(self) -> None:
        try:
            mode, _ = parse_nats(self.nats)
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None
        given = [key for key in _NATS_OPTIONS if getattr(self, key) is not None]
        if given and mode is not NatsMode.EXTERNAL:
            raise ConfigError(
                f"{', '.join(given)}: only for an external NATS server: set nats to its URL "
                f"(--nats nats://host:4222), not {self.nats!r}"
            )
        if (self.nats_user is None) != (self.nats_password is None):
            raise ConfigError("nats_user and nats_password go together: set both or neither")
        if self.nats_token is not None and self.nats_user is not None:
            raise ConfigError("nats_token and nats_user/nats_password: set one of them")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ConfigError(
                "nats_tls_cert_file and nats_tls_key_file go together: set both or neither"
            )

    def nats_settings(self) -> NatsSettings | None:
        """Credentials and TLS for an external NATS server (``None`` in the other modes)."""
        mode, urls = parse_nats(self.nats)
        if mode is not NatsMode.EXTERNAL:
            return None
        return NatsSettings(
            servers=urls,
            token=self.nats_token,
            user=self.nats_user,
            password=self.nats_password,
            creds_file=self.nats_creds_file,
            tls_ca_file=self.nats_tls_ca_file,
            tls_cert_file=self.nats_tls_cert_file,
            tls_key_file=self.nats_tls_key_file,
            name="loom serve",
        )

    def limits(self) -> Limits:
        """The bridge's limits."""
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_topics_per_agent=self.max_topics_per_agent,
            max_pending_tool_calls=self.max_pending_tool_calls,
            max_agents=self.max_agents,
            max_buffer_bytes=self.max_buffer_bytes,
            # One knob: what a stream may have in flight to an agent is a buffer too.
            delivery_window_bytes=self.max_buffer_bytes,
        )

    def tls(self) -> TLSConfig | None:
        """The bridge's TLS, or ``None``."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TLSConfig(
            cert_file=self.tls_cert_file,
            key_file=self.tls_key_file,
            client_ca_file=self.tls_client_ca_file,
            bind_agent_ids=self.tls_bind_agent_ids,
        )


_HTTP_PORT = 50052
"""The HTTP port's default, next to the gRPC port's 50051."""

_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

_NATS_OPTIONS = (
    "nats_token",
    "nats_user",
    "nats_password",
    "nats_creds_file",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
)

_ENV = {
    "LOOM_HOST": "host",
    "LOOM_PORT": "port",
    "LOOM_DATA_DIR": "data_dir",
    "LOOM_LOG_LEVEL": "log_level",
    "LOOM_LOG_FORMAT": "log_format",
    "LOOM_DRAIN_GRACE": "drain_grace_s",
    "LOOM_SETTLE": "settle_s",
    "LOOM_STALE_AFTER": "stale_after_s",
    "LOOM_TOKEN": "token",
    "LOOM_ADMIN_TOKEN": "admin_token",
    "LOOM_TLS_CERT": "tls_cert_file",
    "LOOM_TLS_KEY": "tls_key_file",
    "LOOM_TLS_CLIENT_CA": "tls_client_ca_file",
    "LOOM_TLS_BIND_AGENT_IDS": "tls_bind_agent_ids",
    "LOOM_MAX_MESSAGE_BYTES": "max_message_bytes",
    "LOOM_MAX_TOPICS_PER_AGENT": "max_topics_per_agent",
    "LOOM_MAX_PENDING_TOOL_CALLS": "max_pending_tool_calls",
    "LOOM_MAX_AGENTS": "max_agents",
    "LOOM_MAX_BUFFER_BYTES": "max_buffer_bytes",
    "LOOM_NATS_URL": "nats",
    "LOOM_NATS_TOKEN": "nats_token",
    "LOOM_NATS_USER": "nats_user",
    "LOOM_NATS_PASSWORD": "nats_password",
    "LOOM_NATS_CREDS": "nats_creds_file",
    "LOOM_NATS_TLS_CA": "nats_tls_ca_file",
    "LOOM_NATS_TLS_CERT": "nats_tls_cert_file",
    "LOOM_NATS_TLS_KEY": "nats_tls_key_file",
    "LOOM_NODE": "node",
    "LOOM_CLUSTER_HEARTBEAT": "cluster_heartbeat_s",
    "LOOM_CLUSTER_HOLD": "cluster_hold_s",
    "LOOM_CLUSTER_HOLD_BYTES": "cluster_hold_bytes",
    "LOOM_HTTP": "http",
    "LOOM_HTTP_HOST": "http_host",
    "LOOM_HTTP_PORT": "http_port",
    "LOOM_METRICS": "metrics",
}


def load_config(
    *,
    toml_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> ServeConfig:
    """Merge ``[serve]`` of ``loom.toml``, then ``LOOM_*`` variables, then flag ``overrides``.

    A missing ``toml_path`` is fine when it is the default one; ``None`` skips the file.

    Raises:
        ConfigError: a value has the wrong type or range, or the TOML is malformed; the
            message names where the value came from.
    """
    merged: dict[str, Any] = {}
    source = "defaults"
    doc = _read_toml(toml_path)
    if doc is not None:
        source = str(toml_path)
        serve = doc.get("serve", {})
        if not isinstance(serve, dict):
            raise ConfigError(f"{toml_path}: [serve] must be a table")
        merged.update(serve)
    bridge_addr = environ.get("LOOM_BRIDGE_ADDR")
    if bridge_addr:
        # The address every client and agent uses by default: a server started in the same
        # environment listens there, so one variable moves the whole set (LOOM_HOST and
        # LOOM_PORT, then flags, still win).
        host, sep, port = bridge_addr.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"$LOOM_BRIDGE_ADDR is host:port, not {bridge_addr!r}")
        merged["host"] = host.removeprefix("[").removesuffix("]")
        merged["port"] = port
        source = f"{source}, $LOOM_BRIDGE_ADDR"
    for var, key in _ENV.items():
        if var in environ:
            merged[key] = environ[var]
            source = f"{source}, ${var}"
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # str values from the environment are converted ("50051" -> 50051) by strict=False.
        return msgspec.convert(merged, ServeConfig, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        unknown = _UNKNOWN.fullmatch(message)
        if unknown is not None:  # only loom.toml can bring an unknown key: name its table
            message = f"[serve] has no key {unknown.group(1)!r}"
        elif (at := _AT_KEY.fullmatch(message)) is not None:
            # Name the one place the bad value came from (the flag, the variable or the
            # table), not every source merged and msgspec's path into the merged mapping.
            where = _origin(at.group(2), toml_path, environ, overrides)
            raise ConfigError(f"configuration: {where}: {at.group(1)}") from exc
        raise ConfigError(f"configuration ({source}): {message}") from exc


_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_AT_KEY = re.compile(r"(.+) - at `\$\.(\w+)`")


def _origin(
    key: str, toml_path: Path | None, environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> str:
    """Where ``key``'s value came from, as a user would find it: ``flag --x``, ``$LOOM_X``
    or ``<file> [serve] x`` (:func:`load_config` applies them in the reverse order)."""
    if overrides.get(key) is not None:
        return "flag " + _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
    for var, name in _ENV.items():
        if name == key and var in environ:
            return f"${var}"
    if key in ("host", "port") and environ.get("LOOM_BRIDGE_ADDR"):
        return "$LOOM_BRIDGE_ADDR"
    return f"{toml_path} [serve] {key}"


SERVE_KEYS: tuple[str, ...] = tuple(f.name for f in msgspec.structs.fields(ServeConfig))
"""Every setting of ``[serve]``; a flag of ``loom serve`` sets the one its ``dest`` names."""

# Flags whose name is not the setting's (the rest are --max-agents for max_agents, ...).
_FLAG_NAMES = {
    "drain_grace_s": "--drain-grace",
    "settle_s": "--settle",
    "stale_after_s": "--stale-after",
    "cluster_heartbeat_s": "--cluster-heartbeat",
    "cluster_hold_s": "--cluster-hold",
    "cluster_hold_bytes": "--cluster-hold-bytes",
    "tls_cert_file": "--tls-cert",
    "tls_key_file": "--tls-key",
    "tls_client_ca_file": "--tls-client-ca",
    "nats_creds_file": "--nats-creds",
    "nats_tls_ca_file": "--nats-tls-ca",
    "nats_tls_cert_file": "--nats-tls-cert",
    "nats_tls_key_file": "--nats-tls-key",
}
_SECRETS = frozenset({"token", "admin_token", "nats_token", "nats_password"})


class Setting(msgspec.Struct, frozen=True):
    """One effective setting: its value (secrets masked) and where it came from."""

    value: Any
    source: str


def explain_config(
    *,
    toml_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> dict[str, Setting]:
    """The configuration :func:`load_config` makes of the same inputs, with the source of each
    value: ``flag --port``, ``env LOOM_PORT``, ``loom.toml [serve]`` or ``default``.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    config = load_config(toml_path=toml_path, environ=environ, overrides=overrides)
    doc = _read_toml(toml_path)
    in_file = doc.get("serve", {}) if doc is not None else {}
    from_env = {key: var for var, key in _ENV.items() if var in environ}
    if environ.get("LOOM_BRIDGE_ADDR"):  # host and port, unless LOOM_HOST/LOOM_PORT say
        from_env = {"host": "LOOM_BRIDGE_ADDR", "port": "LOOM_BRIDGE_ADDR", **from_env}
    settings: dict[str, Setting] = {}
    for key in SERVE_KEYS:
        if overrides.get(key) is not None:
            source = "flag " + _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
        elif key in from_env:
            source = "env " + from_env[key]
        elif key in in_file:
            source = f"{toml_path} [serve]"
        else:
            source = "default"
        value = getattr(config, key)
        if key in _SECRETS and value is not None:
            value = "***"
        elif key == "nats":  # a URL may carry a user and password
            value = ",".join(redact_url(u) for u in value.split(","))
        settings[key] = Setting(value, source)
    return settings


def show_config(
    toml_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    *,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """``loom config``: print :func:`explain_config`; 0, or 2 with the reason on stderr when
    the configuration is invalid."""
    out = out or sys.stdout
    try:
        settings = explain_config(toml_path=toml_path, environ=environ, overrides=overrides)
    except ConfigError as exc:
        print(f"loom config: {exc}", file=sys.stderr)
        return 2
    if as_json:
        out.write(msgspec.json.encode(settings).decode() + "\n")
        return 0
    width = max(len(key) for key in settings)
    for key, setting in settings.items():
        shown = "-" if setting.value is None else setting.value
        print(f"{key:<{width}}  {shown!s:<24} {setting.source}", file=out)
    return 0


def _read_toml(toml_path: Path | None) -> dict[str, Any] | None:
    """The parsed file, or ``None`` when there is none to read."""
    if toml_path is None or not toml_path.exists():
        return None
    try:
        return tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc


class ServiceTables(msgspec.Struct, frozen=True, kw_only=True):
    """The other tables of ``loom.toml`` that a server uses.

    Attributes:
        mcp: the ``[mcp.<name>]`` servers whose tools the runtime offers.
        llm: the ``[llm.<name>]`` providers: the server's model router, used by the agents it
            hosts (``None`` when the file has no ``[llm]``).
        tools: the native tools of ``[tools]`` (``clock.now`` alone when absent).
        agents: the cognitive agents of ``[agents.<id>]`` it hosts.
        tokens: the tenant tokens of ``[tokens.<name>]``, each confining its holders to a
            namespace (the tokens read from the variables the tables name).
        a2a_remote: the remote A2A agents of ``[a2a.remote.<name>]``, offered as tools
            (``sdk/cli/_config_a2a_remote.py``).
        a2a_expose: the agents of ``[a2a] expose``, served over A2A on the HTTP port.
        a2a_cards: the ``[a2a.card.<id>]`` of agents not in ``expose``: defaults for agents
            that connect with their own card (``sdk/cli/_config_a2a.py``).
        policy: the resilience policies of ``[policy.<name>]`` and ``[tools.policy]``.
        budget: the limits of ``[budget]`` for the turns of the agents it runs.
    """

    mcp: Mapping[str, McpServerConfig] = msgspec.field(default_factory=dict)
    llm: LLMConfig | None = None
    tools: ToolsTable = msgspec.field(default_factory=ToolsTable)
    agents: Mapping[str, AgentTable] = msgspec.field(default_factory=dict)
    tokens: tuple[Tenant, ...] = ()
    a2a_remote: tuple[A2ARemote, ...] = ()
    a2a_expose: tuple[A2AAgent, ...] = ()
    a2a_cards: tuple[A2AAgent, ...] = ()
    policy: PolicyTables = msgspec.field(default_factory=PolicyTables)
    approvals: ApprovalsTable = msgspec.field(default_factory=ApprovalsTable)
    budget: BudgetTable = msgspec.field(default_factory=BudgetTable)


def load_tables(*, toml_path: Path | None, environ: Mapping[str, str]) -> ServiceTables:
    """Decode ``[mcp]``, ``[llm]``, ``[tools]``, ``[agents]``, ``[tokens]`` and ``[budget]`` of
    ``loom.toml`` (absent tables: none configured).

    Raises:
        ConfigError: a table is malformed; the message names the file, the server or
            provider, and the key (never a secret).
    """
    doc = _read_toml(toml_path)
    if doc is None:
        return ServiceTables()
    try:
        mcp = load_mcp_config(doc.get("mcp", {}))
        llm = load_llm_config(doc["llm"], environ=environ) if "llm" in doc else None
    except (McpConfigError, LLMConfigError) as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    where = str(toml_path)
    policy = decode_policy_tables(doc, where=where)
    check_llm_policies(policy, llm, where=where)
    tools = decode_tools(without_policy(doc.get("tools", {})), where=where)
    names = None if llm is None else tuple(llm.providers)
    agents = decode_agents(doc.get("agents", {}), where=where, llm_names=names)
    tokens = decode_tokens(doc.get("tokens", {}), where=where, environ=environ)
    a2a_remote = decode_a2a_remote(doc.get("a2a", {}), where=where, environ=environ)
    a2a_expose = decode_a2a_expose(doc.get("a2a", {}), where=where)
    a2a_cards = decode_a2a_cards(doc.get("a2a", {}), where=where)
    approvals = decode_approvals(doc.get("approvals", {}), where=where)
    budget = decode_budget(doc.get("budget", {}), where=where)
    return ServiceTables(
        mcp=mcp,
        llm=llm,
        tools=tools,
        agents=agents,
        tokens=tokens,
        a2a_remote=a2a_remote,
        a2a_expose=a2a_expose,
        a2a_cards=a2a_cards,
        policy=policy,
        approvals=approvals,
        budget=budget,
    )
