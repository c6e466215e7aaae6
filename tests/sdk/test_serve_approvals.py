"""Human approval through real ``loom serve`` processes: a waiting turn outlives a restart (and
a ``kill -9``), ``loom approvals``/``approve``/``deny`` answer it, and the tool runs at most
once. The scripted model over real HTTP asks for the tool; the tool's effect is a line
appended to a file, so "ran once" is a line count."""

from __future__ import annotations

import json
import secrets
import signal
from pathlib import Path
from typing import Any

import pytest

from loom.bridge import AdminClient
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ._cli_support import clean_env, loom, loom_serve

pytestmark = pytest.mark.anyio

_REQUESTED = r"approval (\S+): agent writer waits to call (\S+)"


def _toml(llm: ScriptedLLMServer, ws: Path, *, tools: str, extra: str = "") -> str:
    return (
        "[llm.scripted]\n"
        'kind = "openai"\n'
        'model = "scripted-model"\n'
        f'base_url = "{llm.openai_base_url}"\n'
        "timeout_s = 10\n\n"
        f'[tools.fs]\nroot = "{ws}"\napproval = "always"\n\n'
        f"{extra}"
        "[agents.writer]\n"
        'llm = "scripted"\n'
        'topics = ["jobs.*"]\n'
        f"tools = {tools}\n"
    )


def _append(line: str) -> Reply:
    arguments = {"path": "log.txt", "content": f"{line}\n", "mode": "append"}
    return Reply(tool_calls=[ScriptedToolCall(name="fs_write", arguments=arguments, id="w1")])


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _approvals(address: str, cwd: Path, *args: str) -> list[dict[str, Any]]:
    listed = await loom("approvals", "--json", *args, "-a", address, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


async def _publish(address: str, cwd: Path, text: str) -> None:
    done = await loom("publish", "jobs.new", text, "-a", address, cwd=cwd)
    assert done.returncode == 0, done.stderr


async def test_an_approval_answered_after_a_restart_runs_the_tool_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm, ws, tools='["fs.write"]'))
        llm.push(_append("hello"), Reply(text="Appended."))
        env = clean_env()
        async with loom_serve(tmp_path, env=env) as (server, address):
            await server.wait_for(r"approvals in .* \(0 pending; fs\.write always\)")
            await _publish(address, tmp_path, "append hello")
            asked = await server.wait_for(_REQUESTED)
            approval_id, tool = asked.group(1), asked.group(2)
            assert tool == "fs.write"
            table = await loom("approvals", "-a", address, cwd=tmp_path)
            assert table.returncode == 0, table.stderr
            assert approval_id in table.stdout.decode()
            assert "fs.write" in table.stdout.decode()
            # A kill -9 while the turn waits: nothing was run, the wait is on disk.
            server.signal(signal.SIGKILL)
            await server.wait()
        assert _lines(ws / "log.txt") == 0
        async with loom_serve(tmp_path, env=env) as (server, address):
            await server.wait_for(r"approvals in .* \(1 pending")
            (pending,) = await _approvals(address, tmp_path)
            assert pending["id"] == approval_id
            status = await loom("status", "-a", address, cwd=tmp_path)
            assert "approvals:   1 waiting (since start: 0 approved" in status.stdout.decode()
            assert (pending["agent_id"], pending["thread_id"]) == ("writer", "default")
            assert pending["arguments"]["content"] == "hello\n"
            approved = await loom(
                "approve", approval_id, "--note", "looks fine", "-a", address, cwd=tmp_path
            )
            assert approved.returncode == 0, approved.stderr
            assert approved.stdout.decode().startswith(f"{approval_id} approved: fs.write")
            await server.wait_for(rf"approval {approval_id}: the turn of agent writer resumed")
            again = await loom("deny", approval_id, "-a", address, cwd=tmp_path)
            assert again.returncode == 1
            assert f"approval {approval_id} is already approved by cli" in again.stderr.decode()
            (record,) = await _approvals(address, tmp_path, "--status", "all")
            assert (record["status"], record["note"], record["resumed"]) == (
                "approved",
                "looks fine",
                True,
            )
            # approval.requested and approval.decided are in the durable log, across the restart.
            async with AdminClient(address) as admin:
                stored = [d async for d in admin.replay("approval.>")]
            assert [(d.topic, d.event.metadata["approval_id"]) for d in stored] == [
                ("approval.requested", approval_id),
                ("approval.decided", approval_id),
            ]
        # The model saw the tool's result and answered.
        assert llm.remaining == 0
        tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
        assert '"path":"log.txt"' in tool_message["content"].replace(" ", "")
    assert (ws / "log.txt").read_text() == "hello\n"  # exactly once


