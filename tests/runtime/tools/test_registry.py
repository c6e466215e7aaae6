"""The registry: validation, timeouts, concurrency limits, typed errors, statistics."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from loom.runtime import DeadlineExceeded, InvalidArgument
from loom.runtime.tools import (
    MAX_ARGUMENT_DEPTH,
    FunctionTool,
    InvalidToolArguments,
    InvalidToolSchema,
    Tool,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolRegistry,
    ToolSpec,
    ToolTimeout,
)

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

ADD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


async def add(a: int, b: int) -> int:
    return a + b


def add_tool(name: str = "math.add") -> FunctionTool:
    return FunctionTool(
        add, name=name, description="Add two integers.", parameters_schema=ADD_SCHEMA
    )


class SleepTool:
    """Sleeps for ``seconds`` and records whether it was cancelled."""

    name = "test.sleep"
    description = "Sleep."
    parameters_schema: Mapping[str, Any] = {
        "type": "object",
        "properties": {"seconds": {"type": "number"}},
        "required": ["seconds"],
    }

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = 0

    async def call(self, arguments: Mapping[str, Any]) -> str:
        self.started.set()
        try:
            await anyio.sleep(arguments["seconds"])
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        return "slept"


async def test_call_with_mapping_and_json_text() -> None:
    registry = ToolRegistry()
    registry.register(add_tool())
    assert await registry.call("math.add", {"a": 2, "b": 3}) == 5
    assert await registry.call("math.add", '{"a": 4, "b": 5}') == 9
    assert await registry.call("math.add", b'{"a": 1, "b": 1}') == 2
    assert isinstance(registry.get("math.add"), Tool)
    assert registry.specs() == [
        ToolSpec(name="math.add", description="Add two integers.", parameters_schema=ADD_SCHEMA)
    ]


@pytest.mark.parametrize(
    ("arguments", "path", "needle"),
    [
        ({"a": 1}, (), "'b' is a required property"),
        ({"a": 1, "b": "two"}, ("b",), "is not of type 'integer'"),
        ({"a": 1, "b": 2, "c": 3}, (), "Additional properties are not allowed"),
        ("{not json", (), "not valid JSON"),
        ("[1, 2]", (), "expected a JSON object, got an array"),
        ("3", (), "expected a JSON object, got a number"),
    ],
)
async def test_invalid_arguments(
    arguments: Mapping[str, Any] | str, path: tuple[str, ...], needle: str
) -> None:
    registry = ToolRegistry()
    registry.register(add_tool())
    with pytest.raises(InvalidToolArguments) as info:
        await registry.call("math.add", arguments)
    assert info.value.path == path
    assert needle in info.value.reason
    assert info.value.tool == "math.add"
    assert isinstance(info.value, ValueError)
    assert registry.statistics().tools["math.add"].failures.invalid_arguments == 1


async def test_arguments_of_the_wrong_python_type() -> None:
    registry = ToolRegistry()
    registry.register(add_tool())
    with pytest.raises(InvalidToolArguments, match="got list"):
        await registry.call("math.add", [1, 2])  # type: ignore[arg-type]


def nested(depth: int) -> dict[str, Any]:
    """An arguments object ``depth`` deep (``{}`` is 1), built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


async def test_arguments_nested_too_deep() -> None:
    registry = ToolRegistry()
    registry.register(
        FunctionTool(
            lambda **kwargs: len(kwargs), name="t.any", description="", parameters_schema={}
        )
    )
    assert await registry.call("t.any", nested(MAX_ARGUMENT_DEPTH)) == 1
    deep_text = '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"  # past msgspec's own limit
    for arguments in (nested(MAX_ARGUMENT_DEPTH + 1), nested(10_000), deep_text):
        with pytest.raises(InvalidToolArguments) as info:
            await registry.call("t.any", arguments)
        assert f"nested more than {MAX_ARGUMENT_DEPTH} deep" in info.value.reason
        assert info.value.tool == "t.any"
    assert registry.statistics().tools["t.any"].failures.invalid_arguments == 3


