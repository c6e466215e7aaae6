"""Real ``nats-server`` processes for the cluster tests: on a port the server picks itself
(read from its output), JetStream on, storage in the test's own directory, killed at the end.

``nats_server`` is the fixture; :func:`start_nats_server` the same as an async context
manager, for a test that needs several servers, a token, or a restart on the same port.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process

from loom.cluster import find_nats_server

_CLIENT = re.compile(rb"Listening for client connections on \S+:(\d+)")


class NatsServerProcess:
    """A running ``nats-server``: its URL, port, process, and what it has printed."""

    def __init__(self, process: Process, store_dir: Path, token: str | None) -> None:
        self.process = process
        self.store_dir = store_dir
        self.token = token
        self.port = 0
        self.output: list[bytes] = []
        self._ready = anyio.Event()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL it (the test's fault to inject); ``async with`` still reaps it."""
        if self.process.returncode is None:
            self.process.kill()

    async def _read(self, stream: ByteReceiveStream) -> None:
        # Read to the end so the server never blocks on a full pipe.
        pending = b""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.output.append(line)
                if (m := _CLIENT.search(line)) is not None:
                    self.port = int(m.group(1))
                if line.endswith(b"Server is ready"):
                    self._ready.set()
        self._ready.set()


@asynccontextmanager
async def start_nats_server(
    store_dir: Path, *, token: str | None = None, port: int = -1, extra: Sequence[str] = ()
) -> AsyncIterator[NatsServerProcess]:
    """A ``nats-server`` with JetStream under ``store_dir``, on ``port`` (-1: a free one),
    with ``extra`` arguments (``--user``, ``--tlsverify`` ...); yielded once it says it is
    ready; SIGKILLed and reaped on exit."""
    argv = [str(find_nats_server()), "-js", "-sd", str(store_dir), "-a", "127.0.0.1"]
    argv += ["-p", str(port), *extra]
    if token is not None:
        argv += ["--auth", token]
    process = await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = NatsServerProcess(process, store_dir, token)
    async with process, anyio.create_task_group() as tg:
        assert process.stderr is not None
        tg.start_soon(server._read, process.stderr)
        try:
            with anyio.fail_after(15):
                await server._ready.wait()
            assert server.port, b"\n".join(server.output).decode(errors="replace")
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                server.kill()
                await process.wait()
            tg.cancel_scope.cancel()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServerProcess]:
    """A real ``nats-server`` with JetStream on a free port, for one test."""
    async with start_nats_server(tmp_path / "nats-fixture") as server:
        yield server
