"""MCP over streamable HTTP: the tools server run as a subprocess serving 127.0.0.1 on a port it
picked and printed; connect, call, and survive the server going away and coming back."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from loom.runtime.tools import (
    McpHttpConfig,
    McpServer,
    McpServerStatus,
    ToolFailed,
    ToolRegistry,
    ToolUnavailable,
    load_mcp_config,
)

from .mcp_servers import http_tools_server, wait_for

pytestmark = pytest.mark.anyio


def http_config(port: int, **overrides: Any) -> McpHttpConfig:
    table: dict[str, Any] = {
        "transport": "http",
        "url": f"http://127.0.0.1:{port}/mcp",
        "call_timeout": 5,
        "connect_timeout": 5,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    config = load_mcp_config({"h": table | overrides})["h"]
    assert isinstance(config, McpHttpConfig)
    return config


async def test_connect_list_and_call_over_http() -> None:
    registry = ToolRegistry()
    async with http_tools_server() as (_, port):
        config = http_config(
            port,
            headers={"X-Client": "loom-tests"},
            headers_env={"Authorization": "TEST_MCP_AUTH"},
        )
        environ = {"TEST_MCP_AUTH": "Bearer s3cret"}
        async with McpServer("h", config, registry=registry, environ=environ) as server:
            with anyio.fail_after(10):
                await server.wait_connected()
            assert "h.echo" in registry
            assert "h.add" in registry
            assert await registry.call("h.echo", {"text": "over http"}) == "over http"
            assert await registry.call("h.add", {"a": 20, "b": 22}) == {"result": 42}
            # Both kinds of configured header reach the server on every request.
            assert await registry.call("h.header", {"name": "x-client"}) == {"result": "loom-tests"}
            assert await registry.call("h.header", {"name": "authorization"}) == {
                "result": "Bearer s3cret"
            }
            with pytest.raises(ToolFailed, match="nope"):
                await registry.call("h.fail", {"message": "nope"})
            assert "s3cret" not in repr(server.statistics())
    assert len(registry) == 0


async def test_the_server_going_away_and_coming_back_on_the_same_port() -> None:
    registry = ToolRegistry()
    async with http_tools_server() as (process, port):
        server = McpServer("h", http_config(port), registry=registry)
        async with server:
            with anyio.fail_after(10):
                await server.wait_connected()
            assert await registry.call("h.echo", {"text": "first"}) == "first"

            # A crash mid-call: the call fails as unavailable at once, not by its timeout.
            started = anyio.current_time()
            with pytest.raises(ToolUnavailable):
                await registry.call("h.crash", {"code": 1}, timeout=20)
            assert anyio.current_time() - started < 3
            await process.wait()
            await wait_for(server, lambda: server.status is not McpServerStatus.CONNECTED)
            with pytest.raises(ToolUnavailable, match="'h' is unavailable"):
                await registry.call("h.echo", {"text": "nobody there"})
            # Reconnecting fails while nothing listens; the tools stay registered.
            await wait_for(server, lambda: server.statistics().failed_connects >= 2)
            assert "h.echo" in registry

            async with http_tools_server(port) as (_, same_port):
                assert same_port == port
                await wait_for(server, lambda: server.status is McpServerStatus.CONNECTED)
                assert await registry.call("h.echo", {"text": "second"}) == "second"
                stats = server.statistics()
                assert (stats.connects, stats.disconnects) == (2, 1)
            # Killed while idle: the lost listen stream tells, no call needed.
            await wait_for(server, lambda: server.status is not McpServerStatus.CONNECTED)
            assert server.statistics().disconnects == 2
