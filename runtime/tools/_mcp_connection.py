"""One live connection to an MCP server, and the transports that make it.

A :class:`Connection` is a connected ``mcp.Client`` plus what Loom needs around it: a
``closed`` flag that is set the moment the transport ends (the server's stdout reached EOF,
the HTTP transport failed, a ``subscriptions/listen`` stream was lost) and the cancel scopes
of the tool calls in flight on it, so that closing fails those calls at once instead of
leaving them to their timeouts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Final, Self, TextIO

import anyio
import httpx2
from mcp import Client, StdioServerParameters, stdio_client

# The stream protocols the public ``mcp.client.Transport`` is defined with.
from mcp.client._transport import ReadStream, WriteStream
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from ._mcp_config import McpHttpConfig, McpStdioConfig

__all__ = ["Connection", "open_transport"]

# The longest stderr line kept whole; a longer one is logged in pieces of this size, so a
# server that never writes a newline cannot grow our memory.
_MAX_LINE: Final = 16 * 1024
# After the server process is gone, how long its stderr may take to reach EOF (a grandchild
# holding the pipe open must not keep a dead connection alive).
_STDERR_GRACE: Final = 1.0
# The SSE read timeout of the HTTP transport: a listen stream idles for long stretches.
_SSE_READ_TIMEOUT: Final = 300.0


class Connection:
    """A connected client and the tool calls running on it.

    Attributes:
        client: the SDK's client, handshake done.
        connected_at: when the handshake and first listing completed (``anyio.current_time``),
            ``None`` while connecting.
        closed: set once the connection is over; no call starts on it afterwards.
        reason: why it closed (``None`` while open).
    """

    __slots__ = ("_in_flight", "_on_close", "client", "closed", "connected_at", "reason")

    def __init__(self, on_close: Callable[[Connection], None]) -> None:
        self.client: Client | None = None
        self.connected_at: float | None = None
        self.closed = anyio.Event()
        self.reason: str | None = None
        self._in_flight: set[anyio.CancelScope] = set()
        self._on_close = on_close

    def close(self, reason: str) -> None:
        """Mark the connection over and cancel every call on it; idempotent, never blocks."""
        if self.closed.is_set():
            return
        self.reason = reason
        self.closed.set()
        for scope in self._in_flight:
            scope.cancel()
        self._on_close(self)

    @contextmanager
    def track(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope for one call that :meth:`close` cancels."""
        scope = anyio.CancelScope()
        if self.closed.is_set():
            scope.cancel()
        self._in_flight.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._in_flight.discard(scope)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


class _WatchedReadStream:
    """The transport's read stream, telling the connection when the dispatcher stops reading.

    The SDK's dispatcher leaves the read stream's context exactly when its receive loop ends
    (EOF, a closed transport, or shutdown), which is the one signal common to both transports
    that the connection is over.
    """

    __slots__ = ("_connection", "_inner")

    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], connection: Connection
    ) -> None:
        self._inner = inner
        self._connection = connection

    async def receive(self) -> SessionMessage | Exception:
        return await self._inner.receive()

    async def aclose(self) -> None:
        self._connection.close("the transport closed")
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self._connection.close("the server closed the connection")
            raise

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self._connection.close("the transport closed")
        return await self._inner.__aexit__(exc_type, exc_val, exc_tb)


@asynccontextmanager
async def open_transport(
    config: McpStdioConfig | McpHttpConfig,
    connection: Connection,
    *,
    env: Mapping[str, str] | None,
    headers: Mapping[str, str],
    stderr_logger: logging.Logger,
) -> AsyncIterator[tuple[_WatchedReadStream, WriteStream[SessionMessage]]]:
    """Open the transport ``config`` names; yield the read and write streams for ``Client``.

    Args:
        config: the server's table.
        connection: told when the read side ends.
        env: the stdio child's extra environment (merged over the SDK's short list).
        headers: every HTTP request's headers, secrets resolved.
        stderr_logger: where a stdio server's stderr goes, line by line.
    """
    match config:
        case McpStdioConfig():
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=dict(env or {}), cwd=config.cwd
            )
            async with (
                _stderr_drain(stderr_logger) as errlog,
                stdio_client(params, errlog=errlog) as (read, write),
            ):
                # The child holds its own copy now; ours must go so EOF can come.
                errlog.close()
                yield _WatchedReadStream(read, connection), write
        case McpHttpConfig():
            timeout = httpx2.Timeout(config.connect_timeout, read=_SSE_READ_TIMEOUT)
            async with (
                httpx2.AsyncClient(headers=dict(headers), timeout=timeout) as http,
                streamable_http_client(config.url, http_client=http) as (read, write),
            ):
                yield _WatchedReadStream(read, connection), write


@asynccontextmanager
async def _stderr_drain(logger: logging.Logger) -> AsyncIterator[TextIO]:
    """A pipe for a child's stderr and a task logging what comes out of it, line by line.

    Yields the write end (to hand to the child; close it once the child is spawned). The
    reader never stops reading, so a chatty server never blocks on a full pipe.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    errlog = os.fdopen(write_fd, "w")
    finished = anyio.Event()

    async def drain() -> None:
        pending = b""
        try:
            while True:
                await anyio.wait_readable(read_fd)
                try:
                    chunk = os.read(read_fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                while len(pending) > _MAX_LINE:
                    lines.append(pending[:_MAX_LINE])
                    pending = pending[_MAX_LINE:]
                for line in lines:
                    _log_line(logger, line)
            if pending:
                _log_line(logger, pending)
        except OSError as exc:
            logger.warning("stopped reading the server's stderr: %s", exc)
        finally:
            finished.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            try:
                yield errlog
            finally:
                errlog.close()
                # The process is gone: give its last lines a moment to arrive, but no more.
                with anyio.move_on_after(_STDERR_GRACE, shield=True):
                    await finished.wait()
                tg.cancel_scope.cancel()
    finally:
        os.close(read_fd)


def _log_line(logger: logging.Logger, line: bytes) -> None:
    text = line.decode("utf-8", "replace").rstrip("\r")
    if text:
        logger.info("%s", text)
