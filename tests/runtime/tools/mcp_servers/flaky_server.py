"""An MCP server that fails on a schedule, for the resilience policies' tests.

Run ``python flaky_server.py`` to serve over stdin/stdout. Per key, the first ``fail_first``
calls of ``flaky`` (marked idempotent) and ``effect`` (not) fail; every call is counted with
the idempotency key its request's ``_meta`` carried, and ``hold`` reports how many calls it
held at once.
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("flaky-server")

_calls: dict[str, list[str]] = {}
_in_flight = [0, 0]  # now, most at once


def _scheduled(key: str, fail_first: int, ctx: Context) -> dict[str, object]:
    meta = getattr(ctx.request_context, "meta", None) or {}
    seen = _calls.setdefault(key, [])
    seen.append(str(meta.get("idempotencyKey", "")))
    if len(seen) <= fail_first:
        raise ToolError(f"scheduled failure {len(seen)} of {fail_first}")
    return {"calls": len(seen), "keys": seen}


@server.tool(
    description="Fail the first fail_first calls with this key, then answer (idempotent).",
    annotations=ToolAnnotations(idempotent_hint=True),
)
def flaky(key: str, fail_first: int, ctx: Context) -> dict[str, object]:
    return _scheduled(key, fail_first, ctx)


@server.tool(description="Like flaky, but with an effect: not idempotent.")
def effect(key: str, fail_first: int, ctx: Context) -> dict[str, object]:
    return _scheduled(key, fail_first, ctx)


@server.tool(description="How many calls reached flaky or effect with this key.")
def calls(key: str) -> int:
    return len(_calls.get(key, []))


@server.tool(
    description="Hold a call for a while; answer the most calls held at once so far.",
    annotations=ToolAnnotations(read_only_hint=True),
)
async def hold(seconds: float) -> int:
    _in_flight[0] += 1
    _in_flight[1] = max(_in_flight)
    try:
        await anyio.sleep(seconds)
    finally:
        _in_flight[0] -= 1
    return _in_flight[1]


if __name__ == "__main__":
    print("flaky-server: serving on stdio", file=sys.stderr, flush=True)
    server.run("stdio")