async def test_not_found() -> None:
    registry = ToolRegistry()
    with pytest.raises(ToolNotFound) as info:
        await registry.call("nope", {})
    assert info.value.tool == "nope"
    assert isinstance(info.value, LookupError)
    with pytest.raises(ToolNotFound):
        registry.get("nope")
    with pytest.raises(ToolNotFound):
        registry.unregister("nope")
    assert registry.statistics().not_found == 1


async def test_register_refuses_bad_schema_name_and_duplicates() -> None:
    registry = ToolRegistry()
    bad = FunctionTool(add, name="bad", description="", parameters_schema={"type": 12})
    with pytest.raises(InvalidToolSchema, match="12"):
        registry.register(bad)
    not_object = FunctionTool(add, name="arr", description="", parameters_schema={"type": "array"})
    with pytest.raises(InvalidToolSchema, match="must be an object"):
        registry.register(not_object)
    unencodable = FunctionTool(
        add, name="enc", description="", parameters_schema={"type": "object", "x": object()}
    )
    with pytest.raises(InvalidToolSchema, match="not JSON-encodable"):
        registry.register(unencodable)
    with pytest.raises(InvalidArgument, match="invalid tool name"):
        registry.register(add_tool("has space"))
    registry.register(add_tool())
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.register(add_tool())
    registry.register(add_tool(), replace=True)
    with pytest.raises(InvalidArgument, match="max_concurrency"):
        registry.register(add_tool("x"), max_concurrency=0)
    with pytest.raises(InvalidArgument, match="timeout"):
        registry.register(add_tool("y"), timeout=0)
    assert [t.name for t in registry.list()] == ["math.add"]
    assert "x" not in registry
    assert len(registry) == 1


async def test_failing_tool_is_isolated_as_tool_failed() -> None:
    def explode() -> None:
        raise KeyError("boom")

    registry = ToolRegistry()
    registry.register(
        FunctionTool(explode, name="boom", description="", parameters_schema={"type": "object"})
    )
    with pytest.raises(ToolFailed) as info:
        await registry.call("boom", {})
    assert info.value.cause_type == "KeyError"
    assert info.value.cause_message == "'boom'"
    assert isinstance(info.value.__cause__, KeyError)
    # The registry still works after a failure.
    registry.register(add_tool())
    assert await registry.call("math.add", {"a": 1, "b": 2}) == 3
    stats = registry.statistics().tools["boom"]
    assert (stats.calls, stats.failures.failed, stats.in_flight) == (1, 1, 0)


async def test_tool_errors_pass_through_with_the_tool_named() -> None:
    async def refuse() -> None:
        raise ToolPermissionDenied("not today")

    registry = ToolRegistry()
    registry.register(
        FunctionTool(refuse, name="refuse", description="", parameters_schema={"type": "object"})
    )
    with pytest.raises(ToolPermissionDenied) as info:
        await registry.call("refuse", {})
    assert info.value.tool == "refuse"
    assert str(info.value) == "refuse: not today"
    assert isinstance(info.value, PermissionError)
    assert registry.statistics().tools["refuse"].failures.permission_denied == 1


async def test_timeout_default_per_tool_and_per_call() -> None:
    registry = ToolRegistry(default_timeout=0.05)
    sleeper = SleepTool()
    registry.register(sleeper)
    with anyio.fail_after(5):
        with pytest.raises(ToolTimeout) as info:
            await registry.call("test.sleep", {"seconds": 10})
    assert info.value.timeout == 0.05
    assert isinstance(info.value, DeadlineExceeded)
    assert isinstance(info.value, TimeoutError)
    assert sleeper.cancelled == 1

    # A per-call override lets a longer call finish ...
    assert await registry.call("test.sleep", {"seconds": 0.1}, timeout=5) == "slept"
    # ... and a per-tool default replaces the registry's.
    registry.register(SleepTool(), replace=True, timeout=0.02)
    with pytest.raises(ToolTimeout) as info:
        await registry.call("test.sleep", {"seconds": 10})
    assert info.value.timeout == 0.02
    with pytest.raises(ToolTimeout) as info:
        await registry.call("test.sleep", {"seconds": 10}, timeout=0.01)
    assert info.value.timeout == 0.01
    assert await registry.call("test.sleep", {"seconds": 0.01}, timeout=math.inf) == "slept"
    with pytest.raises(InvalidArgument):
        await registry.call("test.sleep", {"seconds": 0}, timeout=-1)
    stats = registry.statistics().tools["test.sleep"]
    assert (stats.calls, stats.failures.timeouts, stats.succeeded) == (3, 2, 1)


