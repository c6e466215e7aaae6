"""The README works as pasted: the quick start, the async example, and the section with a
server and agents in other processes, its commands parsed from README.md and run as written."""

from __future__ import annotations

import json
import re
import shlex
import signal
import sys
from pathlib import Path

import anyio
import pytest

from tests.sdk._cli_support import STAMP, clean_env, free_port, running_argv

pytestmark = pytest.mark.anyio

README = Path(__file__).parents[1] / "README.md"
ROOT = README.parent


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8")[:1500]
    assert "make run" in head
    assert "make test" in head


def _snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"\.venv/bin/python - <<'PY'\n(.*?)\nPY\n", text, re.S)


async def test_quick_start_runs_as_pasted() -> None:
    snippets = _snippets()
    assert snippets, "the quick start snippet is missing"
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-c", snippets[0]])
    assert b"output.upper HELLO, LOOM" in result.stdout


async def test_serve_agent_example_runs_as_pasted() -> None:
    # A server on 127.0.0.1:0 and an agent connected to it with loom.serve_agent.
    snippets = [s for s in _snippets() if "serve_agent" in s]
    assert len(snippets) == 1, "the serve_agent example is missing"
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-c", snippets[0]])
    assert result.stdout.strip() == b"over the wire"


def _multi_process_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## A server, and agents in other processes", 1)[1]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block is not None, "the section's commands are missing"
    # Each line is one command as a user types it; the comment after # is for the reader.
    return [line.split(" # ", 1)[0].strip() for line in block.group(1).splitlines()]


def _sh(command: str) -> list[str]:
    # Split as a shell would (the lines use plain quoting only), and run without one, so a
    # signal reaches the command itself.
    return shlex.split(command)


async def test_the_multi_process_section_runs_as_written(tmp_path: Path) -> None:
    commands = _multi_process_commands()
    assert [shlex.split(c)[:2] for c in commands] == [
        ["make", "run"],
        [".venv/bin/loom", "run"],
        [".venv/bin/loom", "agents"],
        [".venv/bin/loom", "tail"],
        [".venv/bin/loom", "publish"],
        [".venv/bin/loom", "call"],
    ]
    serve, run, agents, tail, publish, call = commands
    # 50051 may be taken on this machine: the section says how to move it, and does so here.
    address = f"127.0.0.1:{free_port()}"
    env = clean_env(LOOM_BRIDGE_ADDR=address, LOOM_DATA_DIR=str(tmp_path / "data"))

    async def once(command: str) -> tuple[int, str, str]:
        with anyio.fail_after(30):
            result = await anyio.run_process(_sh(command), cwd=ROOT, env=env, check=False)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    with anyio.fail_after(120):
        async with running_argv(_sh(serve), cwd=ROOT, env=env, group=True) as server:
            await server.wait_for(f"listening on {re.escape(address)}")
            async with running_argv(_sh(run), cwd=ROOT, env=env) as agent:
                await agent.wait_for(
                    f"^{STAMP}\\[upperer\\] INFO loom.bridge.client: connected to "
                    f"{re.escape(address)} as upperer$"
                )
                code, out, err = await once(agents)
                assert code == 0, err
                row = next(line for line in out.splitlines() if line.startswith("upperer"))
                assert row.split()[:3] == ["upperer", "running", "remote"]

                async with running_argv(_sh(tail), cwd=ROOT, env=env) as tailing:
                    await tailing.wait_for(f"tailing output.> on {re.escape(address)}")
                    code, out, err = await once(publish)
                    assert code == 0, err
                    assert re.fullmatch(r"published \S+ to input.text \(5 bytes\)\n", out)
                    assert err == ""  # a subscription matched: no note
                    await tailing.wait_for(r"^output\.upper - \S+ HELLO$")  # no type
                    assert await tailing.stop(signal.SIGINT) == 0

                code, out, err = await once(call)
                assert code == 0, err
                assert json.loads(out) == "HI"
                assert await agent.stop(signal.SIGINT) == 0
            # make ends as a Ctrl-C ends it (by the signal); loom serve under it, cleanly.
            await server.stop(signal.SIGINT)
            assert server.lines[-1].endswith("loom serve: stopped"), server.output
        assert "Traceback" not in agent.output + server.output
