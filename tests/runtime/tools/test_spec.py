"""``ToolSpec``: one description of a tool, for the registry, ``ctx.list_tools`` and the LLM."""

from __future__ import annotations

from typing import Any

import pytest

import loom.runtime.llm
from loom.runtime import InvalidArgument
from loom.runtime.tools import FunctionTool, ToolRegistry, ToolSpec

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}


async def _double(n: int) -> int:
    return 2 * n


def test_the_llm_offers_the_same_record() -> None:
    assert loom.runtime.llm.ToolSpec is ToolSpec


def test_from_tool_matches_the_registry_spec() -> None:
    tool = FunctionTool(
        _double, name="math.double", description="Double.", parameters_schema=SCHEMA
    )
    registry = ToolRegistry()
    registry.register(tool)
    assert registry.specs() == [ToolSpec.from_tool(tool)]
    assert ToolSpec.from_tool(tool) == ToolSpec(
        name="math.double", description="Double.", parameters_schema=SCHEMA
    )


def test_defaults_describe_a_tool_without_arguments() -> None:
    spec = ToolSpec(name="clock.now")
    assert spec.description == ""
    assert spec.parameters_schema == {"type": "object", "properties": {}}
    empty = FunctionTool(_double, name="t.empty", description="", parameters_schema={})
    assert ToolSpec.from_tool(empty).parameters_schema == spec.parameters_schema


@pytest.mark.parametrize(
    "fields",
    [{"name": ""}, {"name": "t.list", "parameters_schema": {"type": "array"}}],
)
def test_refuses_what_no_model_can_call(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        ToolSpec(**fields)
