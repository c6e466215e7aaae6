"""A2A ``input-required`` for a turn waiting for a human's approval, through the ``a2a-sdk``'s
own client against a real ``loom serve`` subprocess: its exposed ``CognitiveAgent`` calls
``fs.write`` (approval "always") as the scripted model (real HTTP) asks; the write appends a
line, so "ran once" is a line count."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.helpers import get_data_parts, new_data_part
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

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from tests.sdk._cli_support import loom

from ._support import serve_http

pytestmark = pytest.mark.anyio

INPUT = "status:TASK_STATE_INPUT_REQUIRED:approval.requested"


def _toml(llm: ScriptedLLMServer, ws: Path) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 30\n\n"
        f'[tools.fs]\nroot = "{ws}"\napproval = "always"\n\n'
        "[agents.writer]\n"
        'llm = "scripted"\n'
        'tools = ["fs.write"]\n\n'
        '[a2a]\nexpose = ["writer"]\n'
    )


def _append(line: str) -> Reply:
    arguments = {"path": "log.txt", "content": f"{line}\n", "mode": "append"}
    return Reply(tool_calls=[ScriptedToolCall(name="fs_write", arguments=arguments, id="w1")])


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@asynccontextmanager
async def _server(tmp_path: Path, llm: ScriptedLLMServer) -> AsyncIterator[tuple[str, str]]:
    """``loom serve`` exposing ``writer``; yields its A2A root URL and the gRPC address."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    (tmp_path / "loom.toml").write_text(_toml(llm, ws))
    async with serve_http(tmp_path, "--nats", "off") as (server, address, url):
        await server.wait_for(r"A2A: exposing writer")
        yield f"{url}a2a/writer/", address


@asynccontextmanager
async def _client(root: str) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=30) as http:
        client = await create_client(
            root, client_config=ClientConfig(streaming=True, httpx_client=http)
        )
        async with client:
            yield client


def _message(*parts: Part, task: Task | None = None) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            task_id=task.id if task is not None else "",
            context_id=task.context_id if task is not None else "",
            parts=list(parts),
        )
    )


def _describe(response: StreamResponse) -> str:
    kind = response.WhichOneof("payload")
    if kind == "task":
        return f"task:{TaskState.Name(response.task.status.state)}"
    if kind == "status_update":
        update = response.status_update
        loom_kind = MessageToDict(update.metadata).get("loom", "")
        return f"status:{TaskState.Name(update.status.state)}" + (
            f":{loom_kind}" if loom_kind else ""
        )
    if kind == "artifact_update":
        return f"artifact:{response.artifact_update.artifact.name}"
    return str(kind)


