"""Questions to the user through real ``loom serve`` processes: a hosted agent's turn asks
(``[agents.<id>] ask_user = true``), the question outlives a ``kill -9`` of the server, and
``loom answer`` after the restart resumes the turn with the answer. The scripted model over
real HTTP asks; what the model read is in its recorded requests."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from loom.bridge import AdminClient
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import clean_env, loom, loom_serve

pytestmark = pytest.mark.anyio

_ASKED = r"question (\S+): agent helper asks the user 'Which city\?'"


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 10\n\n"
        "[agents.helper]\n"
        'llm = "scripted"\n'
        'topics = ["jobs.*"]\n'
        "ask_user = true\n"
    )


def _asks() -> Reply:
    call = ScriptedToolCall(name="ask_user", arguments={"question": "Which city?"}, id="q1")
    return Reply(tool_calls=[call])


async def _records(address: str, cwd: Path, *args: str) -> list[dict[str, Any]]:
    listed = await loom("approvals", "--json", *args, "-a", address, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


async def test_a_question_answered_after_a_restart_resumes_the_turn(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm))
        llm.push(_asks(), Reply(text="Booked for Lyon."))
        env = clean_env()
        async with loom_serve(tmp_path, env=env) as (server, address):
            published = await loom(
                "publish", "jobs.new", "book a train", "-a", address, cwd=tmp_path
            )
            assert published.returncode == 0, published.stderr
            question_id = (await server.wait_for(_ASKED)).group(1)
            # A kill -9 while the turn waits: the question is on disk.
            server.signal(signal.SIGKILL)
            await server.wait()
        async with loom_serve(tmp_path, env=env) as (server, address):
            await server.wait_for(r"approvals in .* \(1 pending")
            (pending,) = await _records(address, tmp_path)
            assert (pending["id"], pending["kind"], pending["tool"]) == (
                question_id,
                "question",
                "ask_user",
            )
            assert pending["arguments"] == {"question": "Which city?"}
            approve = await loom("approve", question_id, "-a", address, cwd=tmp_path)
            assert approve.returncode == 1
            assert "is a question to the user: answer it" in approve.stderr.decode()
            answered = await loom("answer", question_id[:8], "Lyon", "-a", address, cwd=tmp_path)
            assert answered.returncode == 0, answered.stderr
            assert answered.stdout.decode().startswith(f"{question_id} answered: question")
            await server.wait_for(rf"approval {question_id}: the turn of agent helper resumed")
            again = await loom("answer", question_id, "Paris", "-a", address, cwd=tmp_path)
            assert again.returncode == 1
            assert f"question {question_id} is already answered by cli" in again.stderr.decode()
            unknown = await loom("answer", "no-such-question", "x", "-a", address, cwd=tmp_path)
            assert unknown.returncode == 1
            assert "no approval 'no-such-question'" in unknown.stderr.decode()
            status = await loom("status", "-a", address, cwd=tmp_path)
            assert "0 expired, 1 answered)" in status.stdout.decode()
            (record,) = await _records(address, tmp_path, "--status", "answered")
            assert (record["note"], record["resumed"]) == ("Lyon", True)
            # input.requested and input.answered are in the durable log, across the restart.
            async with AdminClient(address) as admin:
                stored = [d async for d in admin.replay("input.>")]
            assert [(d.topic, d.event.metadata["approval_id"]) for d in stored] == [
                ("input.requested", question_id),
                ("input.answered", question_id),
            ]
        assert llm.remaining == 0
        tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
        assert tool_message["content"] == "Lyon"
