"""The A2A server of ``loom serve`` (``[a2a] expose``), driven by the ``a2a-sdk``'s own client
over real HTTP: a real ``loom serve`` subprocess hosting a ``CognitiveAgent`` whose model is
the scripted LLM server (the OpenAI wire, real HTTP)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, create_client
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from google.protobuf.json_format import MessageToDict

from loom.runtime.testing import Delay, Reply, ScriptedLLMServer, ScriptedToolCall

from ._support import serve_http

pytestmark = pytest.mark.anyio

TOKEN = "a2a-test-token-0123456789abcdef"


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 60\n"
        "\n[agents.assistant]\n"
        'llm = "scripted"\n'
        'tools = ["clock.now"]\n'
        "\n[a2a]\n"
        'expose = ["assistant", "ghost"]\n'
        "\n[a2a.card.assistant]\n"
        'description = "Tells the time."\n'
    )


@asynccontextmanager
async def _server(tmp_path: Path, llm: ScriptedLLMServer, *extra: str) -> AsyncIterator[str]:
    """``loom serve`` exposing ``assistant``; yields the agent's A2A root URL."""
    (tmp_path / "loom.toml").write_text(_toml(llm))
    async with serve_http(tmp_path, "--nats", "off", *extra) as (server, _address, url):
        await server.wait_for(r"A2A: exposing assistant, ghost")
        yield f"{url}a2a/assistant/"


@asynccontextmanager
async def _client(
    root: str, *, streaming: bool = True, token: str | None = None
) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        config = ClientConfig(streaming=streaming, httpx_client=http)
        client = await create_client(root, client_config=config)
        async with client:
            yield client


def _message(text: str, *, context_id: str = "") -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            context_id=context_id,
            parts=[Part(text=text)],
        )
    )


def _describe(response: StreamResponse) -> str:
    """One update, as the order assertions read it."""
    kind = response.WhichOneof("payload")
    if kind == "task":
        return f"task:{TaskState.Name(response.task.status.state)}"
    if kind == "status_update":
        update = response.status_update
        loom = MessageToDict(update.metadata).get("loom", "")
        return f"status:{TaskState.Name(update.status.state)}" + (f":{loom}" if loom else "")
    if kind == "artifact_update":
        return f"artifact:{response.artifact_update.artifact.name}"
    return str(kind)


def _updates(client: Client, request: SendMessageRequest) -> AsyncGenerator[StreamResponse, None]:
    # The client's method is an async generator; closed by hand when left early.
    return cast(AsyncGenerator[StreamResponse, None], client.send_message(request))


async def _final_task(client: Client, request: SendMessageRequest) -> Task:
    last: Task | None = None
    async for response in client.send_message(request):
        if response.HasField("task"):
            last = response.task
    assert last is not None
    return last


