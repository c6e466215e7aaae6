"""Every ``statistics()`` (and ``statistics_of()``) returns a small frozen record.

The classes are found by walking every module of ``loom``, so a new ``statistics()`` that
returns a dict or a mutable object fails here without anyone listing it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing

import msgspec
import pytest

import loom
from loom.runtime import EventBus
from loom.runtime.tools import FunctionTool, ToolRegistry

_METHODS = ("statistics", "statistics_of")


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(loom.__path__, prefix="loom.")
        if "._generated" not in info.name and not info.name.endswith("__main__")
    )


def _with_statistics() -> list[tuple[str, type, str]]:
    found: dict[tuple[str, str], tuple[str, type, str]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if not kind.__module__.startswith("loom."):
                continue
            for method in _METHODS:
                if method in vars(kind):
                    key = (f"{kind.__module__}.{kind.__qualname__}", method)
                    found[key] = (key[0], kind, method)
    return sorted(found.values(), key=lambda x: (x[0], x[2]))


WITH_STATISTICS = _with_statistics()


_MUTABLE = (dict, list, set, bytearray)


def _frozen(kind: object) -> bool:
    """A frozen record whose fields are frozen too (a tuple, not a list; no dict)."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        if not kind.__struct_config__.frozen:
            return False
        for hint in typing.get_type_hints(kind).values():
            for part in (hint, *typing.get_args(hint)):
                if (typing.get_origin(part) or part) in _MUTABLE:
                    return False
                nested = isinstance(part, type) and issubclass(part, msgspec.Struct)
                if nested and not _frozen(part):
                    return False
        return True
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return bool(kind.__dataclass_params__.frozen)  # type: ignore[attr-defined]
    return False


def test_the_walk_finds_them() -> None:
    names = {(name.rsplit(".", 1)[-1], method) for name, _, method in WITH_STATISTICS}
    assert {
        ("EventBus", "statistics"),
        ("Subscription", "statistics"),
        ("AgentRuntime", "statistics_of"),
        ("ToolRegistry", "statistics"),
        ("McpHub", "statistics"),
        ("BridgeServer", "statistics"),
        ("BridgeClient", "statistics"),
        ("AdminClient", "statistics"),
    } <= names


@pytest.mark.parametrize(
    ("kind", "method"),
    [(kind, method) for _, kind, method in WITH_STATISTICS],
    ids=[f"{name}.{method}" for name, _, method in WITH_STATISTICS],
)
def test_statistics_returns_a_frozen_record(kind: type, method: str) -> None:
    hints = typing.get_type_hints(getattr(kind, method))
    returned = hints["return"]
    assert _frozen(returned), f"{kind.__qualname__}.{method}() returns {returned!r}"


def test_records_of_cheap_objects_are_frozen() -> None:
    registry = ToolRegistry()
    schema = {"type": "object"}
    noop = FunctionTool(lambda: None, name="n", description="", parameters_schema=schema)
    registry.register(noop)
    records: list[object] = [EventBus().statistics(), registry.statistics()]
    for record in records:
        assert _frozen(type(record))
        assert isinstance(record, msgspec.Struct)
        for field in msgspec.structs.fields(record):
            value = getattr(record, field.name)
            assert not isinstance(value, _MUTABLE), f"{type(record).__name__}.{field.name}"
            with pytest.raises(AttributeError):
                setattr(record, field.name, value)
