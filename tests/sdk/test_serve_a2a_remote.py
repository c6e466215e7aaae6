"""``[a2a.remote.<name>]`` of ``loom.toml``: a real ``loom serve`` offers a remote A2A agent (the
a2a-sdk's server, in this process) as the tool ``a2a.<name>``: listed by ``loom tools``,
callable by ``loom call`` and by an SDK agent in a process of its own; a bad table stops the
start, an unreachable agent is left out."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from tests.sdk._a2a_support import EchoExecutor, StreamExecutor, serve_a2a
from tests.sdk._cli_support import (
    PYTHON,
    clean_env,
    free_port,
    loom,
    loom_serve,
    running,
    running_argv,
)

pytestmark = pytest.mark.anyio

AGENT = """
import json

from loom import Agent, Context


class Caller(Agent):
    async def on_start(self, ctx: Context) -> None:
        out = await ctx.tool("a2a.helper", {"message": "from afar"}, timeout=20)
        print("RESULT " + json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    Caller("far-caller").run()
"""


async def test_loom_serve_offers_a_remote_a2a_agent_to_every_process(tmp_path: Path) -> None:
    executor = EchoExecutor()
    with anyio.fail_after(60):
        async with serve_a2a(executor, name="helper", token="tok-123") as url:
            (tmp_path / "loom.toml").write_text(
                f'[a2a.remote.helper]\nurl = "{url}"\ntoken_env = "HELPER_TOKEN"\ntimeout_s = 30\n'
            )
            env = clean_env(HELPER_TOKEN="tok-123")
            async with loom_serve(tmp_path, "--log-level", "info", env=env) as (server, address):
                await server.wait_for(r"A2A agents: a2a\.helper")
                listed = await loom("tools", "--json", "-a", address, cwd=tmp_path)
                assert listed.returncode == 0, listed.stderr
                tools = {t["name"]: t for t in map(json.loads, listed.stdout.decode().splitlines())}
                helper = tools["a2a.helper"]
                assert "helper things" in helper["description"]
                assert helper["parameters_schema"]["required"] == ["message"]

                called = await loom(
                    "call", "a2a.helper", '{"message": "hi"}', "-a", address, cwd=tmp_path
                )
                assert called.returncode == 0, called.stderr
                assert b"echo: hi" in called.stdout

                script = tmp_path / "far_caller.py"
                script.write_text(AGENT)
                agent_env = {**env, "LOOM_BRIDGE_ADDR": address}
                async with running_argv([*PYTHON, str(script)], cwd=tmp_path, env=agent_env) as far:
                    match = await far.wait_for(r"RESULT (.*)")
                result = json.loads(match.group(1))
    assert result["text"] == "echo: from afar"
    assert result["state"] == "completed"
    assert [m.parts[0].text for m in executor.seen] == ["hi", "from afar"]


async def test_an_unreachable_remote_agent_is_left_out_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "loom.toml").write_text(f'[a2a.remote.late]\nurl = "http://127.0.0.1:{port}"\n')
    with anyio.fail_after(60):
        async with loom_serve(tmp_path, "--log-level", "info") as (server, address):
            await server.wait_for(
                r"A2A agent a2a\.late left out for now \(retrying\): .*unreachable"
            )
            listed = await loom("tools", "-a", address, cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            assert b"a2a.late" not in listed.stdout
            async with serve_a2a(EchoExecutor(), name="late", port=port):
                await server.wait_for(r"A2A agent a2a\.late \(.*\) is up: registered")
                called = await loom(
                    "call", "a2a.late", '{"message": "finally"}', "-a", address, cwd=tmp_path
                )
    assert called.returncode == 0, called.stderr
    assert b"echo: finally" in called.stdout


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('[a2a.remote.x]\nurl = "ftp://example.org"\n', b"[a2a.remote.x]: url is http"),
        ('[a2a.remote.x]\nurl = "http://example.org"\ncolour = 1\n', b"colour"),
        ('[a2a.remote.x]\nurl = "http://example.org"\ntoken_env = "NOPE"\n', b"$NOPE is unset"),
        ('[a2a.remote.x]\nurl = "http://example.org"\ntimeout_s = 0\n', b"timeout_s must be > 0"),
        ("[a2a]\nremote = 3\n", b"[a2a.remote]: must be a table"),
    ],
    ids=["scheme", "unknown-key", "token-unset", "timeout", "not-a-table"],
)
async def test_a_bad_remote_table_stops_the_start(
    tmp_path: Path, table: str, needle: bytes
) -> None:
    (tmp_path / "loom.toml").write_text(table)
    result = await loom("serve", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0
    assert b"loom.toml" in result.stderr
    assert needle in result.stderr


async def test_a_hosted_agent_streams_the_remote_agents_output_on_its_stream(
    tmp_path: Path,
) -> None:
    async with ScriptedLLMServer() as llm, serve_a2a(StreamExecutor(), name="shouter") as url:
        (tmp_path / "loom.toml").write_text(
            "[llm.scripted]\n"
            'kind = "openai"\n'
            'model = "scripted-model"\n'
            f'base_url = "{llm.openai_base_url}"\n'
            "timeout_s = 10\n\n"
            f'[a2a.remote.shouter]\nurl = "{url}"\n\n'
            "[agents.assistant]\n"
            'llm = "scripted"\n'
            'tools = ["a2a.shouter"]\n'
        )
        llm.push(
            Reply(tool_calls=[ScriptedToolCall(name="a2a_shouter", arguments={"message": "a b"})]),
            Reply(text="It shouted A B."),
        )
        with anyio.fail_after(60):
            async with loom_serve(tmp_path, "--log-level", "info") as (server, address):
                await server.wait_for(r"hosting agent assistant")
                async with running(
                    "tail", "agent.assistant.stream", "--json", "-a", address, cwd=tmp_path
                ) as tail:
                    await tail.wait_for(r"tailing")
                    asked = await loom("ask", "assistant", "shout a b", "-a", address, cwd=tmp_path)
                    assert asked.returncode == 0, asked.stderr
                    assert asked.stdout.decode().endswith("It shouted A B.\n")
                    await tail.wait_for(r'"turn\.end"')
    events = [json.loads(line) for line in tail.lines if line.startswith("{")]
    kinds = [e["type"] for e in events]
    outputs = [e for e in events if e["type"] == "turn.tool_output"]
    assert kinds.index("turn.tool_started") < kinds.index("turn.tool_output")
    last_output = len(kinds) - 1 - kinds[::-1].index("turn.tool_output")
    assert kinds.index("turn.tool_finished") > last_output
    assert [json.loads(e["payload"])["text"] for e in outputs] == ["thinking… ", "A ", "B "]
