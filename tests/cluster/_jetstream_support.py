"""A real ``nats-server -js`` per test, on a free port, with its store in a temporary dir.

Readiness is the ports file the server writes once it listens (``--ports_file_dir``), waited
for with a bounded deadline; a restart reuses the same port and store, so clients reconnect
and find what was stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
from nats.aio.client import Client

from loom.cluster import JetStreamLog
from loom.runtime import EventBus

NATS_SERVER = str(Path(sys.executable).parent / "nats-server")


class NatsServer:
    """One nats-server process with JetStream; ``kill()`` and ``start()`` again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "js"
        self.port = -1  # the first start picks a free port; restarts reuse it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        ports_dir = self.root / f"ports-{time.monotonic_ns()}"
        ports_dir.mkdir()
        args = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-sd", str(self.store), "--ports_file_dir", str(ports_dir)]
        # A quick fork; the wait for readiness below is the part that must not block.
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with anyio.fail_after(10):
            while True:
                files = list(ports_dir.glob("*.ports"))
                if files:
                    text = files[0].read_text()
                    if text.strip():
                        break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
                await anyio.sleep(0.01)
        self.port = int(json.loads(text)["nats"][0].rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@asynccontextmanager
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.kill()


async def connect(server: NatsServer) -> Client:
    return await nats.connect(
        server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05, connect_timeout=5
    )


@asynccontextmanager
async def durable_bus(
    server: NatsServer,
    *,
    ack_wait: float = 30.0,
    publish_timeout: float = 30.0,
    max_bytes: int = 1 << 30,
) -> AsyncIterator[tuple[EventBus, JetStreamLog]]:
    """A connected client, a ``JetStreamLog`` on it, a bus using it: all closed after."""
    nc = await connect(server)
    try:
        async with (
            JetStreamLog(
                nc, ack_wait=ack_wait, publish_timeout=publish_timeout, max_bytes=max_bytes
            ) as log,
            EventBus(durable_log=log) as bus,
        ):
            yield bus, log
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
