"""Every way an agent process's connection can end, each said once, in one line, in its own
words (issue 11, section 5: "every disconnect is logged once"), with real ``loom serve`` and
``Agent.run()`` subprocesses and real signals:

1. the server stops (SIGTERM: it drains);
2. the server dies (SIGKILL);
3. the network goes silent (the server frozen with SIGSTOP: the agent's heartbeat finds it);
4. an operator releases the agent (``loom agents release ID``);
5. the server no longer takes the agent's token (restarted with another one meanwhile);

and the agent's own stop (SIGTERM). The first three are losses the agent mends by itself
(``connection to X lost: ...; reconnecting``, then ``reconnected``); the last two end it
for good, each with its own words and exit code, never as "cannot connect". The server, too,
says each disconnect of an agent once.
"""

from __future__ import annotations

import re
import secrets
import signal
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from ._cli_support import PYTHON, Running, clean_env, free_port, loom, running, running_argv

pytestmark = pytest.mark.anyio

AGENT = """\
import math
import sys

from loom import Agent
from loom.bridge import ClientOptions

agent = Agent(sys.argv[1], topics=["jobs.*"])

if __name__ == "__main__":
    # A short heartbeat, so a silent server is found in 3 s, not 15 s (not shorter: a
    # loaded test machine must not pass for a silent server).
    agent.run(
        options=ClientOptions(
            connect_timeout=math.inf,
            rpc_timeout=2.0,
            heartbeat_interval=1.0,
            heartbeat_timeout=3.0,
        )
    )
"""

_CLEAN = ("Traceback", "AioRpcError", "debug_error_string", "RuntimeError")
_T = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "


def _assert_clean(proc: Running) -> None:
    for needle in _CLEAN:
        assert needle not in proc.output, proc.output


async def test_each_kind_of_disconnect_is_said_once_in_its_own_words(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    port = free_port()
    address = f"127.0.0.1:{port}"
    data = str(tmp_path / "data")
    token, other, admin = (secrets.token_urlsafe(24) for _ in range(3))

    def serve(with_token: str) -> AbstractAsyncContextManager[Running]:
        argv = ["serve", "--port", str(port), "--data-dir", data, "--nats", "off"]
        return running(*argv, "--token", with_token, "--admin-token", admin, cwd=tmp_path)

    def agent(agent_id: str) -> AbstractAsyncContextManager[Running]:
        env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_TOKEN=token)
        return running_argv([*PYTHON, str(script), agent_id], cwd=tmp_path, env=env)

    lost = f"WARNING loom.bridge.client: connection to {address} lost: "
    back = f"INFO loom.bridge.client: reconnected to {address} as one$"

    async with serve(token) as first:
        await first.wait_for("listening on")
        async with agent("one") as one:
            await one.wait_for(f"connected to {address} as one$")

            # 1. The server stops: it drains, and says why.
            assert await first.stop(signal.SIGTERM) == 0
            await one.wait_for(
                _T + lost + r"the server is shutting down; reconnecting in \d+\.\d s$"
            )
            async with serve(token) as second:
                await one.wait_for(back)

                # 2. The server dies: no goodbye.
                second.signal(signal.SIGKILL)
                await second.wait()
                await one.wait_for(lost, count=2)
            async with serve(token) as third:
                await one.wait_for(back, count=2)

                # 3. The network goes silent: the server frozen, the heartbeat finds it.
                third.signal(signal.SIGSTOP)
                try:
                    silent = await one.wait_for(lost, count=3)
                finally:
                    third.signal(signal.SIGCONT)
                assert re.search(r"nothing from the server for 3s", silent.string)
                await one.wait_for(back, count=3, timeout=30)

                # The agent's own stop: a clean disconnect, said once.
                assert await one.stop(signal.SIGTERM) == 0
                assert one.lines[-1].endswith(f"loom.bridge.client: disconnected from {address}")

                async with agent("two") as two, agent("three") as three:
                    await two.wait_for(f"connected to {address} as two$")
                    await three.wait_for(f"connected to {address} as three$")

                    # 4. An operator releases agent two: it ends for good, and says so.
                    env = clean_env(LOOM_BRIDGE_ADDR=address)
                    release = ("agents", "release", "two", "--token", admin)
                    done = await loom(*release, cwd=tmp_path, env=env)
                    assert done.returncode == 0, done.stderr
                    assert await two.wait() == 4
                    await third.wait_for("agent two released by the operator")

                    # 5. The server comes back with another token: three's reconnection is
                    # refused for good (not "cannot connect": it had been connected).
                    assert await third.stop(signal.SIGTERM) == 0
                    async with serve(other) as fourth:
                        assert await three.wait(timeout=30) == 3
                        await fourth.wait_for("listening on")

    # Each loss, once: one line each, the state change and its reason together.
    assert one.count(lost) == 3, one.output
    assert one.count(back) == 3, one.output
    assert one.count("disconnected from") == 1, one.output
    _assert_clean(one)

    released = [line for line in two.lines if "released" in line]
    assert len(released) == 1, two.output
    assert re.fullmatch(
        _T + f"WARNING loom.agent: agent 'two' was released by the operator of {address}: "
        "its connection ended and it does not reconnect",
        released[0],
    )
    assert two.count("disconnected from") == 0, two.output  # the release line says it
    assert two.count("cannot connect") == 0, two.output  # it was connected: not that
    _assert_clean(two)

    assert three.count(lost) == 1, three.output
    assert three.count(r"ERROR .*cannot connect") == 0, three.output
    errors = [line for line in three.lines if " ERROR " in line]
    assert len(errors) == 1, three.output
    assert re.fullmatch(
        _T + f"ERROR loom.agent: cannot reconnect to {address}: UNAUTHENTICATED: .+", errors[0]
    )
    _assert_clean(three)

    # The server says each agent's disconnect once: one at the drain, two for the frozen
    # stream and the stop, then two and three.
    assert first.count(r"agent one disconnected") == 1, first.output
    assert third.count(r"agent one disconnected") == 2, third.output
    assert third.count(r"agent two disconnected: the agent id was released by an operator") == 1
    assert third.count(r"agent three disconnected") == 1, third.output
    for server in (first, third):
        assert "Traceback" not in server.output, server.output
