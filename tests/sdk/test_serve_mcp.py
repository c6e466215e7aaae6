"""``loom serve`` hosts the MCP servers of its ``loom.toml``: their tools are callable through
the bridge like any runtime tool, and a malformed ``[mcp]`` or ``[llm]`` table stops the
server from starting with a message that says where."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.runtime.tools.mcp_servers import TOOLS_SERVER
from tests.sdk._cli_support import loom, loom_serve

pytestmark = pytest.mark.anyio


async def test_loom_serve_offers_the_tools_of_its_mcp_servers(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text(
        "[mcp.demo]\n"
        'transport = "stdio"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(TOOLS_SERVER))}, "stdio"]\n'
    )
    async with loom_serve(tmp_path, "--log-level", "info") as (server, address):
        await server.wait_for(r"MCP server 'demo' connected")
        result = await loom("call", "demo.add", '{"a": 2, "b": 3}', "-a", address, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert b"5" in result.stdout
        failed = await loom("call", "demo.fail", '{"message": "no"}', "-a", address, cwd=tmp_path)
        assert failed.returncode == 1
        assert failed.stderr.startswith(b"loom call: demo.fail: failed: McpToolError: ")


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('[mcp.demo]\ntransport = "carrier-pigeon"\n', b"demo"),
        ('[mcp.demo]\ntransport = "stdio"\n', b"command"),
        ('[llm.main]\nkind = "openai"\nmodel = 3\n', b"main"),
    ],
)
async def test_a_bad_service_table_stops_the_start(
    tmp_path: Path, table: str, needle: bytes
) -> None:
    (tmp_path / "loom.toml").write_text(table)
    result = await loom("serve", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0
    assert b"loom.toml" in result.stderr
    assert needle in result.stderr
