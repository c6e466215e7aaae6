"""Human approval for a ``CognitiveAgent`` in its own process (``loom run``) connected to a
real ``loom serve``: the approval record lives on the server, ``loom approve`` answers it,
the turn resumes in the agent's process, and the agent's own effect journal keeps the tool
at most once across a ``kill -9`` of the agent. The scripted model over real HTTP (the
server's ``[llm]``, which the agent uses with ``llm="server"``) asks for the tool; the tool
runs in the agent's process and appends a line to a file, so "ran once" is a line count."""

from __future__ import annotations

import json
import signal
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import LOOM, Running, clean_env, free_port, loom, loom_serve, running_argv

pytestmark = pytest.mark.anyio

_REQUESTED = r"approval (\S+): agent writer waits to call append_line"

AGENT = """\
import os
import signal

from loom import CognitiveAgent, capability

OUT = {out!r}


@capability("append_line")
async def append_line(line: str) -> str:
    \"\"\"Append one line to the log.\"\"\"
    with open(OUT, "a") as f:
        f.write(line + "\\n")
    print(f"tool ran: {{line}}", flush=True)
    if line == "die":  # killed right after the effect, before the call is recorded done
        os.kill(os.getpid(), signal.SIGKILL)
    return "appended"


writer = CognitiveAgent(
    "writer",
    llm="server",
    tools=[append_line],
    topics=["jobs.*"],
    data_dir={data!r},
    approval={{"append_line": "always"}},
)
"""


def _toml(llm: ScriptedLLMServer) -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 10\n"
    )


def _call(line: str) -> Reply:
    call = ScriptedToolCall(name="append_line", arguments={"line": line}, id="c1")
    return Reply(tool_calls=[call])


