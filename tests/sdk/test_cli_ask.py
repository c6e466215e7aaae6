"""``loom ask``: a request to an agent or a topic and its reply, with a cognitive agent's
answer streamed as it is written; against real servers, real agents and the scripted model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from loom import Agent, CognitiveAgent, Context
from loom.cli._commands import Connection, ask
from loom.runtime import DeadlineExceeded, Event, LoomError
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer

from ..bridge._client_support import hosting
from ._cli_support import loom, loom_serve, running
from .test_cognitive_agent import provider_for

pytestmark = pytest.mark.anyio

ECHOER = """\
from loom import Agent


async def on_event(ctx, topic, event):
    await ctx.reply(event, event.payload.upper(), type="agent.answer")


echoer = Agent("echoer", topics=["questions.*"], on_event=on_event)
"""


class Writes(io.StringIO):
    """Output that keeps each write apart, to see what streamed in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_ask_an_agent_and_a_topic_through_loom_serve(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "echoer.py").write_text(ECHOER)
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", str(folder), "-a", address, cwd=tmp_path) as run,
    ):
        await run.wait_for(r"echoer.*connected")
        by_id = await loom("ask", "echoer", "hello", "-a", address, cwd=tmp_path)
        assert by_id.returncode == 0, by_id.stderr
        assert by_id.stdout.decode() == "HELLO\n"
        by_topic = await loom("ask", "questions.x", "-", "-a", address, cwd=tmp_path, stdin=b"hi")
        assert by_topic.stdout.decode() == "HI\n"
        as_json = await loom("ask", "echoer", "x", "--json", "-a", address, cwd=tmp_path)
        record = json.loads(as_json.stdout)
        assert (record["type"], record["payload"], record["source"]) == (
            "agent.answer",
            "X",
            "echoer",
        )
        nobody = await loom("ask", "nobody", "x", "-a", address, cwd=tmp_path)
        assert nobody.returncode == 1
        assert nobody.stderr.decode().startswith("loom ask: no agent receives 'nobody'")


async def test_a_cognitive_agents_answer_streams_then_ends_the_line() -> None:
    async with ScriptedLLMServer() as llm_server, provider_for(llm_server) as llm:
        llm_server.push(Reply(text="Hello there, friend.", chunk_size=5))
        async with hosting() as host:
            await host.runtime.start(CognitiveAgent("assistant", llm=llm))
            out = Writes()
            conn = Connection(address=host.address, timeout=10)
            assert await ask(conn, "assistant", b"hi", timeout=10, out=out) == 0
    assert out.getvalue() == "Hello there, friend.\n"
    streamed = [w for w in out.writes if w != "\n"]
    assert len(streamed) > 1  # in pieces, as the model wrote them
    assert "".join(streamed) == "Hello there, friend."


async def test_a_turn_that_fails_is_reported_with_its_reason() -> None:
    async with ScriptedLLMServer() as llm_server, provider_for(llm_server) as llm:
        llm_server.push(HTTPError(status=400, message="no such model"))
        async with hosting() as host:
            await host.runtime.start(CognitiveAgent("assistant", llm=llm))
            conn = Connection(address=host.address, timeout=10)
            with pytest.raises(LoomError, match=r"assistant did not answer: agent\.error: "):
                await ask(conn, "assistant", b"hi", timeout=10, out=io.StringIO())


async def test_no_reply_in_time_is_a_deadline() -> None:
    async def silent(ctx: Context, topic: str, event: Event) -> None:
        pass  # takes the request and never replies

    async with hosting() as host:
        await host.runtime.start(Agent("silent", on_event=silent))
        conn = Connection(address=host.address, timeout=5)
        with pytest.raises(DeadlineExceeded, match=r"no reply from 'silent' within 0\.3 s"):
            await ask(conn, "silent", b"hi", timeout=0.3, out=io.StringIO())
