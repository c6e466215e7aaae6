"""MCP servers the MCP tests run as subprocesses, written with the ``mcp`` SDK's server API."""
