"""A capability of an in-process agent that its supervisor is restarting, called as a user
calls it: ``loom call`` against a real server process hosting the agent (issue 11, section 2:
a call waits for a restarting provider within its timeout, local providers too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._cli_support import PYTHON, clean_env, loom, running_argv

pytestmark = pytest.mark.anyio

# A server hosting, in its own process, an agent whose capability is text.upper and which
# crashes on "jobs.crash": its supervisor restarts it after a 3 s backoff.
HOST = """\
import logging

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


restart = SupervisionPolicy(backoff_initial_s=3, backoff_max_s=3, jitter=0, poison_after=1)
agent = Agent(
    "upperer", topics=["jobs.*"], capabilities=[upper], on_event=on_event, policy=restart
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
        await host.wait_for("agent upperer restarting in 3.000s")
        call = await loom(
            "call", "text.upper", '{"text": "back"}', "-a", address, "--timeout", "20", cwd=tmp_path
        )
        assert call.returncode == 0, call.stderr.decode() + host.output
        assert json.loads(call.stdout) == "BACK"
        # It did wait: the call came while no instance ran.
        assert host.count("tool text.upper: no provider running; waiting up to 20 s") == 1
        assert host.count("tool text.upper: a provider is back \\(upperer\\)") == 1
