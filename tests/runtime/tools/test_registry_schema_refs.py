"""Schema references stay inside the schema, and a schema's size and depth are bounded.

A schema may come from a client of the server (a remote agent's declared tool) or an MCP
server: the registry never fetches what a ``$ref`` names (an ``http`` URL that never answers
would hang the event loop; a ``file`` URL would read the server's files into error messages).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from loom.runtime.tools import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    FunctionTool,
    InvalidToolArguments,
    InvalidToolSchema,
    ToolRegistry,
)

from ._silent_server import silent_server

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


async def echo(**arguments: Any) -> dict[str, Any]:
    return arguments


def tool(schema: dict[str, Any], name: str = "t.echo") -> FunctionTool:
    return FunctionTool(echo, name=name, description="Echo.", parameters_schema=schema)


def with_ref(ref: str, keyword: str = "$ref") -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {keyword: ref}}}


def refused(schema: dict[str, Any]) -> InvalidToolSchema:
    registry = ToolRegistry()
    started = time.monotonic()
    with pytest.raises(InvalidToolSchema) as info:
        registry.register(tool(schema))
    # At once: nothing was fetched, nothing waited on (register is synchronous, so a fetch
    # would block right here).
    assert time.monotonic() - started < 2
    assert "t.echo" not in registry
    assert info.value.tool == "t.echo"
    return info.value


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
async def test_a_remote_reference_is_refused_at_once_and_never_fetched(keyword: str) -> None:
    with silent_server() as server:
        error = refused(with_ref(server.url, keyword))
        assert keyword in str(error)
        assert server.url in str(error)
        assert "not a local reference" in str(error)
        # Hidden under a keyword no draft knows, reached through a local reference.
        hidden = {"type": "object", "$ref": "#/x-hidden", "x-hidden": {"$ref": server.url}}
        assert server.url in str(refused(hidden))
        # Relative to a remote base: still remote.
        based = {"$id": server.url, "type": "object", "properties": {"a": {"$ref": "b.json"}}}
        assert "'b.json' is not a local reference" in str(refused(based))
        # And in an older draft, whose references jsonschema resolves the same way.
        draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **with_ref(server.url)}
        refused(draft7)
    assert server.accepted == 0


@pytest.mark.parametrize("target", ["/etc/passwd", "secret"])
async def test_a_file_reference_is_refused_and_the_file_never_read(
    target: str, tmp_path: Path
) -> None:
    if target == "secret":
        # A file that is itself a valid schema: resolving it would have worked.
        path = tmp_path / "secret.json"
        path.write_text(json.dumps({"type": "string", "description": "TOP-SECRET-3141"}))
        secret = "TOP-SECRET-3141"
    else:
        path = Path(target)
        secret = path.read_text().splitlines()[0] if path.exists() else "root:"
    error = refused(with_ref(path.as_uri()))
    assert path.as_uri() in str(error)
    assert secret not in str(error)
    assert secret not in repr(error.__cause__)


async def test_local_references_work() -> None:
    registry = ToolRegistry()
    pointer = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/count"}},
        "$defs": {"count": {"type": "integer", "minimum": 0}},
    }
    anchor = {
        "type": "object",
        "properties": {"a": {"$ref": "#count"}},
        "$defs": {"count": {"$anchor": "count", "type": "integer", "minimum": 0}},
    }
    # A nested $id changes the base; '#...' then means that subschema, still in the schema.
    nested_id = {
        "$id": "https://example.com/root",
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/wrapped"}},
        "$defs": {
            "wrapped": {
                "$id": "https://example.com/wrapped",
                "$ref": "#/$defs/inner",
                "$defs": {"inner": {"type": "integer", "minimum": 0}},
            }
        },
    }
    recursive = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "child": {"$ref": "#"}},
    }
    for i, schema in enumerate((pointer, anchor, nested_id)):
        registry.register(tool(schema, name=f"t.{i}"))
        assert await registry.call(f"t.{i}", {"a": 3}) == {"a": 3}
        with pytest.raises(InvalidToolArguments) as info:
            await registry.call(f"t.{i}", {"a": -1})
        assert info.value.path == ("a",)
    registry.register(tool(recursive, name="t.tree"))
    assert await registry.call("t.tree", {"a": 1, "child": {"a": 2}}) == {"a": 1, "child": {"a": 2}}
    with pytest.raises(InvalidToolArguments):
        await registry.call("t.tree", {"a": 1, "child": {"a": "x"}})


async def test_a_local_reference_to_nowhere_is_refused() -> None:
    assert "'#/$defs/missing' does not resolve" in str(refused(with_ref("#/$defs/missing")))
    assert "does not resolve" in str(refused(with_ref("#no-such-anchor")))


def nested(depth: int) -> dict[str, Any]:
    """An object schema whose JSON nests objects exactly ``depth`` deep."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range((depth - 1) // 2):
        schema = {"type": "object", "properties": {"a": schema}}
    if depth % 2 == 0:
        schema = {"type": "object", "x-note": schema}
    return schema


async def test_schema_depth_is_bounded() -> None:
    registry = ToolRegistry()
    registry.register(tool(nested(MAX_SCHEMA_DEPTH)))
    error = refused(nested(MAX_SCHEMA_DEPTH + 1))
    assert f"nested more than {MAX_SCHEMA_DEPTH} deep" in str(error)
    # Far deeper than msgspec or the interpreter would follow: still a typed refusal.
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"not": deep}
    assert "nested more than" in str(refused({"type": "object", "x": deep}))
    arrays: list[Any] = []
    for _ in range(MAX_SCHEMA_DEPTH):
        arrays = [arrays]
    assert "nested more than" in str(refused({"type": "object", "enum": [arrays]}))


async def test_schema_size_is_bounded() -> None:
    registry = ToolRegistry()
    fits = {"type": "object", "description": ""}
    fits["description"] = "x" * (MAX_SCHEMA_BYTES - len(json.dumps(fits, separators=(",", ":"))))
    registry.register(tool(fits))
    too_large = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    assert f"more than the {MAX_SCHEMA_BYTES} allowed" in str(refused(too_large))
