"""The single use of an approval given to a server tool (``loom-approval`` header,
``bridge/_approved_calls.py``) holds across a restart of ``loom serve``.

``fs.write`` with ``approval = "always"`` is ``NeedsApproval`` on the server: an agent in
another process may run it only with an approval the server's store shows approved for that
very call, once. The approval is asked for and approved through the real server; the call
naming it runs; ``loom serve`` is killed (SIGKILL) and started again on the same data
directory; the same call naming the same approval is refused, and the file was written once.
Before the use was kept on disk, the restarted server had forgotten it and wrote again."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import grpc.aio
import pytest

from loom.bridge import RemoteApprovals
from loom.bridge._generated import tools_pb2, tools_pb2_grpc

from ._cli_support import clean_env, free_port, loom, loom_serve

pytestmark = pytest.mark.anyio

ARGUMENTS = {"path": "log.txt", "content": "served\n", "mode": "append"}


async def _call_with(address: str, approval_id: str) -> tools_pb2.ToolResult:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = tools_pb2_grpc.ToolServiceStub(ch)
        request = tools_pb2.ToolCall(
            id="w1",
            name="fs.write",
            arguments=json.dumps(ARGUMENTS),
            headers={"loom-approval": approval_id},
        )
        result: tools_pb2.ToolResult = await stub.Call(request, timeout=20)
        return result


async def _ask(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as ch:

        async def give() -> grpc.aio.Channel:
            return ch

        store = RemoteApprovals(give, lambda: (), timeout_s=20)
        record = await store.request(
            agent_id="writer",
            thread_id="t",
            turn_id="turn-1",
            call_id="w1",
            tool="fs.write",
            arguments=dict(ARGUMENTS),
        )
        return record.id


async def test_an_approval_used_once_stays_used_after_a_restart(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "loom.toml").write_text(f'[tools.fs]\nroot = "{ws}"\napproval = "always"\n')
    env = clean_env()
    port = str(free_port())
    with anyio.fail_after(120):
        async with loom_serve(tmp_path, "--port", port, env=env) as (server, address):
            approval_id = await _ask(address)
            approved = await loom("approve", approval_id, "-a", address, cwd=tmp_path)
            assert approved.returncode == 0, approved.stderr
            first = await _call_with(address, approval_id)
            assert first.status == tools_pb2.TOOL_OK, first.error
            assert (ws / "log.txt").read_text() == "served\n"
            server.signal(signal.SIGKILL)
            await server.wait()
        async with loom_serve(tmp_path, "--port", port, env=env) as (server, address):
            again = await _call_with(address, approval_id)
            assert again.status != tools_pb2.TOOL_OK
            assert "waits for a human's approval on this server" in again.error.message
    assert (ws / "log.txt").read_text() == "served\n"  # written once
