"""An agent process as an operator meets it: ``python agent.py`` (``Agent.run()``) against a
real ``loom serve`` subprocess, stopped by real signals at each stage, with the exact lines it
writes on stderr and its exit codes (issue 11, section 2)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from ._cli_support import PYTHON, clean_env, free_port, loom, loom_serve, running, running_argv

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
            assert await agent.stop(signal.SIGINT) == 0
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


async def test_an_id_already_connected_is_retried_in_one_line(tmp_path: Path) -> None:
    path = _agent_file(tmp_path)
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with (
            running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as first,
        ):
            await first.wait_for("connected to .* as upperer$")
            async with running_argv([*PYTHON, str(path)], cwd=tmp_path, env=env) as second:
                line = await second.wait_for(
                    f"WARNING loom.bridge.client: cannot connect to {address}: ALREADY_EXISTS: "
                    r".*upperer.*; retrying in \d+\.\d s$"
                )
                assert "\n" not in line.string
                assert await second.stop() == 0
            _assert_clean(second.output)


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
