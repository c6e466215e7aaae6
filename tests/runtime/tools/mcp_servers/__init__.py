"""MCP servers the MCP tests run as subprocesses (written with the ``mcp`` SDK's server API), and
helpers to run them and to wait on what they do without sleeping."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

from loom.runtime.tools import McpServer

TOOLS_SERVER = Path(__file__).parent / "tools_server.py"


class LogLines(logging.Handler):
    """A logger's messages, and a way to wait for one (logging runs in the event loop's thread
    here, so the handler can wake an anyio event)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._arrived = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(self, message: str) -> None:
        with anyio.fail_after(5):
            while message not in self.messages:
                await self._arrived.wait()


async def wait_for(server: McpServer, condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait on the server's change signal until ``condition()`` holds."""
    with anyio.fail_after(timeout):
        while not condition():
            await server.wait_changed()


@asynccontextmanager
async def http_tools_server(port: int = 0) -> AsyncIterator[tuple[anyio.abc.Process, int]]:
    """Run the tools server over streamable HTTP on ``127.0.0.1:port``; yield it and its port.

    The server prints the port once its socket listens, so the port is ready when read. It is
    killed (not asked to stop) on exit: a crash, as far as its clients can tell.
    """
    command = [sys.executable, str(TOOLS_SERVER), "http", str(port)]
    process = await anyio.open_process(command, stderr=None)
    try:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(15):
            while b"\n" not in output:
                output += await process.stdout.receive()
        yield process, int(output.split(b"\n", 1)[0])
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()
