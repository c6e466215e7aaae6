"""A question to the user from a ``CognitiveAgent`` in its own process (``loom run``)
connected to a real ``loom serve``: the question waits in the server's store, survives a
``kill -9`` of the agent, ``loom answer`` answers it while no agent process runs, and the
restarted agent resumes the turn with the answer (its conversation in its ``data_dir``). The
scripted model over real HTTP (the server's ``[llm]``) asks."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import LOOM, clean_env, loom, loom_serve, running_argv

pytestmark = pytest.mark.anyio

AGENT = """\
from loom import CognitiveAgent

asker = CognitiveAgent(
    "asker", llm="server", topics=["jobs.*"], data_dir={data!r}, ask_user=True
)
"""

_ASKED = r"question (\S+): agent asker asks the user 'Which city\?'"


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 10\n"
    )


async def test_a_remote_agents_question_answered_while_it_is_down_resumes_on_restart(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            (tmp_path / "loom.toml").write_text(_toml(llm))
            (tmp_path / "asker.py").write_text(AGENT.format(data=str(tmp_path / "asker-data")))
            call = ScriptedToolCall(name="ask_user", arguments={"question": "Which city?"}, id="q1")
            llm.push(Reply(tool_calls=[call]), Reply(text="Booked for Lyon."))
            env = clean_env()
            argv = [*LOOM, "run", "asker.py"]
            async with loom_serve(tmp_path, env=env) as (server, address):
                async with running_argv(
                    [*argv, "-a", address], cwd=tmp_path, env=env, group=True
                ) as a:
                    await server.wait_for("agent asker connected", timeout=60)
                    published = await loom(
                        "publish", "jobs.new", "book a train", "-a", address, cwd=tmp_path
                    )
                    assert published.returncode == 0, published.stderr
                    question_id = (await server.wait_for(_ASKED)).group(1)
                    a.signal(signal.SIGKILL)  # the agent's process and its supervisor
                    assert await a.process.wait() == -signal.SIGKILL
                answered = await loom("answer", question_id, "Lyon", "-a", address, cwd=tmp_path)
                assert answered.returncode == 0, answered.stderr
                async with running_argv([*argv, "-a", address], cwd=tmp_path, env=env, group=True):
                    await server.wait_for(
                        rf"approval {question_id}: the turn of agent asker resumed", timeout=60
                    )
            assert llm.remaining == 0
            said = [m["content"] for m in llm.requests[1].messages]
            assert "book a train" in said  # the goal, from the agent's memory on disk
            tool = next(m for m in llm.requests[1].messages if m["role"] == "tool")
            assert tool["content"] == "Lyon"
