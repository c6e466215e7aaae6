"""A small MCP server for the tests, written with the SDK's ``MCPServer``.

Run ``python tools_server.py stdio`` to serve over stdin/stdout, or ``python tools_server.py
http [PORT]`` to serve streamable HTTP on ``127.0.0.1:PORT`` (``0``, the default, picks a free
port); the HTTP mode binds first and prints the bound port on its first stdout line, so a test
reads the port instead of guessing it, and connects as soon as it has it (the socket is
already listening).
"""

from __future__ import annotations

import os
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ContentBlock, ImageContent, TextContent

server = MCPServer("tools-server")


@server.tool(description="Return the text unchanged.", structured_output=False)
def echo(text: str) -> str:
    return text


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Fail with the given message.")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(description="Sleep for a while, then answer.")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "done"


@server.tool(description="Exit the server process at once.")
def crash(code: int = 3) -> str:
    print(f"crashing with exit code {code}", file=sys.stderr, flush=True)
    os._exit(code)


@server.tool(description="Write lines to stderr.")
def log(lines: list[str]) -> int:
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return len(lines)


@server.tool(description="Write many kilobytes to stderr at once.")
def chatter(kilobytes: int) -> int:
    line = "x" * 1023
    for _ in range(kilobytes):
        print(line, file=sys.stderr)
    sys.stderr.flush()
    return kilobytes


@server.tool(description="Return a text and an image block.")
def picture() -> list[ContentBlock]:
    return [
        TextContent(type="text", text="a red dot"),
        ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png"),
    ]


@server.tool(description="Return the value of an HTTP request header ('' if absent).")
def header(name: str, ctx: Context) -> str:
    headers = getattr(ctx.request_context.request, "headers", None)
    return "" if headers is None else str(headers.get(name, ""))


@server.tool(description="Add a tool named after the argument and announce the change.")
async def grow(name: str, ctx: Context) -> str:
    def grown() -> str:
        return name

    server.add_tool(grown, name=name, description=f"Grown as {name}.")
    await ctx.notify_tools_changed()
    return name


def main() -> None:
    mode = sys.argv[1]
    if mode == "stdio":
        print("tools-server: serving on stdio", file=sys.stderr, flush=True)
        server.run("stdio")
        return
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A restart on the port of a previous run must not trip over its TIME_WAIT connections.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
