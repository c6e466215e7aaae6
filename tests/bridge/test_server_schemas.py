"""A declared tool's schema never makes the server fetch anything, and it stays bounded."""

from __future__ import annotations

import json
from typing import Any

import anyio
import grpc
import pytest

from loom.bridge._generated import tools_pb2
from loom.runtime.tools import MAX_SCHEMA_BYTES
from tests.runtime.tools._silent_server import silent_server

from ._server_harness import OldAgent, channel, descriptor, serving

pytestmark = pytest.mark.anyio

LOCAL: dict[str, Any] = {
    "type": "object",
    "properties": {"x": {"$ref": "#/$defs/count"}},
    "required": ["x"],
    "$defs": {"count": {"type": "integer", "minimum": 0}},
}


async def refused_registration(agent: OldAgent, schema: dict[str, Any] | str) -> str:
    with anyio.fail_after(5), pytest.raises(grpc.aio.AioRpcError) as info:
        await agent.register(tools=[descriptor("evil.tool", schema)])
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return info.value.details() or ""


async def test_a_remote_reference_is_refused_and_the_server_keeps_serving() -> None:
    with silent_server() as target:
        async with (
            serving() as s,
            channel(s.target) as attacker_ch,
            channel(s.target) as ch,
        ):
            attacker = OldAgent(attacker_ch, "attacker")
            remote = {"type": "object", "properties": {"a": {"$ref": target.url}}}
            details = await refused_registration(attacker, remote)
            assert target.url in details
            assert "not a local reference" in details
            passwd = {"type": "object", "$ref": "file:///etc/passwd"}
            details = await refused_registration(attacker, passwd)
            assert "file:///etc/passwd" in details
            assert "root:" not in details
            # Too deep to decode, too large to take: refused before any work on them.
            deep = '{"type": "object", "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
            assert "nested too deeply" in await refused_registration(attacker, deep)
            deeper: list[Any] = []
            for _ in range(40):  # decodes, but deeper than the registry takes
                deeper = [deeper]
            assert "nested more than" in await refused_registration(
                attacker, {"type": "object", "x": deeper}
            )
            large = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
            assert f"the {MAX_SCHEMA_BYTES} allowed" in await refused_registration(attacker, large)

            # Right after, another client registers a tool with a local reference and is
            # called through the server, which validates against that schema.
            worker = await OldAgent(ch, "worker").connect(tools=[descriptor("w.echo", LOCAL)])
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:

                    async def answer() -> None:
                        frame = await worker.next("tool_call")
                        args = json.loads(frame.tool_call.arguments)
                        await worker.answer(frame.tool_call.id, args)

                    tg.start_soon(answer)
                    result = await attacker.tools.Call(
                        tools_pb2.ToolCall(name="w.echo", arguments='{"x": 3}')
                    )
                assert (result.status, json.loads(result.output)) == (tools_pb2.TOOL_OK, {"x": 3})
                bad = await attacker.tools.Call(
                    tools_pb2.ToolCall(name="w.echo", arguments='{"x": -1}')
                )
            assert bad.status == tools_pb2.TOOL_INVALID_ARGUMENTS
            assert bad.error.details["path"] == "/x"
    assert target.accepted == 0
