"""``loom call`` of a streaming tool: a real ``loom serve`` offering a remote A2A agent (the
a2a-sdk's server, in this process, streaming its answer word by word) as ``a2a.helper``; the
two ``a2a.helper`` examples of ``loom call --help`` run as written (with the server's address)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import anyio
import pytest

from tests.sdk._a2a_support import StreamExecutor, serve_a2a
from tests.sdk._cli_support import loom, loom_serve

pytestmark = pytest.mark.anyio


async def _examples(cwd: Path) -> list[list[str]]:
    """The ``a2a.helper`` lines of ``loom call --help``, as argv after ``loom``."""
    helped = await loom("call", "--help", cwd=cwd)
    assert helped.returncode == 0, helped.stderr
    lines = helped.stdout.decode().split("examples:", 1)[1].splitlines()
    found = [shlex.split(line.split(" # ", 1)[0]) for line in lines if "a2a.helper" in line]
    assert all(argv[:2] == ["loom", "call"] for argv in found)
    return [argv[1:] for argv in found]


async def test_loom_call_prints_the_pieces_then_the_output(tmp_path: Path) -> None:
    streaming, plain = await _examples(tmp_path)
    assert "--no-stream" in plain
    with anyio.fail_after(60):
        async with serve_a2a(StreamExecutor(), name="helper") as url:
            (tmp_path / "loom.toml").write_text(f'[a2a.remote.helper]\nurl = "{url}"\n')
            async with loom_serve(tmp_path, "--log-level", "info") as (server, address):
                await server.wait_for(r"A2A agents: a2a\.helper")
                called = await loom(*streaming, "-a", address, cwd=tmp_path)
                quiet = await loom(*plain, "-a", address, cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    first, rest = called.stdout.decode().split("\n", 1)
    # The remote agent's status message and its artifact chunk, as they came, then the output.
    assert first == "thinking… HI "
    assert json.loads(rest)["text"] == "HI "
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["text"] == "HI "