async def test_kill_9_right_after_the_tool_ran_does_not_run_it_again(tmp_path: Path) -> None:
    """The tool itself appends its line and then kills ``loom serve`` with SIGKILL: the
    process dies after the effect, before the call is recorded done and before the step is in
    memory. After the restart the turn resumes (its approval was given), finds the call
    started in the effect journal, and does not run it again: the model is told the call was
    interrupted."""
    ws = tmp_path / "ws"
    ws.mkdir()
    async with ScriptedLLMServer() as llm:
        toml = _toml(
            llm,
            ws,
            tools='["shell.exec"]',
            extra='[tools.shell]\nprograms = ["sh"]\napproval = "always"\n\n',
        )
        (tmp_path / "loom.toml").write_text(toml)
        env = clean_env()
        async with loom_serve(tmp_path, env=env) as (server, address):
            script = f"echo ran >> out.txt; kill -9 {server.process.pid}"
            call = ScriptedToolCall(
                name="shell_exec", arguments={"argv": ["sh", "-c", script]}, id="s1"
            )
            llm.push(Reply(tool_calls=[call]), Reply(text="It may have run; I will check."))
            await _publish(address, tmp_path, "run it")
            approval_id = (await server.wait_for(_REQUESTED)).group(1)
            approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
            assert approved.returncode == 0, approved.stderr
            assert await server.wait() == -signal.SIGKILL  # killed by its own tool
        assert _lines(ws / "out.txt") == 1
        async with loom_serve(tmp_path, env=env) as (server, address):
            await server.wait_for(rf"approval {approval_id}: the turn of agent writer resumed")
            (record,) = await _approvals(address, tmp_path, "--status", "all")
            assert record["resumed"] is True
        tool_message = next(m for m in llm.requests[1].messages if m["role"] == "tool")
        assert "interrupted by a crash after it started" in tool_message["content"]
        assert "not run again" in tool_message["content"]
    assert _lines(ws / "out.txt") == 1  # the tool did not run again


async def test_deny_from_the_cli_and_a_timeout_deny(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    async with ScriptedLLMServer() as llm:
        (tmp_path / "loom.toml").write_text(_toml(llm, ws, tools='["fs.write"]'))
        llm.push(_append("first"), Reply(text="Not written."))
        async with loom_serve(tmp_path) as (server, address):
            await _publish(address, tmp_path, "append first")
            first = (await server.wait_for(_REQUESTED)).group(1)
            denied = await loom("deny", first, "--note", "no", "-a", address, cwd=tmp_path)
            assert denied.returncode == 0, denied.stderr
            await server.wait_for(rf"approval {first}: the turn of agent writer resumed")
            missing = await loom("approve", "no-such-approval", "-a", address, cwd=tmp_path)
        assert missing.returncode == 1
        assert "no approval 'no-such-approval'" in missing.stderr.decode()
        # The same data directory, a server whose approvals expire after 1 s.
        toml = _toml(llm, ws, tools='["fs.write"]', extra="[approvals]\ntimeout_s = 1\n\n")
        (tmp_path / "loom.toml").write_text(toml)
        llm.push(_append("second"), Reply(text="Timed out, not written."))
        async with loom_serve(tmp_path) as (server, address):
            await _publish(address, tmp_path, "append second")
            second = (await server.wait_for(_REQUESTED)).group(1)
            await server.wait_for(rf"approval {second}: expired by timeout")
            await server.wait_for(rf"approval {second}: the turn of agent writer resumed")
            records = {r["id"]: r for r in await _approvals(address, tmp_path, "--status", "all")}
        assert (records[first]["status"], records[first]["note"]) == ("denied", "no")
        assert (records[second]["status"], records[second]["decided_by"]) == ("expired", "timeout")
        said = [m["content"] for r in llm.requests for m in r.messages if m["role"] == "tool"]
        assert any("denied by a human reviewer (no)" in s for s in said)
        assert any("not approved in time" in s for s in said)
    assert _lines(ws / "log.txt") == 0


async def test_fs_write_waits_by_default_only_beyond_loopback(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "loom.toml").write_text(f'[tools.fs]\nroot = "{ws}"\n')
    async with loom_serve(tmp_path) as (server, _address):
        await server.wait_for(r"approvals in .* \(0 pending; fs\.write never\)")
    token = secrets.token_urlsafe(32)
    env = clean_env(LOOM_TOKEN=token)
    async with loom_serve(tmp_path, "--host", "0.0.0.0", env=env) as (server, address):
        await server.wait_for(r"approvals in .* \(0 pending; fs\.write always\)")
        # Around the gate (no turn to wait in): refused, nothing written.
        direct = await loom(
            "call", "fs.write", '{"path": "x.txt", "content": "x"}', "-a", address, cwd=tmp_path,
            env=env,
        )  # fmt: skip
        assert direct.returncode == 1
        assert "fs.write: waits for a human's approval on this server" in direct.stderr.decode()
    assert not (ws / "x.txt").exists()
