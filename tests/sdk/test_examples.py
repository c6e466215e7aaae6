"""The README's server flow with ``examples/``: ``loom serve``, ``loom run examples/``, then
``loom publish`` in and ``loom tail`` out."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.sdk._cli_support import PYTHON, clean_env, loom, loom_serve, running, running_argv

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).parents[2] / "examples"


async def test_the_upper_example_runs_under_loom_run(tmp_path: Path) -> None:
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", str(EXAMPLES), "-a", address, cwd=tmp_path) as agents,
        running("tail", "output.>", "-a", address, "--count", "1", cwd=tmp_path) as tail,
    ):
        await agents.wait_for(r"\[upperer\] .*connected")
        await tail.wait_for(r"tailing output\.> on ")
        published = await loom("publish", "input.text", "hello, loom", "-a", address, cwd=tmp_path)
        assert published.returncode == 0, published.stderr
        line = await tail.wait_for(r"output\.upper")
        assert "HELLO, LOOM" in line.string


async def test_python_examples_upper_py_works_as_its_docstring_says(tmp_path: Path) -> None:
    # Before: a traceback without LOOM_BRIDGE_ADDR; now that variable, else 127.0.0.1:50051.
    async with loom_serve(tmp_path) as (_server, address):
        env = clean_env(LOOM_BRIDGE_ADDR=address)
        async with (
            running_argv([*PYTHON, str(EXAMPLES / "upper.py")], cwd=tmp_path, env=env) as agent,
            running("tail", "output.>", "-a", address, "--count", "1", cwd=tmp_path) as tail,
        ):
            await agent.wait_for(f"connected to {address} as upperer$")
            await tail.wait_for(r"tailing output\.> on ")
            published = await loom("publish", "input.text", "hello", "-a", address, cwd=tmp_path)
            assert published.returncode == 0, published.stderr
            await tail.wait_for(r"^output\.upper - \S+ HELLO$")
            assert await agent.stop(signal.SIGINT) == 0
        assert "Traceback" not in agent.output
