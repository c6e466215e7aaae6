"""``loom run``: a folder of agent files as supervised subprocesses, against a real ``loom
serve`` subprocess and against its own embedded server; discovery and its errors."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from ._cli_support import STAMP, clean_env, free_port, loom, loom_serve, running

pytestmark = pytest.mark.anyio

ECHO = """\
from loom import Agent


async def on_event(ctx, topic, event):
    print(f"echo got {event.payload.decode()} on {topic}", flush=True)


echo = Agent("echo", topics=["demo.*"], on_event=on_event)
_hidden = Agent("hidden", topics=["demo.*"])  # names starting with _ are not agents

if __name__ == "__main__":  # loom run imports the file under another name: never runs
    print("MAIN BLOCK RAN", flush=True)
"""

CRASHER = """\
import os
import sys

from loom import Agent


async def on_event(ctx, topic, event):
    print(f"crasher got {event.payload.decode()}", flush=True)
    if event.payload == b"boom":
        print("crashing now", file=sys.stderr, flush=True)
        os._exit(5)


crasher = Agent("crasher", topics=["demo.*"], on_event=on_event)
"""


def _agents(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO)
    (folder / "crasher.py").write_text(CRASHER)
    (folder / "_helpers.py").write_text("raise RuntimeError('never imported')\n")
    return folder


async def test_a_folder_of_agents_with_a_crash_and_a_restart(tmp_path: Path) -> None:
    folder = _agents(tmp_path)
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", str(folder), "-a", address, cwd=tmp_path) as run,
    ):
        await run.wait_for(
            STAMP + r"\[crasher\] INFO loom.bridge.client: connected to .* as crasher$"
        )
        await run.wait_for(STAMP + r"\[echo\] INFO loom.bridge.client: connected to .* as echo$")
        listed = await loom("agents", "--json", "-a", address, cwd=tmp_path)
        assert sorted(json.loads(x)["id"] for x in listed.stdout.splitlines()) == [
            "crasher",
            "echo",
        ]

        boom = await loom("publish", "demo.x", "boom", "-a", address, cwd=tmp_path)
        assert boom.returncode == 0, boom.stderr
        await run.wait_for(f"^{STAMP}" + r"\[echo\] echo got boom on demo\.x$")
        await run.wait_for(f"^{STAMP}" + r"\[crasher\] crasher got boom$")
        await run.wait_for(f"^{STAMP}" + r"\[crasher\] crashing now$")  # its stderr, prefixed too
        await run.wait_for(
            f"^{STAMP}" + r"\[crasher\] exited with code 5; restart 1 in \d+\.\d+ s$"
        )
        await run.wait_for(r"\[crasher\] INFO loom.bridge.client: connected to ", count=2)

        again = await loom("publish", "demo.y", "after", "-a", address, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        await run.wait_for(r"\[crasher\] crasher got after$")
        await run.wait_for(r"\[echo\] echo got after on demo\.y$")
        # `loom agents` counts the restart loom run made (before: 0).
        listed = await loom("agents", "--json", "-a", address, cwd=tmp_path)
        restarts = {
            json.loads(x)["id"]: json.loads(x)["restarts"] for x in listed.stdout.splitlines()
        }
        assert restarts == {"crasher": 1, "echo": 0}

        assert await run.stop(signal.SIGINT) == 0
        assert run.count(r"\[echo\] INFO loom.bridge.client: connected") == 1  # only the crasher
        assert "MAIN BLOCK RAN" not in run.output
        assert "hidden" not in run.output
        assert "never imported" not in run.output
        assert "Traceback" not in run.output

        # Stopped cleanly: disconnected from the server (the stream ended, not timed out).
        after = await loom("agents", "--json", "-a", address, cwd=tmp_path)
        statuses = {json.loads(x)["id"]: json.loads(x)["status"] for x in after.stdout.splitlines()}
        assert statuses == {"crasher": "disconnected", "echo": "disconnected"}


async def test_an_agent_released_by_the_operator_is_not_restarted_and_the_rest_go_on(
    tmp_path: Path,
) -> None:
    folder = _agents(tmp_path)
    admin = "admin-" + "x7Qp2Lm9Zr4Kw8Vb"
    async with (
        loom_serve(tmp_path, "--admin-token", admin) as (_server, address),
        running("run", str(folder), "-a", address, cwd=tmp_path) as run,
    ):
        await run.wait_for(r"\[crasher\] INFO loom.bridge.client: connected to .* as crasher$")
        await run.wait_for(r"\[echo\] INFO loom.bridge.client: connected to .* as echo$")
        released = await loom(
            "agents", "release", "echo", "--token", admin, "-a", address, cwd=tmp_path
        )
        assert released.returncode == 0, released.stderr
        await run.wait_for(
            f"^{STAMP}" + r"\[echo\] WARNING loom.agent: agent 'echo' was released by the "
            r"operator of \S+: its connection ended and it does not reconnect$"
        )
        await run.wait_for(
            f"^{STAMP}" + r"\[echo\] exited with code 4: released by the operator; not restarted$"
        )
        # The others go on.
        sent = await loom("publish", "demo.x", "still", "-a", address, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        await run.wait_for(r"\[crasher\] crasher got still$")
        assert await run.stop(signal.SIGINT) == 0
    assert run.count(r"\[echo\] INFO loom.bridge.client: connected") == 1  # not restarted
    assert "cannot connect" not in run.output
    assert "Traceback" not in run.output


async def test_with_embedded_it_starts_a_server_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO)
    async with running("run", str(folder / "echo.py"), "--embedded", cwd=tmp_path) as run:
        address = (await run.wait_for(r"embedded server listening on (\S+:\d+)")).group(1)
        await run.wait_for(r"\[echo\] INFO loom.bridge.client: connected to ")
        result = await loom("publish", "demo.z", "hello", "-a", address, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        await run.wait_for(r"\[echo\] echo got hello on demo\.z$")
        assert await run.stop(signal.SIGTERM) == 0


async def test_the_embedded_server_says_it_is_memory_only_and_refuses_durable_agents(
    tmp_path: Path,
) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    async with running("run", "echo.py", "--embedded", cwd=tmp_path) as run:
        line = await run.wait_for(r"embedded server listening on (\S+:\d+)")
        assert line.string == (
            f"loom run: embedded server listening on {line.group(1)} "
            "(memory only: no NATS, nothing durable; loom serve for that)"
        )
        status = await loom("status", "-a", line.group(1), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert b"nats:        off (memory only: durable subscriptions refused)" in status.stdout
        assert await run.stop(signal.SIGTERM) == 0
    (tmp_path / "keeper.py").write_text(
        "from loom import Agent\nkeeper = Agent('keeper', topics=['k.*'], durable=True)\n"
    )
    refused = await loom("run", "keeper.py", "echo.py", "--embedded", cwd=tmp_path)
    assert refused.returncode != 0
    assert not refused.stdout  # nothing started
    assert (
        refused.stderr.decode()
        .strip()
        .endswith(
            "keeper: durable (Agent(durable=True)), but the embedded server of loom run "
            "--embedded is memory only (no NATS): run them against loom serve"
        )
    )


async def test_an_agent_that_stops_by_itself_is_not_restarted(tmp_path: Path) -> None:
    (tmp_path / "quitter.py").write_text(
        "import os\n"
        "from loom import Agent\n\n"
        "async def on_start(ctx):\n"
        "    print('done', flush=True)\n"
        "    os.kill(os.getpid(), 15)  # SIGTERM: a clean stop, exit code 0\n\n"
        "quitter = Agent('quitter', on_start=on_start)\n"
    )
    async with running("run", "quitter.py", "--embedded", cwd=tmp_path) as run:
        await run.wait_for(f"^{STAMP}" + r"\[quitter\] stopped \(exit code 0\); not restarted$")
        assert await run.wait() == 0  # no agent left: the run ends
        assert run.count(r"\[quitter\] done$") == 1


@pytest.mark.parametrize(
    ("files", "args", "needle"),
    [
        ({}, ["missing.py"], "missing.py: no such file or folder"),
        ({"empty/x.txt": ""}, ["empty"], "holds no agent files"),
        ({"plain.py": "x = 1\n"}, ["plain.py"], "no module-level Agent instance"),
        ({"broken.py": "import nope_not_a_module\n"}, ["broken.py"], "ModuleNotFoundError"),
        (
            {
                "a.py": "from loom import Agent\na = Agent('same')\n",
                "b.py": "from loom import Agent\nb = Agent('same')\n",
            },
            ["a.py", "b.py"],
            "agent 'same' is defined in both",
        ),
        (
            {"two.py": "from loom import Agent\na = Agent('x')\nb = Agent('x')\n"},
            ["two.py"],
            "are both agent 'x'",
        ),
    ],
)
async def test_discovery_errors_stop_before_anything_starts(
    tmp_path: Path, files: dict[str, str], args: list[str], needle: str
) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    result = await loom("run", *args, cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("loom run: ")
    assert needle in err
    assert "Traceback" not in err
    assert b"listening" not in result.stdout


async def test_the_address_comes_from_loom_bridge_addr(tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with running("run", "echo.py", cwd=tmp_path, env=env) as run:
            await run.wait_for(f"^{STAMP}loom run: echo -> {re.escape(address)}$")
            await run.wait_for(f"connected to {re.escape(address)} as echo$")
            assert await run.stop(signal.SIGTERM) == 0
        assert "embedded" not in run.output


async def test_a_refusal_no_restart_can_fix_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    async with (
        loom_serve(tmp_path, "--token", "s3cret") as (_server, address),
        running("run", "echo.py", "-a", address, "--token", "wrong", cwd=tmp_path) as run,
    ):
        assert await run.wait() == 1
    assert re.search(
        f"^{STAMP}" + r"\[echo\] ERROR loom.agent: cannot connect to \S+: UNAUTHENTICATED: .+$",
        run.output,
        re.M,
    ), run.output
    assert run.lines[-1] == run.lines[-1].split("[echo] ")[0] + (
        "[echo] exited with code 3: the server refused it for good; not restarted, stopping the run"
    )
    assert "restart 1" not in run.output
    assert "Traceback" not in run.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_before_any_connection_is_a_quiet_stop(
    tmp_path: Path, signum: signal.Signals
) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    address = f"127.0.0.1:{free_port()}"
    async with running("run", "echo.py", "-a", address, cwd=tmp_path) as run:
        await run.wait_for(r"\[echo\] WARNING loom.bridge.client: cannot connect to .*; retrying")
        assert await run.stop(signum) == 0
    assert run.count(r"\[echo\] INFO loom.agent: SIGTERM received: stopping$") == 1
    for needle in ("Traceback", "AioRpcError", "exited with code", "killed"):
        assert needle not in run.output


async def test_log_format_json_makes_every_line_an_object(tmp_path: Path) -> None:
    (tmp_path / "echo.py").write_text(ECHO)
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", "echo.py", "-a", address, "--log-format", "json", cwd=tmp_path) as run,
    ):
        await run.wait_for('"message": "connected to ')
        result = await loom("publish", "demo.j", "hi", "-a", address, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        await run.wait_for("echo got hi on demo.j")
        assert await run.stop() == 0
    records = [json.loads(line) for line in run.lines]
    connected = next(r for r in records if r.get("message", "").startswith("connected to"))
    assert connected["agent"] == "echo"
    assert connected["logger"] == "loom.bridge.client"
    printed = next(r for r in records if r.get("stream") == "stdout")
    assert printed["message"] == "echo got hi on demo.j"
    assert printed["agent"] == "echo"


async def test_a_file_that_no_longer_imports_stops_the_run(tmp_path: Path) -> None:
    # Discovery imports it once (fine); the agent's own process imports it again (it raises).
    (tmp_path / "late.py").write_text(
        "import pathlib\n"
        "from loom import Agent\n\n"
        "marker = pathlib.Path(__file__).with_suffix('.imported')\n"
        "if marker.exists():\n"
        "    raise RuntimeError('broken on the second import')\n"
        "marker.write_text('x')\n"
        "late = Agent('late')\n"
    )
    address = f"127.0.0.1:{free_port()}"
    async with running("run", "late.py", "-a", address, cwd=tmp_path) as run:
        assert await run.wait(timeout=45) == 1
    assert re.search(
        r"\[late\] ERROR loom.run: late.py: importing it raised RuntimeError: broken on the "
        r"second import$",
        run.output,
        re.M,
    ), run.output
    assert run.lines[-1].endswith(
        "[late] exited with code 2: its file or agent cannot be loaded; not restarted, "
        "stopping the run"
    )
    assert "Traceback" not in run.output


async def test_traceback_shows_where_a_handler_failed(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        "from loom import Agent\n\n"
        "async def on_event(ctx, topic, event):\n"
        "    raise ValueError('no good')\n\n"
        "failing = Agent('failing', topics=['demo.*'], on_event=on_event)\n"
    )
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", "failing.py", "-a", address, "--traceback", cwd=tmp_path) as run,
    ):
        await run.wait_for("connected to .* as failing$")
        sent = await loom("publish", "demo.x", "x", "-a", address, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        await run.wait_for(
            r"\[failing\] WARNING loom.runtime: agent failing: handler failed on demo.x: "
            r"ValueError: no good \(at .*failing\.py:4 in on_event\)$"
        )
        await run.wait_for(r'\[failing\]   File ".*failing\.py", line 4, in on_event$')
        assert await run.stop() == 0
    assert "DEBUG loom.bridge" not in run.output  # only the tracebacks are turned up