async def test_card_send_stream_get_and_json_rpc_errors(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(
            Reply(text="Noon."),
            Reply(tool_calls=[ScriptedToolCall(name="clock_now")]),
            Reply(text="It is now.", chunk_size=100),
        )
        async with _server(tmp_path, llm) as root:
            with anyio.fail_after(60):
                async with httpx.AsyncClient(timeout=30) as http:
                    card = await A2ACardResolver(http, root).get_agent_card()
                    top = await http.get(root.split("/a2a/")[0] + "/.well-known/agent-card.json")
                    assert top.json()["name"] == "assistant"
                assert card.name == "assistant"
                assert card.description == "Tells the time."
                assert card.capabilities.streaming
                assert [i.protocol_binding for i in card.supported_interfaces] == [
                    "JSONRPC",
                    "HTTP+JSON",
                ]
                assert card.supported_interfaces[0].url == root
                assert [s.id for s in card.skills] == ["message"]  # it offers no capability
                assert not card.security_schemes  # no token: none to present

                # message/send: the answer is the task's artifact, the task is completed.
                async with _client(root, streaming=False) as client:
                    task = await _final_task(client, _message("What time is it?"))
                    assert task.status.state == TaskState.TASK_STATE_COMPLETED
                    assert task.artifacts[0].parts[0].text == "Noon."
                    fetched = await client.get_task(GetTaskRequest(id=task.id))
                    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
                    assert fetched.artifacts[0].parts[0].text == "Noon."

                # message/stream: the turn's tool call, its text, then the answer, in order.
                async with _client(root) as client:
                    seen = [
                        _describe(r)
                        async for r in client.send_message(
                            _message("And now?", context_id=task.context_id)
                        )
                    ]
                assert seen == [
                    "task:TASK_STATE_SUBMITTED",
                    "status:TASK_STATE_WORKING",
                    "status:TASK_STATE_WORKING:turn.tool_started",
                    "status:TASK_STATE_WORKING:turn.tool_finished",
                    "status:TASK_STATE_WORKING:turn.text",
                    "artifact:answer",
                    "status:TASK_STATE_COMPLETED",
                ], seen
                # The context is the agent's thread: the second turn saw the first.
                said = [m.get("content") for m in llm.requests[-1].body["messages"]]
                assert "What time is it?" in said
                assert "Noon." in said

                # Bad JSON-RPC and unknown methods: JSON-RPC errors; the server serves on.
                async with httpx.AsyncClient(timeout=30) as http:
                    bad = await http.post(root, content=b"{not json")
                    assert bad.json()["error"]["code"] == -32700
                    unknown = await http.post(
                        root, json={"jsonrpc": "2.0", "id": 7, "method": "tasks/explode"}
                    )
                    body = unknown.json()
                    assert body["id"] == 7
                    assert body["error"]["code"] == -32601
                    no_task = await http.post(
                        root,
                        json={
                            "jsonrpc": "2.0",
                            "id": 8,
                            "method": "GetTask",
                            "params": {"id": "no-such-task"},
                        },
                        headers={"A2A-Version": "1.0"},
                    )
                    assert no_task.json()["error"]["code"] == -32001  # TaskNotFoundError
                # An agent nobody runs fails at once; a message without text is rejected.
                ghost = root.replace("/assistant/", "/ghost/")
                async with _client(ghost, streaming=False) as client:
                    failed = await _final_task(client, _message("Anyone?"))
                    assert failed.status.state == TaskState.TASK_STATE_FAILED
                    assert "ghost is not running" in failed.status.message.parts[0].text
                async with _client(root, streaming=False) as client:
                    request = _message("")
                    request.message.parts[0].Clear()
                    request.message.parts[0].url = "https://example.com/x"
                    rejected = await _final_task(client, request)
                    assert rejected.status.state == TaskState.TASK_STATE_REJECTED
                llm.push(Reply(text="Still here."))
                async with _client(root, streaming=False) as client:
                    again = await _final_task(client, _message("Are you there?"))
                    assert again.artifacts[0].parts[0].text == "Still here."


async def test_resubscribe_then_cancel_in_the_middle_of_a_turn(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(Delay(seconds=60, then=Reply(text="too late")))
        async with _server(tmp_path, llm) as root, _client(root) as client:
            with anyio.fail_after(60):
                updates = _updates(client, _message("Think slowly."))
                task_id = ""
                async for response in updates:
                    if response.HasField("task"):
                        task_id = response.task.id
                    if _describe(response) == "status:TASK_STATE_WORKING":
                        break
                await llm.wait_requests(1)  # the turn is in its model call
                # Another client re-attaches to the running task: it is told where it stands,
                # then sees the cancel.
                async with _client(root) as other:
                    again = cast(
                        AsyncGenerator[StreamResponse, None],
                        other.subscribe(SubscribeToTaskRequest(id=task_id)),
                    )
                    first = await anext(again)
                    assert _describe(first) == "task:TASK_STATE_WORKING"
                    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
                    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
                    rest = [_describe(r) async for r in again]
                    assert rest[-1:] == ["status:TASK_STATE_CANCELED"], rest
                await llm.wait_abandoned(1)  # the turn's model call was cancelled
                await updates.aclose()
                got = await client.get_task(GetTaskRequest(id=task_id))
                assert got.status.state == TaskState.TASK_STATE_CANCELED
                assert not got.artifacts


async def test_a_task_survives_a_restart_of_loom_serve(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(Reply(text="Remembered."))
        with anyio.fail_after(90):
            async with _server(tmp_path, llm) as root, _client(root, streaming=False) as client:
                task = await _final_task(client, _message("Keep this."))
                assert task.status.state == TaskState.TASK_STATE_COMPLETED
            # The same data directory, a new process.
            async with _server(tmp_path, llm) as root, _client(root, streaming=False) as client:
                got = await client.get_task(GetTaskRequest(id=task.id))
                assert got.status.state == TaskState.TASK_STATE_COMPLETED
                assert got.artifacts[0].parts[0].text == "Remembered."
                assert got.history[0].parts[0].text == "Keep this."
    assert (tmp_path / "serve-data" / "a2a" / "assistant.sqlite3").is_file()


async def test_the_token_is_the_cards_bearer_scheme_and_required(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(Reply(text="Authorized."))
        async with _server(tmp_path, llm, "--token", TOKEN) as root:
            with anyio.fail_after(60):
                async with httpx.AsyncClient(timeout=30) as http:
                    # The card is open (discovery), and names the scheme to use.
                    card: dict[str, Any] = (
                        await http.get(f"{root}.well-known/agent-card.json")
                    ).json()
                    scheme = card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]
                    assert scheme["scheme"] == "bearer"
                    assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]
                    # The calls are not, with no token or a wrong one.
                    request = {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "GetTask",
                        "params": {"id": "x"},
                    }
                    for headers in ({}, {"authorization": "Bearer wrong-token"}):
                        refused = await http.post(root, json=request, headers=headers)
                        assert refused.status_code == 401
                        assert refused.headers["www-authenticate"].startswith("Bearer")
                async with _client(root, streaming=False, token="wrong-token") as client:
                    with pytest.raises(A2AClientError):
                        await _final_task(client, _message("Let me in."))
                async with _client(root, streaming=False, token=TOKEN) as client:
                    task = await _final_task(client, _message("Let me in."))
                    assert task.artifacts[0].parts[0].text == "Authorized."


async def test_sigterm_mid_turn_ends_the_stream_and_the_next_server_fails_the_task(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(Delay(seconds=60, then=Reply(text="never")))
        (tmp_path / "loom.toml").write_text(_toml(llm))
        async with serve_http(tmp_path, "--nats", "off") as (server, _address, url):
            root = f"{url}a2a/assistant/"
            async with _client(root) as client:
                with anyio.fail_after(60):
                    updates = _updates(client, _message("Hold on."))
                    task_id = ""
                    async for response in updates:
                        if response.HasField("task"):
                            task_id = response.task.id
                        if _describe(response) == "status:TASK_STATE_WORKING":
                            break
                    await llm.wait_requests(1)
                    server.signal(signal.SIGTERM)
                    assert await server.wait(timeout=30) == 0
                    await updates.aclose()
            assert "Traceback" not in server.output, server.output
        # The next server fails the task nobody follows any more.
        async with _server(tmp_path, llm) as root, _client(root, streaming=False) as client:
            got = await client.get_task(GetTaskRequest(id=task_id))
            assert got.status.state == TaskState.TASK_STATE_FAILED
            assert "stopped before this task ended" in got.status.message.parts[0].text


async def test_the_a2a_table_and_its_errors() -> None:
    from loom.cli._config_a2a import decode_a2a_cards, decode_a2a_expose
    from loom.runtime import ConfigError

    # A card table for an agent expose does not name: the defaults of an agent that
    # connects with its own card (Agent(..., a2a=AgentCard(...))).
    cards = {"expose": ["a"], "card": {"b": {"description": "B"}}}
    assert [a.agent_id for a in decode_a2a_expose(cards, where="f")] == ["a"]
    assert [(a.agent_id, a.description) for a in decode_a2a_cards(cards, where="f")] == [("b", "B")]
    with pytest.raises(ConfigError, match="colour"):
        decode_a2a_cards({"card": {"b": {"colour": "red"}}}, where="f")

    agents = decode_a2a_expose(
        {"expose": ["a", "b"], "card": {"b": {"description": "B"}}, "remote": {}}, where="f"
    )
    assert [(a.agent_id, a.description) for a in agents] == [("a", ""), ("b", "B")]
    for table, says in (
        ({"expose": "a"}, "expose must be a list"),
        ({"expose": ["a.b"]}, "'a.b' is not an agent id"),
        ({"expose": ["a", "a"]}, "names 'a' twice"),
        ({"expose": ["a"], "card": {"a": {"colour": "red"}}}, "colour"),
        ({"exposed": ["a"]}, "unknown key(s) exposed"),
    ):
        with pytest.raises(ConfigError) as info:
            decode_a2a_expose(table, where="f")
        assert says in str(info.value)
