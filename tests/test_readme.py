"""The README's quick start works as pasted."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.anyio

README = Path(__file__).parents[1] / "README.md"


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
