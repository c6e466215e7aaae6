"""MCP over stdio: a real MCP server (tests/runtime/tools/mcp_servers/tools_server.py, written
with the SDK's server API) run as a subprocess, its tools called through a ToolRegistry."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from loom.runtime.tools import (
    InvalidToolArguments,
    McpHub,
    McpServer,
    McpServerStatus,
    McpStdioConfig,
    McpTool,
    ToolFailed,
    ToolRegistry,
    ToolTimeout,
    ToolUnavailable,
    load_mcp_config,
)

from .mcp_servers import TOOLS_SERVER, LogLines, wait_for

pytestmark = pytest.mark.anyio

SERVER = TOOLS_SERVER
TOOLS = {
    "t.add",
    "t.chatter",
    "t.crash",
    "t.echo",
    "t.fail",
    "t.grow",
    "t.header",
    "t.log",
    "t.picture",
    "t.slow",
}


def stdio_config(**overrides: Any) -> McpStdioConfig:
    table: dict[str, Any] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SERVER), "stdio"],
        "call_timeout": 5,
        "connect_timeout": 10,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    config = load_mcp_config({"t": table | overrides})["t"]
    assert isinstance(config, McpStdioConfig)
    return config


@pytest.fixture
def stderr_lines() -> Iterator[LogLines]:
    logger = logging.getLogger("loom.mcp.t")
    handler = LogLines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope, so that one server process can serve the tests that only call tools.
    return "asyncio"


@pytest.fixture(scope="module")
async def shared_server() -> AsyncIterator[McpServer]:
    async with McpServer("t", stdio_config()) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
        yield server


@pytest.fixture
async def connected(shared_server: McpServer) -> tuple[McpServer, ToolRegistry]:
    """The shared server's tools in a fresh registry (fresh counters for each test)."""
    registry = ToolRegistry()
    for tool in shared_server.tools():
        registry.register(tool, timeout=shared_server.config.call_timeout)
    return shared_server, registry


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[McpServer, ToolRegistry]]:
    """A server of the test's own, for tests that crash it or change its tools."""
    registry = ToolRegistry()
    async with McpServer("t", stdio_config(), registry=registry) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
        yield server, registry


async def test_lists_the_servers_tools_as_namespaced_loom_tools(
    connected: tuple[McpServer, ToolRegistry],
) -> None:
    server, registry = connected
    assert {tool.name for tool in registry.list()} == TOOLS
    assert {tool.name for tool in server.tools()} == TOOLS
    add = registry.get("t.add")
    assert isinstance(add, McpTool)
    assert (add.server, add.remote_name) == ("t", "add")
    assert add.description == "Add two integers."
    assert add.parameters_schema["properties"]["a"]["type"] == "integer"
    assert add.parameters_schema["required"] == ["a", "b"]
    spec = {s.name: s for s in registry.specs()}["t.echo"]
    assert spec.description == "Return the text unchanged."
    assert registry.statistics().tools["t.add"].timeout == 5.0