async def test_timeout_of_a_tool_that_turns_cancellation_into_an_error() -> None:
    async def sulk() -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            raise RuntimeError("interrupted") from None

    registry = ToolRegistry()
    registry.register(
        FunctionTool(sulk, name="sulk", description="", parameters_schema={"type": "object"}),
        timeout=0.02,
    )
    with pytest.raises(ToolTimeout):
        await registry.call("sulk", {})


async def test_sync_function_times_out_without_waiting_for_its_thread() -> None:
    release = anyio.Event()
    finished = threading.Event()

    def block() -> None:
        try:
            anyio.from_thread.run(release.wait)
        finally:
            finished.set()

    registry = ToolRegistry()
    registry.register(
        FunctionTool(block, name="block", description="", parameters_schema={"type": "object"}),
        timeout=0.05,
    )
    with anyio.fail_after(5), pytest.raises(ToolTimeout):
        await registry.call("block", {})
    assert not finished.is_set()  # the call returned while its thread still ran
    release.set()
    # The thread runs on, to its end: let it, before this test's event loop closes under its
    # call back into the loop (a loaded machine can start the thread after the timeout).
    assert await anyio.to_thread.run_sync(finished.wait, 5)


async def test_concurrency_limit_actually_limits() -> None:
    current = peak = 0
    gate = anyio.Event()

    async def work() -> None:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await gate.wait()
        current -= 1

    registry = ToolRegistry()
    registry.register(
        FunctionTool(work, name="work", description="", parameters_schema={"type": "object"}),
        max_concurrency=2,
    )
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(registry.call, "work", {})
        with anyio.fail_after(5):
            while peak < 2 or registry.statistics().tools["work"].waiting < 4:
                await anyio.lowlevel.checkpoint()
            # Give the waiters every chance to (wrongly) get in.
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
        stats = registry.statistics().tools["work"]
        assert (stats.in_flight, stats.waiting, stats.max_concurrency) == (2, 4, 2)
        gate.set()
    assert peak == 2
    stats = registry.statistics().tools["work"]
    assert (stats.calls, stats.succeeded, stats.in_flight, stats.waiting) == (6, 6, 0, 0)


async def test_waiting_for_a_slot_counts_against_the_timeout() -> None:
    registry = ToolRegistry()
    sleeper = SleepTool()
    registry.register(sleeper, max_concurrency=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.call, "test.sleep", {"seconds": 10})
        await sleeper.started.wait()
        with pytest.raises(ToolTimeout):
            await registry.call("test.sleep", {"seconds": 0}, timeout=0.05)
        tg.cancel_scope.cancel()
    stats = registry.statistics().tools["test.sleep"]
    assert (stats.failures.timeouts, stats.cancelled, stats.waiting) == (1, 1, 0)


async def test_cancelling_a_call_cancels_the_tool() -> None:
    registry = ToolRegistry()
    sleeper = SleepTool()
    registry.register(sleeper)
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.call, "test.sleep", {"seconds": 30})
        await sleeper.started.wait()
        assert registry.statistics().tools["test.sleep"].in_flight == 1
        tg.cancel_scope.cancel()
    assert sleeper.cancelled == 1
    stats = registry.statistics().tools["test.sleep"]
    assert (stats.cancelled, stats.in_flight, stats.failures.total) == (1, 0, 0)


async def test_unregister_leaves_running_calls_alone() -> None:
    registry = ToolRegistry()
    sleeper = SleepTool()
    registry.register(sleeper)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            assert await registry.call("test.sleep", {"seconds": 0.05}) == "slept"

        tg.start_soon(run)
        await sleeper.started.wait()
        assert registry.unregister("test.sleep") is sleeper
    assert "test.sleep" not in registry
