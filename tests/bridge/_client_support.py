"""Helpers of the client tests: a real server on 127.0.0.1 whose runtime outlives it, so a test
can stop the server and start it again on the same port (a restart, as an agent sees it)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio

from loom.bridge import BridgeServer, Limits
from loom.bridge._client import AgentRegistration, BridgeClient, ClientOptions
from loom.bridge._reconnect import Backoff
from loom.runtime import DEFAULT_MAX_BUFFER_BYTES, AgentRuntime, Event, EventBus, Subscription
from loom.runtime.tools import ToolRegistry

FAST = ClientOptions(
    connect_timeout=5.0,
    rpc_timeout=2.0,
    heartbeat_interval=0.2,
    heartbeat_timeout=2.0,
    backoff=Backoff(initial=0.02, maximum=0.2),
    close_grace=1.0,
)


@dataclass
class Hosting:
    """A bus and runtime that stay; the server on top of them comes and goes."""

    bus: EventBus
    runtime: AgentRuntime
    token: str | None = None
    limits: Limits | None = None
    server: BridgeServer | None = None
    port: int = 0
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server: on a free port the first time, on the same port after that."""
        server = BridgeServer(
            self.runtime, port=self.port, token=self.token, limits=self.limits, grace_s=0.5
        )
        await server.__aenter__()
        self.server = server
        self.port = server.port

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.aclose()


@asynccontextmanager
async def hosting(
    *,
    tools: ToolRegistry | None = None,
    token: str | None = None,
    limits: Limits | None = None,
    stale_after_s: float = 15.0,
    sweep_interval_s: float = 5.0,
    max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
) -> AsyncIterator[Hosting]:
    try:
        async with (
            EventBus(drain_grace=0.2, max_buffer_bytes=max_buffer_bytes) as bus,
            AgentRuntime(
                bus,
                tools=tools,
                stop_timeout_s=1.0,
                stale_after_s=stale_after_s,
                sweep_interval_s=sweep_interval_s,
            ) as runtime,
        ):
            host = Hosting(bus, runtime, token=token, limits=limits)
            await host.start()
            try:
                yield host
            finally:
                await host.stop()
    finally:
        # As _server_harness.serving: free the test's gRPC objects (the server, its clients'
        # channels) while this loop still runs, or the next test's loop meets a poller of
        # this closed one ("Event loop is closed").
        gc.collect()


def client(
    host: Hosting,
    agent_id: str,
    *,
    topics: tuple[str, ...] = (),
    options: ClientOptions = FAST,
    token: str | None = None,
) -> BridgeClient:
    return BridgeClient(
        host.address,
        AgentRegistration(agent_id=agent_id, topics=topics),
        token=token if token is not None else host.token,
        options=options,
    )


async def next_of(sub: Subscription, *types: str, timeout: float = 5.0) -> Event:
    """The next event on ``sub`` whose type is one of ``types``."""
    with anyio.fail_after(timeout):
        while True:
            delivery = await sub.receive()
            if delivery.event.type in types:
                return delivery.event