async def test_call_returns_text_structured_or_blocks(
    connected: tuple[McpServer, ToolRegistry],
) -> None:
    _, registry = connected
    assert await registry.call("t.echo", {"text": "héllo"}) == "héllo"
    assert await registry.call("t.add", '{"a": 2, "b": 40}') == {"result": 42}
    assert await registry.call("t.picture", {}) == [
        {"type": "text", "text": "a red dot"},
        {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
    ]
    assert registry.statistics().tools["t.add"].succeeded == 1


async def test_an_is_error_result_is_tool_failed(
    connected: tuple[McpServer, ToolRegistry],
) -> None:
    _, registry = connected
    with pytest.raises(ToolFailed) as info:
        await registry.call("t.fail", {"message": "the disk is full"})
    assert info.value.tool == "t.fail"
    assert info.value.cause_type == "McpToolError"
    assert "the disk is full" in info.value.cause_message
    assert registry.statistics().tools["t.fail"].failures.failed == 1


async def test_schema_invalid_arguments_never_reach_the_server(
    connected: tuple[McpServer, ToolRegistry], stderr_lines: LogLines
) -> None:
    server, registry = connected
    with pytest.raises(InvalidToolArguments) as info:
        await registry.call("t.log", {"lines": "not a list"})
    assert info.value.path == ("lines",)
    with pytest.raises(InvalidToolArguments):
        await registry.call("t.add", {"a": 1})
    # A later call's stderr lines arrive; the refused one's never did (the server's own
    # argument validation would have logged the refusal).
    assert await registry.call("t.log", {"lines": ["after the refusals"]}) == {"result": 1}
    await stderr_lines.wait_for("after the refusals")
    assert not any("rejected arguments" in m for m in stderr_lines.messages)
    assert registry.statistics().tools["t.add"].failures.invalid_arguments == 1
    assert server.statistics().in_flight == 0


async def test_a_slow_tool_times_out_and_the_server_stays_usable(
    connected: tuple[McpServer, ToolRegistry],
) -> None:
    server, registry = connected
    started = anyio.current_time()
    with pytest.raises(ToolTimeout) as info:
        await registry.call("t.slow", {"seconds": 30}, timeout=0.3)
    assert anyio.current_time() - started < 3
    assert info.value.timeout == 0.3
    assert await registry.call("t.echo", {"text": "still here"}) == "still here"
    assert server.status is McpServerStatus.CONNECTED
    assert server.statistics().in_flight == 0


async def test_call_timeout_caps_a_direct_call() -> None:
    async with McpServer("t", stdio_config(call_timeout=0.3)) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
        slow = {tool.name: tool for tool in server.tools()}["t.slow"]
        with pytest.raises(ToolTimeout) as info:
            await slow.call({"seconds": 30})
        assert info.value.timeout == 0.3


async def test_a_crash_makes_tools_unavailable_at_once_then_the_server_is_restarted(
    fresh: tuple[McpServer, ToolRegistry],
    stderr_lines: LogLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, registry = fresh
    caplog.set_level(logging.INFO, logger="loom.mcp")
    async with anyio.create_task_group() as tg:
        # A call in flight when the process dies fails as unavailable, not by its timeout.
        slow_failed = anyio.Event()

        async def slow_call() -> None:
            with pytest.raises(ToolUnavailable):
                await registry.call("t.slow", {"seconds": 30}, timeout=20)
            slow_failed.set()

        tg.start_soon(slow_call)
        await anyio.wait_all_tasks_blocked()
        assert registry.statistics().tools["t.slow"].in_flight == 1
        started = anyio.current_time()
        with pytest.raises(ToolUnavailable) as info:
            await registry.call("t.crash", {"code": 3})
        with anyio.fail_after(2):
            await slow_failed.wait()
        assert anyio.current_time() - started < 2
    assert info.value.server == "t"
    assert info.value.tool == "t.crash"
    # The tools stay registered while the server is down, and say why they cannot run.
    assert {tool.name for tool in registry.list()} == TOOLS
    if server.status is not McpServerStatus.CONNECTED:
        with pytest.raises(ToolUnavailable, match="is unavailable"):
            await registry.call("t.echo", {"text": "too early"})
    await wait_for(server, lambda: server.status is McpServerStatus.CONNECTED)
    assert await registry.call("t.echo", {"text": "back"}) == "back"
    stats = server.statistics()
    assert (stats.connects, stats.disconnects) == (2, 1)
    assert "crashing with exit code 3" in stderr_lines.messages
    assert any("reconnecting in" in m for m in caplog.messages)


async def test_stderr_is_logged_line_by_line(
    connected: tuple[McpServer, ToolRegistry],
    stderr_lines: LogLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, registry = connected
    caplog.set_level(logging.INFO, logger="loom.mcp.t")
    await registry.call("t.log", {"lines": ["first line", "second line", "ünïcode"]})
    await stderr_lines.wait_for("ünïcode")
    records = [r for r in caplog.records if r.name == "loom.mcp.t"]
    messages = [r.getMessage() for r in records]
    assert messages[messages.index("first line") :][:3] == ["first line", "second line", "ünïcode"]
    assert all(r.levelno == logging.INFO for r in records)


async def test_a_chatty_stderr_never_blocks_the_server(
    connected: tuple[McpServer, ToolRegistry],
) -> None:
    _, registry = connected
    # 2 MiB is far beyond a pipe's buffer: the call only returns if stderr is drained meanwhile.
    with anyio.fail_after(10):
        assert await registry.call("t.chatter", {"kilobytes": 2048}) == {"result": 2048}


async def test_tools_follow_the_servers_list_changes(
    fresh: tuple[McpServer, ToolRegistry],
) -> None:
    server, registry = fresh
    add_before = registry.get("t.add")
    assert await registry.call("t.grow", {"name": "sprout"}) == {"result": "sprout"}
    await wait_for(server, lambda: "t.sprout" in registry)
    assert registry.get("t.sprout").description == "Grown as sprout."
    assert await registry.call("t.sprout", {}) == {"result": "sprout"}
    # An unchanged tool keeps its object, and so its registry counters.
    assert registry.get("t.add") is add_before


async def test_closing_unregisters_and_fails_calls_in_flight() -> None:
    registry = ToolRegistry()
    server = McpServer("t", stdio_config(), registry=registry)
    async with anyio.create_task_group() as tg, server:
        with anyio.fail_after(10):
            await server.wait_connected()
        (slow,) = (tool for tool in server.tools() if tool.name == "t.slow")

        async def slow_call() -> None:
            with pytest.raises(ToolUnavailable, match="closing"):
                await slow.call({"seconds": 30})

        tg.start_soon(slow_call)
        await anyio.wait_all_tasks_blocked()
        assert server.statistics().in_flight == 1
        with anyio.fail_after(8):
            await server.aclose()
    assert len(registry) == 0
    assert server.status is McpServerStatus.CLOSED
    with pytest.raises(ToolUnavailable, match="closed"):
        await slow.call({"seconds": 1})
    with pytest.raises(ToolUnavailable, match="closed"):
        await server.wait_connected()


async def test_a_server_that_cannot_start_is_retried_with_backoff(tmp_path: Path) -> None:
    registry = ToolRegistry()
    config = stdio_config(command=str(tmp_path / "no-such-server"), args=[])
    async with McpServer("t", config, registry=registry) as server:
        await wait_for(server, lambda: server.statistics().failed_connects >= 3)
        stats = server.statistics()
        assert stats.connects == 0
        assert stats.last_error is not None
        assert "no-such-server" in stats.last_error
        assert len(registry) == 0


async def test_a_server_that_never_answers_hits_the_connect_timeout() -> None:
    # Reads stdin until EOF and never speaks MCP; exits as soon as its stdin closes.
    silent = ["-c", "import sys; sys.stdin.read()"]
    config = stdio_config(args=silent, connect_timeout=0.3, backoff_initial=5, backoff_max=5)
    async with McpServer("t", config) as server:
        await wait_for(server, lambda: server.status is McpServerStatus.DISCONNECTED)
        assert server.statistics().last_error == "TimeoutError: not connected within 0.3 s"


async def test_the_child_gets_only_the_environment_it_is_given(
    tmp_path: Path, stderr_lines: LogLines
) -> None:
    script = tmp_path / "env_server.py"
    # The tools server, started from a wrapper that first logs two variables to stderr.
    script.write_text(
        "import os, runpy, sys\n"
        "for name in ('FROM_CONFIG', 'PASSED', 'NOT_PASSED'):\n"
        "    print(name, os.environ.get(name, '-'), file=sys.stderr, flush=True)\n"
        f"sys.argv = [{str(SERVER)!r}, 'stdio']\n"
        f"runpy.run_path({str(SERVER)!r}, run_name='__main__')\n"
    )
    config = stdio_config(args=[str(script)], env={"FROM_CONFIG": "1"}, pass_env=["PASSED"])
    environ = {"PASSED": "2", "NOT_PASSED": "3"}
    async with McpServer("t", config, environ=environ) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
    assert stderr_lines.messages[:3] == ["FROM_CONFIG 1", "PASSED 2", "NOT_PASSED -"]


async def test_a_hub_registers_each_enabled_server() -> None:
    registry = ToolRegistry()
    table = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SERVER), "stdio"],
    }
    configs = load_mcp_config({"a": table, "b": table, "off": table | {"enabled": False}})
    async with McpHub(configs, registry) as hub:
        assert set(hub.servers) == {"a", "b"}
        with anyio.fail_after(10):
            await hub.wait_connected()
        assert await registry.call("a.echo", {"text": "from a"}) == "from a"
        assert await registry.call("b.add", {"a": 1, "b": 1}) == {"result": 2}
        assert not any(name.startswith("off.") for name in (t.name for t in registry.list()))
        assert {s.status for s in hub.statistics().servers.values()} == {McpServerStatus.CONNECTED}
    assert len(registry) == 0
    assert {s.status for s in hub.statistics().servers.values()} == {McpServerStatus.CLOSED}


async def test_a_name_taken_in_the_registry_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from loom.runtime.tools import FunctionTool

    registry = ToolRegistry()

    async def mine() -> str:
        return "mine"

    schema = {"type": "object", "properties": {}}
    registry.register(FunctionTool(mine, name="t.echo", description="", parameters_schema=schema))
    async with McpServer("t", stdio_config(), registry=registry) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
        assert await registry.call("t.echo", {}) == "mine"
        assert "t.add" in registry
    assert [tool.name for tool in registry.list()] == ["t.echo"]
    assert any("'t.echo' not registered" in m for m in caplog.messages)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_too(stderr_lines: LogLines) -> None:
    registry = ToolRegistry()
    async with McpServer("t", stdio_config(), registry=registry) as server:
        with anyio.fail_after(10):
            await server.wait_connected()
        assert await registry.call("t.echo", {"text": "trio"}) == "trio"
        await registry.call("t.log", {"lines": ["from trio"]})
        await stderr_lines.wait_for("from trio")
        with pytest.raises(ToolUnavailable):
            await registry.call("t.crash", {})
        await wait_for(server, lambda: server.statistics().connects == 2)
        assert await registry.call("t.echo", {"text": "again"}) == "again"
