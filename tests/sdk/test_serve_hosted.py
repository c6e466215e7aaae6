"""What ``loom serve`` hosts on request: the native tools of ``[tools]`` (``clock.now`` always)
and the cognitive agents of ``[agents.<id>]`` over the server's ``[llm]`` router, with their
conversations in the data directory; and what it says about a table it cannot use. Real
``loom serve`` subprocesses, the real CLI, the scripted model over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer

from ._cli_support import clean_env, loom, loom_serve

pytestmark = pytest.mark.anyio


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("hello from the workspace\n")
    return ws


async def test_a_default_server_has_clock_now_and_no_file_tools(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (_server, address):
        now = await loom("call", "clock.now", "-a", address, cwd=tmp_path)
        assert now.returncode == 0, now.stderr
        record = json.loads(now.stdout)
        assert record["utc"].endswith("Z")
        assert record["unix_ms"] > 0
        missing = await loom(
            "call", "fs.read", '{"path": "README.md"}', "-a", address, cwd=tmp_path
        )
        assert missing.returncode == 1
        assert missing.stderr == b"loom call: fs.read: no such tool\n"


async def test_tools_fs_and_shell_as_the_help_shows(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    (tmp_path / "loom.toml").write_text(
        f'[tools.fs]\nroot = "{ws}"\nwrite = false\n\n[tools.shell]\nprograms = ["wc"]\n'
    )
    async with loom_serve(tmp_path) as (server, address):
        await server.wait_for(r"native tools: clock\.now, fs\.read, fs\.list, shell\.exec")
        read = await loom("call", "fs.read", '{"path": "README.md"}', "-a", address, cwd=tmp_path)
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)["content"] == "hello from the workspace\n"
        listed = await loom("tools", "--json", "-a", address, cwd=tmp_path)
        names = {json.loads(line)["name"] for line in listed.stdout.splitlines()}
        assert {"clock.now", "fs.read", "fs.list", "shell.exec"} <= names
        assert "fs.write" not in names  # write = false
        wc = await loom(
            "call", "shell.exec", '{"argv": ["wc", "-l", "README.md"]}', "-a", address, cwd=tmp_path
        )
        assert wc.returncode == 0, wc.stderr
        assert json.loads(wc.stdout)["stdout"].split()[0] == "1"


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[tools.fs]\nrot = "."\n', "[tools.fs]: Object contains unknown field rot"),
        ("[tools.fs]\nroot = 7\n", "[tools.fs.root]: Expected str, got int"),
        ('[tools.fs]\nroot = "/no/such/dir"\n', "workspace root '/no/such/dir' is not a directory"),
        ('[tools.shell]\nprograms = ["wc"]\n', "[tools.shell]: set root"),
        ('[agents.helper]\nsystem_prompt = "hi"\n', "[agents.helper]: needs a model"),
        (
            '[llm.a]\nkind = "openai"\nmodel = "m"\n\n[agents.helper]\nllm = "b"\n',
            "[agents.helper]: llm = 'b' names no [llm] provider (have: a)",
        ),
        (
            '[llm.a]\nkind = "openai"\nmodel = "m"\n\n[agents.helper]\ntools = ["fs.raed"]\n',
            "[agents.helper] tools: no tool 'fs.raed' on this server",
        ),
    ],
)
async def test_a_table_it_cannot_use_stops_it_with_one_line(
    tmp_path: Path, toml: str, says: str
) -> None:
    (tmp_path / "loom.toml").write_text(toml)
    result = await loom("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert says in err, err
    assert "Traceback" not in err


def _llm_table(server: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{server.openai_base_url}"\n'
        "timeout_s = 10\n"
        "max_output_tokens = 500\n"
    )


async def test_a_declarative_agent_answers_and_remembers_across_a_restart(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(
            _llm_table(llm)
            + "\n[agents.assistant]\n"
            + 'llm = "scripted"\n'
            + 'system_prompt = "You are terse."\n'
            + 'topics = ["questions.*"]\n'
            + 'tools = ["clock.now"]\n'
        )
        llm.push(Reply(text="Nice to meet you, Ada."), Reply(text="You are Ada."))
        env = clean_env()
        async with loom_serve(tmp_path) as (server, address):
            await server.wait_for(r"hosting agent assistant \(scripted\)")
            first = await loom(
                "ask", "assistant", "I am Ada.", "--thread", "t1", "-a", address, cwd=tmp_path,
                env=env,
            )  # fmt: skip
            assert first.returncode == 0, first.stderr
            assert first.stdout.decode() == "Nice to meet you, Ada.\n"
        # The same data directory (loom_serve's), a new server: the conversation is still there.
        async with loom_serve(tmp_path) as (_server, address):
            second = await loom(
                "ask", "questions.who", "Who am I?", "--thread", "t1", "-a", address, cwd=tmp_path,
                env=env,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr
            assert second.stdout.decode() == "You are Ada.\n"
        body = llm.requests[1].body
        said = [m.get("content") for m in body["messages"]]
        assert said[0] == "You are terse."
        assert "I am Ada." in said
        assert "Nice to meet you, Ada." in said
        assert said[-1] == "Who am I?"
        assert body["max_tokens"] == 500
        assert [t["function"]["name"] for t in body["tools"]] == ["clock_now"]
    assert (tmp_path / "serve-data" / "agents" / "assistant").is_dir()
