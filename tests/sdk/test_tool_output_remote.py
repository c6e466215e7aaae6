"""Partial tool output across processes (``STREAM_FEATURE_TOOL_OUTPUT``), with real processes:
a remote SDK agent's ``CognitiveAgent`` calling a streaming tool of the server, the server's
own turn calling a streaming tool of a remote agent, a real ``loom serve`` between two
agent processes (both directions at once), and ``loom serve``'s A2A tool called from an agent
process. Each time the caller's stream topic shows the 20
pieces as ``turn.tool_output``, in order, between ``turn.tool_started`` and
``turn.tool_finished``, as in process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from loom import CognitiveAgent
from loom.bridge import AdminClient
from loom.runtime import AgentRuntime, Event, QoS, Subscription
from loom.runtime.collab import request
from loom.runtime.testing import Reply, ScriptedLLMServer
from loom.runtime.tools import ToolRegistry

from ..bridge._client_support import Hosting, hosting
from ._a2a_support import StreamExecutor, serve_a2a
from ._cli_support import PYTHON, clean_env, loom, loom_serve, running, running_argv
from ._tool_output_agents import PIECES, counting_tool
from .test_budget_agents import calling, provider_for

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).with_name("_tool_output_agents.py")
WAIT = 30.0
EXPECTED = [f"piece {i};" for i in range(PIECES)]


@asynccontextmanager
async def agent_process(host: Hosting, *argv: str) -> AsyncIterator[None]:
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    process = await anyio.open_process([sys.executable, str(SCRIPT), *argv], env=env, stderr=None)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def online(runtime: AgentRuntime, agent_id: str) -> None:
    with anyio.fail_after(WAIT):
        while runtime.directory.get(agent_id) is None:
            await runtime.directory.wait_changed()


async def offered(runtime: AgentRuntime, tool: str) -> None:
    with anyio.fail_after(WAIT):
        while runtime.describe_tool(tool) is None:
            await runtime.directory.wait_changed()


def turn_events(events: list[Event]) -> list[tuple[str, str]]:
    """The turn's tool updates, as (type, text): text for tool_output, the name otherwise."""
    seen = []
    for event in events:
        if event.type == "turn.tool_started":
            seen.append((event.type, json.loads(event.payload)["name"]))
        elif event.type == "turn.tool_finished":
            seen.append((event.type, json.loads(event.payload)["result"]["name"]))
        elif event.type == "turn.tool_output":
            seen.append((event.type, json.loads(event.payload)["text"]))
    return seen


def expected(tool: str) -> list[tuple[str, str]]:
    return [
        ("turn.tool_started", tool),
        *(("turn.tool_output", text) for text in EXPECTED),
        ("turn.tool_finished", tool),
    ]


async def until_end(stream: Subscription) -> list[Event]:
    events = []
    with anyio.fail_after(WAIT):
        async for delivery in stream:
            events.append(delivery.event)
            if delivery.event.type == "turn.end":
                return events
    raise AssertionError("no turn.end")


async def test_a_server_tool_streams_into_a_remote_agents_turn() -> None:
    tools = ToolRegistry()
    tools.register(counting_tool("stream.count"))
    async with ScriptedLLMServer() as llm, hosting(tools=tools) as host:
        llm.push(calling("stream.count"), Reply(text="done"))
        async with (
            agent_process(host, "asker", llm.openai_base_url, "stream.count"),
            host.bus.subscribe("agent.asker.stream") as stream,
        ):
            await online(host.runtime, "asker")
            with anyio.fail_after(WAIT):
                await request(host.bus, "agent.asker.replies", b"go", timeout=WAIT)
            events = await until_end(stream)
    assert turn_events(events) == expected("stream.count")
    finished = [e for e in events if e.type == "turn.tool_finished"]
    assert json.loads(finished[0].payload)["result"]["content"] == "counted"


async def test_a_remote_agents_tool_streams_into_a_server_turn() -> None:
    async with (
        ScriptedLLMServer() as server,
        provider_for(server) as llm,
        hosting() as host,
        agent_process(host, "streamer"),
    ):
        server.push(calling("stream.remote"), Reply(text="done"))
        await offered(host.runtime, "stream.remote")
        origin = CognitiveAgent("origin", llm=llm, use_capabilities=["stream.remote"])
        await host.runtime.start(origin)
        async with host.bus.subscribe(origin.stream_topic) as stream:
            with anyio.fail_after(WAIT):
                await request(host.bus, "agent.origin.replies", b"go", timeout=WAIT)
            events = await until_end(stream)
    assert turn_events(events) == expected("stream.remote")