def _run(address: str, cwd: Path, env: dict[str, str]) -> AbstractAsyncContextManager[Running]:
    """``loom run writer.py`` in a process group of its own: a SIGKILL to the group kills
    the supervisor and the agent's process at once (nothing stops cleanly)."""
    return running_argv([*LOOM, "run", "writer.py", "-a", address], cwd=cwd, env=env, group=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _setup(tmp_path: Path, llm: ScriptedLLMServer) -> Path:
    (tmp_path / "loom.toml").write_text(_toml(llm))
    agent = tmp_path / "writer.py"
    out = tmp_path / "out.txt"
    agent.write_text(AGENT.format(out=str(out), data=str(tmp_path / "writer-data")))
    return out


async def _records(address: str, cwd: Path) -> list[dict[str, Any]]:
    listed = await loom("approvals", "--json", "--status", "all", "-a", address, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


async def _publish(address: str, cwd: Path, text: str) -> None:
    done = await loom("publish", "jobs.new", text, "-a", address, cwd=cwd)
    assert done.returncode == 0, done.stderr


async def test_a_remote_agent_waits_on_the_server_and_loom_approve_runs_its_tool_once(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            out = _setup(tmp_path, llm)
            llm.push(_call("hello"), Reply(text="Appended."))
            env = clean_env()
            async with (
                loom_serve(tmp_path, env=env) as (server, address),
                _run(address, tmp_path, env) as agent,
            ):
                await server.wait_for("agent writer connected", timeout=60)
                await _publish(address, tmp_path, "append hello")
                approval_id = (await server.wait_for(_REQUESTED)).group(1)
                (record,) = await _records(address, tmp_path)
                assert (record["id"], record["status"], record["tool"]) == (
                    approval_id,
                    "pending",
                    "append_line",
                )
                assert _lines(out) == []  # nothing ran before the decision
                approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                assert approved.returncode == 0, approved.stderr
                await agent.wait_for("tool ran: hello", timeout=60)
                await server.wait_for(rf"approval {approval_id}: the turn of agent writer resumed")
                (record,) = await _records(address, tmp_path)
                assert (record["status"], record["resumed"]) == ("approved", True)
            assert llm.remaining == 0
            tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
            assert "appended" in tool_message["content"]
    assert _lines(out) == ["hello"]  # exactly once


async def test_a_remote_agent_killed_while_waiting_resumes_on_restart(tmp_path: Path) -> None:
    """``kill -9`` of the agent while its turn waits; the approval is given while no agent
    process runs; the restarted agent asks the server for its decided, unresumed approvals
    and resumes the turn: the tool runs once."""
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            out = _setup(tmp_path, llm)
            llm.push(_call("once"), Reply(text="Appended."))
            env = clean_env()
            async with loom_serve(tmp_path, env=env) as (server, address):
                async with _run(address, tmp_path, env) as a:
                    await server.wait_for("agent writer connected", timeout=60)
                    await _publish(address, tmp_path, "append once")
                    approval_id = (await server.wait_for(_REQUESTED)).group(1)
                    a.signal(signal.SIGKILL)  # the agent's process and its supervisor
                    assert await a.process.wait() == -signal.SIGKILL
                approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                assert approved.returncode == 0, approved.stderr
                assert _lines(out) == []
                async with _run(address, tmp_path, env) as a:
                    await a.wait_for("tool ran: once", timeout=60)
                    await server.wait_for(
                        rf"approval {approval_id}: the turn of agent writer resumed", timeout=60
                    )
            assert llm.remaining == 0
    assert _lines(out) == ["once"]


async def test_kill_9_of_the_agent_right_after_its_tool_ran_does_not_run_it_again(
    tmp_path: Path,
) -> None:
    """The tool appends its line, then kills its own agent process with SIGKILL: after the
    effect, before the call is recorded done and before the step is in memory. The agent
    process that ``loom run`` starts in its place resumes the approved turn, finds the call
    started in its effect journal (``<data_dir>/effects.sqlite3``, in the agent's process)
    and does not run it again."""
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            out = _setup(tmp_path, llm)
            llm.push(_call("die"), Reply(text="It may have run; I will check."))
            env = clean_env()
            async with (
                loom_serve(tmp_path, env=env) as (server, address),
                _run(address, tmp_path, env) as a,
            ):
                await server.wait_for("agent writer connected", timeout=60)
                await _publish(address, tmp_path, "append die")
                approval_id = (await server.wait_for(_REQUESTED)).group(1)
                approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                assert approved.returncode == 0, approved.stderr
                await a.wait_for("tool ran: die", timeout=60)
                # loom run restarts the killed agent process; it resumes the turn.
                await server.wait_for("agent writer connected", count=2, timeout=60)
                await server.wait_for(
                    rf"approval {approval_id}: the turn of agent writer resumed", timeout=60
                )
                (record,) = await _records(address, tmp_path)
                assert (record["status"], record["resumed"]) == ("approved", True)
                assert _lines(out) == ["die"]
            tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
            assert "interrupted by a crash after it started" in tool_message["content"]
            assert "not run again" in tool_message["content"]
    assert _lines(out) == ["die"]  # the tool did not run again


async def test_a_remote_agents_wait_survives_a_kill_9_of_loom_serve(tmp_path: Path) -> None:
    """``kill -9`` of ``loom serve`` while a remote agent's turn waits: the record is on the
    server's disk; the agent reconnects to the restarted server (same port), the approval
    given there reaches it through its mailbox, and the tool runs once."""
    with anyio.fail_after(150):
        async with ScriptedLLMServer() as llm:
            out = _setup(tmp_path, llm)
            llm.push(_call("after restart"), Reply(text="Appended."))
            env = clean_env()
            port = str(free_port())
            async with (
                loom_serve(tmp_path, "--port", port, env=env) as (server, address),
                _run(address, tmp_path, env) as agent,
            ):
                await server.wait_for("agent writer connected", timeout=60)
                await _publish(address, tmp_path, "append after restart")
                approval_id = (await server.wait_for(_REQUESTED)).group(1)
                server.signal(signal.SIGKILL)
                await server.wait()
                async with loom_serve(tmp_path, "--port", port, env=env) as (server, address):
                    await server.wait_for(r"approvals in .* \(1 pending", timeout=60)
                    await server.wait_for("agent writer connected", timeout=60)
                    approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                    assert approved.returncode == 0, approved.stderr
                    await agent.wait_for("tool ran: after restart", timeout=60)
                    await server.wait_for(
                        rf"approval {approval_id}: the turn of agent writer resumed",
                        timeout=60,
                    )
            assert llm.remaining == 0
    assert _lines(out) == ["after restart"]


async def test_a_remote_agent_that_asks_for_approval_needs_a_data_dir(tmp_path: Path) -> None:
    """Its effect journal must be on its own disk: without ``data_dir`` the start fails with
    a line saying why."""
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            _setup(tmp_path, llm)
            agent = tmp_path / "writer.py"
            agent.write_text(agent.read_text().replace("    data_dir=", "    # data_dir="))
            env = clean_env()
            async with (
                loom_serve(tmp_path, env=env) as (_server, address),
                _run(address, tmp_path, env) as run,
            ):
                await run.wait_for(
                    r"agent writer asks for approval of tool calls in its own process: "
                    r"give it data_dir",
                    timeout=60,
                )


SERVER_TOOL_AGENT = """\
from loom import CognitiveAgent

writer = CognitiveAgent(
    "writer",
    llm="server",
    use_capabilities=["fs.write"],
    topics=["jobs.*"],
    data_dir={data!r},
    approval={{"fs.write": "always"}},
)
"""


async def test_a_remote_agent_runs_the_servers_gated_tool_once_approved(tmp_path: Path) -> None:
    """``fs.write`` with ``approval = "always"`` on the server is ``NeedsApproval``: an agent
    in another process may run it only with an approval the server's store shows approved
    for that call (the ``loom-approval`` header), once; a direct call stays refused."""
    ws = tmp_path / "ws"
    ws.mkdir()
    with anyio.fail_after(120):
        async with ScriptedLLMServer() as llm:
            (tmp_path / "loom.toml").write_text(
                _toml(llm) + f'\n[tools.fs]\nroot = "{ws}"\napproval = "always"\n'
            )
            (tmp_path / "writer.py").write_text(
                SERVER_TOOL_AGENT.format(data=str(tmp_path / "writer-data"))
            )
            arguments = {"path": "log.txt", "content": "served\n", "mode": "append"}
            call = ScriptedToolCall(name="fs_write", arguments=arguments, id="w1")
            llm.push(Reply(tool_calls=[call]), Reply(text="Written."))
            env = clean_env()
            async with (
                loom_serve(tmp_path, env=env) as (server, address),
                _run(address, tmp_path, env),
            ):
                await server.wait_for("agent writer connected", timeout=60)
                await _publish(address, tmp_path, "write it")
                asked = await server.wait_for(
                    r"approval (\S+): agent writer waits to call fs\.write"
                )
                approval_id = asked.group(1)
                assert not (ws / "log.txt").exists()
                approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                assert approved.returncode == 0, approved.stderr
                await server.wait_for(
                    rf"approval {approval_id}: the turn of agent writer resumed", timeout=60
                )
                direct = await loom(
                    "call", "fs.write", json.dumps(arguments), "-a", address, cwd=tmp_path
                )
                assert direct.returncode == 1
                assert "waits for a human's approval on this server" in direct.stderr.decode()
            tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
            assert "log.txt" in tool_message["content"], tool_message
    assert (ws / "log.txt").read_text() == "served\n"
