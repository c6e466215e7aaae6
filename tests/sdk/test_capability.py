"""``@capability``: schema derivation, validation, running, binding and decoration errors."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import inspect
import keyword
import math
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, TypedDict

import anyio
import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom._capability import (
    BoundCapability,
    Capability,
    InvalidCapability,
    capabilities_of,
    capability,
)
from loom.runtime import InvalidArgument, LoomError
from loom.runtime.tools import (
    InvalidToolArguments,
    Tool,
    ToolError,
    ToolFailed,
    ToolRegistry,
    ToolTimeout,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The capability layer is backend-neutral: async tests run on both."""
    return str(request.param)


# ----------------------------------------------------------------------- types used in hints


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int = 0


@dataclasses.dataclass
class Span:
    start: int
    end: int


class Window(TypedDict):
    width: int
    height: int


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Opaque:
    """A class msgspec cannot describe."""


class Order(msgspec.Struct):
    sku: str
    qty: int


def _refs(node: object) -> list[str]:
    """Every ``$ref`` anywhere in a schema."""
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _check(schema: Any, instance: object) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


# ----------------------------------------------------------------------------- the basics


@capability("text.upper", description="Upper-case a text")
async def upper(text: str) -> str:
    return text.upper()


async def test_the_example_from_the_issue() -> None:
    assert isinstance(upper, Capability)
    assert upper.name == "text.upper"
    assert upper.description == "Upper-case a text"
    assert upper.parameters_schema == {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }
    assert upper.result_schema == {"type": "string"}
    assert await upper.call({"text": "loom"}) == "LOOM"


async def test_it_is_a_tool() -> None:
    tool: Tool = upper
    assert isinstance(tool, Tool)
    assert await tool.call({"text": "a"}) == "A"


async def test_direct_call_is_the_plain_function() -> None:
    coro = upper("abc")
    assert inspect.iscoroutine(coro)
    assert await coro == "ABC"

    @capability
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert add.__wrapped__(1, 1) == 2


async def test_bare_decorator_takes_name_and_docstring() -> None:
    @capability
    async def summarize(text: str, limit: int = 100) -> str:
        """Summarize a text
        in a few words.

        The rest of the docstring is not the description.

        Args:
            text: the text to summarize.
            limit (int): at most this many
                characters.
        """
        return text[:limit]

    assert summarize.name == "summarize"
    assert summarize.description == "Summarize a text in a few words."
    props = summarize.parameters_schema["properties"]
    assert props["text"] == {"type": "string", "description": "the text to summarize."}
    assert props["limit"] == {
        "type": "integer",
        "default": 100,
        "description": "at most this many characters.",
    }


async def test_name_only_and_missing_docstring() -> None:
    @capability("math.neg")
    def neg(x: int) -> int:
        return -x

    assert neg.name == "math.neg"
    assert neg.description == ""
    assert neg.parameters_schema["properties"]["x"] == {"type": "integer"}


async def test_explicit_meta_description_wins_over_docstring() -> None:
    @capability
    def f(n: Annotated[int, msgspec.Meta(ge=0, description="from Meta")]) -> int:
        """Do it.

        Args:
            n: from the docstring.
        """
        return n

    assert f.parameters_schema["properties"]["n"] == {
        "type": "integer",
        "minimum": 0,
        "description": "from Meta",
    }
    with pytest.raises(InvalidToolArguments):
        await f.call({"n": -1})


async def test_metadata_options() -> None:
    @capability("slow.thing", timeout=2, max_concurrency=3, tags=["io", "slow"])
    async def thing() -> None:
        return None

    assert thing.timeout == 2.0
    assert thing.max_concurrency == 3
    assert thing.tags == frozenset({"io", "slow"})
    assert thing.parameters_schema == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert thing.result_schema == {"type": "null"}
    assert await thing.call({}) is None
    assert upper.timeout is None
    assert upper.max_concurrency is None
    assert upper.tags == frozenset()


# --------------------------------------------------------------------------------- schemas


