"""Nothing a caller or a tool's declarer sends makes validation run unbounded: patterns in RE2,
validation off the event loop within the call's timeout, arguments bounded in bytes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from loom.runtime.tools import (
    MAX_ARGUMENT_BYTES,
    FunctionTool,
    InvalidToolArguments,
    InvalidToolSchema,
    ToolRegistry,
    ToolTimeout,
    _validator,
)

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

EVIL = "^(a+)+$"
# 29 characters and a mismatch at the end: Python's re backtracks through 2**29 ways.
WORST = "a" * 29 + "!"


def registry_with(schema: dict[str, Any], name: str = "t.tool") -> ToolRegistry:
    tools = ToolRegistry()
    tools.register(tool(schema, name))
    return tools


def tool(schema: dict[str, Any], name: str = "t.tool") -> FunctionTool:
    return FunctionTool(
        lambda **kwargs: kwargs, name=name, description="d", parameters_schema=schema
    )


def exponential(levels: int) -> dict[str, Any]:
    """A schema whose every level tries two branches that both fail: 2**levels evaluations."""
    defs: dict[str, Any] = {
        f"x{i}": {"anyOf": [{"$ref": f"#/$defs/x{i + 1}"}, {"$ref": f"#/$defs/x{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"x{levels}"] = {"not": {}}
    return {"type": "object", "$defs": defs, "properties": {"v": {"$ref": "#/$defs/x0"}}}


PATTERN_CASES = [
    pytest.param(
        {"type": "object", "properties": {"s": {"type": "string", "pattern": EVIL}}},
        lambda text: {"s": text},
        True,
        id="pattern",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}},
        lambda text: {text: "not matched, so not checked"},
        False,
        id="patternProperties",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
        lambda text: {text: 1},
        True,
        id="additionalProperties",
    ),
    pytest.param(
        {"type": "object", "propertyNames": {"pattern": EVIL}},
        lambda text: {text: 1},
        True,
        id="propertyNames",
    ),
]


@pytest.mark.parametrize(("schema", "arguments", "refused"), PATTERN_CASES)
async def test_a_patterns_worst_case_is_matched_at_once(
    schema: dict[str, Any], arguments: Any, refused: bool
) -> None:
    tools = registry_with(schema)
    for text in (WORST, "a" * 100_000 + "!"):
        started = time.perf_counter()
        with anyio.fail_after(10):
            try:
                await tools.call("t.tool", json.dumps(arguments(text)))
            except InvalidToolArguments:
                assert refused
            else:
                assert not refused
        # Linear in the text: milliseconds, where backtracking takes minutes.
        assert time.perf_counter() - started < 1.0


async def test_patterns_still_match_what_they_describe() -> None:
    tools = registry_with(
        {
            "type": "object",
            "properties": {"s": {"type": "string", "pattern": "^[a-z]+-[0-9]{2}$"}},
            "patternProperties": {"^x_": {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    assert await tools.call("t.tool", {"s": "ab-12", "x_1": 3}) == {"s": "ab-12", "x_1": 3}
    for bad in ({"s": "ab-123"}, {"x_1": "3"}, {"y": 1}):
        with pytest.raises(InvalidToolArguments):
            await tools.call("t.tool", bad)


REFUSED_PATTERNS = [
    pytest.param(r"(a)\1", id="backreference"),
    pytest.param(r"a(?=b)", id="lookahead"),
    pytest.param(r"(?<!a)b", id="lookbehind"),
]


@pytest.mark.parametrize("pattern", REFUSED_PATTERNS)
async def test_a_pattern_re2_cannot_compile_is_refused_at_register_naming_it(
    pattern: str,
) -> None:
    draft4 = "http://json-schema.org/draft-04/schema#"
    schemas: list[dict[str, Any]] = [
        {"type": "object", "properties": {"s": {"pattern": pattern}}},
        {"type": "object", "patternProperties": {pattern: {}}},
        # Draft 4's meta-schema does not mark patternProperties' keys as regexes.
        {"$schema": draft4, "type": "object", "patternProperties": {pattern: {}}},
        {"type": "object", "propertyNames": {"pattern": pattern}},
        {
            "type": "object",
            "properties": {"s": {"$ref": "#/$defs/s"}},
            "$defs": {"s": {"allOf": [{"pattern": pattern}]}},
        },
    ]
    tools = ToolRegistry()
    for schema in schemas:
        with pytest.raises(InvalidToolSchema) as info:
            tools.register(tool(schema))
        assert repr(pattern) in info.value.reason
        assert "RE2" in info.value.reason
        assert "t.tool" not in tools


async def test_the_schema_check_takes_the_patterns_re2_takes() -> None:
    # '\z' is RE2's (and not Python 3.11's) end of text: checked by the engine that matches.
    tools = registry_with({"type": "object", "properties": {"s": {"pattern": r"a\z"}}})
    assert await tools.call("t.tool", {"s": "ba"}) == {"s": "ba"}
    with pytest.raises(InvalidToolArguments):
        await tools.call("t.tool", {"s": "ab"})


async def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    schema = {
        "type": "object",
        "allOf": [{"patternProperties": {"^a": {}}}],
        "unevaluatedProperties": False,
    }
    with pytest.raises(InvalidToolSchema, match="unevaluatedProperties and patternProperties"):
        registry_with(schema)
    # Each alone is fine.
    tools = registry_with({"type": "object", "unevaluatedProperties": False})
    with pytest.raises(InvalidToolArguments):
        await tools.call("t.tool", {"x": 1})


async def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    tools = registry_with(
        {"type": "object", "properties": {"v": {"type": "array", "uniqueItems": True}}}
    )
    # jsonschema compares every pair of objects: 2 * 10**8 comparisons, minutes; linear, a
    # fraction of a second (the bound leaves room for a loaded machine).
    many = [{"k": i} for i in range(20_000)]
    started = time.perf_counter()
    assert await tools.call("t.tool", {"v": many}) == {"v": many}
    assert time.perf_counter() - started < 10.0
    for same in ([{"a": 1, "b": [2]}, {"b": [2], "a": 1}], [1, 1.0], [[0], [0.0]]):
        with pytest.raises(InvalidToolArguments, match="non-unique"):
            await tools.call("t.tool", {"v": same})
    for distinct in ([1, True], [0, False], [[1], [True]], [{"a": None}, {"a": False}]):
        assert await tools.call("t.tool", {"v": distinct}) == {"v": distinct}


async def test_a_slow_schema_times_out_within_the_call_timeout_and_the_loop_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped = threading.Event()
    check = _validator.check_budget

    def watched() -> None:
        try:
            check()
        except _validator.OutOfBudget:
            stopped.set()
            raise

    monkeypatch.setattr(_validator, "check_budget", watched)
    tools = registry_with(exponential(40))
    gaps: list[float] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                last = time.perf_counter()
                while True:
                    await anyio.sleep(0.01)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            tg.start_soon(tick)
            started = time.perf_counter()
            with pytest.raises(ToolTimeout):
                await tools.call("t.tool", {"v": 1}, timeout=0.5)
            elapsed = time.perf_counter() - started
            tg.cancel_scope.cancel()
        # The thread nobody waits for any more stops at its next keyword.
        while not stopped.is_set():  # noqa: ASYNC110  (set in a worker thread)
            await anyio.sleep(0.01)
    assert 0.5 <= elapsed < 2.0
    assert gaps
    # Never held for as long as the validation ran (a busy 2-core machine adds its own gaps).
    assert max(gaps) < 1.0, max(gaps)
    assert tools.statistics().tools["t.tool"].failures.timeouts == 1


async def test_a_cancelled_caller_leaves_no_validation_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped = threading.Event()
    check = _validator.check_budget

    def watched() -> None:
        try:
            check()
        except _validator.OutOfBudget:
            stopped.set()
            raise

    monkeypatch.setattr(_validator, "check_budget", watched)
    tools = registry_with(exponential(40))
    with anyio.fail_after(10):
        with anyio.move_on_after(0.3) as scope:
            await tools.call("t.tool", {"v": 1}, timeout=3600)
        assert scope.cancelled_caught
        while not stopped.is_set():  # noqa: ASYNC110  (set in a worker thread)
            await anyio.sleep(0.01)
    assert tools.statistics().tools["t.tool"].cancelled == 1


async def test_arguments_over_max_argument_bytes_are_refused() -> None:
    tools = registry_with({"type": "object"})
    prefix, suffix = '{"x": "', '"}'
    room = MAX_ARGUMENT_BYTES - len(prefix) - len(suffix)
    at_limit = prefix + "y" * room + suffix
    assert (await tools.call("t.tool", at_limit))["x"] == "y" * room
    assert (await tools.call("t.tool", at_limit.encode()))["x"] == "y" * room
    over: list[str | bytes | dict[str, Any]] = [
        prefix + "y" * (room + 1) + suffix,
        (prefix + "y" * (room + 1) + suffix).encode(),
        prefix + "é" * (room // 2 + 1) + suffix,  # counted in UTF-8 bytes, not characters
        {"x": "y" * (room + 2)},  # decoded arguments are measured as their compact JSON
        {"x": ["y"] * (MAX_ARGUMENT_BYTES // 4)},
    ]
    for arguments in over:
        with pytest.raises(InvalidToolArguments, match=f"the {MAX_ARGUMENT_BYTES} allowed"):
            await tools.call("t.tool", arguments)
    assert tools.statistics().tools["t.tool"].failures.invalid_arguments == len(over)


async def test_a_schema_whose_references_loop_is_a_typed_error() -> None:
    tools = registry_with({"type": "object", "$ref": "#"})
    with pytest.raises(InvalidToolSchema, match="loop without end"):
        await tools.call("t.tool", {})


class _SelfChecked:
    """A tool that checks its arguments itself (as an ``@capability`` does): the registry
    applies no schema to them."""

    name = "t.self"
    description = "d"
    parameters_schema: dict[str, Any] = {"type": "object"}  # noqa: RUF012 - read only
    validates_arguments = True

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        return dict(arguments)


async def test_a_tool_that_checks_itself_still_gets_every_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loom.runtime.tools import _registry

    tools = ToolRegistry()
    tools.register(_SelfChecked())
    budgets: list[float] = []

    class Counted(_validator.Budget):
        def __init__(self, seconds: float) -> None:
            budgets.append(seconds)
            super().__init__(seconds)

    monkeypatch.setattr(_registry, "Budget", Counted)
    # Small, shallow text (every call over the bridge): decoded in C, no budget to set up.
    assert await tools.call("t.self", '{"x": [1, {"y": 2}]}') == {"x": [1, {"y": 2}]}
    assert await tools.call("t.self", b'{"x": 1}') == {"x": 1}
    assert budgets == []
    # What could run long still runs under the budget, and every bound still holds.
    deep = "[" * 65 + "]" * 65
    refusals: list[tuple[str | bytes | dict[str, Any], str]] = [
        ('{"x": ' + deep + "}", "nested more than 64 deep"),
        ('{"x": "' + "y" * MAX_ARGUMENT_BYTES + '"}', f"the {MAX_ARGUMENT_BYTES} allowed"),
        ('{"x": ', "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ({"x": ["y"] * (MAX_ARGUMENT_BYTES // 4)}, f"the {MAX_ARGUMENT_BYTES} allowed"),
    ]
    for arguments, message in refusals:
        with pytest.raises(InvalidToolArguments, match=message):
            await tools.call("t.self", arguments)
    # The deep text and the decoded mapping got the inline millisecond, the long text a worker
    # thread with the call's timeout; the two small malformed texts were refused without one.
    assert len(budgets) == 3
    assert sorted(budgets)[:2] == [0.001, 0.001]
    assert budgets[1] > 1
