"""The ``[mcp.<name>]`` tables of ``loom.toml``: one MCP server each.

Two transports, told apart by the ``transport`` key::

    [mcp.files]                       # a local server run as a subprocess, spoken to over stdio
    transport = "stdio"
    command = "uvx"
    args = ["mcp-server-filesystem", "/srv/data"]
    env = { LOG_LEVEL = "debug" }     # literal values
    pass_env = ["GITHUB_TOKEN"]       # copied from Loom's environment by name
    cwd = "/srv"

    [mcp.search]                      # a remote server over streamable HTTP
    transport = "http"
    url = "https://mcp.example.com/mcp"
    headers = { "X-Client" = "loom" }                # literal values, not secrets
    headers_env = { Authorization = "SEARCH_AUTH" }  # header -> environment variable name

Every table may also set ``call_timeout``, ``connect_timeout``, ``backoff_initial``,
``backoff_max`` (seconds) and ``enabled``. Unknown keys are refused, so a typo is an error
rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import msgspec

from .._errors import ConfigError

__all__ = [
    "McpConfigError",
    "McpHttpConfig",
    "McpServerConfig",
    "McpStdioConfig",
    "load_mcp_config",
]

# A server's name is the namespace of its tools (``<server>.<tool>``), so no dots.
_SERVER_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# msgspec ends a located error with " - at `$.key[0]`"; the path is what we report.
_AT: Final = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


class McpConfigError(ConfigError):
    """An ``[mcp.<name>]`` table is malformed; nothing was started.

    Attributes:
        server: the server's name (the ``<name>`` of the table).
        key: the offending key, as a dotted path inside the table (``"args[1]"``,
            ``"headers_env.Authorization"``), or ``None`` for the table as a whole.
        reason: what is wrong, in words.
    """

    def __init__(self, server: str, key: str | None, reason: str) -> None:
        self.server = server
        self.key = key
        self.reason = reason
        where = f"mcp.{server}.{key}" if key else f"mcp.{server}"
        super().__init__(f"{where}: {reason}")


class McpServerConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="transport"
):
    """What every MCP server's table may set; see :class:`McpStdioConfig` and
    :class:`McpHttpConfig` for the two transports.

    Attributes:
        call_timeout: seconds one tool call may take, a cap on every call to this server's
            tools (the registry's per-call timeout can shorten it, not extend it).
        connect_timeout: seconds to start (or reach) the server, complete the MCP handshake and
            list its tools.
        backoff_initial: seconds before the first restart after a crash; each further failure
            doubles it, up to ``backoff_max``, and every delay is jittered down by up to half.
        backoff_max: the cap of the restart delay. A connection that stays up this long resets
            the backoff.
        enabled: ``False`` keeps the table but starts nothing (read by :class:`McpHub`).
    """

    call_timeout: float = 30.0
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    enabled: bool = True


class McpStdioConfig(McpServerConfig, frozen=True, kw_only=True, tag="stdio"):
    """A local MCP server run as a subprocess and spoken to over its stdin and stdout.

    The child's environment is *not* Loom's: it gets the MCP SDK's short list of harmless
    variables (``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER``), then the
    variables named in ``pass_env`` copied from the environment handed to :class:`McpServer`,
    then ``env``. ``inherit_env = true`` passes that whole environment instead of the short
    list. Its stderr goes to the logger ``loom.mcp.<name>``, line by line.

    Attributes:
        command: the program to run (looked up on ``PATH``).
        args: its arguments.
        env: variables to set, with literal values.
        pass_env: names of variables to copy from Loom's environment (each must be set).
        inherit_env: pass Loom's whole environment, not just the short list.
        cwd: the working directory (``None``: Loom's).
    """

    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    inherit_env: bool = False
    cwd: str | None = None


class McpHttpConfig(McpServerConfig, frozen=True, kw_only=True, tag="http"):
    """A remote MCP server spoken to over streamable HTTP.

    Attributes:
        url: the server's MCP endpoint, ``http://`` or ``https://``.
        headers: headers sent on every request, with literal values; keep secrets out of them.
        headers_env: headers whose values are read from environment variables, by name
            (``{ Authorization = "SEARCH_AUTH" }``); each variable must be set. Their values
            never appear in logs, errors or ``repr``.
    """

    url: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    headers_env: dict[str, str] = msgspec.field(default_factory=dict)


McpConfig = McpStdioConfig | McpHttpConfig


def load_mcp_config(mcp_table: Mapping[str, object]) -> dict[str, McpStdioConfig | McpHttpConfig]:
    """Decode the ``mcp`` table of a parsed ``loom.toml``: one config per server, by name.

    Args:
        mcp_table: the value of the top-level ``mcp`` key (``tomllib.load(f).get("mcp", {})``).

    Raises:
        McpConfigError: a server's name is not a valid tool namespace, a table has an unknown
            transport, misses ``command`` or ``url``, has a key of the wrong type or out of range,
            or an unknown key. The error names the server and the key.
    """
    if not isinstance(mcp_table, Mapping):
        raise McpConfigError(
            "*", None, f"expected a table of servers, got {type(mcp_table).__name__}"
        )
    configs: dict[str, McpStdioConfig | McpHttpConfig] = {}
    for name, table in mcp_table.items():
        check_server_name(name)
        if not isinstance(table, Mapping):
            raise McpConfigError(name, None, f"expected a table, got {type(table).__name__}")
        if "transport" not in table:
            raise McpConfigError(name, "transport", 'missing: set "stdio" or "http"')
        try:
            config: McpConfig = msgspec.convert(dict(table), type=McpConfig)
        except msgspec.ValidationError as exc:
            raise _located(name, str(exc), table.get("transport")) from None
        _check(name, config)
        configs[name] = config
    return configs


def check_server_name(name: object) -> None:
    """Refuse a server name that cannot be a tool namespace.

    Raises:
        McpConfigError: not 1-64 letters, digits, ``_`` or ``-``.
    """
    if not isinstance(name, str) or not _SERVER_NAME.fullmatch(name):
        raise McpConfigError(
            str(name), None, "invalid server name: use 1-64 letters, digits, '_' or '-'"
        )


def _located(server: str, message: str, transport: object) -> McpConfigError:
    if match := _AT.match(message):
        key = match["path"].lstrip(".") or None
        reason = match["reason"]
        if key == "transport":
            reason = f'unknown transport {transport!r}: use "stdio" or "http"'
        return McpConfigError(server, key, reason)
    if match := _MISSING.match(message):
        return McpConfigError(server, match["field"], "missing")
    if match := _UNKNOWN.match(message):
        return McpConfigError(server, match["field"], "unknown key")
    return McpConfigError(server, None, message)


def _check(server: str, config: McpConfig) -> None:
    for key in ("call_timeout", "connect_timeout", "backoff_initial", "backoff_max"):
        value: float = getattr(config, key)
        if not value > 0 or value == float("inf"):
            raise McpConfigError(server, key, f"must be positive finite seconds, not {value!r}")
    if config.backoff_initial > config.backoff_max:
        raise McpConfigError(server, "backoff_initial", "must not exceed backoff_max")
    match config:
        case McpStdioConfig():
            if not config.command.strip():
                raise McpConfigError(server, "command", "must not be empty")
            for table, names in (("env", config.env), ("pass_env", config.pass_env)):
                for i, var in enumerate(names):
                    if not _ENV_NAME.fullmatch(var):
                        key = f"{table}.{var}" if table == "env" else f"{table}[{i}]"
                        raise McpConfigError(server, key, f"invalid variable name {var!r}")
        case McpHttpConfig():
            parts = urlsplit(config.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise McpConfigError(server, "url", f"expected an http(s) URL, not {config.url!r}")
            for table, headers in (
                ("headers", config.headers),
                ("headers_env", config.headers_env),
            ):
                for header in headers:
                    if not _HEADER_NAME.fullmatch(header):
                        raise McpConfigError(
                            server, f"{table}.{header}", f"invalid header name {header!r}"
                        )
            for header, var in config.headers_env.items():
                if not _ENV_NAME.fullmatch(var):
                    raise McpConfigError(
                        server, f"headers_env.{header}", f"invalid variable name {var!r}"
                    )
