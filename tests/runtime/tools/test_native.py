"""native_tools: what is on by default and what is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.runtime.tools import (
    FileContent,
    HttpFetch,
    ShellExec,
    ToolRegistry,
    Workspace,
    native_tools,
)

pytestmark = pytest.mark.anyio


async def test_defaults_have_no_http_and_register_cleanly(tmp_path: Path) -> None:
    tools = native_tools(tmp_path)
    assert [t.name for t in tools] == ["fs.read", "fs.write", "fs.list", "shell.exec"]
    registry = ToolRegistry()
    for tool in tools:
        registry.register(tool)
    await registry.call("fs.write", {"path": "a.txt", "content": "hi"})
    got = await registry.call("fs.read", '{"path": "a.txt"}')
    assert isinstance(got, FileContent)
    assert got.content == "hi"
    shell = registry.get("shell.exec")
    assert isinstance(shell, ShellExec)
    assert "python" not in shell.programs


def test_options(tmp_path: Path) -> None:
    tools = native_tools(
        Workspace(tmp_path), shell=False, http_allow=["example.com"], http_allow_private=True
    )
    assert [t.name for t in tools] == ["fs.read", "fs.write", "fs.list", "http.fetch"]
    assert isinstance(tools[-1], HttpFetch)
    tools = native_tools(tmp_path, shell_allow=["ls"])
    shell = tools[-1]
    assert isinstance(shell, ShellExec)
    assert list(shell.programs) == ["ls"]
