"""Agents in their own processes (``Agent.run``), connected to a real ``loom serve`` through the
bridge, exposed over A2A by the card they declare in code (``Agent(..., a2a=AgentCard(...))``)
while they are connected; ``tasks/cancel`` stops such an agent's turn (a ``cancel_turn``
frame), and is refused for one whose stream takes no cancels. Driven by the ``a2a-sdk``'s own
client over real HTTP; the model is the scripted LLM server (OpenAI wire)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, create_client
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError

from loom.runtime.testing import Delay, Reply, ScriptedLLMServer

from ..web._support import serve_http
from ._cli_support import PYTHON, Running, clean_env, running, running_argv
from .test_budget_agents import calling

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).with_name("_a2a_bridge_agents.py")
WAIT = 60.0


@asynccontextmanager
async def agent_process(tmp_path: Path, address: str, *argv: str) -> AsyncIterator[Running]:
    env = clean_env(LOOM_BRIDGE_ADDR=address, PYTHONUNBUFFERED="1")
    async with running_argv([*PYTHON, str(SCRIPT), *argv], cwd=tmp_path, env=env) as agent:
        yield agent


@asynccontextmanager
async def a2a_client(root: str, *, streaming: bool = True) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=30) as http:
        config = ClientConfig(streaming=streaming, httpx_client=http)
        client = await create_client(root, client_config=config)
        async with client:
            yield client


def message(text: str, *, context_id: str = "") -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            context_id=context_id,
            parts=[Part(text=text)],
        )
    )


async def until_working(updates: AsyncGenerator[StreamResponse, None]) -> str:
    """Read the stream until the task works; its id."""
    task_id = ""
    async for response in updates:
        if response.HasField("task"):
            task_id = response.task.id
        if (
            response.HasField("status_update")
            and response.status_update.status.state == TaskState.TASK_STATE_WORKING
        ):
            return task_id
    raise AssertionError("the stream ended before the task worked")


async def test_a_connected_agents_card_is_served_and_cancel_stops_its_turn(
    tmp_path: Path,
) -> None:
    mark = tmp_path / "marked"
    async with (
        ScriptedLLMServer() as llm,
        serve_http(tmp_path, "--nats", "off") as (
            server,
            address,
            url,
        ),
    ):
        # The model takes its time; after the delay it would call the tool `mark`.
        llm.push(Delay(seconds=WAIT, then=calling("mark")))
        root = f"{url}a2a/thinker/"
        async with (
            agent_process(tmp_path, address, "thinker", llm.openai_base_url, str(mark)),
            # What reaches the server of the agent's turns: their ends.
            running(
                *("tail", "agent.thinker.stream", "--type", "turn.end", "-a", address),
                cwd=tmp_path,
            ) as ends,
        ):
            with anyio.fail_after(WAIT):
                await ends.wait_for("tailing agent")
                # No [a2a] expose: the card came with the agent's registration.
                await server.wait_for(r"A2A: exposing thinker \(connected with its card\)")
                async with httpx.AsyncClient(timeout=30) as http:
                    card = await A2ACardResolver(http, root).get_agent_card()
                assert card.name == "Thinker"
                assert card.description == "Thinks slowly, then marks."
                assert card.version == "2.5.0"
                assert [(s.id, s.name, list(s.tags)) for s in card.skills] == [
                    ("think", "Think", ["t"])
                ]
                assert card.supported_interfaces[0].url == root

                async with a2a_client(root) as client:
                    updates = cast(
                        AsyncGenerator[StreamResponse, None],
                        client.send_message(message("Think, then mark.")),
                    )
                    task_id = await until_working(updates)
                    await llm.wait_requests(1)  # the turn is in its (slow) model call
                    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
                    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
                    # The agent's process cancelled the turn: its model call was abandoned...
                    await llm.wait_abandoned(1)
                    await updates.aclose()
                    # ... and its turn.end (outcome cancelled) reached the server.
                    await ends.wait_for(r"turn\.end .*cancelled", timeout=WAIT)
                    got = await client.get_task(GetTaskRequest(id=task_id))
                    assert got.status.state == TaskState.TASK_STATE_CANCELED
                    assert not got.artifacts
                assert not mark.exists()  # the tool after the cancel point never ran
                assert len(llm.requests) == 1

                # message/send reaches the agent in its process; the next turn answers.
                llm.push(Reply(text="Here now."))
                async with a2a_client(root, streaming=False) as client:
                    last = None
                    async for response in client.send_message(message("Still there?")):
                        if response.HasField("task"):
                            last = response.task
                    assert last is not None
                    assert last.status.state == TaskState.TASK_STATE_COMPLETED
                    assert last.artifacts[0].parts[0].text == "Here now."
        # The agent left: it is no longer served.
        with anyio.fail_after(WAIT):
            await server.wait_for(r"A2A: thinker left: no longer exposed")
            async with httpx.AsyncClient(timeout=30) as http:
                gone = await http.get(f"{root}.well-known/agent-card.json")
                assert gone.status_code == 404
                rpc = await http.post(
                    root, json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}
                )
                assert rpc.status_code == 404
                assert rpc.json()["error"]["code"] == -32001
                assert "not exposed" in rpc.json()["error"]["message"]
                top = await http.get(f"{url}.well-known/agent-card.json")
                assert top.status_code == 404
            # Its store, opened when it came, closes with the server: a clean stop.
            assert await server.stop() == 0
            assert "Traceback" not in server.output
        assert not mark.exists()


async def test_a_cancel_an_agent_cannot_take_is_refused(tmp_path: Path) -> None:
    async with serve_http(tmp_path, "--nats", "off") as (server, address, url):
        root = f"{url}a2a/plain/"
        async with agent_process(tmp_path, address, "plain") as agent:
            with anyio.fail_after(WAIT):
                await server.wait_for(r"A2A: exposing plain \(connected with its card\)")
                async with httpx.AsyncClient(timeout=30) as http:
                    card = await A2ACardResolver(http, root).get_agent_card()
                    assert card.description == "Plain and slow."
                    assert [s.id for s in card.skills] == ["message"]
                async with a2a_client(root) as client:
                    updates = cast(
                        AsyncGenerator[StreamResponse, None],
                        client.send_message(message("Take your time.")),
                    )
                    task_id = await until_working(updates)
                    # Its handler runs no turn, and its stream does not take cancels of
                    # turns: the cancel is refused, saying so, and the task works on.
                    with pytest.raises(TaskNotCancelableError) as info:
                        await client.cancel_task(CancelTaskRequest(id=task_id))
                    assert "cannot be cancelled remotely" in str(info.value)
                    got = await client.get_task(GetTaskRequest(id=task_id))
                    assert got.status.state == TaskState.TASK_STATE_WORKING, got
                    await updates.aclose()
            agent.signal(signal.SIGKILL)  # gone at once, not drained: the stream just drops
            with anyio.fail_after(WAIT):
                await server.wait_for(r"A2A: plain left: no longer exposed")
