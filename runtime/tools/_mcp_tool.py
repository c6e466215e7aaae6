"""An MCP server's tool as a Loom :class:`Tool`, and how its results and errors translate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import mcp.types as mcp_types
import pydantic
from mcp.shared.exceptions import MCPError

from ..resilience import current_idempotency_key
from ._errors import InvalidToolArguments, ToolError, ToolFailed, ToolTimeout, ToolUnavailable
from ._tool import JSONObject

if TYPE_CHECKING:
    from ._mcp_connection import Connection

__all__ = ["McpTool", "ToolUnavailable"]


class _Live(Protocol):
    """What a tool asks its server for: the live connection, or why there is none."""

    def live(self, remote_name: str) -> Connection: ...


class McpTool:
    """One tool of an MCP server, named ``<server>.<tool>``.

    Its description and ``parameters_schema`` are the server's ``description`` and
    ``inputSchema``. :meth:`call` sends ``tools/call`` on the server's live connection and
    returns:

    * the result's ``structuredContent`` when the server sent one (a JSON object);
    * otherwise, when every content block is text, the texts joined with newlines;
    * otherwise the content blocks as JSON objects (``{"type": "image", ...}``), in order.

    Failures, all :class:`ToolError`\\ s:

    * an ``isError`` result: :class:`ToolFailed` with ``cause_type="McpToolError"`` and the
      result's text as ``cause_message``;
    * the server refusing the arguments (``-32602``): :class:`InvalidToolArguments`;
    * the server not connected, or the connection dropping mid-call: :class:`ToolUnavailable`;
    * ``call_timeout`` expiring: :class:`ToolTimeout` (the SDK tells the server with
      ``notifications/cancelled``);
    * any other protocol error: :class:`ToolFailed` with ``cause_type="McpError"`` (or
      ``"McpProtocolError"`` for a result that does not parse).
    """

    __slots__ = ("_definition", "_name", "_server", "_server_name", "_timeout")

    def __init__(
        self, server: _Live, server_name: str, definition: mcp_types.Tool, *, timeout: float
    ) -> None:
        self._server = server
        self._server_name = server_name
        self._definition = definition
        self._name = f"{server_name}.{definition.name}"
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def remote_name(self) -> str:
        """The tool's name on its server."""
        return self._definition.name

    @property
    def server(self) -> str:
        """The MCP server's name."""
        return self._server_name

    @property
    def description(self) -> str:
        d = self._definition
        return d.description or d.title or ""

    @property
    def parameters_schema(self) -> JSONObject:
        return self._definition.input_schema

    @property
    def idempotent(self) -> bool:
        """The server marks the tool ``idempotentHint`` or ``readOnlyHint``: a resilience
        policy may retry its calls."""
        hints = self._definition.annotations
        return hints is not None and bool(hints.idempotent_hint or hints.read_only_hint)

    @property
    def definition(self) -> mcp_types.Tool:
        """The tool as the server listed it."""
        return self._definition

    async def call(self, arguments: JSONObject) -> Any:
        try:
            connection = self._server.live(self.remote_name)
        except ToolUnavailable as exc:
            exc.tool = self._name
            raise
        client = connection.client
        assert client is not None  # a live connection has finished its handshake
        result: mcp_types.CallToolResult | None = None
        with anyio.move_on_after(self._timeout) as deadline:
            with connection.track() as lost:
                try:
                    key = current_idempotency_key()
                    # The call's idempotency key travels in the request's _meta, so that the
                    # server can do the effect once per key however often a policy retries.
                    meta = (
                        None
                        if key is None
                        else cast(mcp_types.RequestParamsMeta, {"idempotencyKey": key})
                    )
                    result = await client.call_tool(self.remote_name, dict(arguments), meta=meta)
                except MCPError as exc:
                    raise self._error(exc, connection) from exc
                except pydantic.ValidationError as exc:
                    raise ToolFailed(
                        "McpProtocolError", f"the server's result does not parse: {exc}"
                    ) from exc
            if lost.cancelled_caught:
                raise ToolUnavailable(
                    self._server_name,
                    connection.reason or "the connection dropped mid-call",
                    tool=self._name,
                )
        if result is None:
            assert deadline.cancelled_caught
            raise ToolTimeout(self._timeout)
        if result.is_error:
            raise ToolFailed("McpToolError", _text(result.content) or "the tool reported an error")
        return _value(result)

    def _error(self, exc: MCPError, connection: Connection) -> ToolError:
        if connection.closed.is_set() or exc.code == mcp_types.CONNECTION_CLOSED:
            return ToolUnavailable(
                self._server_name,
                connection.reason or "the connection dropped mid-call",
                tool=self._name,
            )
        if exc.code == mcp_types.INVALID_PARAMS:
            return InvalidToolArguments(exc.error.message)
        if exc.code == mcp_types.REQUEST_TIMEOUT:
            return ToolTimeout(self._timeout)
        return ToolFailed("McpError", f"{exc.error.message} (code {exc.code})")

    def __repr__(self) -> str:
        return f"McpTool({self._name!r})"


def same_definition(a: mcp_types.Tool, b: mcp_types.Tool) -> bool:
    """Whether two listings of a tool describe it the same way to Loom."""
    return (a.description, a.title, a.input_schema) == (b.description, b.title, b.input_schema)


def _text(content: list[mcp_types.ContentBlock]) -> str:
    return "\n".join(block.text for block in content if isinstance(block, mcp_types.TextContent))


def _value(result: mcp_types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    content = result.content
    if all(isinstance(block, mcp_types.TextContent) for block in content):
        return _text(content)
    return [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in content]