async def test_schema_of_primitives_defaults_optional_literal_containers() -> None:
    @capability
    def f(
        i: int,
        f: float,
        s: str,
        b: bool,
        maybe: int | None,
        mode: Literal["fast", "slow"],
        xs: list[int],
        m: dict[str, float],
        when: datetime.datetime,
        color: Color = Color.RED,
        n: int = 3,
        opt: Optional[str] = None,  # noqa: UP045 - the spelling users still write
        names: list[str] = ["a", "b"],  # noqa: B006 - copied per call, see test_defaults
    ) -> None:
        return None

    schema = f.parameters_schema
    assert schema["required"] == ["i", "f", "s", "b", "maybe", "mode", "xs", "m", "when"]
    assert schema["additionalProperties"] is False
    assert schema["properties"] == {
        "i": {"type": "integer"},
        "f": {"type": "number"},
        "s": {"type": "string"},
        "b": {"type": "boolean"},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "mode": {"enum": ["fast", "slow"]},
        "xs": {"type": "array", "items": {"type": "integer"}},
        "m": {"type": "object", "additionalProperties": {"type": "number"}},
        "when": {"type": "string"},  # "date-time" needs Meta(tz=True); naive ones pass
        "color": {"title": "Color", "enum": ["blue", "red"], "default": "red"},
        "n": {"type": "integer", "default": 3},
        "opt": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "names": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
    }
    jsonschema.Draft202012Validator.check_schema(schema)


async def test_nested_struct_dataclass_typeddict_are_inlined() -> None:
    @capability
    def f(p: Point, span: Span, win: Window, pts: list[Point], o: Point | None = None) -> int:
        return 0

    schema = f.parameters_schema
    assert _refs(schema) == []
    assert "$defs" not in schema
    point = {
        "title": "Point",
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
        "required": ["x"],
    }
    assert schema["properties"]["p"] == point
    assert schema["properties"]["pts"] == {"type": "array", "items": point}
    assert schema["properties"]["o"] == {"anyOf": [point, {"type": "null"}], "default": None}
    assert schema["properties"]["span"]["required"] == ["start", "end"]
    assert sorted(schema["properties"]["win"]["required"]) == ["height", "width"]
    _check(
        schema,
        {
            "p": {"x": 1},
            "span": {"start": 0, "end": 1},
            "win": {"width": 1, "height": 2},
            "pts": [],
        },
    )


