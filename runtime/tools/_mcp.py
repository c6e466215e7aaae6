"""MCP servers as tool providers: a supervised connection per server, and a hub of them.

An :class:`McpServer` keeps one MCP server connected for as long as it is open, through the
official ``mcp`` SDK (``mcp.Client`` over the stdio or streamable-HTTP transport), and offers
the server's tools as :class:`McpTool`\\ s named ``<server>.<tool>``:

* **Listing.** Tools are listed at connect, and again whenever the server says they changed
  (a ``subscriptions/listen`` stream on 2026-era connections, ``notifications/tools/
  list_changed`` on older ones). A tool whose description or schema is unchanged keeps its
  :class:`McpTool` object (and its registry counters).
* **Crashes.** When the connection ends (the process exits, the HTTP transport fails, the
  listen stream is lost), every call in flight on it raises :class:`ToolUnavailable` at once,
  and so does every new call until the server is back. The server's tools stay registered
  meanwhile, so a model sees "temporarily unavailable", not "no such tool".
* **Restarts.** The supervisor reconnects (restarting a stdio server's process) after a delay
  that starts at ``backoff_initial``, doubles with each consecutive failure up to
  ``backoff_max``, and is jittered down by up to half; a connection that stayed up for
  ``backoff_max`` resets it. Each reconnect lists the tools afresh.
* **stderr.** A stdio server's stderr is read continuously and logged line by line at INFO to
  the logger ``loom.mcp.<name>``; lifecycle events go to ``loom.mcp``.
* **Shutdown.** :meth:`McpServer.aclose` fails calls in flight with :class:`ToolUnavailable`,
  closes the session and stops the process the MCP way (stdin closed, 2 s, SIGTERM to its
  process group, 2 s, SIGKILL), shielded and bounded.

An :class:`McpHub` opens one :class:`McpServer` per enabled ``[mcp.<name>]`` table and keeps
their tools registered in a :class:`ToolRegistry` as they come and go.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import MappingProxyType, TracebackType
from typing import Final

import anyio
import mcp.types as mcp_types
import msgspec
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError

from .._errors import InvalidArgument
from ._mcp_config import (
    McpConfigError,
    McpHttpConfig,
    McpServerConfig,
    McpStdioConfig,
    check_server_name,
)
from ._mcp_connection import Connection, open_transport
from ._mcp_tool import McpTool, ToolUnavailable, same_definition
from ._registry import ToolRegistry

__all__ = ["McpHub", "McpHubStats", "McpServer", "McpServerStats", "McpServerStatus"]

_log = logging.getLogger("loom.mcp")

_CLIENT_INFO: Final = mcp_types.Implementation(name="loom", version="0.1.0")
# A server that pages its tool listing forever must not hang a connect.
_MAX_PAGES: Final = 100
# How long aclose waits for the supervisor to wind down; the SDK's own process shutdown is
# bounded at about 6 s (stdin close, SIGTERM, SIGKILL), this only guards against a bug.
_CLOSE_GRACE: Final = 10.0


class McpServerStatus(enum.Enum):
    """Where an :class:`McpServer` is in its life."""

    CONNECTING = "connecting"
    """Starting the process or reaching the endpoint, handshaking, listing tools."""
    CONNECTED = "connected"
    """Tools are callable."""
    DISCONNECTED = "disconnected"
    """The connection failed or ended; waiting out the backoff before the next attempt."""
    CLOSED = "closed"
    """Closed for good."""


class McpHubStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of an :class:`McpHub`.

    Attributes:
        servers: each enabled server's record, by name, in configuration order (a read-only
            mapping).
    """

    servers: Mapping[str, McpServerStats]


class McpServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one MCP server's supervisor.

    Attributes:
        name: the server's name.
        status: where it is now.
        tools: how many tools it offers (as of its last listing).
        connects: connections made, the first one included.
        disconnects: connections lost after they were made.
        failed_connects: attempts that never got connected.
        in_flight: tool calls running on the live connection.
        last_error: why the last connection or attempt ended, if one did.
    """

    name: str
    status: McpServerStatus
    tools: int
    connects: int
    disconnects: int
    failed_connects: int
    in_flight: int
    last_error: str | None


class McpServer:
    """One MCP server, kept connected while open; its tools are :meth:`tools`.

    Opening it (``async with``) starts the supervisor and returns at once; tools appear when
    the first connection is made (:meth:`wait_connected`). With a ``registry`` the server
    registers its tools there as they come and go (under ``call_timeout``) and unregisters
    them when closed; a name already taken by another tool is skipped with a warning.

    Args:
        name: the server's name, the namespace of its tools.
        config: its ``[mcp.<name>]`` table, decoded (:func:`load_mcp_config`).
        registry: where to register its tools, if anywhere.
        environ: the environment ``pass_env``, ``inherit_env`` and ``headers_env`` read from
            (``loom serve`` passes ``os.environ``); ``None`` is an empty one. Read once, here.

    Raises:
        McpConfigError: the name is invalid, or a variable named by ``pass_env`` or
            ``headers_env`` is not set in ``environ``.
    """

    def __init__(
        self,
        name: str,
        config: McpServerConfig,
        *,
        registry: ToolRegistry | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(config, McpStdioConfig | McpHttpConfig):
            raise InvalidArgument(f"expected an McpStdioConfig or McpHttpConfig, got {config!r}")
        check_server_name(name)
        self._name = name
        self._config = config
        self._registry = registry
        self._env, self._headers = _resolve(name, config, environ or {})
        self._stderr_log = logging.getLogger(f"loom.mcp.{name}")
        self._status = McpServerStatus.CONNECTING
        # Created on demand: an McpServer may be built outside any event loop.
        self._changed: anyio.Event | None = None
        self._tools: dict[str, McpTool] = {}
        self._registered: set[str] = set()
        self._connection: Connection | None = None
        self._retry_at = 0.0
        self._connects = self._disconnects = self._failed_connects = 0
        self._last_error: str | None = None
        self._started = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> McpStdioConfig | McpHttpConfig:
        return self._config

    @property
    def status(self) -> McpServerStatus:
        return self._status

    def tools(self) -> list[McpTool]:
        """The server's tools as of its last listing (kept while it is disconnected)."""
        return list(self._tools.values())

    def statistics(self) -> McpServerStats:
        connection = self._connection
        return McpServerStats(
            name=self._name,
            status=self._status,
            tools=len(self._tools),
            connects=self._connects,
            disconnects=self._disconnects,
            failed_connects=self._failed_connects,
            in_flight=0 if connection is None else connection.in_flight,
            last_error=self._last_error,
        )

    async def wait_changed(self) -> None:
        """Return at the next change of :attr:`status` or of the tool list.

        Check the condition you want, then wait, in a loop: a change between two checks is not
        missed, since nothing changes between a check and the wait that follows it.
        """
        await self._next_change()

    async def wait_connected(self) -> None:
        """Return once the server is connected (at once if it is).

        Raises:
            ToolUnavailable: the server is closed.
        """
        while self._status is not McpServerStatus.CONNECTED:
            if self._status is McpServerStatus.CLOSED:
                raise ToolUnavailable(self._name, "the server is closed")
            await self._next_change()

    async def __aenter__(self) -> McpServer:
        if self._started:
            raise InvalidArgument(f"MCP server {self._name!r} can be opened once")
        if self._status is McpServerStatus.CLOSED:
            raise InvalidArgument(f"MCP server {self._name!r} is closed")
        self._started = True
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._supervise, self._scope, self._stopped)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        # Only the task that entered the task group may exit it (aclose may run anywhere).
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Close the connection and stop the server; calls in flight raise
        :class:`ToolUnavailable`. Shielded, bounded, idempotent."""
        if self._status is McpServerStatus.CLOSED:
            return
        self._set_status(McpServerStatus.CLOSED)
        if self._connection is not None:
            self._connection.close("the server is closing")
        if self._scope is not None and self._stopped is not None:
            self._scope.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_GRACE):
                await self._stopped.wait()
        self._publish([])

    # -------------------------------------------------------------- what tools call

    def live(self, remote_name: str) -> Connection:
        """The live connection for a call to the tool ``remote_name``.

        Raises:
            ToolUnavailable: not connected, or the server no longer lists that tool.
        """
        connection = self._connection
        if (
            self._status is not McpServerStatus.CONNECTED
            or connection is None
            or connection.closed.is_set()
        ):
            raise ToolUnavailable(self._name, self._why_unavailable())
        if remote_name not in self._tools:
            raise ToolUnavailable(self._name, f"it no longer offers a tool {remote_name!r}")
        return connection

    def _why_unavailable(self) -> str:
        match self._status:
            case McpServerStatus.CLOSED:
                return "the server is closed"
            case McpServerStatus.DISCONNECTED:
                wait = max(0.0, self._retry_at - anyio.current_time())
                return f"{self._last_error}; reconnecting in {wait:.1f} s"
            case _:
                if self._last_error is None:
                    return "connecting"
                return f"reconnecting after: {self._last_error}"

    # -------------------------------------------------------------- the supervisor

    async def _supervise(self, scope: anyio.CancelScope, stopped: anyio.Event) -> None:
        config = self._config
        failures = 0
        try:
            with scope:
                while True:
                    self._set_status(McpServerStatus.CONNECTING)
                    connection = Connection(self._connection_closed)
                    try:
                        await self._connect_and_serve(connection)
                        error = connection.reason or "the connection ended"
                    except Exception as exc:
                        error = _describe(exc)
                    connection.close(error)
                    if self._status is McpServerStatus.CLOSED:
                        break
                    self._last_error = error
                    if connection.connected_at is None:
                        self._failed_connects += 1
                    elif anyio.current_time() - connection.connected_at >= config.backoff_max:
                        failures = 0
                    delay = min(config.backoff_max, config.backoff_initial * 2.0**failures)
                    delay *= random.uniform(0.5, 1.0)
                    failures += 1
                    self._retry_at = anyio.current_time() + delay
                    self._set_status(McpServerStatus.DISCONNECTED)
                    _log.warning(
                        "MCP server %r: %s; reconnecting in %.2f s", self._name, error, delay
                    )
                    await anyio.sleep(delay)
        finally:
            stopped.set()

    async def _connect_and_serve(self, connection: Connection) -> None:
        config = self._config
        relist_wanted = [anyio.Event()]

        async def on_message(message: IncomingMessage) -> None:
            # Handshake-era servers announce changes this way; never do I/O here (it runs in
            # the SDK's receive loop), just wake the relisting task.
            if isinstance(message, mcp_types.ToolListChangedNotification):
                relist_wanted[0].set()

        transport = open_transport(
            config,
            connection,
            env=self._env,
            headers=self._headers,
            stderr_logger=self._stderr_log,
        )
        client = Client(
            transport, mode="auto", cache=None, message_handler=on_message, client_info=_CLIENT_INFO
        )
        deadline = anyio.current_time() + config.connect_timeout
        with anyio.CancelScope(deadline=deadline) as connect_scope:
            async with client:
                connection.client = client
                listing = await _list_tools(client)
                connect_scope.deadline = math.inf
                if connection.closed.is_set():
                    return  # lost between the listing and now; the supervisor carries on
                self._connection = connection
                connection.connected_at = anyio.current_time()
                self._connects += 1
                self._last_error = None
                self._publish(listing)
                self._set_status(McpServerStatus.CONNECTED)
                _log.info("MCP server %r connected: %d tools", self._name, len(listing))
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._watch_tools, client, connection, relist_wanted)
                        await connection.closed.wait()
                        tg.cancel_scope.cancel()
                finally:
                    # Before the client exits: calls in flight fail as unavailable at once.
                    connection.close("the connection ended")
        if connect_scope.cancelled_caught:
            raise TimeoutError(f"not connected within {config.connect_timeout:g} s")

    def _connection_closed(self, connection: Connection) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._disconnects += 1
        self._last_error = connection.reason
        if self._status is McpServerStatus.CONNECTED:
            self._set_status(McpServerStatus.DISCONNECTED)

    async def _watch_tools(
        self, client: Client, connection: Connection, relist_wanted: list[anyio.Event]
    ) -> None:
        capability = client.server_capabilities.tools
        if capability is None or not capability.list_changed:
            return
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await self._relist(client)
            return  # closed by the server: no more change events on this connection
        except ListenNotSupportedError:
            pass  # a handshake-era connection: changes arrive as notifications
        except SubscriptionLost as exc:
            connection.close(f"the listen stream was lost ({exc})")
            return
        except MCPError as exc:
            _log.info("MCP server %r refused to stream tool changes: %s", self._name, exc)
            return
        while True:
            await relist_wanted[0].wait()
            relist_wanted[0] = anyio.Event()
            await self._relist(client)

    async def _relist(self, client: Client) -> None:
        try:
            with anyio.fail_after(self._config.connect_timeout):
                listing = await _list_tools(client)
        except (MCPError, TimeoutError) as exc:
            _log.warning("MCP server %r: relisting tools failed: %s", self._name, exc)
            return
        self._publish(listing)

    # -------------------------------------------------------------- tools and registry

    def _publish(self, listing: list[mcp_types.Tool]) -> None:
        tools: dict[str, McpTool] = {}
        for definition in listing:
            old = self._tools.get(definition.name)
            if old is not None and same_definition(old.definition, definition):
                tools[definition.name] = old
            else:
                timeout = self._config.call_timeout
                tools[definition.name] = McpTool(self, self._name, definition, timeout=timeout)
        previous, self._tools = self._tools, tools
        self._notify()
        registry = self._registry
        if registry is None:
            return
        for remote, tool in previous.items():
            if tools.get(remote) is not tool and tool.name in self._registered:
                self._registered.discard(tool.name)
                if tool.name in registry and registry.get(tool.name) is tool:
                    registry.unregister(tool.name)
        for tool in tools.values():
            if tool.name in self._registered:
                continue
            try:
                registry.register(tool, timeout=self._config.call_timeout)
            except InvalidArgument as exc:
                _log.warning(
                    "MCP server %r: tool %r not registered: %s", self._name, tool.name, exc
                )
            else:
                self._registered.add(tool.name)

    def _set_status(self, status: McpServerStatus) -> None:
        if self._status is McpServerStatus.CLOSED:
            return
        self._status = status
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _next_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def __repr__(self) -> str:
        return f"McpServer({self._name!r}, {self._status.value})"


class McpHub:
    """The MCP servers of a ``loom.toml``, their tools kept registered in ``registry``.

    One :class:`McpServer` per config with ``enabled`` true, opened together and closed
    together (concurrently, so shutdown graces do not add up)::

        async with McpHub(load_mcp_config(toml.get("mcp", {})), registry, environ=os.environ):
            ...

    Args:
        configs: the servers' tables by name (:func:`load_mcp_config`).
        registry: where their tools are registered.
        environ: what ``pass_env``, ``inherit_env`` and ``headers_env`` read from.

    Raises:
        McpConfigError: as :class:`McpServer`.
    """

    def __init__(
        self,
        configs: Mapping[str, McpServerConfig],
        registry: ToolRegistry,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._servers = {
            name: McpServer(name, config, registry=registry, environ=environ)
            for name, config in configs.items()
            if config.enabled
        }
        self._stack = AsyncExitStack()

    @property
    def servers(self) -> Mapping[str, McpServer]:
        """The enabled servers, by name."""
        return self._servers

    def statistics(self) -> McpHubStats:
        """A snapshot of every enabled server's supervisor."""
        return McpHubStats(
            servers=MappingProxyType({n: s.statistics() for n, s in self._servers.items()})
        )

    async def wait_connected(self) -> None:
        """Return once every server is connected (each may have been, and be again, down)."""
        for server in self._servers.values():
            await server.wait_connected()

    async def __aenter__(self) -> McpHub:
        async with AsyncExitStack() as stack:
            for server in self._servers.values():
                await stack.enter_async_context(server)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        await self._stack.aclose()

    async def aclose(self) -> None:
        """Close every server, concurrently. Shielded, bounded, idempotent."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for server in self._servers.values():
                    tg.start_soon(server.aclose)


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _resolve(
    server: str, config: McpStdioConfig | McpHttpConfig, environ: Mapping[str, str]
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """The stdio child's extra environment and the HTTP headers, with values looked up."""

    def lookup(key: str, var: str) -> str:
        try:
            return environ[var]
        except KeyError:
            raise McpConfigError(server, key, f"environment variable {var} is not set") from None

    match config:
        case McpStdioConfig():
            env = dict(environ) if config.inherit_env else {}
            for i, var in enumerate(config.pass_env):
                env[var] = lookup(f"pass_env[{i}]", var)
            env.update(config.env)
            return env, {}
        case McpHttpConfig():
            headers = dict(config.headers)
            for header, var in config.headers_env.items():
                headers[header] = lookup(f"headers_env.{header}", var)
            return None, headers


def _describe(exc: BaseException) -> str:
    """One line for why a connection ended: the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
