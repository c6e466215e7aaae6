"""A capability of an in-process agent that its supervisor is restarting, called as a user
calls it: ``loom call`` against a real server process hosting the agent (issue 11, section 2:
a call waits for a restarting provider within its timeout, local providers too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._cli_support import PYTHON, clean_env, loom, running, running_argv

pytestmark = pytest.mark.anyio

# A server hosting, in its own process, an agent whose capability is text.upper and which
# crashes on "jobs.crash": its supervisor restarts it, and the new instance stays starting
# (not running) until the test creates the file "release". (A 3 s backoff was the window
# before: a `loom call` that took longer than that to start, on a loaded machine, found the
# agent back already and waited for nothing.)
HOST = """\
import logging
from pathlib import Path

import anyio

from loom import Agent, capability
from loom.bridge import BridgeServer
from loom.runtime import AgentRuntime, EventBus, SupervisionPolicy


@capability("text.upper")
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


async def on_event(ctx, topic, event):
    raise RuntimeError("crashed on purpose")


starts = 0


async def on_start(ctx):
    global starts
    starts += 1
    if starts > 1:
        print("upperer held starting", flush=True)
        with anyio.move_on_after(60):
            while not Path("release").exists():
                await anyio.sleep(0.02)


restart = SupervisionPolicy(backoff_initial_s=0.1, backoff_max_s=0.1, jitter=0, poison_after=1)
agent = Agent(
    "upperer",
    topics=["jobs.*"],
    capabilities=[upper],
    on_event=on_event,
    on_start=on_start,
    policy=restart,
)


async def main() -> None:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        async with BridgeServer(runtime, port=0) as server:
            await runtime.start(agent)
            print("listening on", server.address, flush=True)
            await anyio.sleep_forever()


logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
anyio.run(main)
"""


async def test_loom_call_waits_for_a_local_provider_being_restarted(tmp_path: Path) -> None:
    # Before: "TOOL_NOT_FOUND: text.upper" at once while the agent was between two instances.
    script = tmp_path / "host.py"
    script.write_text(HOST)
    async with running_argv([*PYTHON, str(script)], cwd=tmp_path, env=clean_env()) as host:
        address = (await host.wait_for(r"listening on (\S+)")).group(1)
        crash = await loom("publish", "jobs.crash", "x", "-a", address, cwd=tmp_path)
        assert crash.returncode == 0, crash.stderr
        await host.wait_for("agent upperer restarting in 0.100s")
        await host.wait_for("upperer held starting")
        argv = ("call", "text.upper", '{"text": "back"}', "-a", address, "--timeout", "20")
        async with running(*argv, cwd=tmp_path, env=clean_env()) as call:
            await host.wait_for("tool text.upper: no provider running; waiting up to 20 s")
            (tmp_path / "release").touch()
            assert await call.wait(timeout=30) == 0, call.output + host.output
        assert json.loads(call.output.strip().splitlines()[-1]) == "BACK", call.output
        # It did wait: the call came while no instance ran.
        assert host.count("tool text.upper: no provider running; waiting up to 20 s") == 1
        assert host.count("tool text.upper: a provider is back \\(upperer\\)") == 1
