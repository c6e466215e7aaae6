"""``CognitiveAgent(llm="server")``: the model of the agent's host. Remote (its own process,
connected to a real ``loom serve`` whose ``[llm.<name>]`` table points at the scripted model
over real HTTP), it calls models through ``loom.v1.LLM`` with no API key of its own; in
process, it uses the runtime's model, or fails its start with ``NoModelConfigured``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import grpc
import grpc.aio
import pytest

from loom import CognitiveAgent
from loom.bridge import AdminClient, ServerLLM, Unauthenticated
from loom.runtime import AgentRuntime, AgentStartFailed, EventBus, QoS
from loom.runtime.collab import request
from loom.runtime.llm import CompletionRequest, UserMessage
from loom.runtime.testing import Delay, Reply, ScriptedLLMServer

from ._cli_support import PYTHON, clean_env, loom, running, running_argv
from .test_cognitive_agent import provider_for

pytestmark = pytest.mark.anyio

TOKEN = "llm-wire-test-token-0123456789"
KEY = "sk-only-the-server-has-this"
ASK = CompletionRequest(messages=(UserMessage(content="hi"),))

AGENT = """\
from loom import CognitiveAgent

agent = CognitiveAgent(
    "thinker", llm="server", system_prompt="You are terse.", topics=["questions.*"]
)

if __name__ == "__main__":
    agent.run()
"""


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        'api_key_env = "SCRIPTED_KEY"\n'
        "timeout_s = 10\n"
        "max_retries = 0\n"
    )


async def test_a_remote_agent_answers_through_the_servers_model(tmp_path: Path) -> None:
    (tmp_path / "thinker.py").write_text(AGENT)
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm))
        llm.push(Reply(text="Hello there, I am thinking.", chunk_size=4), Delay(seconds=60))
        server_env = clean_env(SCRIPTED_KEY=KEY, LOOM_TOKEN=TOKEN)
        agent_env = clean_env(LOOM_TOKEN=TOKEN)  # no key: only the server has one
        data = str(tmp_path / "serve-data")
        async with running(
            "serve", "--port", "0", "--data-dir", data, cwd=tmp_path, env=server_env
        ) as server:
            address = (await server.wait_for(r"listening on (\S+:\d+)")).group(1)
            agent_env["LOOM_BRIDGE_ADDR"] = address
            async with (
                running_argv([*PYTHON, "thinker.py"], cwd=tmp_path, env=agent_env) as agent,
                AdminClient(address, token=TOKEN, timeout=10) as admin,
                admin.subscribe("agent.thinker.stream", qos=QoS.BATCHED) as stream,
            ):
                await agent.wait_for(r"connected to .* as thinker")
                asked = await loom(
                    "ask", "thinker", "Who are you?", "-a", address, cwd=tmp_path, env=agent_env
                )
                assert asked.returncode == 0, asked.stderr
                assert asked.stdout.decode() == "Hello there, I am thinking.\n"
                # The answer streamed as turn.text pieces, as the model wrote them.
                pieces = []
                with anyio.fail_after(10):
                    async for delivery in stream:
                        if delivery.event.type == "turn.end":
                            break
                        if delivery.event.type == "turn.text":
                            pieces.append(json.loads(delivery.event.payload)["text"])
                assert len(pieces) > 1
                assert "".join(pieces) == "Hello there, I am thinking."

                # Without the token, the server's model is out of reach.
                async with grpc.aio.insecure_channel(address) as ch:

                    async def channel() -> grpc.aio.Channel:
                        return ch

                    with anyio.fail_after(10), pytest.raises(Unauthenticated):
                        await ServerLLM(channel).complete(ASK)

                # The second turn's model call hangs; the agent's stop cancels its turn, and
                # with it the model call on the server.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        lambda: loom(
                            "ask", "thinker", "again", "-a", address, cwd=tmp_path, env=agent_env
                        )
                    )
                    with anyio.fail_after(10):
                        await llm.wait_requests(2)
                    assert await agent.stop() == 0
                    with anyio.fail_after(10):
                        await llm.wait_abandoned()
                    tg.cancel_scope.cancel()
    first = llm.requests[0]
    assert first.headers["authorization"] == f"Bearer {KEY}"  # the server's key, the server's call
    said = [m.get("content") for m in first.body["messages"]]
    assert said == ["You are terse.", "Who are you?"]
    assert first.body["stream"] is True
    assert "Traceback" not in agent.output


async def test_in_process_server_means_the_runtimes_model() -> None:
    async with ScriptedLLMServer() as llm_server, provider_for(llm_server) as model:
        llm_server.push(Reply(text="local answer"))
        async with EventBus() as bus, AgentRuntime(bus, llm=model) as runtime:
            await runtime.start(CognitiveAgent("local", llm="server"))
            reply = await request(bus, "agent.local.replies", b"hi", timeout=10)
    assert (reply.type, reply.payload) == ("agent.answer", b"local answer")


async def test_in_process_without_a_model_the_start_fails_typed() -> None:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with anyio.fail_after(10), pytest.raises(AgentStartFailed) as caught:
            await runtime.start(CognitiveAgent("lost", llm="server"))
    assert re.search(r'asks for llm="server", and its runtime has no model', str(caught.value))
