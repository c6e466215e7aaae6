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


async def test_quick_start_runs_as_pasted() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"\.venv/bin/python - <<'PY'\n(.*?)\nPY\n", text, re.S)
    assert match, "the quick start snippet is missing"
    with anyio.fail_after(30):
        result = await anyio.run_process([sys.executable, "-c", match.group(1)])
    assert b"output.upper HELLO, LOOM" in result.stdout
