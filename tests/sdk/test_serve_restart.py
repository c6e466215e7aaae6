"""A conversation survives a restart of ``loom serve`` and of its agents: the cognitive agent
keeps its memory in the data directory, and a new server and agent process pick it up."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer
from tests.sdk._cli_support import clean_env, loom, loom_serve, running

pytestmark = pytest.mark.anyio

AGENT_FILE = """\
import os

from loom import CognitiveAgent
from loom.runtime.llm import OpenAIProvider, ProviderConfig

llm = OpenAIProvider(
    "scripted",
    ProviderConfig(kind="openai", model="scripted", base_url=os.environ["SCRIPTED_LLM"]),
)
agent = CognitiveAgent("memo", llm=llm, data_dir=os.environ["MEMO_DATA"], topics=["ask.*"])
"""


async def test_the_conversation_survives_a_restart_of_loom_serve(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "memo.py").write_text(AGENT_FILE)
    data = tmp_path / "serve-data"  # the data directory of every run of the server
    async with ScriptedLLMServer() as llm:
        llm.push(Reply(text="Nice to meet you, Ada."), Reply(text="You are Ada."))
        env = clean_env(SCRIPTED_LLM=llm.openai_base_url, MEMO_DATA=str(data / "memo"))
        for question in ("My name is Ada.", "What is my name?"):
            # A new server and a new agent process each time; only the data directory stays.
            async with (
                loom_serve(tmp_path) as (_server, address),
                running("run", str(agents), "-a", address, cwd=tmp_path, env=env) as agent,
                running("tail", "agent.memo.stream", "-a", address, cwd=tmp_path) as tail,
            ):
                await agent.wait_for(r"\[memo\] .*connected", timeout=60)  # a heavy import
                await tail.wait_for(r"tailing agent\.memo\.stream on ")
                sent = await loom("publish", "ask.x", question, "-a", address, cwd=tmp_path)
                assert sent.returncode == 0, sent.stderr
                await tail.wait_for(r"turn\.end", timeout=30)
    second = llm.requests[1]
    assert second.messages == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
