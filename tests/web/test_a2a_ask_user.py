"""A2A ``input-required`` for a turn that asks the user a question, through the ``a2a-sdk``'s
own client against a real ``loom serve`` subprocess: the exposed ``CognitiveAgent``
(``ask_user = true``) calls ``ask_user`` as the scripted model (real HTTP) says; the task's
status message is the question, the next message's text the answer the model reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.helpers import get_data_parts, new_data_part
from a2a.types import (
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

INPUT = "status:TASK_STATE_INPUT_REQUIRED:input.requested"


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 30\n\n"
        "[agents.planner]\n"
        'llm = "scripted"\n'
        "ask_user = true\n\n"
        '[a2a]\nexpose = ["planner"]\n'
    )


def _asks(question: str, id: str) -> Reply:
    call = ScriptedToolCall(name="ask_user", arguments={"question": question}, id=id)
    return Reply(tool_calls=[call])


@asynccontextmanager
async def _client(tmp_path: Path, llm: ScriptedLLMServer) -> AsyncIterator[tuple[Client, str]]:
    (tmp_path / "loom.toml").write_text(_toml(llm))
    async with (
        serve_http(tmp_path, "--nats", "off") as (server, address, url),
        httpx.AsyncClient(timeout=30) as http,
    ):
        await server.wait_for(r"A2A: exposing planner")
        client = await create_client(
            f"{url}a2a/planner/", client_config=ClientConfig(streaming=True, httpx_client=http)
        )
        async with client:
            yield client, address


def _message(text: str, task: Task | None = None) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            task_id=task.id if task is not None else "",
            context_id=task.context_id if task is not None else "",
            parts=[Part(text=text)],
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


async def _stream(client: Client, request: SendMessageRequest) -> list[str]:
    return [_describe(r) async for r in client.send_message(request)]


async def _task_of(client: Client, request: SendMessageRequest) -> tuple[list[str], Task]:
    updates = [r async for r in client.send_message(request)]
    task = await client.get_task(GetTaskRequest(id=updates[0].task.id))
    return [_describe(r) for r in updates], task


async def test_a_question_goes_input_required_and_the_next_message_answers_it(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(
            _asks("Which city?", "q1"),
            _asks("Which day?", "q2"),
            Reply(text="Booked: Lyon on Friday.", chunk_size=100),
        )
        async with _client(tmp_path, llm) as (client, address):
            with anyio.fail_after(90):
                seen, task = await _task_of(client, _message("book me a train"))
                assert seen == ["task:TASK_STATE_SUBMITTED", "status:TASK_STATE_WORKING", INPUT]
                assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
                said = task.status.message
                assert said.parts[0].text == "Which city?"  # the question is the message
                (data,) = get_data_parts(said.parts)
                (waiting,) = data["questions"]
                assert waiting["question"] == "Which city?"
                # A decision is no answer to a question: still waiting, and told so.
                decision = _message("", task=task)
                del decision.message.parts[:]
                decision.message.parts.append(new_data_part({"approval": "approve"}))
                assert (await _stream(client, decision))[-1] == INPUT
                task = await client.get_task(GetTaskRequest(id=task.id))
                assert task.status.message.parts[0].text == "That message is no answer."
                assert task.status.message.parts[1].text == "Which city?"
                # The answer resumes the turn; the model asks again: input-required again.
                again = await _stream(client, _message("Lyon", task=task))
                assert again[0] == "status:TASK_STATE_WORKING"
                assert again[-1] == INPUT
                task = await client.get_task(GetTaskRequest(id=task.id))
                assert task.status.message.parts[0].text == "Which day?"
                done = await _stream(client, _message("Friday", task=task))
                assert done[-2:] == ["artifact:answer", "status:TASK_STATE_COMPLETED"], done
                final = await client.get_task(GetTaskRequest(id=task.id))
                assert final.artifacts[0].parts[0].text == "Booked: Lyon on Friday."
                listed = await loom(
                    "approvals", "--json", "--status", "answered", "-a", address, cwd=tmp_path
                )
                records = [json.loads(line) for line in listed.stdout.splitlines()]
                assert [(r["note"], r["decided_by"]) for r in records] == [
                    ("Lyon", "a2a"),
                    ("Friday", "a2a"),
                ]
        assert llm.remaining == 0
        answers = [m["content"] for m in llm.requests[-1].messages if m["role"] == "tool"]
        assert answers == ["Lyon", "Friday"]  # the model read each answer as the call's result


async def test_a_question_outlives_a_restart_and_the_next_message_answers_it(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_asks("Which city?", "q1"), Reply(text="Booked for Lyon.", chunk_size=100))
        with anyio.fail_after(120):
            async with _client(tmp_path, llm) as (client, _address):
                seen, task = await _task_of(client, _message("book me a train"))
                assert seen[-1] == INPUT
            # A new loom serve on the same data directory: the task still asks, and its next
            # message (understood from the task's stored status message) answers.
            async with _client(tmp_path, llm) as (client, _address):
                got = await client.get_task(GetTaskRequest(id=task.id))
                assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
                assert got.status.message.parts[0].text == "Which city?"
                done = await _stream(client, _message("Lyon", task=task))
                assert done[-2:] == ["artifact:answer", "status:TASK_STATE_COMPLETED"], done
                final = await client.get_task(GetTaskRequest(id=task.id))
                assert final.artifacts[0].parts[0].text == "Booked for Lyon."
        tool = next(m for m in llm.requests[-1].messages if m["role"] == "tool")
        assert tool["content"] == "Lyon"


async def test_a_question_answered_with_loom_answer_moves_the_task_on(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        llm.push(_asks("Which city?", "q1"), Reply(text="Booked for Nantes.", chunk_size=100))
        with anyio.fail_after(120):
            async with _client(tmp_path, llm) as (client, address):
                seen, task = await _task_of(client, _message("book me a train"))
                assert seen[-1] == INPUT
                (data,) = get_data_parts(task.status.message.parts)
                question_id = data["questions"][0]["question_id"]
                again = cast(
                    AsyncGenerator[StreamResponse, None],
                    client.subscribe(SubscribeToTaskRequest(id=task.id)),
                )
                assert _describe(await anext(again)) == "task:TASK_STATE_INPUT_REQUIRED"
                answered = await loom("answer", question_id, "Nantes", "-a", address, cwd=tmp_path)
                assert answered.returncode == 0, answered.stderr
                rest = [_describe(r) async for r in again]
                assert rest[-2:] == ["artifact:answer", "status:TASK_STATE_COMPLETED"], rest
                done = await client.get_task(GetTaskRequest(id=task.id, history_length=10))
                assert done.artifacts[0].parts[0].text == "Booked for Nantes."
                said = [p.text for m in done.history for p in m.parts if p.text]
                assert f"question {question_id} answered by cli (Nantes)" in said