async def _stream(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [r async for r in client.send_message(request)]


async def _until_input_required(client: Client, text: str) -> tuple[Task, dict[str, Any]]:
    """Stream ``text``: the turn asks for fs.write and the task goes input-required."""
    updates = await _stream(client, _message(Part(text=text)))
    seen = [_describe(r) for r in updates]
    assert seen == ["task:TASK_STATE_SUBMITTED", "status:TASK_STATE_WORKING", INPUT], seen
    task_id = updates[0].task.id
    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    said = task.status.message
    assert "Waiting for a human's approval to call fs.write" in said.parts[0].text
    assert '"approve" or "deny"' in said.parts[0].text
    (data,) = get_data_parts(said.parts)
    (waiting,) = data["approvals"]
    assert waiting["tool"] == "fs.write"
    assert waiting["arguments"]["path"] == "log.txt"
    assert waiting["approval_id"] in said.parts[0].text
    return task, waiting


async def test_approve_through_a2a_runs_the_tool_once_and_completes(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_append("hello"), Reply(text="Appended.", chunk_size=100))
        async with _server(tmp_path, llm) as (root, address), _client(root) as client:
            with anyio.fail_after(90):
                task, waiting = await _until_input_required(client, "append hello")
                assert _lines(tmp_path / "ws" / "log.txt") == 0  # nothing ran yet
                # A message that is no answer: still waiting, and told how to answer.
                again = await _stream(client, _message(Part(text="what?"), task=task))
                assert [_describe(r) for r in again][-1] == INPUT
                got = await client.get_task(GetTaskRequest(id=task.id))
                assert got.status.message.parts[0].text == "That message is no answer."
                # The answer: the resumed turn's updates, then the answer.
                updates = await _stream(client, _message(Part(text="approve: fine"), task=task))
                seen = [_describe(r) for r in updates]
                assert seen == [
                    "status:TASK_STATE_WORKING",
                    "status:TASK_STATE_WORKING:turn.tool_started",
                    "status:TASK_STATE_WORKING:turn.tool_finished",
                    "status:TASK_STATE_WORKING:turn.text",
                    "artifact:answer",
                    "status:TASK_STATE_COMPLETED",
                ], seen
                done = await client.get_task(GetTaskRequest(id=task.id))
                assert done.status.state == TaskState.TASK_STATE_COMPLETED
                assert done.artifacts[0].parts[0].text == "Appended."
                listed = await loom(
                    "approvals", "--json", "--status", "all", "-a", address, cwd=tmp_path
                )
                (record,) = [json.loads(line) for line in listed.stdout.splitlines()]
                assert record["id"] == waiting["approval_id"]
                assert (record["status"], record["note"], record["decided_by"]) == (
                    "approved",
                    "fine",
                    "a2a",
                )
        assert llm.remaining == 0
    assert (tmp_path / "ws" / "log.txt").read_text() == "hello\n"  # exactly once


async def test_deny_through_a2a_and_cancel_while_waiting(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_append("no"), Reply(text="Not written.", chunk_size=100))
        async with _server(tmp_path, llm) as (root, _address), _client(root) as client:
            with anyio.fail_after(90):
                task, _waiting = await _until_input_required(client, "append no")
                answer = new_data_part({"approval": "deny", "note": "not today"})
                updates = await _stream(client, _message(answer, task=task))
                assert [_describe(r) for r in updates][-2:] == [
                    "artifact:answer",
                    "status:TASK_STATE_COMPLETED",
                ]
                said = [
                    m["content"] for r in llm.requests for m in r.messages if m["role"] == "tool"
                ]
                assert any("denied by a human reviewer (not today)" in s for s in said)
                # Cancelled while it waits: the task is canceled, its approval denied.
                llm.push(_append("never"), Reply(text="Cancelled, not written.", chunk_size=100))
                second, waiting = await _until_input_required(client, "append never")
                cancelled = await client.cancel_task(CancelTaskRequest(id=second.id))
                assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
                await llm.wait_requests(4)  # the turn went on with the denial
        said = [m["content"] for r in llm.requests for m in r.messages if m["role"] == "tool"]
        assert any("(the A2A task was canceled)" in s for s in said), said
        assert waiting["approval_id"]
    assert _lines(tmp_path / "ws" / "log.txt") == 0


async def test_an_approval_made_with_loom_approve_moves_the_task_on(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_append("cli"), Reply(text="Appended by the CLI's leave.", chunk_size=100))
        async with _server(tmp_path, llm) as (root, address), _client(root) as client:
            with anyio.fail_after(90):
                task, waiting = await _until_input_required(client, "append cli")
                # A client re-attached to the waiting task sees it move on.
                again = cast(
                    AsyncGenerator[StreamResponse, None],
                    client.subscribe(SubscribeToTaskRequest(id=task.id)),
                )
                first = await anext(again)
                assert _describe(first) == "task:TASK_STATE_INPUT_REQUIRED"
                approved = await loom(
                    "approve", waiting["approval_id"], "-a", address, cwd=tmp_path
                )
                assert approved.returncode == 0, approved.stderr
                rest = [_describe(r) async for r in again]
                assert rest[-2:] == ["artifact:answer", "status:TASK_STATE_COMPLETED"], rest
                assert "status:TASK_STATE_WORKING:turn.tool_finished" in rest
                done = await client.get_task(GetTaskRequest(id=task.id))
                assert done.status.state == TaskState.TASK_STATE_COMPLETED
                assert done.artifacts[0].parts[0].text == "Appended by the CLI's leave."
    assert (tmp_path / "ws" / "log.txt").read_text() == "cli\n"


async def test_a_waiting_task_outlives_a_restart_and_moves_on_when_approved(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_append("later"), Reply(text="Appended after the restart.", chunk_size=100))
        with anyio.fail_after(120):
            async with _server(tmp_path, llm) as (root, _address), _client(root) as client:
                task, waiting = await _until_input_required(client, "append later")
            # A new process on the same data directory: the task still waits, and an approval
            # made with the CLI moves it on, seen by a client that re-attached.
            async with _server(tmp_path, llm) as (root, address), _client(root) as client:
                got = await client.get_task(GetTaskRequest(id=task.id))
                assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
                again = cast(
                    AsyncGenerator[StreamResponse, None],
                    client.subscribe(SubscribeToTaskRequest(id=task.id)),
                )
                first = await anext(again)
                assert _describe(first) == "task:TASK_STATE_INPUT_REQUIRED"
                approved = await loom(
                    "approve", waiting["approval_id"], "-a", address, cwd=tmp_path
                )
                assert approved.returncode == 0, approved.stderr
                rest = [_describe(r) async for r in again]
                assert rest[-2:] == ["artifact:answer", "status:TASK_STATE_COMPLETED"], rest
                done = await client.get_task(GetTaskRequest(id=task.id))
                assert done.artifacts[0].parts[0].text == "Appended after the restart."
    assert (tmp_path / "ws" / "log.txt").read_text() == "later\n"
