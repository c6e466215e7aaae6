"""An agent process as an operator meets it: ``python agent.py`` (``Agent.run()``) against a
real ``loom serve`` subprocess, stopped by real signals at each stage, with the exact lines it
writes on stderr and its exit codes (issue 11, section 2)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import anyio
import pytest

from ._cli_support import (
    PYTHON,
    clean_env,
    free_port,
    loom,
    loom_serve,
    running,
    running_argv,
)

pytestmark = pytest.mark.anyio

AGENT = """\
import asyncio
import sys

from loom import Agent, capability


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    if text == "fail":
        raise RuntimeError("asked to fail")
    if text == "slow":
        print("slow call started", file=sys.stderr, flush=True)
        await asyncio.sleep(2)
    return text.upper()


async def on_event(ctx, topic, event):
    if event.payload == b"boom":
        raise ValueError("bad event")


upperer = Agent("upperer", topics=["jobs.*"], capabilities=[upper], on_event=on_event)

if __name__ == "__main__":
    upperer.run()
"""

# The server's hold of a disconnected agent's id (--stale-after) in the tests of the wait for
# it: long enough for a new process to start within it on a loaded machine.
HOLD = "8"

# Every process of the agent shows the same registration secret, as a supervisor's would: a
# process started again takes the id back at once (the server holds it for the secret's owner).
SECRET = "test-secret-0123456789abcdef"

_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
_CLEAN = ("Traceback", "AioRpcError", "debug_error_string", "RuntimeError: Attempted")


def _agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "upper_agent.py"
    path.write_text(AGENT)
    return path


def _assert_clean(output: str) -> None:
    for needle in _CLEAN:
        assert needle not in output, output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_before_the_first_connection_is_a_quiet_stop(
    tmp_path: Path, signum: signal.Signals
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = clean_env(LOOM_BRIDGE_ADDR=address)
    async with running_argv([*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=env) as agent:
        await agent.wait_for("retrying in")
        assert await agent.stop(signum) == 0
    lines = agent.lines
    assert re.fullmatch(_TIME + f"INFO loom.bridge.client: connecting to {address}", lines[0])
    assert re.fullmatch(
        _TIME + f"WARNING loom.bridge.client: cannot connect to {address}: connection refused; "
        r"retrying in \d+\.\d s",
        lines[1],
    )
    assert re.fullmatch(_TIME + f"INFO loom.agent: {signum.name} received: stopping", lines[-1])
    _assert_clean(agent.output)


async def test_the_same_failure_again_is_logged_once_at_warning(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_LOG_LEVEL="debug")
    async with running_argv([*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=env) as agent:
        await agent.wait_for("DEBUG loom.bridge.client: cannot connect to", count=2)
        assert await agent.stop() == 0
    assert agent.count("WARNING loom.bridge.client: cannot connect") == 1
    _assert_clean(agent.output)


async def test_the_agent_may_start_before_the_server(tmp_path: Path) -> None:
    # The first connection is retried until the server is up, as after a disconnect.
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = clean_env(LOOM_BRIDGE_ADDR=address)
    async with running_argv([*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=env) as agent:
        await agent.wait_for("connection refused; retrying in")
        data = str(tmp_path / "data")
        async with running("serve", "--port", str(port), "--data-dir", data, cwd=tmp_path):
            await agent.wait_for(f"INFO loom.bridge.client: connected to {address} as upperer$")
            assert await agent.stop(signal.SIGTERM) == 0
    assert agent.lines[-1].endswith(f"INFO loom.bridge.client: disconnected from {address}")
    _assert_clean(agent.output)


async def test_signals_while_connected_and_while_reconnecting(tmp_path: Path) -> None:
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path) as (server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_AGENT_SECRET=SECRET)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as connected:
            await connected.wait_for(f"connected to {address} as upperer$")
            assert await connected.stop(signal.SIGTERM) == 0
        _assert_clean(connected.output)

        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as agent:
            await agent.wait_for(f"connected to {address} as upperer$")
            assert await server.stop(signal.SIGTERM) == 0
            await agent.wait_for(
                f"WARNING loom.bridge.client: connection to {address} lost: .*; "
                r"reconnecting in \d+\.\d s$"
            )
            await agent.wait_for("retrying in")
            # At once: not the grace (5 s) spent waiting for a server that is not there.
            started = anyio.current_time()
            assert await agent.stop(signal.SIGINT) == 0
            assert anyio.current_time() - started < 3.5
        _assert_clean(agent.output)
        assert server.count(r"agent upperer disconnected") == 2  # each disconnect, once


async def test_a_wrong_token_is_one_line_and_exit_code_3(tmp_path: Path) -> None:
    async with loom_serve(tmp_path, "--token", "s3cret") as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_TOKEN="wrong")
        async with running_argv(
            [*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=env
        ) as agent:
            assert await agent.wait() == 3
    errors = [line for line in agent.lines if " ERROR " in line]
    assert len(errors) == 1, agent.output
    assert re.fullmatch(
        _TIME + f"ERROR loom.agent: cannot connect to {address}: UNAUTHENTICATED: .+", errors[0]
    )
    _assert_clean(agent.output)


async def test_an_id_taken_by_a_live_connection_is_waited_for_then_exit_code_3(
    tmp_path: Path,
) -> None:
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as first:
            await first.wait_for("connected to .* as upperer$")
            # The other process may go away: waited for, $LOOM_ID_WAIT bounds it.
            short = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_ID_WAIT="2")
            async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=short) as second:
                await second.wait_for(
                    "WARNING loom.bridge.client: agent id 'upperer' is taken by a live "
                    r"connection; waiting until \d\d:\d\d:\d\d for it to be released "
                    r"\(ClientOptions.id_wait\)$"
                )
                assert await second.wait() == 3
            # Its last line says why, once.
            assert re.fullmatch(
                _TIME + f"ERROR loom.agent: cannot connect to {address}: ALREADY_EXISTS: .*"
                r"upperer.* \(still, after waiting 2 s\)",
                second.lines[-1],
            )
            assert second.count("upperer") == 2
            _assert_clean(second.output)
            # Meanwhile it went away: the second connects once the first has stopped.
            async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as third:
                await third.wait_for("is taken by a live connection")
                assert await first.stop(signal.SIGTERM) == 0
                await third.wait_for(f"connected to {address} as upperer$")
                assert await third.stop() == 0
            _assert_clean(third.output)


async def test_a_process_started_again_within_the_hold_waits_for_its_id(tmp_path: Path) -> None:
    # Before: exit code 3 (PERMISSION_DENIED, the id held for the killed process) although
    # waiting would do. No $LOOM_AGENT_SECRET here: a plain `python agent.py` run again.
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path, "--stale-after", HOLD) as (server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as crashed:
            await crashed.wait_for("connected to .* as upperer$")
            crashed.process.kill()  # no goodbye: the server holds the id for it
            await crashed.wait()
        await server.wait_for("agent upperer disconnected")
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as again:
            line = await again.wait_for(
                "WARNING loom.bridge.client: agent id 'upperer' is still held for its previous "
                r"connection; waiting until (\d\d:\d\d:\d\d) for the server to release it$"
            )
            await again.wait_for(f"INFO loom.bridge.client: connected to {address} as upperer$")
            assert line.group(1) <= again.lines[-1][11:19]  # it said when, and kept to it
            assert await again.stop() == 0
        assert again.count("WARNING") == 1
        _assert_clean(again.output)

        # A clean stop gives the id up: a process started again connects at once. (Once the
        # agent runs: a signal before that stops it at once, without the final report, and
        # the id is held as after a crash. A call answered says it runs.)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as stopped:
            await stopped.wait_for("connected to .* as upperer$")
            called = await loom("call", "text.upper", '{"text": "x"}', "-a", address, cwd=tmp_path)
            assert called.returncode == 0, called.stderr
            assert await stopped.stop(signal.SIGTERM) == 0
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as again:
            await again.wait_for("connected to .* as upperer$")
            assert await again.stop() == 0
        assert again.count("held") == 0, again.output


async def test_loom_run_started_again_within_the_hold_waits_for_its_ids(tmp_path: Path) -> None:
    # `loom run` gives its agents a new secret each run: a run started again after one that
    # was killed outright (supervisor and agents: a reboot, the OOM killer) waits for the ids,
    # as a plain process does.
    (tmp_path / "upper_agent.py").write_text(
        AGENT.replace(
            'upperer = Agent("upperer", topics=["jobs.*"], capabilities=[upper], '
            "on_event=on_event)",
            "async def on_start(ctx):\n"
            "    import os\n"
            "    print('pid', os.getpid(), flush=True)\n\n\n"
            'upperer = Agent("upperer", topics=["jobs.*"], capabilities=[upper], '
            "on_event=on_event, on_start=on_start)",
        )
    )
    async with loom_serve(tmp_path, "--stale-after", HOLD) as (server, address):
        args = ("run", "upper_agent.py", "-a", address)
        async with running(*args, cwd=tmp_path) as run:
            pid = int((await run.wait_for(r"\[upperer\] pid (\d+)$")).group(1))
            await run.wait_for(r"\[upperer\] .*connected to .* as upperer$")
            run.signal(signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)  # no goodbye: the server holds the id
            await run.wait()
        await server.wait_for("agent upperer disconnected")
        async with running(*args, cwd=tmp_path) as run:
            await run.wait_for(
                r"\[upperer\] WARNING loom.bridge.client: agent id 'upperer' is still held for "
                "its previous connection; waiting until"
            )
            await run.wait_for(r"\[upperer\] .*connected to .* as upperer$")
            assert await run.stop() == 0
        _assert_clean(run.output)


async def test_failures_of_user_code_say_where_in_the_agent_process(tmp_path: Path) -> None:
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_AGENT_SECRET=SECRET)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as agent:
            await agent.wait_for("connected to .* as upperer$")
            failed = await loom(
                "call", "text.upper", '{"text": "fail"}', "-a", address, cwd=tmp_path
            )
            assert failed.stderr == b"loom call: text.upper: failed: RuntimeError: asked to fail\n"
            await agent.wait_for(
                "WARNING loom.bridge.calls: capability text.upper: failed: RuntimeError: asked "
                f"to fail \\(at {re.escape(str(path))}:11 in upper\\)$"
            )
            boom = await loom("publish", "jobs.x", "boom", "-a", address, cwd=tmp_path)
            assert boom.returncode == 0, boom.stderr
            await agent.wait_for(
                "WARNING loom.runtime: agent upperer: handler failed on jobs.x: ValueError: bad "
                f"event \\(at {re.escape(str(path))}:20 in on_event\\)$"
            )
            assert await agent.stop() == 0
        _assert_clean(agent.output)  # the tracebacks are for debug

        debug = clean_env(
            LOOM_BRIDGE_ADDR=address, LOOM_LOG_LEVEL="debug", LOOM_AGENT_SECRET=SECRET
        )
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=debug) as agent:
            await agent.wait_for("connected to .* as upperer$")
            await loom("call", "text.upper", '{"text": "fail"}', "-a", address, cwd=tmp_path)
            await agent.wait_for(r'^  File ".*upper_agent\.py", line 11, in upper$')
            await agent.wait_for(
                "DEBUG loom.bridge.calls: tool call text.upper .*: ERROR RuntimeError in"
            )
            assert await agent.stop() == 0


async def test_a_stop_lets_the_capability_call_in_progress_finish(tmp_path: Path) -> None:
    # Before: the caller of a slow capability got AGENT_DISCONNECTED a moment after SIGTERM.
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as agent:
            await agent.wait_for("connected to .* as upperer$")
            async with running(
                "call", "text.upper", '{"text": "slow"}', "-a", address, cwd=tmp_path
            ) as call:
                await agent.wait_for("slow call started")
                agent.process.send_signal(signal.SIGTERM)
                assert await call.wait() == 0, call.output
                assert json.loads(call.output) == "SLOW"
            assert await agent.wait() == 0
        _assert_clean(agent.output)


async def test_a_call_waits_for_its_restarting_provider(tmp_path: Path) -> None:
    # Before: "no such tool" at once while the agent offering it was away.
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path, "--log-level", "debug") as (server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_AGENT_SECRET=SECRET)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as agent:
            await agent.wait_for("connected to .* as upperer$")
            agent.process.kill()  # a crash: no goodbye
            await agent.wait()
        await server.wait_for("agent upperer disconnected")
        call_args = ["call", "text.upper", '{"text": "back"}', "-a", address, "--timeout", "20"]
        async with running(*call_args, cwd=tmp_path) as call:
            await server.wait_for("tool text.upper: no provider running; waiting up to 20 s")
            async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as again:
                assert await call.wait(timeout=20) == 0, call.output + server.output
                assert json.loads(call.output) == "BACK"
                assert await again.stop() == 0


async def test_a_call_cut_by_a_server_stop_says_so(tmp_path: Path) -> None:
    # Before: "cannot connect to ...: Cancelling all calls (is `loom serve` running there?)"
    # for a call the server had taken and then dropped as it shut down.
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path, "--drain-grace", "0.5", "--log-level", "debug") as (
        server,
        address,
    ):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as agent:
            await agent.wait_for("connected to .* as upperer$")
            agent.process.kill()
            await agent.wait()
        call_args = ["call", "text.upper", '{"text": "x"}', "-a", address, "--timeout", "20"]
        async with running(*call_args, cwd=tmp_path) as call:
            await server.wait_for("tool text.upper: no provider running; waiting up to 20 s")
            assert await server.stop(signal.SIGTERM) == 0
            assert await call.wait() == 1
        assert call.lines == [
            f"loom call: ToolService.CallStream: {address} shut down before answering"
        ], call.output


async def test_the_default_address_is_127_0_0_1_50051(tmp_path: Path) -> None:
    async with running_argv(
        [*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=clean_env()
    ) as agent:
        await agent.wait_for("INFO loom.bridge.client: connecting to 127.0.0.1:50051$")
        assert await agent.stop() == 0


async def test_log_format_json(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_LOG_FORMAT="json")
    async with running_argv([*PYTHON, str(_agent_file(tmp_path))], cwd=tmp_path, env=env) as agent:
        await agent.wait_for("retrying in")
        assert await agent.stop() == 0
    records = [json.loads(line) for line in agent.lines]
    assert records[0]["message"] == f"connecting to {address}"
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "loom.bridge.client"
    assert re.fullmatch(_TIME.strip(), records[0]["ts"])


async def test_the_first_connection_has_a_configurable_limit(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    script = (
        "from loom import Agent\n"
        "from loom.bridge import ClientOptions\n"
        f"Agent('x').run({address!r}, options=ClientOptions(connect_timeout=0.5))\n"
    )
    async with running_argv([*PYTHON, "-c", script], cwd=tmp_path, env=clean_env()) as agent:
        assert await agent.wait() == 1
    assert re.fullmatch(
        _TIME + f"ERROR loom.agent: cannot connect to {address}: not connected within 0.5 s: "
        "connection refused",
        agent.lines[-1],
    )
    _assert_clean(agent.output)
