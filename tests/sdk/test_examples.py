"""The README's server flow with ``examples/``: ``loom serve``, ``loom run examples/``, then
``loom publish`` in and ``loom tail`` out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk._cli_support import loom, loom_serve, running

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
