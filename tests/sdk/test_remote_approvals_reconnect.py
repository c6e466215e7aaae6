"""A decision made while a running remote agent (``loom run``) is away from ``loom serve``
reaches it when it reconnects, not only when its process next starts.

The agent runs in one process of its own (``Agent.run``). Its turn waits for approval; the
process is stopped (SIGSTOP) and
``loom serve`` is killed and started again on the same port (no settle window, so nothing
holds the decision's mailbox event for a subscriber to come back); the approval is given on
the new server while the agent is away, so its ``approval.decided`` mailbox event finds no
subscriber. Then the agent is continued (SIGCONT): the same process reconnects, the server
hands it its decided, unresumed approvals on the new stream, and the turn resumes; the tool
runs once."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer

from ._cli_support import PYTHON, clean_env, free_port, loom, loom_serve, running_argv
from .test_remote_approvals import _REQUESTED, _call, _lines, _publish, _records, _setup

pytestmark = pytest.mark.anyio

RUN = """\
import sys

from writer import writer

writer.run(sys.argv[1])
"""


async def test_a_decision_made_while_the_agent_is_away_resumes_it_on_reconnect(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(150):
        async with ScriptedLLMServer() as llm:
            out = _setup(tmp_path, llm)
            (tmp_path / "run_writer.py").write_text(RUN)
            llm.push(_call("back"), Reply(text="Appended."))
            env = clean_env()
            port = str(free_port())
            serve_args = ("--port", port, "--settle", "0")
            async with (
                loom_serve(tmp_path, *serve_args, env=env) as (server, address),
                running_argv([*PYTHON, "run_writer.py", address], cwd=tmp_path, env=env) as agent,
            ):
                await server.wait_for("agent writer connected", timeout=60)
                await _publish(address, tmp_path, "append back")
                approval_id = (await server.wait_for(_REQUESTED)).group(1)
                agent.signal(signal.SIGSTOP)  # away: it neither reconnects nor restarts
                try:
                    server.signal(signal.SIGKILL)
                    await server.wait()
                    async with loom_serve(tmp_path, *serve_args, env=env) as (server, address):
                        await server.wait_for(r"approvals in .* \(1 pending", timeout=60)
                        approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
                        assert approved.returncode == 0, approved.stderr
                        assert _lines(out) == []
                        assert server.count("agent writer connected") == 0
                        agent.signal(signal.SIGCONT)
                        await server.wait_for("agent writer connected", timeout=60)
                        await agent.wait_for("tool ran: back", timeout=30)
                        await server.wait_for(
                            rf"approval {approval_id}: the turn of agent writer resumed",
                            timeout=60,
                        )
                        (record,) = await _records(address, tmp_path)
                        assert (record["status"], record["resumed"]) == ("approved", True)
                        assert agent.process.returncode is None  # the same process
                finally:
                    agent.signal(signal.SIGCONT)
            assert llm.remaining == 0
    assert _lines(out) == ["back"]  # exactly once
