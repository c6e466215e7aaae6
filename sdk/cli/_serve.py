"""``loom serve``: host the runtime and its gRPC bridge until a signal asks it to stop.

The composition root of a server process: it builds the bus, the actor runtime and the bridge
server, reports readiness (the bound port) through ``task_status``, and on SIGINT or SIGTERM
drains within the configured grace: the bridge first (health ``NOT_SERVING``, streams end with
``UNAVAILABLE``, calls in flight get the grace), then the agents, then the bus.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus

from loom.bridge import BridgeServer
from loom.runtime import AgentRuntime, EventBus

from ._config import ServeConfig, ServiceTables

__all__ = ["serve"]

log = logging.getLogger("loom.serve")


@asynccontextmanager
async def _mcp_hub(
    tables: ServiceTables, runtime: AgentRuntime, environ: Mapping[str, str]
) -> AsyncIterator[None]:
    """The configured MCP servers, their tools in the runtime's registry (none: nothing)."""
    if tables.llm is not None:
        log.info("loom serve: LLM providers configured: %s", ", ".join(tables.llm.providers))
    if not tables.mcp:
        yield
        return
    from loom.runtime.tools import McpHub  # the mcp SDK loads only when it is used

    async with McpHub(tables.mcp, runtime.tools, environ=environ) as hub:
        log.info("loom serve: MCP servers: %s", ", ".join(hub.servers))
        yield


async def serve(
    config: ServeConfig,
    *,
    tables: ServiceTables | None = None,
    environ: Mapping[str, str] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Loom server until SIGINT or SIGTERM, then drain and stop.

    Reports the bound port through ``task_status`` once the bridge accepts calls, so
    ``await tg.start(serve, config)`` returns it (``port = 0`` picks a free one). The MCP
    servers of ``tables`` are connected first and their tools registered in the runtime, so
    every agent and ``ForwardToolCall`` can use them from the first call; ``environ`` is what
    their ``pass_env``/``headers_env`` read.

    Raises:
        InsecureBind: a non-loopback host without a token or TLS.
        BindError: the address cannot be bound.
    """
    data_dir = await anyio.Path(config.data_dir).resolve()
    await data_dir.mkdir(parents=True, exist_ok=True)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        tables = tables if tables is not None else ServiceTables()
        async with (
            EventBus(
                drain_grace=config.drain_grace_s, max_buffer_bytes=config.max_buffer_bytes
            ) as bus,
            AgentRuntime(bus) as runtime,
            _mcp_hub(tables, runtime, environ or {}),
            BridgeServer(
                runtime,
                host=config.host,
                port=config.port,
                token=config.token,
                tls=config.tls(),
                limits=config.limits(),
                grace_s=config.drain_grace_s,
            ) as server,
        ):
            log.info("loom serve: event bus up (pid %d, data dir %s)", os.getpid(), data_dir)
            log.info(
                "loom serve: listening on %s (%s%s)",
                server.address,
                "TLS" if config.tls_cert_file else "plaintext",
                ", token required" if config.token else "",
            )
            task_status.started(server.port)
            async for signum in signals:
                log.info("loom serve: %s received, draining", signal.Signals(signum).name)
                break
            await server.aclose()
            await runtime.aclose()
            await bus.aclose()
    log.info("loom serve: stopped")