async def test_through_loom_serve_between_two_agent_processes(tmp_path: Path) -> None:
    """asker (a process) -> loom serve (a process) -> streamer (a process): the pieces go up
    from the streamer to the server and on down to the asker, whose turn publishes them."""
    async with ScriptedLLMServer() as llm:
        llm.push(calling("stream.remote"), Reply(text="done"))
        env = clean_env()
        data = str(tmp_path / "serve-data")
        async with running(
            "serve", "--port", "0", "--data-dir", data, "--http", "off", cwd=tmp_path, env=env
        ) as server:
            address = (await server.wait_for(r"listening on (\S+:\d+)")).group(1)
            agent_env = {**env, "LOOM_BRIDGE_ADDR": address}
            streamer = [*PYTHON, str(SCRIPT), "streamer"]
            asker = [*PYTHON, str(SCRIPT), "asker", llm.openai_base_url, "stream.remote"]
            async with (
                AdminClient(address, timeout=10) as admin,
                admin.subscribe("agent.asker.stream", qos=QoS.BATCHED) as stream,
                running_argv(streamer, cwd=tmp_path, env=agent_env) as streaming,
            ):
                await streaming.wait_for(r"connected to .* as streamer")
                async with running_argv(asker, cwd=tmp_path, env=agent_env) as asking:
                    await asking.wait_for(r"connected to .* as asker")
                    asked = await loom(
                        "ask", "asker", "go", "-a", address, cwd=tmp_path, env=agent_env
                    )
                    assert asked.returncode == 0, asked.stderr
                    events = []
                    with anyio.fail_after(WAIT):
                        async for delivery in stream:
                            events.append(delivery.event)
                            if delivery.event.type == "turn.end":
                                break
    assert turn_events(events) == expected("stream.remote")
    assert msgspec.json.decode(events[-1].payload)["kind"] == "answer"


async def test_an_a2a_tool_of_loom_serve_streams_into_an_agent_process(tmp_path: Path) -> None:
    """The issue's case: ``a2a.<name>`` served by ``loom serve`` (a remote A2A agent that
    streams, the a2a-sdk's server in this process), called by a ``CognitiveAgent`` in a
    process of its own: the A2A agent's pieces reach that agent's stream topic."""
    async with ScriptedLLMServer() as llm, serve_a2a(StreamExecutor(), name="shouter") as url:
        (tmp_path / "loom.toml").write_text(f'[a2a.remote.shouter]\nurl = "{url}"\n')
        llm.push(calling("a2a.shouter", {"message": "a b"}), Reply(text="It shouted A B."))
        env = clean_env()
        with anyio.fail_after(60):
            async with loom_serve(tmp_path, "--log-level", "info", env=env) as (server, address):
                await server.wait_for(r"A2A agents: a2a\.shouter")
                agent_env = {**env, "LOOM_BRIDGE_ADDR": address}
                asker = [*PYTHON, str(SCRIPT), "asker", llm.openai_base_url, "a2a.shouter"]
                async with (
                    AdminClient(address, timeout=10) as admin,
                    admin.subscribe("agent.asker.stream", qos=QoS.BATCHED) as stream,
                    running_argv(asker, cwd=tmp_path, env=agent_env) as asking,
                ):
                    await asking.wait_for(r"connected to .* as asker")
                    asked = await loom(
                        "ask", "asker", "shout a b", "-a", address, cwd=tmp_path, env=agent_env
                    )
                    assert asked.returncode == 0, asked.stderr
                    assert asked.stdout.decode().endswith("It shouted A B.\n")
                    events = []
                    async for delivery in stream:
                        events.append(delivery.event)
                        if delivery.event.type == "turn.end":
                            break
    assert turn_events(events) == [
        ("turn.tool_started", "a2a.shouter"),
        ("turn.tool_output", "thinking… "),
        ("turn.tool_output", "A "),
        ("turn.tool_output", "B "),
        ("turn.tool_finished", "a2a.shouter"),
    ]
