"""An A2A card in process: ``A2AServer`` on a real ``HttpServer`` (127.0.0.1:0) over a real
runtime, read with the ``a2a-sdk``'s card resolver; and a message to an agent that is not a
``CognitiveAgent`` (its reply is the answer)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import anyio
import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from loom import Agent, AgentCard, AgentSkill, Context, capability
from loom.runtime import AgentRuntime, Event, EventBus
from loom.web import A2AAgent, A2AServer, HttpServer

pytestmark = pytest.mark.anyio

TOKEN = "card-test-token-0123456789abcdef"


@capability(description="Shout the text back.")
def shout(text: str) -> str:
    return text.upper()


async def echo(ctx: Context, topic: str, event: Event) -> None:
    await ctx.reply(event, b"echo: " + event.payload)


async def test_skills_are_capabilities_and_the_reply_is_the_answer(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            await runtime.start(Agent("echo", capabilities=[shout], on_event=echo))
            a2a = A2AServer(
                runtime, [A2AAgent(agent_id="echo", description="Echoes.")], data_dir=tmp_path
            )
            async with (
                HttpServer(runtime, tokens=(TOKEN,), a2a=a2a) as http_server,
                httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"}) as http,
            ):
                root = f"{http_server.url}a2a/echo/"
                card = await A2ACardResolver(http, root).get_agent_card()
                assert [(s.id, s.description) for s in card.skills] == [
                    ("shout", "Shout the text back.")
                ]
                assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
                assert card.supported_interfaces[1].url == root + "rest"

                client = await create_client(
                    root, client_config=ClientConfig(streaming=False, httpx_client=http)
                )
                async with client:
                    request = SendMessageRequest(
                        message=Message(
                            role=Role.ROLE_USER,
                            message_id=str(uuid.uuid4()),
                            parts=[Part(text="hi")],
                        )
                    )
                    tasks = [r.task async for r in client.send_message(request)]
                assert tasks[-1].status.state == TaskState.TASK_STATE_COMPLETED
                assert tasks[-1].artifacts[0].parts[0].text == "echo: hi"
        with closing(sqlite3.connect(tmp_path / "a2a" / "echo.sqlite3")) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_cli_does_not_load_the_sdk_until_an_agent_is_exposed() -> None:
    # Every `loom` command imports the CLI's configuration, which names A2AAgent: the SDK
    # (pydantic, SQLAlchemy, its protobuf types) must stay unloaded until a server exposes one.
    probe = "import sys, loom.cli; print(sorted({'a2a', 'sqlalchemy'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out


async def _status_until(http: httpx.AsyncClient, url: str, status: int) -> httpx.Response:
    """GET ``url`` until it answers ``status`` (a change applied by the server's own task);
    bounded by the caller."""
    while True:
        response = await http.get(url)
        if response.status_code == status:
            return response
        await anyio.sleep(0.02)


async def test_an_agent_declares_its_card_in_code_and_is_exposed_while_it_is_there(
    tmp_path: Path,
) -> None:
    card = AgentCard(
        name="Echoer",
        description="Echoes, in code.",
        version="3.1.4",
        skills=(AgentSkill(id="echo", name="Echo", description="Say it back", tags=("e",)),),
    )
    agent = Agent("echo", capabilities=[shout], on_event=echo, a2a=card)
    assert agent.a2a_card() == card  # no stream_topic of its own to fill in
    with anyio.fail_after(30):
        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            await runtime.start(agent)
            # No agent at the start: the SDK loads when the first one is exposed.
            a2a = A2AServer(runtime, data_dir=tmp_path)
            async with HttpServer(runtime, a2a=a2a) as http_server, httpx.AsyncClient() as http:
                root = f"{http_server.url}a2a/echo/"
                card_url = f"{root}.well-known/agent-card.json"
                assert (await http.get(card_url)).status_code == 404
                a2a.expose(A2AAgent(agent_id="echo", card=agent.a2a_card()))
                await _status_until(http, card_url, 200)
                served = await A2ACardResolver(http, root).get_agent_card()
                assert (served.name, served.description, served.version) == (
                    "Echoer",
                    "Echoes, in code.",
                    "3.1.4",
                )
                # Declared skills stay: the capability (shout) does not replace them.
                assert [(s.id, s.name, list(s.tags)) for s in served.skills] == [
                    ("echo", "Echo", ["e"])
                ]
                assert a2a.agents == ("echo",)
                client = await create_client(
                    root, client_config=ClientConfig(streaming=False, httpx_client=http)
                )
                async with client:
                    request = SendMessageRequest(
                        message=Message(
                            role=Role.ROLE_USER,
                            message_id=str(uuid.uuid4()),
                            parts=[Part(text="yo")],
                        )
                    )
                    tasks = [r.task async for r in client.send_message(request)]
                assert tasks[-1].artifacts[0].parts[0].text == "echo: yo"
                a2a.withdraw("echo")
                gone = await _status_until(http, card_url, 404)
                assert "not exposed" in gone.json()["error"]["message"]
                assert not a2a.agents