async def test_recursive_types_keep_defs() -> None:
    @capability
    def depth(tree: Node) -> int:
        """Depth of a tree.

        Args:
            tree: the root.
        """
        return 1 + max((depth(c) for c in tree.children), default=0)

    schema = depth.parameters_schema
    assert schema["properties"]["tree"]["description"] == "the root."
    assert schema["properties"]["tree"]["title"] == "Node"  # inlined once at the top ...
    assert set(schema["$defs"]) == {"Node"}  # ... and kept where it refers to itself
    assert schema["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    arguments = {"tree": {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}}
    _check(schema, arguments)
    assert await depth.call(arguments) == 3
    with pytest.raises(InvalidToolArguments) as info:
        await depth.call({"tree": {"value": 1, "children": [{"value": "x"}]}})
    assert info.value.path == ("tree", "children", 0, "value")


async def test_any_and_object_take_any_json_value() -> None:
    @capability
    def f(a: Any, o: object, xs: list[Any] = []) -> Any:  # noqa: B006
        return [a, o, xs]

    assert f.parameters_schema["properties"] == {
        "a": {},
        "o": {},
        "xs": {"type": "array", "default": []},
    }
    assert f.result_schema == {}
    assert await f.call({"a": {"k": [1]}, "o": None}) == [{"k": [1]}, None, []]


async def test_string_annotations_are_resolved() -> None:
    @capability
    def f(p: Point, n: int) -> Span:  # annotations are strings under `from __future__`
        return Span(p.x, p.x + n)

    assert f.parameters_schema["properties"]["p"]["title"] == "Point"
    assert f.result_schema["title"] == "Span"
    assert await f.call({"p": {"x": 1}, "n": 2}) == {"start": 1, "end": 3}


# ------------------------------------------------------------------------------ validation


@capability
def place(order: Order, note: str = "", urgent: bool = False) -> str:
    return f"{order.qty}x{order.sku}{'!' if urgent else ''}{note}"


@pytest.mark.parametrize(
    ("arguments", "path", "reason"),
    [
        ({}, (), "Object missing required field `order`"),
        ({"order": {"sku": "a"}}, ("order",), "Object missing required field `qty`"),
        ({"order": {"sku": "a", "qty": "2"}}, ("order", "qty"), "Expected `int`, got `str`"),
        ({"order": {"sku": "a", "qty": True}}, ("order", "qty"), "Expected `int`, got `bool`"),
        ({"order": {"sku": "a", "qty": 1}, "urgent": 1}, ("urgent",), "Expected `bool`, got `int`"),
        (
            {"order": {"sku": "a", "qty": 1}, "extra": 1},
            (),
            "Object contains unknown field `extra`",
        ),
        ({"order": [1]}, ("order",), "Expected `object`, got `array`"),
    ],
)
async def test_invalid_arguments(
    arguments: dict[str, Any], path: tuple[str | int, ...], reason: str
) -> None:
    with pytest.raises(InvalidToolArguments) as info:
        await place.call(arguments)
    error = info.value
    assert error.path == path
    assert error.reason == reason
    assert error.tool == "place"
    assert isinstance(error, ToolError)
    assert isinstance(error, InvalidArgument)
    assert isinstance(error, LoomError)
    assert isinstance(error, ValueError)
    assert "place" in str(error)
    assert reason in str(error)
    assert error.__cause__ is None  # msgspec's traceback is noise for a caller


async def test_arguments_that_are_not_an_object() -> None:
    for bad in ([1], None, "x", 3):
        with pytest.raises(InvalidToolArguments) as info:
            await place.call(bad)  # type: ignore[arg-type]
        assert info.value.path == ()
        assert info.value.reason.startswith("Expected `object`")


async def test_error_inside_a_dict_value_keeps_msgspec_location() -> None:
    @capability
    def f(stock: dict[str, Order]) -> int:
        return len(stock)

    with pytest.raises(InvalidToolArguments) as info:
        await f.call({"stock": {"k": {"sku": "a", "qty": "many"}}})
    # msgspec does not name dict keys; the path stops at the dict and the reason says more.
    assert info.value.path == ("stock",)
    assert info.value.reason == "Expected `int`, got `str` (at `$.stock[...].qty`)"

    with pytest.raises(InvalidToolArguments) as info:
        await f.call({"stock": {1: {"sku": "a", "qty": 1}}})
    assert info.value.path == ("stock",)
    assert info.value.reason == "Expected `str`, got `int` (in a key)"


async def test_strictness_where_it_is_safe() -> None:
    @capability
    def f(x: float, when: datetime.datetime, uid: uuid.UUID) -> list[object]:
        return [type(x).__name__, when.year, uid.version]

    # int for float, and the string forms of types JSON lacks, are accepted.
    assert await f.call(
        {"x": 1, "when": "2024-05-06T07:08:09Z", "uid": "6f1c9f3e-8f7e-4b8e-9a55-0c3e6bba1a10"}
    ) == ["float", 2024, 4]
    # a numeric string is not a number.
    with pytest.raises(InvalidToolArguments) as info:
        await f.call({"x": "1.5", "when": "2024-05-06T07:08:09Z", "uid": str(uuid.uuid4())})
    assert info.value.path == ("x",)


async def test_mapping_arguments_and_defaults() -> None:
    from types import MappingProxyType

    seen: list[list[str]] = []

    @capability
    def f(names: list[str] = ["a"], n: int = 2) -> int:  # noqa: B006
        names.append("mutated")
        seen.append(names)
        return n

    assert await f.call(MappingProxyType({})) == 2
    assert await f.call({}) == 2
    # Each call got its own copy of the mutable default.
    assert seen == [["a", "mutated"], ["a", "mutated"]]
    assert seen[0] is not seen[1]


async def test_positional_only_and_keyword_only_parameters() -> None:
    @capability
    def f(a: int, /, b: int, *, c: int = 10) -> list[int]:
        return [a, b, c]

    assert f.parameters_schema["required"] == ["a", "b"]
    assert await f.call({"a": 1, "b": 2}) == [1, 2, 10]
    assert await f.call({"c": 3, "b": 2, "a": 1}) == [1, 2, 3]


# --------------------------------------------------------------------------------- running


async def test_sync_runs_in_a_worker_thread_and_async_in_the_loop() -> None:
    loop_thread = threading.get_ident()

    @capability
    def sync_where() -> int:
        return threading.get_ident()

    @capability
    async def async_where() -> int:
        return threading.get_ident()

    assert await sync_where.call({}) != loop_thread
    assert await async_where.call({}) == loop_thread


async def test_sync_function_does_not_block_the_loop() -> None:
    started = threading.Event()
    release = threading.Event()

    @capability
    def blocking() -> str:
        started.set()
        release.wait(5)
        return "done"

    results: list[object] = []

    async def run() -> None:
        results.append(await blocking.call({}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        # The loop keeps running while the function blocks its thread.
        await anyio.to_thread.run_sync(started.wait, 5)
        assert results == []
        release.set()
    assert results == ["done"]


async def test_cancelled_sync_call_returns_at_once() -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @capability
    def stuck() -> None:
        started.set()
        release.wait(5)
        finished.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck.call, {})
            await anyio.to_thread.run_sync(started.wait, 5)
            scope.cancel()
    # The call is over while the function still runs in its thread (it cannot be interrupted).
    assert scope.cancelled_caught
    assert not finished.is_set()
    release.set()
    await anyio.to_thread.run_sync(finished.wait, 5)
    assert finished.is_set()


async def test_exceptions_propagate_unchanged() -> None:
    @capability
    def boom(x: int) -> int:
        raise KeyError(x)

    @capability
    async def aboom(x: int) -> int:
        raise FileNotFoundError(x)

    with pytest.raises(KeyError):
        await boom.call({"x": 1})
    with pytest.raises(FileNotFoundError):
        await aboom.call({"x": 1})


async def test_cancellation_is_not_wrapped() -> None:
    entered = anyio.Event()

    @capability
    async def forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(forever.call, {})
            await entered.wait()
            scope.cancel()
    assert scope.cancelled_caught


async def test_sync_function_returning_a_coroutine_is_refused() -> None:
    async def inner() -> int:
        return 1

    @capability
    def sneaky() -> Any:
        return inner()

    with pytest.raises(TypeError, match="declare it `async def`"):
        await sneaky.call({})


async def test_result_conversion() -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")

    @capability
    async def report() -> dict[str, object]:
        return {
            "point": Point(1, 2),
            "span": Span(3, 4),
            "when": when,
            "uid": uid,
            "color": Color.BLUE,
            "by_id": {7: "seven"},
            "tags": ("a", "b"),
            "raw": b"\x00\x01",
        }

    assert await report.call({}) == {
        "point": {"x": 1, "y": 2},
        "span": {"start": 3, "end": 4},
        "when": "2024-01-02T03:04:05Z",
        "uid": "12345678-1234-5678-1234-567812345678",
        "color": "blue",
        "by_id": {"7": "seven"},
        "tags": ("a", "b"),  # to_builtins keeps tuples; JSON encoders write arrays
        "raw": "AAE=",
    }
    assert report.result_schema == {"type": "object", "additionalProperties": {}}


async def test_result_schema() -> None:
    @capability
    def pts() -> list[Point]:
        return [Point(1)]

    @capability
    def untyped(x: int):  # type: ignore[no-untyped-def]
        return x

    assert pts.result_schema["type"] == "array"
    assert pts.result_schema["items"]["title"] == "Point"
    assert untyped.result_schema == {}
    assert await pts.call({}) == [{"x": 1, "y": 0}]
    assert await untyped.call({"x": 5}) == 5


async def test_unconvertible_result_is_an_error() -> None:
    @capability
    def bad():  # type: ignore[no-untyped-def]
        return Opaque()

    with pytest.raises(TypeError, match="Opaque"):
        await bad.call({})


# ------------------------------------------------------------------------------ method form


class Shouter:
    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.calls = 0

    @capability("text.shout")
    async def shout(self, text: str, times: int = 1) -> str:
        """Shout a text.

        Args:
            text: what to shout.
            times: how many times.
        """
        self.calls += 1
        return " ".join([text.upper() + self.suffix] * times)

    @capability
    def count(self) -> int:
        return self.calls

    @staticmethod
    @capability("text.reverse")
    def reverse(text: str) -> str:
        return text[::-1]

    @capability("text.length")
    @staticmethod
    def length(text: str) -> int:
        return len(text)

    @capability("text.noop")
    def noop() -> None:  # a static function without @staticmethod
        return None

    def not_a_capability(self) -> None:
        return None


class LoudShouter(Shouter):
    @capability("text.whisper")
    def whisper(self, text: str) -> str:
        return text.lower() + self.suffix


async def test_method_binds_to_the_instance() -> None:
    a, b = Shouter("!"), Shouter("?")
    tool_a, tool_b = a.shout, b.shout
    assert isinstance(tool_a, BoundCapability)
    assert isinstance(tool_a, Tool)
    assert tool_a.__self__ is a
    assert tool_a.__func__ is Shouter.shout
    assert tool_a == a.shout
    assert hash(tool_a) == hash(a.shout)
    assert tool_a != tool_b
    assert tool_a.name == "text.shout"
    assert tool_a.description == "Shout a text."
    assert tool_a.parameters_schema == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "what to shout."},
            "times": {"type": "integer", "default": 1, "description": "how many times."},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    assert await tool_a.call({"text": "hi", "times": 2}) == "HI! HI!"
    assert await tool_b.call({"text": "hi"}) == "HI?"
    assert await a.count.call({}) == 1
    assert await b.count.call({}) == 1
    assert b.count.parameters_schema["properties"] == {}
    # Direct calls behave like bound methods.
    assert await a.shout("x") == "X!"
    assert a.count() == 2


async def test_method_read_from_the_class_is_not_callable_as_a_tool() -> None:
    unbound = Shouter.shout
    assert isinstance(unbound, Capability)
    assert unbound.is_method
    with pytest.raises(TypeError, match="read it from an instance"):
        await unbound.call({"text": "x"})


async def test_static_capabilities_are_not_bound() -> None:
    shouter = Shouter("!")
    for tool in (Shouter.reverse, Shouter.length, Shouter.noop):
        assert isinstance(tool, Capability)
        assert not tool.is_method
    # Read from an instance, a static capability is itself. (mypy types it as bound: it cannot
    # tell the two kinds apart, see Capability.__get__; hence the plain ``object`` lists.)
    from_instance: list[object] = [shouter.reverse, shouter.length, shouter.noop]
    from_class: list[object] = [Shouter.reverse, Shouter.length, Shouter.noop]
    assert all(a is b for a, b in zip(from_instance, from_class, strict=True))
    assert await shouter.reverse.call({"text": "abc"}) == "cba"
    assert await shouter.length.call({"text": "abc"}) == 3
    assert await shouter.noop.call({}) is None
    assert Shouter.reverse.parameters_schema["required"] == ["text"]


async def test_capabilities_of_an_instance() -> None:
    loud = LoudShouter("~")
    tools = capabilities_of(loud)
    assert [t.name for t in tools] == [
        "text.shout",
        "count",
        "text.reverse",
        "text.length",
        "text.noop",
        "text.whisper",
    ]
    assert all(isinstance(t, Tool) for t in tools)
    whisper = tools[-1]
    assert isinstance(whisper, BoundCapability)
    assert whisper.__self__ is loud
    assert await whisper.call({"text": "HEY"}) == "hey~"

    class Muted(LoudShouter):
        shout = None  # type: ignore[assignment]  # hides the base capability

    assert [t.name for t in capabilities_of(Muted("."))] == [
        "count",
        "text.reverse",
        "text.length",
        "text.noop",
        "text.whisper",
    ]


class Multiplier:
    """Multiply by a factor."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor

    def scale(self, x: float) -> float:
        """Scale a number."""
        return x * self.factor


class AsyncAdder:
    async def __call__(self, x: int, y: int = 1) -> int:
        return x + y


def _power(base: int, exponent: int) -> int:
    """Raise to a power."""
    return int(base**exponent)


async def test_other_callables() -> None:
    times3 = capability("math.times3")(Multiplier(3))
    assert times3.description == "Multiply by a factor."
    assert times3.parameters_schema["required"] == ["x"]
    assert await times3.call({"x": 2}) == 6

    add = capability("math.add")(AsyncAdder())
    assert add.parameters_schema["required"] == ["x"]
    assert await add.call({"x": 2}) == 3  # awaited, not sent to a thread

    # A bound method already has its instance: nothing more is skipped.
    scale = capability(Multiplier(2).scale)
    assert scale.name == "scale"
    assert not scale.is_method
    assert scale.description == "Scale a number."
    assert await scale.call({"x": 1.5}) == 3.0

    import functools

    square = capability(functools.partial(_power, exponent=2))
    assert square.name == "_power"
    assert square.description == "Raise to a power."
    assert square.parameters_schema["properties"]["exponent"]["default"] == 2
    assert await square.call({"base": 7}) == 49

    with pytest.raises(InvalidCapability, match="needs an explicit name"):
        capability(Multiplier(1))


# ------------------------------------------------------------------------------ registry


async def test_registered_in_a_tool_registry() -> None:
    registry = ToolRegistry()
    shouter = Shouter("!")
    for tool in capabilities_of(shouter):
        registry.register(tool, timeout=tool.timeout, max_concurrency=tool.max_concurrency)
    assert await registry.call("text.shout", {"text": "hi", "times": 2}) == "HI! HI!"
    assert await registry.call("text.shout", '{"text": "json"}') == "JSON!"
    assert await registry.call("count", {}) == 2
    with pytest.raises(InvalidToolArguments) as info:
        await registry.call("text.shout", {"text": 1})
    assert info.value.tool == "text.shout"
    assert info.value.path == ("text",)


async def test_registry_timeout_cuts_a_sync_capability_short() -> None:
    release = threading.Event()

    @capability("slow.sync", timeout=0.05)
    def slow() -> None:
        release.wait(5)

    @capability("fails")
    async def fails() -> None:
        raise RuntimeError("nope")

    registry = ToolRegistry()
    registry.register(slow, timeout=slow.timeout)
    registry.register(fails)
    try:
        with pytest.raises(ToolTimeout):
            await registry.call("slow.sync", {})
    finally:
        release.set()
    with pytest.raises(ToolFailed, match="RuntimeError: nope"):
        await registry.call("fails", {})


# ---------------------------------------------------------------------- decoration errors


def _star_args(*items: int) -> int:
    return len(items)


def _star_kwargs(**options: int) -> int:
    return len(options)


def _unannotated(x, y: int) -> int:  # type: ignore[no-untyped-def]
    return y


def _opaque_param(thing: Opaque) -> int:
    return 0


def _opaque_result() -> Opaque:
    return Opaque()


def _gen() -> Any:
    yield 1


async def _agen() -> Any:
    yield 1


def _bad_default(n: int = Opaque()) -> int:  # type: ignore[assignment]
    return n


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_star_args, "*items is not supported"),
        (_star_kwargs, "**options is not supported"),
        (_unannotated, "parameter 'x' has no type annotation"),
        (_opaque_param, "parameter 'thing'"),
        (_opaque_result, "return type"),
        (_gen, "generator functions cannot be tools"),
        (_agen, "generator functions cannot be tools"),
        (_bad_default, "parameter 'n'"),
    ],
)
def test_bad_functions_are_refused_at_decoration(func: Callable[..., Any], message: str) -> None:
    with pytest.raises(InvalidCapability) as info:
        capability(func)
    assert message in str(info.value)
    assert info.value.function == func.__qualname__
    assert func.__qualname__ in str(info.value)
    assert isinstance(info.value, LoomError)
    assert isinstance(info.value, TypeError)


def test_unresolvable_annotation_is_refused() -> None:
    class LocalOnly(msgspec.Struct):
        a: int

    def f(x: LocalOnly) -> int:  # a string annotation naming a local: not resolvable
        return x.a

    with pytest.raises(InvalidCapability, match="cannot resolve its type hints"):
        capability(f)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "invalid name"),
        ({"name": "has space"}, "invalid name"),
        ({"name": "trailing."}, "invalid name"),
        ({"name": "x" * 129}, "invalid name"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -1.0}, "timeout must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"timeout": True}, "timeout must be a positive number"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1"),
        ({"max_concurrency": 1.5}, "max_concurrency must be an int"),
        ({"tags": "io"}, "tags must be a collection of strings"),
        ({"tags": [1]}, "tags must be a collection of strings"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    name = options.pop("name", None)

    def f(x: int) -> int:
        return x

    with pytest.raises(InvalidCapability, match=message):
        capability(name, **options)(f)


def test_infinite_timeout_is_kept() -> None:
    # As in ToolRegistry.register: None is "the registry's default", inf is "no limit".
    @capability("t", timeout=math.inf)
    def f() -> None:
        return None

    assert f.timeout == math.inf


def test_method_and_wrapper_errors() -> None:
    with pytest.raises(InvalidCapability, match="classmethods are not supported"):

        class WithClassmethod:
            @capability
            @classmethod
            def f(cls) -> int:
                return 1

    with pytest.raises(InvalidCapability, match="already a capability"):
        capability(upper)
    with pytest.raises(InvalidCapability, match="expected a function"):
        capability(None)(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ property


_KINDS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (int, st.integers()),
    (float, st.floats(allow_nan=False)),
    (str, st.text()),
    (bool, st.booleans()),
    (list[int], st.lists(st.integers(), max_size=4)),
    (dict[str, str], st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)),
    (int | None, st.none() | st.integers()),
    (Literal["a", "b", 3], st.sampled_from(["a", "b", 3])),
    (list[str | float], st.lists(st.text(max_size=3) | st.floats(allow_nan=False), max_size=3)),
]

_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n)
)


def _make(parameters: list[inspect.Parameter], is_async: bool) -> Callable[..., Any]:
    """A function with exactly this signature, returning the arguments it received."""
    signature = inspect.Signature(parameters)

    def received(*args: Any, **kwargs: Any) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    async def impl_async(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return received(*args, **kwargs)

    def impl_sync(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return received(*args, **kwargs)

    impl: Callable[..., Any] = impl_async if is_async else impl_sync
    impl.__signature__ = signature  # type: ignore[attr-defined]
    impl.__annotations__ = {p.name: p.annotation for p in parameters}
    return impl


@st.composite
def _signatures_and_arguments(
    draw: st.DrawFn,
) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    names = draw(st.lists(_NAMES, unique=True, max_size=6))
    kinds = [
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    ]
    parameters: list[inspect.Parameter] = []
    arguments: dict[str, Any] = {}
    kind_index = 0
    defaulted = False
    for name in names:
        tp, values = draw(st.sampled_from(_KINDS))
        kind_index = draw(st.integers(kind_index, 2))  # kinds must not go backwards
        kind = kinds[kind_index]
        # Only keyword-only parameters may follow a defaulted one without a default.
        has_default = draw(st.booleans()) or (defaulted and kind is not kinds[2])
        defaulted = defaulted or has_default
        default = draw(values) if has_default else inspect.Parameter.empty
        parameters.append(inspect.Parameter(name, kind, default=default, annotation=tp))
        if not has_default or draw(st.booleans()):
            arguments[name] = draw(values)
    return parameters, arguments


@settings(max_examples=100, deadline=None)
@given(drawn=_signatures_and_arguments(), is_async=st.booleans())
async def test_call_returns_what_the_function_returns(
    drawn: tuple[list[inspect.Parameter], dict[str, Any]], is_async: bool
) -> None:
    parameters, arguments = drawn
    func = _make(parameters, is_async)
    tool = capability(func)

    # The schema and the validator agree on what is valid.
    _check(tool.parameters_schema, arguments)
    expected = {
        p.name: arguments.get(p.name, p.default) for p in parameters
    }  # every parameter, given or defaulted
    assert await tool.call(arguments) == msgspec.to_builtins(expected)
