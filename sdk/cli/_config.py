"""One configuration object, built from ``loom.toml``, ``LOOM_*`` environment variables and
command-line flags (later sources win), and handed down. Nothing below the CLI reads
``os.environ`` or ``sys.argv``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from loom.bridge import Limits, TLSConfig, is_loopback
from loom.runtime import ConfigError, InvalidArgument
from loom.runtime.llm import LLMConfig, LLMConfigError, load_llm_config
from loom.runtime.tools import McpConfigError, McpServerConfig, load_mcp_config

__all__ = ["ServeConfig", "ServiceTables", "load_config", "load_tables"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


class ServeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``loom serve`` runs with.

    Attributes:
        host: address to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        data_dir: where durable state lives (created if missing).
        log_level: debug, info, warning or error.
        drain_grace_s: seconds a shutdown waits for queued events to drain (and for calls in
            flight on the bridge to finish).
        token: bearer token every gRPC call must carry (``authorization: Bearer <token>``).
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
    """

    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = ".loom"
    log_level: str = "info"
    drain_grace_s: float = 5.0
    token: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    tls_bind_agent_ids: bool = False
    max_message_bytes: int = Limits().max_message_bytes
    max_topics_per_agent: int = Limits().max_topics_per_agent
    max_pending_tool_calls: int = Limits().max_pending_tool_calls
    max_agents: int = Limits().max_agents
    max_buffer_bytes: int = Limits().max_buffer_bytes

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.drain_grace_s < 0:
            raise ConfigError(f"drain_grace_s must be >= 0, not {self.drain_grace_s}")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty (leave it unset for none)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file, tls_key_file")
        if self.tls_bind_agent_ids and self.tls_client_ca_file is None:
            raise ConfigError(
                "tls_bind_agent_ids needs mutual TLS: set tls_client_ca_file (the CA of the "
                "client certificates that name the agents)"
            )
        if not is_loopback(self.host) and self.token is None and self.tls_cert_file is None:
            raise ConfigError(
                f"host {self.host!r} is not a loopback address: set a token or TLS "
                "(token, tls_cert_file/tls_key_file), or bind 127.0.0.1"
            )
        try:
            self.limits()
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None

    def limits(self) -> Limits:
        """The bridge's limits."""
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_topics_per_agent=self.max_topics_per_agent,
            max_pending_tool_calls=self.max_pending_tool_calls,
            max_agents=self.max_agents,
            max_buffer_bytes=self.max_buffer_bytes,
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


_ENV = {
    "LOOM_HOST": "host",
    "LOOM_PORT": "port",
    "LOOM_DATA_DIR": "data_dir",
    "LOOM_LOG_LEVEL": "log_level",
    "LOOM_DRAIN_GRACE": "drain_grace_s",
    "LOOM_TOKEN": "token",
    "LOOM_TLS_CERT": "tls_cert_file",
    "LOOM_TLS_KEY": "tls_key_file",
    "LOOM_TLS_CLIENT_CA": "tls_client_ca_file",
    "LOOM_TLS_BIND_AGENT_IDS": "tls_bind_agent_ids",
    "LOOM_MAX_MESSAGE_BYTES": "max_message_bytes",
    "LOOM_MAX_TOPICS_PER_AGENT": "max_topics_per_agent",
    "LOOM_MAX_PENDING_TOOL_CALLS": "max_pending_tool_calls",
    "LOOM_MAX_AGENTS": "max_agents",
    "LOOM_MAX_BUFFER_BYTES": "max_buffer_bytes",
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
    for var, key in _ENV.items():
        if var in environ:
            merged[key] = environ[var]
            source = f"{source}, ${var}"
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # str values from the environment are converted ("50051" -> 50051) by strict=False.
        return msgspec.convert(merged, ServeConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"configuration ({source}): {exc}") from exc


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
        llm: the ``[llm.<name>]`` providers, validated at start so a mistake shows at once
            (``None`` when the file has no ``[llm]``).
    """

    mcp: Mapping[str, McpServerConfig] = msgspec.field(default_factory=dict)
    llm: LLMConfig | None = None


def load_tables(*, toml_path: Path | None, environ: Mapping[str, str]) -> ServiceTables:
    """Decode ``[mcp]`` and ``[llm]`` of ``loom.toml`` (absent tables: none configured).

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
    return ServiceTables(mcp=mcp, llm=llm)
