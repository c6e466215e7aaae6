"""``[mcp.<name>]`` tables: decoding, and a typed error naming the server and key for each
kind of bad input."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from loom.runtime import InvalidArgument, LoomError
from loom.runtime.tools import (
    McpConfigError,
    McpHttpConfig,
    McpServer,
    McpStdioConfig,
    load_mcp_config,
)

TOML = """
[mcp.files]
transport = "stdio"
command = "uvx"
args = ["mcp-server-filesystem", "/srv"]
env = { LOG_LEVEL = "debug" }
pass_env = ["GITHUB_TOKEN"]
cwd = "/srv"
call_timeout = 5

[mcp.search]
transport = "http"
url = "https://mcp.example.com/mcp"
headers = { "X-Client" = "loom" }
headers_env = { Authorization = "SEARCH_AUTH" }
enabled = false
"""


def test_decodes_both_transports_from_toml() -> None:
    configs = load_mcp_config(tomllib.loads(TOML)["mcp"])
    files, search = configs["files"], configs["search"]
    assert isinstance(files, McpStdioConfig)
    assert files.command == "uvx"
    assert files.args == ("mcp-server-filesystem", "/srv")
    assert files.env == {"LOG_LEVEL": "debug"}
    assert files.pass_env == ("GITHUB_TOKEN",)
    assert files.cwd == "/srv"
    assert files.call_timeout == 5.0
    assert files.connect_timeout == 10.0
    assert files.enabled
    assert isinstance(search, McpHttpConfig)
    assert search.url == "https://mcp.example.com/mcp"
    assert search.headers == {"X-Client": "loom"}
    assert search.headers_env == {"Authorization": "SEARCH_AUTH"}
    assert not search.enabled


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"transport": "sse", "url": "http://h/mcp"}, "transport", "unknown transport 'sse'"),
        ({"transport": 7, "url": "http://h/mcp"}, "transport", "unknown transport 7"),
        ({"command": "x"}, "transport", "missing"),
        ({"transport": "stdio"}, "command", "missing"),
        ({"transport": "http"}, "url", "missing"),
        ({"transport": "stdio", "command": ""}, "command", "must not be empty"),
        ({"transport": "stdio", "command": "x", "args": ["a", 1]}, "args[1]", "Expected `str`"),
        ({"transport": "stdio", "command": "x", "call_timeout": "1s"}, "call_timeout", "float"),
        ({"transport": "stdio", "command": "x", "connect_timeout": 0}, "connect_timeout", "posi"),
        ({"transport": "stdio", "command": "x", "backoff_max": -1}, "backoff_max", "positive"),
        (
            {"transport": "stdio", "command": "x", "backoff_initial": 5, "backoff_max": 1},
            "backoff_initial",
            "must not exceed backoff_max",
        ),
        ({"transport": "stdio", "command": "x", "enabled": "yes"}, "enabled", "Expected `bool`"),
        ({"transport": "stdio", "command": "x", "comand": "y"}, "comand", "unknown key"),
        ({"transport": "stdio", "command": "x", "url": "http://h"}, "url", "unknown key"),
        ({"transport": "stdio", "command": "x", "env": {"A": 1}}, "env[...]", "Expected `str`"),
        ({"transport": "stdio", "command": "x", "env": {"A-B": "1"}}, "env.A-B", "variable"),
        ({"transport": "stdio", "command": "x", "pass_env": ["1X"]}, "pass_env[0]", "variable"),
        ({"transport": "http", "url": "ftp://h/mcp"}, "url", "http(s) URL"),
        ({"transport": "http", "url": "http:///mcp"}, "url", "http(s) URL"),
        ({"transport": "http", "url": "http://h", "headers": {"a b": "x"}}, "headers.a b", "name"),
        (
            {"transport": "http", "url": "http://h", "headers_env": {"Auth": "NOT-A-VAR"}},
            "headers_env.Auth",
            "variable",
        ),
        ({"transport": "http", "url": "http://h", "headers": ["x"]}, "headers", "`object`"),
    ],
)
def test_each_bad_table_is_a_typed_error_naming_server_and_key(
    table: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(McpConfigError) as info:
        load_mcp_config({"srv": table})
    assert info.value.server == "srv"
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"mcp.srv.{key}: ")


@pytest.mark.parametrize("name", ["a.b", "", "-x", "x" * 65, "sp ace"])
def test_server_names_must_be_tool_namespaces(name: str) -> None:
    with pytest.raises(McpConfigError) as info:
        load_mcp_config({name: {"transport": "stdio", "command": "x"}})
    assert info.value.key is None
    assert "invalid server name" in info.value.reason


def test_a_server_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(McpConfigError, match=r"mcp\.srv: expected a table, got str"):
        load_mcp_config({"srv": "stdio"})


def test_config_error_is_a_loom_value_error() -> None:
    assert issubclass(McpConfigError, InvalidArgument)
    assert issubclass(McpConfigError, LoomError)
    assert issubclass(McpConfigError, ValueError)


def test_variables_named_in_the_config_must_be_set() -> None:
    configs = load_mcp_config(tomllib.loads(TOML)["mcp"])
    with pytest.raises(McpConfigError) as info:
        McpServer("files", configs["files"], environ={})
    assert (info.value.key, info.value.reason) == (
        "pass_env[0]",
        "environment variable GITHUB_TOKEN is not set",
    )
    with pytest.raises(McpConfigError) as info:
        McpServer("search", configs["search"], environ={"GITHUB_TOKEN": "t"})
    assert info.value.key == "headers_env.Authorization"


def test_header_secrets_stay_out_of_reprs() -> None:
    config = load_mcp_config(tomllib.loads(TOML)["mcp"])["search"]
    server = McpServer("search", config, environ={"SEARCH_AUTH": "Bearer s3cret"})
    assert "s3cret" not in repr(server)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(server.statistics())
